"""FER2013 (pixels in a CSV table) and its FERPlus relabelling (as a table or as image folders)."""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from muldml.data.classes import CANONICAL_CLASSES, EXPRESSIONS
from muldml.data.sources.common import (csv_rows, dataset_root, fails, file_item, finish, images_in, other_files,
                                        parse_code, parse_number, read_text)
from muldml.data.sources.items import RawItem, SourceDataset
from muldml.errors import UserError


_FER_SIDE = 48
_FER_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
# FERPlus vote columns; its eight emotion names are already canonical.
_FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                  "unknown", "NF")


def load_fer2013(root: str | Path, ferplus: str | Path | None = None) -> SourceDataset:
    """FER2013: ``fer2013.csv`` with columns ``emotion,pixels,Usage``.

    Emotion 0-6 = anger, disgust, fear, happiness, sadness, surprise, neutral (the order
    of `EXPRESSIONS`, which is the class list). Pixels: 48*48 = 2304 grey values, row by
    row; items load as 48x48 mode "L" images. Usage Training / PublicTest / PrivateTest
    → split train / val / test. Key ``fer2013.csv#row=<i>``, i counting data rows from
    0. No subjects. Wrong pixel data, a malformed or out-of-range emotion skip the row,
    with a warning; an unknown Usage leaves its split None, with a warning.

    ``ferplus``: FERPlus ``fer2013new.csv`` (columns ``Usage,Image name,`` then vote
    counts for neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
    unknown, NF; row i relabels fer2013 row i). Each row then takes the label with the
    most votes; a tie, a win for unknown or NF (not a face), or no votes skip the row.
    Classes: the 7 of `EXPRESSIONS` and contempt.
    """
    root = dataset_root(root)
    return _read_fer2013(root, None if ferplus is None else Path(ferplus).expanduser(), "fer2013")


#: FERPlus's image folders (as its generate_training_data.py writes them) → split.
_FERPLUS_FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}


def load_ferplus(root: str | Path) -> SourceDataset:
    """FERPlus: `load_fer2013` with the votes of ``<root>/fer2013new.csv``; or, without that
    table, FERPlus's image folders ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``
    (split train, val, test), each holding PNGs and ``label.csv`` with rows
    ``<image>,<face box>,<ten vote counts>`` (the columns of fer2013new.csv from neutral
    to NF). Labels: the majority vote, as above. An image without a row is skipped as
    unlabelled; a row whose image is missing, with a warning.
    """
    root = dataset_root(root)
    if not (root / "fer2013new.csv").is_file() and any((root / name).is_dir() for name in _FERPLUS_FOLDERS):
        return _read_ferplus_folders(root)
    return _read_fer2013(root, root / "fer2013new.csv", "ferplus")


def _read_ferplus_folders(root: Path) -> SourceDataset:
    items, warnings = [], []
    for name, split in _FERPLUS_FOLDERS.items():
        folder = root / name
        if not folder.is_dir():
            warnings.append(f"{name}/ not found: no {split} split")
            continue
        labels: dict[str, tuple[str | None, str | None]] = {}
        table = folder / "label.csv"
        for number, line in enumerate(read_text(table).splitlines() if table.is_file() else [], 1):
            fields = next(csv.reader([line]), [])
            if not fields:
                continue
            if len(fields) < 1 + len(_FERPLUS_VOTES):
                warnings.append(f"{name}/label.csv line {number}: expected an image, a box and "
                                f"{len(_FERPLUS_VOTES)} votes")
                continue
            try:  # the box, between name and votes, may be quoted or not: "(0, 0, 48, 48)"
                labels[fields[0]] = _ferplus_label(dict(zip(_FERPLUS_VOTES, fields[-len(_FERPLUS_VOTES):])))
            except ValueError as e:
                labels[fields[0]] = None, str(e)
                warnings.append(f"{name}/label.csv line {number}: {e}")
        if not table.is_file():
            warnings.append(f"{name}/label.csv not found: its images are unlabelled")
        present = {path.name for path in images_in(folder)}
        warnings += [f"{name}/label.csv: {image} not found" for image in sorted(set(labels) - present)]
        for path in images_in(folder):
            label, reason = labels.get(path.name, (None, "not in label.csv"))
            items.append(file_item(root, path, label, reason, split=split))
        items += [item for item in other_files(root, folder) if item.key != f"{name}/label.csv"]
    return finish("ferplus", list(CANONICAL_CLASSES), items, warnings, root)


def _read_fer2013(root: Path, ferplus: Path | None, name: str) -> SourceDataset:
    table = root / "fer2013.csv"
    if not table.is_file():
        raise UserError(f"FER2013: fer2013.csv not found in {root}")
    if ferplus is not None and not ferplus.is_file():
        raise UserError(f"FERPlus: label file {ferplus} not found")
    votes = csv_rows(ferplus, _FERPLUS_VOTES) if ferplus else None
    items, warnings = [], []
    for index, row in enumerate(csv_rows(table, ("emotion", "pixels", "Usage"))):
        key = f"fer2013.csv#row={index}"
        if votes is None:
            code, reason = parse_code(row.get("emotion"), range(len(EXPRESSIONS)), "emotion")
            label = None if reason else EXPRESSIONS[code]
            if reason:
                warnings.append(f"{key}: {reason}")
        else:
            vote = next(votes, None)
            if vote is None:
                raise UserError(f"FERPlus: {ferplus} has fewer rows ({index}) than fer2013.csv")
            try:
                label, reason = _ferplus_label(vote)
            except ValueError as e:
                label, reason = None, str(e)
                warnings.append(f"{key}: {reason}")
        try:
            load = partial(Image.fromarray, _fer_pixels(row.get("pixels")))
        except ValueError as e:
            warnings.append(f"{key}: {e}")
            load, label, reason = fails(str(e)), None, str(e)
        usage = (row.get("Usage") or "").strip()
        if usage not in _FER_SPLITS:
            warnings.append(f"{key}: unknown Usage {usage!r}; no split")
        items.append(RawItem(key, load, label, split=_FER_SPLITS.get(usage), skip_reason=reason))
    if votes is not None and next(votes, None) is not None:
        raise UserError(f"FERPlus: {ferplus} has more rows than fer2013.csv ({len(items)})")
    classes = list(CANONICAL_CLASSES) if ferplus else list(EXPRESSIONS)
    return finish(name, classes, items, warnings, root)


def _fer_pixels(text: str | None) -> np.ndarray:
    """A 48x48 uint8 image from FER2013's space-separated grey values; ValueError says what is wrong."""
    values = (text or "").split()
    if len(values) != _FER_SIDE * _FER_SIDE:
        raise ValueError(f"{len(values)} pixel values, expected {_FER_SIDE * _FER_SIDE}")
    try:
        pixels = np.array(values, dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError("non-numeric pixel values") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel values outside 0-255")
    return pixels.astype(np.uint8).reshape(_FER_SIDE, _FER_SIDE)


def _ferplus_label(row: dict[str, str]) -> tuple[str | None, str | None]:
    """The emotion with the most votes of all ten columns, or why there is none; ValueError for bad counts.

    Unknown or NF (not a face) winning, a tie for the most votes, or no votes at all give no label.
    """
    counts = {}
    for column in _FERPLUS_VOTES:
        value = parse_number(row.get(column))
        if value is None or not value.is_integer() or value < 0:
            raise ValueError(f"malformed FERPlus vote {column}={row.get(column)!r}")
        counts[column] = int(value)
    most = max(counts.values())
    winners = [column for column, n in counts.items() if n == most]
    if most == 0:
        return None, "no FERPlus votes"
    if len(winners) > 1:
        return None, "tied FERPlus vote"
    if winners[0] == "unknown":
        return None, "FERPlus majority unknown"
    if winners[0] == "NF":
        return None, "FERPlus majority not a face"
    return winners[0], None

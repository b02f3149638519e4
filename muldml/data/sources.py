"""Readers for the FER datasets in the layouts they are distributed in.

Each loader turns one dataset's files and label conventions into a `SourceDataset`: one
`RawItem` per source image, with its label mapped onto the canonical class names of
`muldml.data.classes`, its subject and its official split. An image whose label cannot
be used is still listed, with ``label=None`` and a ``skip_reason``, so that it can be
counted. Label data that is wrong (malformed, out of range, a listed file that is not
there) also adds one line to ``warnings``; images a dataset's protocol leaves out on
purpose (AffectNet's "none", FERPlus ties, contempt in 7-class AffectNet) only get their
``skip_reason``, as they are many and expected.

Every class list follows one rule: the order of `CANONICAL_CLASSES` (anger, disgust,
fear, happiness, sadness, surprise, neutral, then contempt), keeping the classes the
dataset (or the chosen variant of it) has. Items come sorted by key, numbers compared as
numbers, so ``row=9`` precedes ``row=10``.

Registry (`LOADERS`, read through `load_source`): "ck+", "ck+-folders", "mmi", "sfew",
"raf-db", "fer2013", "ferplus", "affectnet", "jaffe", "folder".
"""
from __future__ import annotations

import csv
import inspect
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from muldml.data.classes import CANONICAL_CLASSES, EXPRESSIONS
from muldml.data.folder import IMAGE_SUFFIXES
from muldml.errors import UserError

__all__ = ["RawItem", "SourceDataset", "LOADERS", "load_source", "canonical_label"]


@dataclass(frozen=True)
class RawItem:
    """One source image.

    ``key`` is a stable unique id: the image's path relative to the dataset root (with
    ``/``), or ``fer2013.csv#row=<i>`` for images stored in a table. ``load`` opens the
    image lazily and may raise. ``label`` is a class name, None exactly when
    ``skip_reason`` says why the image is not used. ``split`` is "train", "val" or
    "test" where the dataset has an official split.
    """

    key: str
    load: Callable[[], Image.Image]
    label: str | None
    subject: str | None = None
    split: str | None = None
    skip_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.label is None) == (self.skip_reason is None):
            raise ValueError(f"{self.key}: an item has either a label or a skip_reason")


@dataclass
class SourceDataset:
    """A dataset as read: its registry name, class names in order, items and label problems."""

    name: str
    classes: list[str]
    items: list[RawItem]
    warnings: list[str]


# Spellings that datasets and people use for the canonical classes.
_SPELLINGS = {
    **{name: name for name in CANONICAL_CLASSES},
    "angry": "anger",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "contemptuous": "contempt",
}


def canonical_label(name: str) -> str | None:
    """The canonical class a spelling stands for, ignoring case ("Happy" → "happiness"); None if unknown."""
    return _SPELLINGS.get(name.strip().lower())


# ---------------------------------------------------------------------------------------------------------------------
# CK+


# Index = CK+ emotion code; 0 (neutral) is defined but labels no sequence.
_CK_CODES = ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")


def load_ck_plus(root: str | Path, include_neutral: bool = False) -> SourceDataset:
    """CK+ as distributed.

    Layout: ``cohn-kanade-images/S005/001/S005_001_00000011.png`` (a sequence's frames,
    neutral to apex) and ``Emotion/S005/001/S005_001_00000011_emotion.txt``, one number
    (e.g. ``3.0000000e+00``): 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear,
    5 happiness, 6 sadness, 7 surprise. Only sequences with an emotion file are used
    (327 of 593); each gives its last three frames (in name order) with its label: 981
    images. Subject: the ``Sxxx`` folder. Classes: anger, disgust, fear, happiness,
    sadness, surprise, contempt. ``include_neutral`` also adds each labelled sequence's
    first frame as neutral (the 8-class variant; classes then have neutral before
    contempt). An emotion file that is unreadable, malformed, 0 or out of range (or a
    second one for the same sequence) skips the sequence's three frames, with a warning.
    """
    root = _root(root)
    images, emotions = root / "cohn-kanade-images", root / "Emotion"
    for folder in (images, emotions):
        if not folder.is_dir():
            raise UserError(f"CK+: {folder.name}/ not found in {root} (expected cohn-kanade-images/ and Emotion/)")
    items, warnings = [], []
    for subject in _subfolders(emotions):
        for sequence in _subfolders(subject):
            files = sorted(sequence.glob("*_emotion.txt"))
            if not files:
                continue  # an unlabelled sequence: not part of the protocol
            label_file = _rel(root, files[0])
            frames = _images(images / subject.name / sequence.name)
            if not frames:
                warnings.append(f"{label_file}: no frames in cohn-kanade-images/{subject.name}/{sequence.name}")
                continue
            label, reason = _ck_label(files)
            if reason:
                warnings.append(f"{label_file}: {reason}")
            items += [_file_item(root, f, label, reason, subject=subject.name) for f in frames[-3:]]
            if include_neutral and label and len(frames) > 3:
                items.append(_file_item(root, frames[0], "neutral", subject=subject.name))
    classes = _classes(_CK_CODES[1:] + (("neutral",) if include_neutral else ()))
    return _finish("ck+", classes, items, warnings)


def _ck_label(files: Sequence[Path]) -> tuple[str | None, str | None]:
    """A sequence's label from its emotion file(s), or why there is none."""
    if len(files) > 1:
        return None, f"{len(files)} emotion files for one sequence"
    try:
        text = files[0].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable emotion file ({e.__class__.__name__})"
    code, reason = _code(text, range(1, len(_CK_CODES)), "emotion")
    if reason and _number(text) == 0:
        reason = "emotion 0 (neutral) labels no CK+ sequence"
    return (None, reason) if reason else (_CK_CODES[code], None)


def load_ck_plus_folders(root: str | Path) -> SourceDataset:
    """CK+ crops sorted into class folders: ``<class>/S005_001_00000011.png``.

    Folder names are mapped onto canonical classes (happy → happiness, sad → sadness,
    ...); the images of a folder with an unknown name are skipped, with a warning.
    Subject: the ``Sxxx`` prefix of the file name. Classes: those present, in canonical
    order (anger, disgust, fear, happiness, sadness, surprise, neutral, contempt).
    """
    root = _root(root)
    items, warnings = _folder_items(root, root, canonical_label, subjects=re.compile(r"^(S\d+)_"))
    if not items:
        raise UserError(f"CK+ folders: no images in {root} (expected <class>/<image> folders)")
    return _finish("ck+-folders", _classes(i.label for i in items if i.label), items, warnings)


# ---------------------------------------------------------------------------------------------------------------------
# MMI

_MMI_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # also codes 1-6, in this order


def load_mmi(root: str | Path) -> SourceDataset:
    """MMI as extracted frames.

    Layout: ``<subject>/<sequence>/<frame>.png|jpg`` and ``labels.csv`` with columns
    ``subject,sequence,emotion`` and optionally ``peak``. Emotion: a name (anger,
    disgust, fear, happiness/happy, sadness/sad, surprise) or a code 1-6 in that order.
    Each labelled sequence gives three frames (in natural name order): with ``peak``
    (an index into the sorted frames), the peak frame and its two neighbours; without
    it, the three middle frames, since MMI sequences run neutral → apex → neutral and
    the apex sits in the middle. Subject: the subject folder. Classes: the six above.
    A bad emotion or peak skips the sequence's frames, with a warning; a row whose
    sequence has no frames is only warned about.
    """
    root = _root(root)
    table = root / "labels.csv"
    items, warnings = [], []
    for number, row in enumerate(_csv_rows(table, ("subject", "sequence", "emotion")), 1):
        subject, sequence = (row.get("subject") or "").strip(), (row.get("sequence") or "").strip()
        where = f"labels.csv row {number}"
        if not subject or not sequence:
            warnings.append(f"{where}: no subject or sequence")
            continue
        frames = _images(root / subject / sequence)
        if not frames:
            warnings.append(f"{where}: no frames in {subject}/{sequence}")
            continue
        label, reason = _mmi_label(row.get("emotion"))
        chosen, peak_reason = _apex_frames(frames, row.get("peak"))
        reason = reason or peak_reason
        if reason:
            warnings.append(f"{where} ({subject}/{sequence}): {reason}")
        items += [_file_item(root, f, label, reason, subject=subject) for f in chosen]
    return _finish("mmi", list(_MMI_CLASSES), items, warnings)


def _mmi_label(text: str | None) -> tuple[str | None, str | None]:
    label = canonical_label(text or "")
    if label is None:
        code, reason = _code(text, range(1, len(_MMI_CLASSES) + 1), "emotion")
        return (None, reason) if reason else (_MMI_CLASSES[code - 1], None)
    if label not in _MMI_CLASSES:
        return None, f"{label} is not one of MMI's six classes"
    return label, None


def _apex_frames(frames: Sequence[Path], peak: str | None) -> tuple[list[Path], str | None]:
    """The three frames around the apex: ``peak`` and its neighbours, else the middle three."""
    centre, reason = (len(frames) - 1) // 2, None
    if (peak or "").strip():
        index, reason = _code(peak, range(len(frames)), "peak frame")
        centre = centre if reason else index
    start = max(0, min(centre - 1, len(frames) - 3))  # keep the window inside the sequence
    return list(frames[start : start + 3]), reason


# ---------------------------------------------------------------------------------------------------------------------
# SFEW, RAF-DB


def load_sfew(root: str | Path) -> SourceDataset:
    """SFEW 2.0: ``Train/<Class>/*.png`` (split "train") and ``Val/<Class>/*.png`` ("val").

    Class folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise map onto anger,
    disgust, fear, happiness, neutral, sadness, surprise; the images of any other folder
    (contempt included) are skipped, with a warning. No subjects. Classes: the 7 of
    `EXPRESSIONS`, in its order.
    """
    root = _root(root)
    parts = [(root / folder, split) for folder, split in (("Train", "train"), ("Val", "val"))]
    if not any(folder.is_dir() for folder, _ in parts):
        raise UserError(f"SFEW: neither Train/ nor Val/ found in {root}")
    items, warnings = [], []
    for folder, split in parts:
        if not folder.is_dir():
            warnings.append(f"{folder.name}/ not found: no {split} split")
            continue
        found, problems = _folder_items(root, folder, _among(EXPRESSIONS), split=split)
        items += found
        warnings += problems
    return _finish("sfew", list(EXPRESSIONS), items, warnings)


_RAF_CODES = (None, "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # index = RAF-DB label


def load_raf_db(root: str | Path, aligned: bool = True) -> SourceDataset:
    """RAF-DB basic.

    Layout: ``EmoLabel/list_patition_label.txt`` with lines ``train_00001.jpg 5`` (1
    surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral) and images
    ``Image/aligned/train_00001_aligned.jpg``, or with ``aligned=False``
    ``Image/original/train_00001.jpg``. Split: the name's prefix, "train" or "test". No
    subjects. Classes: the 7 of `EXPRESSIONS`, in its order. A line that is not
    ``<image> <label>`` is only warned about; a malformed or out-of-range label, or an
    image missing on disk ("missing file"), skips the image, with a warning.
    """
    root = _root(root)
    listing = root / "EmoLabel" / "list_patition_label.txt"
    if not listing.is_file():
        raise UserError(f"RAF-DB: label file {_rel(root, listing)} not found in {root}")
    images = root / "Image" / ("aligned" if aligned else "original")
    if not images.is_dir():
        other = "aligned=False for Image/original" if aligned else "aligned=True for Image/aligned"
        raise UserError(f"RAF-DB: image folder {_rel(root, images)} not found in {root} (or use {other})")
    items, warnings = [], []
    for number, line in enumerate(_read_text(listing).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{listing.name} line {number}"
        if len(fields) != 2:
            warnings.append(f"{where}: expected '<image> <label>', got {line.strip()[:60]!r}")
            continue
        name, text = Path(fields[0]).name, fields[1]
        path = images / (f"{Path(name).stem}_aligned.jpg" if aligned else name)
        code, reason = _code(text, range(1, len(_RAF_CODES)))
        if not reason and not path.is_file():
            reason = "missing file"
        if reason:
            warnings.append(f"{where} ({name}): {reason}")
        prefix = name.split("_")[0]
        split = prefix if prefix in ("train", "test") else None
        items.append(_file_item(root, path, None if reason else _RAF_CODES[code], reason, split=split))
    return _finish("raf-db", list(EXPRESSIONS), items, warnings)


# ---------------------------------------------------------------------------------------------------------------------
# FER2013, FERPlus

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
    root = _root(root)
    return _read_fer2013(root, None if ferplus is None else Path(ferplus).expanduser(), "fer2013")


def load_ferplus(root: str | Path) -> SourceDataset:
    """FERPlus: `load_fer2013` with the votes of ``<root>/fer2013new.csv``."""
    root = _root(root)
    return _read_fer2013(root, root / "fer2013new.csv", "ferplus")


def _read_fer2013(root: Path, ferplus: Path | None, name: str) -> SourceDataset:
    table = root / "fer2013.csv"
    if not table.is_file():
        raise UserError(f"FER2013: fer2013.csv not found in {root}")
    if ferplus is not None and not ferplus.is_file():
        raise UserError(f"FERPlus: label file {ferplus} not found")
    votes = _csv_rows(ferplus, _FERPLUS_VOTES) if ferplus else None
    items, warnings = [], []
    for index, row in enumerate(_csv_rows(table, ("emotion", "pixels", "Usage"))):
        key = f"fer2013.csv#row={index}"
        if votes is None:
            code, reason = _code(row.get("emotion"), range(len(EXPRESSIONS)), "emotion")
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
            load, label, reason = _fails(str(e)), None, str(e)
        usage = (row.get("Usage") or "").strip()
        if usage not in _FER_SPLITS:
            warnings.append(f"{key}: unknown Usage {usage!r}; no split")
        items.append(RawItem(key, load, label, split=_FER_SPLITS.get(usage), skip_reason=reason))
    if votes is not None and next(votes, None) is not None:
        raise UserError(f"FERPlus: {ferplus} has more rows than fer2013.csv ({len(items)})")
    classes = list(CANONICAL_CLASSES) if ferplus else list(EXPRESSIONS)
    return _finish(name, classes, items, warnings)


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
        value = _number(row.get(column))
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


# ---------------------------------------------------------------------------------------------------------------------
# AffectNet

# Index = AffectNet expression code; 8-10 are not expressions.
_AFFECTNET_CODES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
                    "none", "uncertain", "non-face")
_FACE_BOX = ("face_x", "face_y", "face_width", "face_height")


def load_affectnet(root: str | Path, classes: int = 7) -> SourceDataset:
    """AffectNet (manually annotated part).

    Layout: ``training.csv`` (split "train") and ``validation.csv`` ("val") with columns
    subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
    expression, valence, arousal; images ``Manually_Annotated_Images/<subDirectory_filePath>``.
    Expression 0 neutral, 1 happiness, 2 sadness, 3 surprise, 4 fear, 5 disgust, 6 anger,
    7 contempt, 8 none, 9 uncertain, 10 non-face. ``classes=7`` keeps 0-6 (the 7 of
    `EXPRESSIONS`, in its order) and skips contempt; ``classes=8`` keeps 0-7 (contempt
    last); 8-10 are always skipped. Items load cropped to the face box when the row has
    a valid one, as the images are not face crops. No subjects. A malformed or
    out-of-range expression, or an image missing on disk, skips the row, with a warning.
    """
    if classes not in (7, 8):
        raise UserError(f"AffectNet: classes must be 7 or 8, got {classes!r}")
    root = _root(root)
    tables = [(root / "training.csv", "train"), (root / "validation.csv", "val")]
    if not any(table.is_file() for table, _ in tables):
        raise UserError(f"AffectNet: neither training.csv nor validation.csv found in {root}")
    images = root / "Manually_Annotated_Images"
    if not images.is_dir():
        raise UserError(f"AffectNet: image folder Manually_Annotated_Images/ not found in {root}")
    items, warnings = [], []
    for table, split in tables:
        if not table.is_file():
            warnings.append(f"{table.name} not found: no {split} split")
            continue
        for number, row in enumerate(_csv_rows(table, ("subDirectory_filePath", "expression")), 1):
            relative = (row.get("subDirectory_filePath") or "").strip()
            if not relative:
                warnings.append(f"{table.name} row {number}: no image path")
                continue
            key, path = f"{images.name}/{relative}", images / relative
            code, reason = _code(row.get("expression"), range(len(_AFFECTNET_CODES)), "expression")
            if reason or (code < classes and not path.is_file()):
                reason = reason or "missing file"
                warnings.append(f"{key}: {reason}")
            elif code >= classes:
                reason = f"AffectNet code {code} ({_AFFECTNET_CODES[code]}) not among the {classes} classes"
            box = _face_box(row)
            load = partial(_open_cropped, path, box) if box else partial(Image.open, path)
            items.append(RawItem(key, load, None if reason else _AFFECTNET_CODES[code], split=split,
                                 skip_reason=reason))
    return _finish("affectnet", _classes(_AFFECTNET_CODES[:classes]), items, warnings)


def _face_box(row: dict[str, str]) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) from AffectNet's face_x/y/width/height; None when absent or invalid."""
    values = [_number(row.get(column)) for column in _FACE_BOX]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    x, y, width, height = values
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        return None
    return round(x), round(y), round(x + width), round(y + height)


def _open_cropped(path: Path, box: tuple[int, int, int, int]) -> Image.Image:
    """The face box of an image, clipped to the image (a box that reaches past an edge is common)."""
    with Image.open(path) as image:
        left, top = max(0, box[0]), max(0, box[1])
        right, bottom = min(image.width, box[2]), min(image.height, box[3])
        if left >= right or top >= bottom:
            raise ValueError(f"face box {box} lies outside the {image.width}x{image.height} image")
        return image.crop((left, top, right, bottom))


# ---------------------------------------------------------------------------------------------------------------------
# JAFFE, generic folder

_JAFFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
                "SU": "surprise"}
_JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})\d*\.\d+\.\w+$", re.IGNORECASE)


def load_jaffe(root: str | Path) -> SourceDataset:
    """JAFFE: images named like ``KA.AN1.39.tiff`` directly in root.

    Subject: the first part (KA); expression: the letters of the second, AN anger,
    DI disgust, FE fear, HA happiness, NE neutral, SA sadness, SU surprise. An image with
    another name or code is skipped, with a warning. Classes: the 7 of `EXPRESSIONS`,
    in its order.
    """
    root = _root(root)
    items, warnings = [], []
    for path in _images(root):
        match = _JAFFE_NAME.match(path.name)
        subject = match[1].upper() if match else None
        label = _JAFFE_CODES.get(match[2].upper()) if match else None
        reason = None
        if match is None:
            reason = "file name not like KA.AN1.39.tiff"
        elif label is None:
            reason = f"unknown expression code {match[2]!r}"
        if reason:
            warnings.append(f"{path.name}: {reason}")
        items.append(_file_item(root, path, label, reason, subject=subject))
    if not items:
        raise UserError(f"JAFFE: no images in {root} (expected files like KA.AN1.39.tiff)")
    return _finish("jaffe", list(EXPRESSIONS), items, warnings)


def load_folder(root: str | Path, subject_regex: str | None = None, any_classes: bool = False) -> SourceDataset:
    """A generic image folder: ``<class>/<image>``, one sub-folder per class.

    Folder names are mapped onto canonical classes (happy → happiness, angry → anger,
    ...); a name that does not map is an error unless ``any_classes``, which keeps it
    as a class of its own, lower-cased. Classes: the canonical ones present in canonical
    order, then any others sorted. ``subject_regex``: its first group, searched in the
    file name, is the subject (None where it does not match).
    """
    root = _root(root)
    subjects = _subject_pattern(subject_regex)
    folders = [folder for folder in _subfolders(root) if _images(folder)]
    if not folders:
        raise UserError(f"no class folders with images in {root} (expected <class>/<image>)")
    unknown = [folder.name for folder in folders if canonical_label(folder.name) is None]
    if unknown and not any_classes:
        raise UserError(f"{root}: class folder(s) {', '.join(unknown)} are not expression names "
                        f"({', '.join(CANONICAL_CLASSES)}); rename them or allow any classes")
    items, warnings = _folder_items(root, root, lambda name: canonical_label(name) or name.lower(), subjects=subjects)
    labels = {item.label for item in items if item.label}
    known = _classes(labels)
    return _finish("folder", known + sorted(labels - set(known)), items, warnings)


def _subject_pattern(regex: str | None) -> re.Pattern | None:
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise UserError(f"subject_regex {regex!r} is not a valid regular expression: {e}") from None
    if pattern.groups < 1:
        raise UserError(f"subject_regex {regex!r} needs a group, e.g. ^(S\\d+)_")
    return pattern


# ---------------------------------------------------------------------------------------------------------------------
# Registry

LOADERS: dict[str, Callable[..., SourceDataset]] = {
    "ck+": load_ck_plus,
    "ck+-folders": load_ck_plus_folders,
    "mmi": load_mmi,
    "sfew": load_sfew,
    "raf-db": load_raf_db,
    "fer2013": load_fer2013,
    "ferplus": load_ferplus,
    "affectnet": load_affectnet,
    "jaffe": load_jaffe,
    "folder": load_folder,
}


def load_source(name: str, root: str | Path, **options) -> SourceDataset:
    """Read dataset ``name`` (a key of `LOADERS`, any case) from ``root``, passing ``options`` to its loader.

    Raises UserError for an unknown name or option, a missing root or a missing label file.
    """
    loader = LOADERS.get(name.strip().lower())
    if loader is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")
    signature = inspect.signature(loader)
    try:
        signature.bind(root, **options)
    except TypeError:
        accepted = ", ".join(list(signature.parameters)[1:]) or "none"
        raise UserError(f"dataset {name!r} takes the options {accepted}; got {', '.join(options)}") from None
    return loader(root, **options)


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers


def _root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    return path


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _natural_key(text: str) -> tuple:
    """Digits compare as numbers: frame2 before frame10, row=9 before row=10."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))


def _images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (none if it is missing), in natural name order."""
    if not folder.is_dir():
        return []
    # Hidden files include macOS's "._name.png" resource forks, which are not images.
    files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return sorted((p for p in files if p.is_file()), key=lambda p: _natural_key(p.name))


def _file_item(root: Path, path: Path, label: str | None, reason: str | None = None, *, subject: str | None = None,
               split: str | None = None) -> RawItem:
    """An item for an image file, keyed by its path under ``root``; a ``reason`` skips it."""
    return RawItem(_rel(root, path), partial(Image.open, path), None if reason else label, subject, split, reason)


def _folder_items(root: Path, parent: Path, label_of: Callable[[str], str | None], *,
                  subjects: re.Pattern | None = None, split: str | None = None) -> tuple[list[RawItem], list[str]]:
    """Items of ``parent/<class>/<image>``; a folder ``label_of`` cannot name has its images skipped."""
    items, warnings = [], []
    for folder in _subfolders(parent):
        files = _images(folder)
        label = label_of(folder.name)
        reason = None if label else f"unknown class folder {folder.name!r}"
        if reason and files:
            warnings.append(f"{_rel(root, folder)}/: {reason}; its {len(files)} image(s) are skipped")
        for path in files:
            match = subjects.search(path.name) if subjects else None
            items.append(_file_item(root, path, label, reason, subject=match[1] if match else None, split=split))
    return items, warnings


def _among(classes: Sequence[str]) -> Callable[[str], str | None]:
    """`canonical_label`, limited to a dataset's ``classes``."""

    def label_of(name: str) -> str | None:
        label = canonical_label(name)
        return label if label in classes else None

    return label_of


def _classes(present: Iterable[str]) -> list[str]:
    """The canonical classes among ``present``, in the order of `CANONICAL_CLASSES`."""
    present = set(present)
    return [name for name in CANONICAL_CLASSES if name in present]


def _finish(name: str, classes: list[str], items: list[RawItem], warnings: list[str]) -> SourceDataset:
    """Sort the items by key; a key listed again is reported and its first entry kept."""
    unique: dict[str, RawItem] = {}
    for item in items:
        if item.key in unique:
            warnings.append(f"{item.key}: listed more than once; the first entry is kept")
        else:
            unique[item.key] = item
    ordered = sorted(unique.values(), key=lambda item: _natural_key(item.key))
    return SourceDataset(name, classes, ordered, warnings)


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _code(text: str | None, valid: range, what: str = "label") -> tuple[int | None, str | None]:
    """An integer code in ``valid`` (also written as a float, like CK+'s ``3.0000000e+00``), or why not."""
    value = _number(text)
    if value is None or not value.is_integer():
        shown = (text or "").strip()
        return None, f"malformed {what} {shown[:40]!r}"
    if int(value) not in valid:
        return None, f"{what} {int(value)} out of range {valid.start}-{valid.stop - 1}"
    return int(value), None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")  # a bad byte spoils one line, not the file
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    """The rows of a CSV file with a header; UserError if the file or a required column is missing."""
    if not path.is_file():
        raise UserError(f"label file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in header]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
            reader.fieldnames = header
            yield from reader
    except (OSError, csv.Error) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def _fails(reason: str) -> Callable[[], Image.Image]:
    """A ``load`` for an item without a usable image (a partial, so that items pickle)."""
    return partial(_raise, reason)


def _raise(reason: str) -> Image.Image:
    raise ValueError(reason)

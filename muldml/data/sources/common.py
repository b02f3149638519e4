"""Helpers every reader shares: label spellings, folder listings, label-file parsing, items.

Listings go through `muldml.data.files`, so every reader ignores operating-system metadata
and hidden files the same way and reads every image format Pillow decodes.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

from PIL import Image

from muldml.data.classes import canonical_label, canonical_order
from muldml.data.files import identity, image_files, natural_key, visible_files, visible_folders
from muldml.data.sources.items import RawItem, SourceDataset
from muldml.errors import UserError

__all__ = ["canonical_label", "dataset_root", "rel", "natural_key", "visible_files", "visible_folders", "images_in",
           "other_files", "file_item", "folder_items", "among", "canonical_order", "finish", "parse_number",
           "parse_code", "read_text", "csv_rows", "fails"]

def dataset_root(root: str | Path) -> Path:
    """``root`` as a Path; UserError if it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    return path


def rel(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, with ``/``: an item's key."""
    return path.relative_to(root).as_posix()


def images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (none if it is missing), in natural name order; metadata and
    hidden files (macOS's ``._name.png`` resource forks among them) are not images."""
    return image_files(folder)[0]


def other_files(root: Path, folder: Path) -> list[RawItem]:
    """Skipped items for the files in ``folder`` that are neither images Pillow reads nor metadata,
    so that they are counted (a ``.heic`` photo, a note)."""
    return [RawItem(rel(root, path), fails("not an image file"), None,
                    skip_reason=f"not an image file Pillow reads ({path.suffix or 'no extension'})")
            for path in image_files(folder)[1]]


def file_item(root: Path, path: Path, label: str | None, reason: str | None = None, *, subject: str | None = None,
               split: str | None = None) -> RawItem:
    """An item for an image file, keyed by its path under ``root``; a ``reason`` skips it."""
    return RawItem(rel(root, path), partial(Image.open, path), None if reason else label, subject, split, reason)


def folder_items(root: Path, parent: Path, label_of: Callable[[str], str | None], *,
                  subjects: re.Pattern | None = None, split: str | None = None) -> tuple[list[RawItem], list[str]]:
    """Items of ``parent/<class>/<image>``; a folder ``label_of`` cannot name has its images skipped."""
    items, warnings = [], []
    for folder in visible_folders(parent):
        files = images_in(folder)
        label = label_of(folder.name)
        reason = None if label else f"unknown class folder {folder.name!r}"
        if reason and files:
            warnings.append(f"{rel(root, folder)}/: {reason}; its {len(files)} image(s) are skipped")
        for path in files:
            match = subjects.search(path.name) if subjects else None
            items.append(file_item(root, path, label, reason, subject=match[1] if match else None, split=split))
        items += other_files(root, folder)
    return items, warnings


def among(classes: Sequence[str]) -> Callable[[str], str | None]:
    """`canonical_label`, limited to a dataset's ``classes``."""

    def label_of(name: str) -> str | None:
        label = canonical_label(name)
        return label if label in classes else None

    return label_of


def finish(name: str, classes: list[str], items: list[RawItem], warnings: list[str],
           root: Path | None = None) -> SourceDataset:
    """Sort the items by key; a key listed again is reported and its first entry kept.

    With ``root`` (keys being paths under it), each real file is data once: another key
    leading to a file already listed (a link, a linked folder) is skipped, with its reason.
    """
    unique: dict[str, RawItem] = {}
    for item in items:
        if item.key in unique:
            warnings.append(f"{item.key}: listed more than once; the first entry is kept")
        else:
            unique[item.key] = item
    ordered = sorted(unique.values(), key=lambda item: natural_key(item.key))
    if root is not None:
        first: dict[tuple[int, int], str] = {}
        for i, item in enumerate(ordered):
            real = identity(root / item.key) if item.label else None
            if real is None:
                continue
            if real in first:
                ordered[i] = RawItem(item.key, fails("a second name for a file"), None, item.subject, item.split,
                                     skip_reason=f"same file as {first[real]} (a link)")
            else:
                first[real] = item.key
    return SourceDataset(name, classes, ordered, warnings)


def parse_number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_code(text: str | None, valid: range, what: str = "label") -> tuple[int | None, str | None]:
    """An integer code in ``valid`` (also written as a float, like CK+'s ``3.0000000e+00``), or why not."""
    value = parse_number(text)
    if value is None or not value.is_integer():
        shown = (text or "").strip()
        return None, f"malformed {what} {shown[:40]!r}"
    if int(value) not in valid:
        return None, f"{what} {int(value)} out of range {valid.start}-{valid.stop - 1}"
    return int(value), None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")  # a bad byte spoils one line, not the file
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
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


def fails(reason: str) -> Callable[[], Image.Image]:
    """A ``load`` for an item without a usable image (a partial, so that items pickle)."""
    return partial(_raise, reason)


def _raise(reason: str) -> Image.Image:
    raise ValueError(reason)

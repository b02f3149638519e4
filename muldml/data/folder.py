"""Image-folder datasets with subject ids: the form every FER dataset is read into.

A dataset folder holds one sub-folder per class (``root/<class>/<file>``) and optionally
``manifest.csv`` with columns ``path,label,subject[,split]`` (path relative to root),
which is then authoritative. Subjects drive subject-independent splits.
"""
from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from muldml.data.files import IMAGE_SUFFIXES, image_files, visible_folders
from muldml.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "Sample", "scan_folder", "originals", "class_counts", "load_image", "FaceDataset"]


@dataclass(frozen=True)
class Sample:
    """One image: its file, class index, subject id (None if unknown), official split, and
    for prepared data the source image it came from and its offline rotation (degrees)."""

    path: Path
    label: int
    subject: str | None = None
    split: str | None = None
    source: str | None = None
    rotation: int = 0


def scan_folder(
    root: str | Path, classes: Sequence[str] | None = None, subject_regex: str | None = None
) -> tuple[list[Sample], list[str]]:
    """Read a dataset folder into samples and its class names (see the module doc).

    ``classes`` fixes the class order (default: manifest order or sorted folder names);
    ``subject_regex`` extracts the subject from file names via its first group.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        rows = _read_manifest(manifest)
        names = list(classes) if classes else list(dict.fromkeys(sorted(r["label"] for r in rows)))
    else:
        folders = sorted(visible_folders(root))
        names = list(classes) if classes else [p.name for p in folders]
        rows = [{"path": str(f.relative_to(root)), "label": folder.name}
                for folder in folders for f in sorted(image_files(folder)[0])]
    if not rows:
        raise UserError(f"no images found in {root} (expected <class>/<image> folders or manifest.csv)")
    pattern = re.compile(subject_regex) if subject_regex else None
    index = {name: i for i, name in enumerate(names)}
    samples = []
    for row in rows:
        if row["label"] not in index:
            raise UserError(f"{root}: label {row['label']!r} of {row['path']} is not one of {names}")
        subject = row.get("subject") or None
        if pattern is not None:
            match = pattern.search(Path(row["path"]).name)
            subject = match.group(1) if match else subject
        samples.append(Sample(root / row["path"], index[row["label"]], subject, row.get("split") or None,
                              row.get("source") or None, int(float(row.get("rotation") or 0))))
    return samples, names


def _read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    # An empty status cell means ok; rows of any other status (skipped, …) hold no usable image.
    kept, dropped = [], Counter()
    for r in rows:
        status = (r.get("status") or "ok").strip() or "ok"
        if status in ("ok", "no_face"):
            kept.append(r)
        else:
            dropped[status] += 1
    if dropped:
        counts = ", ".join(f"{n} with status {status!r}" for status, n in sorted(dropped.items()))
        print(f"{path}: {sum(dropped.values())} of {len(rows)} row(s) left out ({counts})", file=sys.stderr)
    return kept


def originals(samples: Sequence[Sample]) -> list[Sample]:
    """Samples without offline rotation: what evaluation uses."""
    return [s for s in samples if s.rotation == 0]


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return counts


def load_image(path: Path, mode: str = "RGB") -> Image.Image:
    """Open an image as RGB (or ``mode``), with a clear error for unreadable files."""
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


class FaceDataset(torch.utils.data.Dataset):
    """Samples → (image tensor (C, H, W) float in [0, 1] after ``transform``, label)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, mode: str = "RGB") -> None:
        self.samples, self.transform, self.mode = list(samples), transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(load_image(s.path, self.mode)), s.label

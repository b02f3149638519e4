"""Image-folder datasets with subject ids: the form every FER dataset is read into.

A dataset folder holds one sub-folder per class (``root/<class>/<file>``), possibly
inside split folders (``root/train|val|test/<class>/<file>``), and optionally
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

from muldml.data.classes import canonical_label, canonical_order
from muldml.data.files import IMAGE_SUFFIXES
from muldml.data.images import read_image as load_image
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

    Without a manifest the folder is read by the ``folder`` dataset reader
    (`muldml.data.sources.folder.load_folder`): ``<class>/<image>``, or split folders
    (train, val/validation, test) above class folders, which then give each image its
    official split. Class names are canonical (`muldml.data.classes`: happy → happiness,
    ...); names that are no expression are kept, lower-cased. ``classes`` fixes the class
    order (default: canonical order, then other names sorted); ``subject_regex`` extracts
    the subject from file names via its first group.
    """
    from muldml.data.sources.folder import load_folder

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        rows = [row | {"label": canonical_label(row["label"]) or row["label"]} for row in _read_manifest(manifest)]
    else:
        source = load_folder(root, subject_regex, any_classes=True)
        rows = [{"path": item.key, "label": item.label, "subject": item.subject, "split": item.split}
                for item in source.items if item.label]
    names = [canonical_label(c) or c for c in classes] if classes else canonical_order(r["label"] for r in rows)
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


class FaceDataset(torch.utils.data.Dataset):
    """Samples → (image tensor (C, H, W) float in [0, 1] after ``transform``, label)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, mode: str = "RGB") -> None:
        self.samples, self.transform, self.mode = list(samples), transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(load_image(s.path, self.mode)), s.label

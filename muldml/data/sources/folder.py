"""A generic image folder: ``<class>/<image>``, or split folders above class folders."""
from __future__ import annotations

import re
from pathlib import Path

from muldml.data.classes import CANONICAL_CLASSES, canonical_label, canonical_order
from muldml.data.sources.common import dataset_root, finish, folder_items, images_in, visible_folders
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError

#: Split folder names (any case) → the official split they hold.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def load_folder(root: str | Path, subject_regex: str | None = None, any_classes: bool = False) -> SourceDataset:
    """A generic image folder: ``<class>/<image>``, one sub-folder per class, or the same
    inside split folders, ``<split>/<class>/<image>``.

    Split folders: train (or training), val (valid, validation) and test (testing), any
    case, give each image its official split: the layout of FER2013's image-folder copy
    (``train|test/<class>/*.jpg``), of FERPlus's (``train|validation|test/<class>/``)
    and of RAF-DB's class-named copies. A root mixing split and class folders is an error.
    Folder names are mapped onto canonical classes (happy → happiness, angry → anger,
    ...; see `muldml.data.classes`); a name that does not map is an error unless
    ``any_classes``, which keeps it as a class of its own, lower-cased. Classes: the
    canonical ones present in canonical order, then any others sorted. ``subject_regex``:
    its first group, searched in the file name, is the subject (None where it does not match).
    """
    root = dataset_root(root)
    subjects = _subject_pattern(subject_regex)
    top = visible_folders(root)
    splits = [folder for folder in top if folder.name.lower() in SPLIT_FOLDERS]
    if splits and len(splits) < len(top):
        others = ", ".join(folder.name for folder in top if folder not in splits)
        raise UserError(f"{root}: split folders ({', '.join(f.name for f in splits)}) beside other folders "
                        f"({others}); expected either <class>/<image> or <split>/<class>/<image>")
    parents = [(folder, SPLIT_FOLDERS[folder.name.lower()]) for folder in splits] or [(root, None)]
    folders = [folder for parent, _ in parents for folder in visible_folders(parent) if images_in(folder)]
    if not folders:
        expected = "<split>/<class>/<image>" if splits else "<class>/<image>"
        raise UserError(f"no images found in {root} (expected {expected} folders)")
    unknown = sorted({folder.name for folder in folders if canonical_label(folder.name) is None})
    if unknown and not any_classes:
        raise UserError(f"{root}: class folder(s) {', '.join(unknown)} are not expression names "
                        f"({', '.join(CANONICAL_CLASSES)} or their aliases); rename them or allow any classes")
    items, warnings = [], []
    for parent, split in parents:
        found, problems = folder_items(root, parent, lambda name: canonical_label(name) or name.lower(),
                                       subjects=subjects, split=split)
        items += found
        warnings += problems
    return finish("folder", canonical_order(item.label for item in items if item.label), items, warnings, root)


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

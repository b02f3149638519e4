"""A generic ``<class>/<image>`` folder."""
from __future__ import annotations

import re
from pathlib import Path

from muldml.data.classes import CANONICAL_CLASSES
from muldml.data.sources.common import (canonical_label, canonical_order, dataset_root, finish, folder_items,
                                        images_in, visible_folders)
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError


def load_folder(root: str | Path, subject_regex: str | None = None, any_classes: bool = False) -> SourceDataset:
    """A generic image folder: ``<class>/<image>``, one sub-folder per class.

    Folder names are mapped onto canonical classes (happy → happiness, angry → anger,
    ...); a name that does not map is an error unless ``any_classes``, which keeps it
    as a class of its own, lower-cased. Classes: the canonical ones present in canonical
    order, then any others sorted. ``subject_regex``: its first group, searched in the
    file name, is the subject (None where it does not match).
    """
    root = dataset_root(root)
    subjects = _subject_pattern(subject_regex)
    folders = [folder for folder in visible_folders(root) if images_in(folder)]
    if not folders:
        raise UserError(f"no class folders with images in {root} (expected <class>/<image>)")
    unknown = [folder.name for folder in folders if canonical_label(folder.name) is None]
    if unknown and not any_classes:
        raise UserError(f"{root}: class folder(s) {', '.join(unknown)} are not expression names "
                        f"({', '.join(CANONICAL_CLASSES)}); rename them or allow any classes")
    items, warnings = folder_items(root, root, lambda name: canonical_label(name) or name.lower(), subjects=subjects)
    labels = {item.label for item in items if item.label}
    known = canonical_order(labels)
    return finish("folder", known + sorted(labels - set(known)), items, warnings)


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

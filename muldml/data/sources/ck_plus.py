"""CK+ (Extended Cohn-Kanade): as distributed (sequences + emotion files) and as class folders."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from muldml.data.sources.common import (canonical_label, canonical_order, dataset_root, file_item, finish, folder_items,
                                        images_in, other_files, parse_code, parse_number, rel, visible_files,
                                        visible_folders)
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError


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
    Operating-system metadata and hidden files (``._*``, ``.DS_Store``) are ignored.
    """
    root = dataset_root(root)
    images, emotions = root / "cohn-kanade-images", root / "Emotion"
    for folder in (images, emotions):
        if not folder.is_dir():
            raise UserError(f"CK+: {folder.name}/ not found in {root} (expected cohn-kanade-images/ and Emotion/)")
    items, warnings = [], []
    for subject in visible_folders(emotions):
        for sequence in visible_folders(subject):
            # A listing, not a glob: an archive unpacked on a Mac adds "._<name>_emotion.txt" beside each file.
            files = [f for f in visible_files(sequence) if f.name.endswith("_emotion.txt")]
            if not files:
                continue  # an unlabelled sequence: not part of the protocol
            label_file = rel(root, files[0])
            frames = images_in(images / subject.name / sequence.name)
            items += other_files(root, images / subject.name / sequence.name)
            if not frames:
                warnings.append(f"{label_file}: no frames in cohn-kanade-images/{subject.name}/{sequence.name}")
                continue
            label, reason = _ck_label(files)
            if reason:
                warnings.append(f"{label_file}: {reason}")
            items += [file_item(root, f, label, reason, subject=subject.name) for f in frames[-3:]]
            if include_neutral and label and len(frames) > 3:
                items.append(file_item(root, frames[0], "neutral", subject=subject.name))
    classes = canonical_order(_CK_CODES[1:] + (("neutral",) if include_neutral else ()))
    return finish("ck+", classes, items, warnings, root)


def _ck_label(files: Sequence[Path]) -> tuple[str | None, str | None]:
    """A sequence's label from its emotion file(s), or why there is none."""
    if len(files) > 1:
        return None, f"{len(files)} emotion files for one sequence"
    try:
        text = files[0].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable emotion file ({e.__class__.__name__})"
    code, reason = parse_code(text, range(1, len(_CK_CODES)), "emotion")
    if reason and parse_number(text) == 0:
        reason = "emotion 0 (neutral) labels no CK+ sequence"
    return (None, reason) if reason else (_CK_CODES[code], None)


def load_ck_plus_folders(root: str | Path) -> SourceDataset:
    """CK+ crops sorted into class folders: ``<class>/S005_001_00000011.png``.

    Folder names are mapped onto canonical classes (happy → happiness, sad → sadness,
    ...); the images of a folder with an unknown name are skipped, with a warning.
    Subject: the ``Sxxx`` prefix of the file name. Classes: those present, in canonical
    order (anger, disgust, fear, happiness, sadness, surprise, neutral, contempt).
    """
    root = dataset_root(root)
    items, warnings = folder_items(root, root, canonical_label, subjects=re.compile(r"^(S\d+)_"))
    if not items:
        raise UserError(f"CK+ folders: no images in {root} (expected <class>/<image> folders)")
    return finish("ck+-folders", canonical_order(i.label for i in items if i.label), items, warnings, root)

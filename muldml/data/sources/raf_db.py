"""RAF-DB basic: a label list and aligned or original images, or its image-folder copy."""
from __future__ import annotations

from pathlib import Path

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources.common import (among, dataset_root, file_item, finish, folder_items, parse_code, read_text,
                                        rel, visible_folders)
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError


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

    The image-folder copy (``train/<code>/*.jpg`` and ``test/<code>/*.jpg``, code 1-7 as
    above, or class names) is read when there is no label list; see `load_raf_db_folders`.
    """
    root = dataset_root(root)
    listing = root / "EmoLabel" / "list_patition_label.txt"
    if not listing.is_file() and any(f.name.lower() in ("train", "test") for f in visible_folders(root)):
        return load_raf_db_folders(root)
    if not listing.is_file():
        raise UserError(f"RAF-DB: label file {rel(root, listing)} not found in {root}")
    images = root / "Image" / ("aligned" if aligned else "original")
    if not images.is_dir():
        other = "aligned=False for Image/original" if aligned else "aligned=True for Image/aligned"
        raise UserError(f"RAF-DB: image folder {rel(root, images)} not found in {root} (or use {other})")
    items, warnings = [], []
    for number, line in enumerate(read_text(listing).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{listing.name} line {number}"
        if len(fields) != 2:
            warnings.append(f"{where}: expected '<image> <label>', got {line.strip()[:60]!r}")
            continue
        name, text = Path(fields[0]).name, fields[1]
        path = images / (f"{Path(name).stem}_aligned.jpg" if aligned else name)
        code, reason = parse_code(text, range(1, len(_RAF_CODES)))
        if not reason and not path.is_file():
            reason = "missing file"
        if reason:
            warnings.append(f"{where} ({name}): {reason}")
        prefix = name.split("_")[0]
        split = prefix if prefix in ("train", "test") else None
        items.append(file_item(root, path, None if reason else _RAF_CODES[code], reason, split=split))
    return finish("raf-db", list(EXPRESSIONS), items, warnings, root)


def load_raf_db_folders(root: str | Path) -> SourceDataset:
    """RAF-DB as the image-folder copy people share: ``train/<class>/`` (split "train") and
    ``test/<class>/`` ("test"), a class folder named by its RAF-DB code (1 surprise ...
    7 neutral) or by an expression name or alias. The images of any other folder are
    skipped, with a warning. No subjects. Classes: the 7 of `EXPRESSIONS`, in its order.
    """
    root = dataset_root(root)
    named = among(EXPRESSIONS)

    def label_of(name: str) -> str | None:
        if name.isdigit():
            return _RAF_CODES[int(name)] if 1 <= int(name) < len(_RAF_CODES) else None
        return named(name)

    items, warnings = [], []
    for folder in visible_folders(root):
        split = folder.name.lower()
        if split not in ("train", "test"):
            continue
        found, problems = folder_items(root, folder, label_of, split=split)
        items += found
        warnings += problems
    return finish("raf-db", list(EXPRESSIONS), items, warnings, root)

"""JAFFE: images named by subject and expression, all in one folder."""
from __future__ import annotations

import re
from pathlib import Path

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources.common import dataset_root, file_item, finish, images_in, other_files
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError


_JAFFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
                "SU": "surprise"}
_JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})\d*\.\d+\.\w+$", re.IGNORECASE)


def load_jaffe(root: str | Path) -> SourceDataset:
    """JAFFE: images named like ``KA.AN1.39.tiff`` directly in root.

    Subject: the first part (KA); expression: the letters of the second, AN anger,
    DI disgust, FE fear, HA happiness, NE neutral, SA sadness, SU surprise. An image with
    another name or code is skipped, with a warning; a file named like an image in a format
    Pillow does not read (``KA.AN1.39.heic``) is skipped. Classes: the 7 of `EXPRESSIONS`,
    in its order.
    """
    root = dataset_root(root)
    items, warnings = [], []
    for path in images_in(root):
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
        items.append(file_item(root, path, label, reason, subject=subject))
    if not items:
        raise UserError(f"JAFFE: no images in {root} (expected files like KA.AN1.39.tiff)")
    # The root also holds the distribution's notes: only files named like images are counted.
    items += [item for item in other_files(root, root) if _JAFFE_NAME.match(item.key)]
    return finish("jaffe", list(EXPRESSIONS), items, warnings, root)

"""AffectNet (manually annotated part): label tables and face boxes."""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from PIL import Image

from muldml.data.sources.common import canonical_order, csv_rows, dataset_root, finish, parse_code, parse_number
from muldml.data.sources.items import RawItem, SourceDataset
from muldml.errors import UserError


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
    root = dataset_root(root)
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
        for number, row in enumerate(csv_rows(table, ("subDirectory_filePath", "expression")), 1):
            relative = (row.get("subDirectory_filePath") or "").strip()
            if not relative:
                warnings.append(f"{table.name} row {number}: no image path")
                continue
            key, path = f"{images.name}/{relative}", images / relative
            code, reason = parse_code(row.get("expression"), range(len(_AFFECTNET_CODES)), "expression")
            if reason or (code < classes and not path.is_file()):
                reason = reason or "missing file"
                warnings.append(f"{key}: {reason}")
            elif code >= classes:
                reason = f"AffectNet code {code} ({_AFFECTNET_CODES[code]}) not among the {classes} classes"
            box = _face_box(row)
            load = partial(_open_cropped, path, box) if box else partial(Image.open, path)
            items.append(RawItem(key, load, None if reason else _AFFECTNET_CODES[code], split=split,
                                 skip_reason=reason))
    return finish("affectnet", canonical_order(_AFFECTNET_CODES[:classes]), items, warnings, root)


def _face_box(row: dict[str, str]) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) from AffectNet's face_x/y/width/height; None when absent or invalid."""
    values = [parse_number(row.get(column)) for column in _FACE_BOX]
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

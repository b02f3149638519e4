"""SFEW 2.0: Train/ and Val/ class folders."""
from __future__ import annotations

from pathlib import Path

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources.common import among, dataset_root, finish, folder_items
from muldml.data.sources.items import SourceDataset
from muldml.errors import UserError


def load_sfew(root: str | Path) -> SourceDataset:
    """SFEW 2.0: ``Train/<Class>/*.png`` (split "train") and ``Val/<Class>/*.png`` ("val").

    Class folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise map onto anger,
    disgust, fear, happiness, neutral, sadness, surprise; the images of any other folder
    (contempt included) are skipped, with a warning. No subjects. Classes: the 7 of
    `EXPRESSIONS`, in its order.
    """
    root = dataset_root(root)
    parts = [(root / folder, split) for folder, split in (("Train", "train"), ("Val", "val"))]
    if not any(folder.is_dir() for folder, _ in parts):
        raise UserError(f"SFEW: neither Train/ nor Val/ found in {root}")
    items, warnings = [], []
    for folder, split in parts:
        if not folder.is_dir():
            warnings.append(f"{folder.name}/ not found: no {split} split")
            continue
        found, problems = folder_items(root, folder, among(EXPRESSIONS), split=split)
        items += found
        warnings += problems
    return finish("sfew", list(EXPRESSIONS), items, warnings, root)

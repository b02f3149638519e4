"""Small image datasets the tests make for themselves (no dataset file is ever committed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern_image(label: int, subject: int, k: int, size: int = 32) -> Image.Image:
    """A grey image with a bright bar whose row encodes the class, shifted per subject."""
    rng = np.random.default_rng(1000 * subject + 10 * label + k)
    pixels = rng.integers(40, 90, (size, size, 3), dtype=np.uint8)
    row = (label * size) // 8 + 2
    pixels[row : row + 3, 2 + subject % 4 : size - 2, :] = 230
    return Image.fromarray(pixels)


def make_image_folder(root: Path, classes=("anger", "happiness", "surprise"), subjects: int = 4,
                      per_subject: int = 2, size: int = 32) -> Path:
    """root/<class>/S<subject>_<k>.png, learnable from the bar position."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for s in range(subjects):
            for k in range(per_subject):
                pattern_image(c, s, k, size).save(root / name / f"S{s:03d}_{name}_{k}.png")
    return root

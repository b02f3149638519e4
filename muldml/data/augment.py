"""The paper's on-the-fly augmentation: a crop from one of five positions and a flip.

Training: a crop from one of the four corners or the centre, chosen at random, then a
random horizontal flip. Evaluation: the centre crop only, the same box as training's
centre position (`crop_box` is the one definition of every position). The paper crops
224 from 236; other sizes crop in proportion (``crop_size``). Offline rotations live in
prepare.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

PAPER_CROP_RATIO = 224 / 236
POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


def crop_size(image_size: int) -> int:
    """Crop side for an image side, in the paper's proportion (236 → 224, 64 → 61)."""
    return max(1, round(image_size * PAPER_CROP_RATIO))


def crop_box(width: int, height: int, crop: int, position: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop×crop box at one of the five positions, pixels.

    The centre box starts at ⌊(side − crop)/2⌋ (64 → 61: offset 1). Raises ValueError when
    the crop is larger than the image or the position is not one of `POSITIONS`.
    """
    if position not in POSITIONS:
        raise ValueError(f"unknown crop position {position!r}; one of {', '.join(POSITIONS)}")
    if crop > min(width, height):
        raise ValueError(f"crop {crop} larger than the image {width}×{height}")
    left = {"top_left": 0, "bottom_left": 0, "top_right": width - crop, "bottom_right": width - crop}.get(
        position, (width - crop) // 2)
    top = {"top_left": 0, "top_right": 0, "bottom_left": height - crop, "bottom_right": height - crop}.get(
        position, (height - crop) // 2)
    return left, top, left + crop, top + crop


class FivePositionCrop(torch.nn.Module):
    """Crop from a corner or the centre, drawn uniformly from torch's RNG; with one position
    (``positions=("center",)``, the evaluation crop) always there, drawing nothing."""

    def __init__(self, crop: int, positions: tuple[str, ...] = POSITIONS) -> None:
        super().__init__()
        self.crop, self.positions = crop, positions

    def forward(self, img: Image.Image) -> Image.Image:
        position = self.positions[0]
        if len(self.positions) > 1:
            position = self.positions[int(torch.randint(len(self.positions), ()))]
        return img.crop(crop_box(*img.size, self.crop, position))


def _resize_if_small(image_size: int):
    # Images smaller than the working size are scaled up, larger ones down: one square size.
    return v2.Resize((image_size, image_size), antialias=True)


def _to_tensor() -> v2.Compose:
    return v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])


def train_transform(image_size: int, crop: int | None = None) -> v2.Compose:
    """Resize to image_size², five-position crop, random flip → (3, crop, crop) in [-1, 1]."""
    crop = crop or crop_size(image_size)
    return v2.Compose([_resize_if_small(image_size), FivePositionCrop(crop), v2.RandomHorizontalFlip(), _to_tensor()])


def eval_transform(image_size: int, crop: int | None = None) -> v2.Compose:
    """Resize to image_size², centre crop → (3, crop, crop) in [-1, 1]."""
    crop = crop or crop_size(image_size)
    return v2.Compose([_resize_if_small(image_size), FivePositionCrop(crop, ("center",)), _to_tensor()])

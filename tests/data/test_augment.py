import numpy as np
import pytest
import torch
from PIL import Image

from muldml.data.augment import FivePositionCrop, crop_box, crop_size, eval_transform, train_transform


def test_crop_sizes_follow_the_paper():
    assert crop_size(236) == 224
    assert crop_size(64) == 61


def test_five_positions():
    assert crop_box(236, 236, 224, "top_left") == (0, 0, 224, 224)
    assert crop_box(236, 236, 224, "bottom_right") == (12, 12, 236, 236)
    assert crop_box(236, 236, 224, "center") == (6, 6, 230, 230)
    assert crop_box(236, 236, 224, "top_right") == (12, 0, 236, 224)
    assert crop_box(236, 236, 224, "bottom_left") == (0, 12, 224, 236)


def test_random_crop_visits_all_five_positions_and_flips():
    # A gradient image identifies the crop by its top-left pixel.
    x = torch.arange(20).repeat(20, 1)
    img = Image.fromarray((x * 10 + x.t()).numpy().astype("uint8"))
    crop = FivePositionCrop(16)
    torch.manual_seed(0)
    corners = {crop(img).getpixel((0, 0)) for _ in range(200)}
    assert corners == {0, 40, 4, 44, 22}  # value = 10·left + top
    t = train_transform(20, 16)
    outs = {tuple(t(img.convert("RGB"))[0, 0, :2].tolist()) for _ in range(100)}
    assert len(outs) >= 6  # five positions × flip


def test_eval_is_the_centre_crop_deterministically():
    img = Image.new("RGB", (40, 40))
    a, b = eval_transform(40)(img), eval_transform(40)(img)
    assert a.shape == (3, 38, 38) and torch.equal(a, b)


def test_eval_centre_crop_is_training_centre_position():
    # 64 → 61 used to be offset 1 in training and 2 in evaluation (torchvision's rounding).
    for size in range(20, 80):
        crop = crop_size(size)
        x = torch.arange(size * size, dtype=torch.int32).reshape(size, size)
        img = Image.fromarray(((x * 7919) % 251).numpy().astype("uint8")).convert("RGB")  # every position differs
        box = crop_box(size, size, crop, "center")  # what FivePositionCrop cuts at the centre position
        left, top, _, _ = box
        centre = img.crop(box)
        assert (left, top) == ((size - crop) // 2,) * 2
        expected = torch.from_numpy(np.array(centre)).permute(2, 0, 1).float() / 255 * 2 - 1
        assert torch.allclose(eval_transform(size)(img), expected, atol=1e-6), size
    assert crop_box(64, 64, 61, "center")[:2] == (1, 1)


def test_unknown_crop_position_is_an_error():
    with pytest.raises(ValueError, match="position"):
        crop_box(64, 64, 61, "middle")

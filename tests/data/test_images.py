"""One conversion for every path that opens a picture: 16-bit, palette, CMYK, alpha and 1-bit files."""
import numpy as np
import pytest
import torch
from PIL import Image

from muldml.data.augment import eval_transform
from muldml.data.folder import FaceDataset, Sample
from muldml.data.images import read_image, to_rgb
from muldml.data.sources.common import file_item
from muldml.errors import UserError
from muldml.inference import as_pil
from muldml.predict import open_photo
from muldml.prepare import _open

SIDE = 24


def reference() -> np.ndarray:
    """(SIDE, SIDE, 3) uint8: a colour ramp with dark and bright parts."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([x * 10, y * 10, (x + y) * 5 + 8], axis=-1).clip(0, 255).astype(np.uint8)


def write_modes(folder):
    """{name: (file, expected 8-bit RGB pixels)} for the picture modes people's files come in."""
    rgb = reference()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    as_rgb = lambda g: np.repeat(g[:, :, None], 3, axis=2)  # noqa: E731
    files = {}

    def save(name, image, expected, **options):
        image.save(folder / name, **options)
        files[name] = (folder / name, expected)

    save("grey8.png", Image.fromarray(grey), as_rgb(grey))
    grey16 = Image.fromarray(grey.astype(np.uint16) * 257)  # the same picture at 16 bits
    assert grey16.mode.startswith("I;16")
    save("grey16.png", grey16, as_rgb(grey))
    palette = Image.fromarray(rgb).convert("P")
    save("palette.png", palette, np.asarray(palette.convert("RGB")))
    transparent = np.asarray(palette.convert("RGB")).copy()
    transparent[np.asarray(palette) == 0] = 0  # the transparent colour's pixels, flattened on black
    save("palette_transparent.png", palette, transparent, transparency=0)
    save("cmyk.tif", Image.fromarray(rgb).convert("CMYK"), np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB")))
    la = Image.fromarray(grey).convert("LA")
    la.putalpha(255)
    save("la.png", la, as_rgb(grey))
    rgba = Image.fromarray(rgb).convert("RGBA")
    alpha = np.full((SIDE, SIDE), 255, np.uint8)
    alpha[: SIDE // 2] = 0  # top half fully transparent: black, whatever colour it stores
    rgba.putalpha(Image.fromarray(alpha))
    half = rgb.copy()
    half[: SIDE // 2] = 0
    save("rgba.png", rgba, half)
    bits = Image.fromarray(grey > 100).convert("1")
    save("bits.png", bits, as_rgb(np.where(grey > 100, 255, 0).astype(np.uint8)))
    return files


READERS = {
    "read_image": read_image,
    "predict": lambda path: open_photo(path)[0],
    "prepare": lambda path: _open(file_item(path.parent, path, "anger"))[0],
    "inference": lambda path: to_rgb(as_pil(Image.open(path)))[0],
}


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_converts_every_mode_to_the_same_8bit_rgb(tmp_path, reader):
    for name, (path, expected) in write_modes(tmp_path).items():
        image = READERS[reader](path)
        assert image.mode == "RGB" and image.size == (SIDE, SIDE), name
        got = np.asarray(image).astype(int)
        assert np.abs(got - expected.astype(int)).max() <= 1, f"{reader} reads {name} wrongly"


def test_training_and_evaluation_see_a_16bit_file_as_its_8bit_copy(tmp_path):
    files = write_modes(tmp_path)
    data = FaceDataset([Sample(files["grey8.png"][0], 0), Sample(files["grey16.png"][0], 0)], eval_transform(SIDE))
    eight, sixteen = data[0][0], data[1][0]
    assert torch.allclose(eight, sixteen, atol=1e-2)
    assert sixteen.std() > 0.1  # not a flat white square


def test_an_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image .*text.png"):
        read_image(tmp_path / "text.png")
    good = tmp_path / "good.png"
    Image.fromarray(reference()).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="cannot read image .*cut.png"):
        read_image(tmp_path / "cut.png")

"""Reading pictures: one conversion to 8-bit RGB for every path that opens an image.

prepare (source images), training, evaluation and the studies (prepared faces through
`muldml.data.folder.FaceDataset`), predict and the inference API all read pictures
through `to_rgb`, and files through `read_image`: a picture gives the same pixels
whichever command reads it. Pillow's own ``convert("RGB")`` is not enough on its own:
it clips 16-bit grey values (a 16-bit PNG reads as all white) and drops alpha onto
whatever colour the transparent pixels happen to hold.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from muldml.errors import UserError

__all__ = ["to_rgb", "open_image", "read_image"]

# Modes whose values can exceed 8 bits: scaled into 0-255 rather than clipped.
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """8-bit RGB from any PIL image, and notes saying what was converted (for summaries).

    EXIF orientation is applied first. 16-bit grey (modes I;16*) is scaled from 0-65535 to
    0-255 (a 16-bit copy of an 8-bit picture, values ×257, gives the 8-bit picture back);
    32-bit grey (I, F) likewise when its values pass 255, by its peak when they pass
    65535, and is kept as it is when they stay within 0-255. Alpha (RGBA, LA,
    PA, a palette with a transparent colour) is flattened onto black. CMYK, YCbCr, 1-bit,
    palette and the rest go through Pillow's conversion.
    """
    notes = []
    transposed = ImageOps.exif_transpose(img)
    if transposed is not img and img.getexif().get(0x0112, 1) != 1:
        notes.append("EXIF rotation applied")
    img = transposed
    if img.mode in _WIDE_MODES:
        pixels = np.asarray(img, dtype=np.float64)
        peak = pixels.max(initial=0.0)
        # 16-bit files span 0-65535 whatever they hold: a fixed scale, never the image's own
        # peak, so that a dark picture stays dark and 8-bit copies read alike.
        full = 65535.0 if img.mode.startswith("I;16") or 255 < peak <= 65535 else max(peak, 255.0)
        img = Image.fromarray(np.clip(np.rint(pixels * (255.0 / full)), 0, 255).astype(np.uint8))
        notes.append("16-bit converted to 8-bit")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
        notes.append("alpha channel flattened")
    elif img.mode not in ("RGB", "L"):
        notes.append(f"{img.mode} converted to RGB")
    return img.convert("RGB"), notes


def open_image(path: str | Path) -> tuple[Image.Image, list[str]]:
    """A picture file as 8-bit RGB (`to_rgb`) and its conversion notes.

    The file is decoded in full here, so a truncated file fails here, not later. Raises
    what Pillow raises (OSError, UnidentifiedImageError, ValueError, ...) for an unreadable
    file; `read_image` turns that into one line.
    """
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """A picture file as 8-bit RGB (`to_rgb`), or in ``mode`` ("L": grey) converted from it.

    Raises UserError (one line naming the file) when the file cannot be read.
    """
    try:
        rgb, _ = open_image(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    return rgb if mode == "RGB" else rgb.convert(mode)

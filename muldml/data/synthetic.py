"""Built-in demo faces: procedurally drawn people showing the 7 basic expressions.

Who someone is (background, skin tone, face shape, hair, shirt, eye spacing, nose,
glasses) covers most of the pixels; how they feel (mouth curve and opening, brow height
and angle, eye opening, creases) only a few. So raw pixel distance says more
about who than about how, the problem of the Mul-DML paper's Fig. 1, and a useful
metric has to be learnt. Every image adds pose (in-plane rotation, scale, shift), a
lighting gradient, pixel noise and a random expression intensity.

Images are drawn with PIL at 4x the output size and downsampled for smooth edges. All
randomness comes from numpy Generators seeded by (seed, subject, expression, k), so the
same arguments give the same bytes. ``write_demo_dataset`` writes an ordinary image
folder with subject ids, which the loaders and subject-independent splits of real
datasets read unchanged.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.data.classes import EXPRESSIONS

__all__ = ["EXPRESSIONS", "HAIR_STYLES", "Identity", "sample_identity", "render_face", "generate_faces",
           "write_demo_dataset"]

HAIR_STYLES = ("bald", "crop", "fringe", "parted", "long", "curly")
SUPERSAMPLE = 4  # drawn at 4x, then downsampled: antialiased edges at any size
_DRAWING = 1  # part of a written folder's stamp: a folder drawn differently is regenerated

_NATURAL_HAIR = ((25, 20, 20), (60, 40, 28), (105, 70, 40), (140, 65, 30), (210, 175, 105), (165, 160, 155))
_MOUTH = (70, 22, 30)  # inside of an open mouth
_TEETH = (238, 234, 222)
_SCLERA = (246, 244, 240)
_PUPIL = (18, 14, 12)


@dataclass(frozen=True)
class _Shape:
    """How an expression moves a face, as offsets from neutral at full intensity.

    Mouth lengths are in units of the face's half-height, brow and eye ones in eye radii.
    """

    smile: float = 0.0  # mouth corners above the middle (negative: turned down)
    open: float = 0.0  # gap between the lips
    upper_share: float = 0.5  # how much of the opening the upper lip takes
    width: float = 0.0  # relative change of the mouth width
    snarl: float = 0.0  # upper lip raised on one side only
    teeth: float = 0.0  # share of the opening showing teeth
    press: float = 0.0  # lips pressed into a thin dark line
    brow_raise: float = 0.0
    brow_tilt: float = 0.0  # inner ends up (sad, afraid) or down (angry)
    brow_pinch: float = 0.0  # inner ends drawn towards the nose
    brow_arch: float = 0.0
    eye_open: float = 0.0  # relative change of the eye height
    wrinkle: float = 0.0  # a wrinkled nose
    furrow: float = 0.0  # vertical creases between the brows


_SHAPES = {
    "anger": _Shape(smile=-0.04, width=-0.25, press=1.0, brow_raise=-0.5, brow_tilt=-1.1, brow_pinch=0.35,
                    eye_open=-0.35, furrow=1.0),
    "disgust": _Shape(smile=-0.08, open=0.06, width=-0.1, snarl=0.16, teeth=0.5, brow_raise=-0.45, brow_tilt=-0.4,
                      brow_pinch=0.25, eye_open=-0.4, wrinkle=1.0),
    "fear": _Shape(smile=-0.05, open=0.14, width=0.3, teeth=0.45, brow_raise=0.7, brow_tilt=0.8, brow_pinch=0.35,
                   eye_open=0.6),
    "happiness": _Shape(smile=0.18, open=0.2, upper_share=0.1, width=0.1, teeth=0.5, brow_raise=0.1,
                        eye_open=-0.3),
    "sadness": _Shape(smile=-0.15, width=-0.1, brow_raise=0.15, brow_tilt=1.0, brow_pinch=0.15, eye_open=-0.2),
    "surprise": _Shape(open=0.36, width=-0.5, brow_raise=1.1, brow_arch=0.5, eye_open=0.7),
    "neutral": _Shape(),
}


@dataclass(frozen=True)
class Identity:
    """One person's look. Lengths are fractions of the image side; colours are RGB 0-255."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str  # one of HAIR_STYLES
    shirt: tuple[int, int, int]
    iris: tuple[int, int, int]
    face_width: float  # half-width of the face ellipse
    face_height: float  # half-height of the face ellipse
    eye_height: float  # eyes above the face centre, in face half-heights
    eye_spacing: float  # eye offset from the midline, in face half-widths
    eye_size: float  # eye radius
    brow_height: float  # brows above the eyes, in eye radii
    brow_thickness: float
    nose_length: float
    nose_width: float
    mouth_height: float  # mouth below the face centre, in face half-heights
    mouth_width: float  # mouth half-width, in face half-widths
    ear_size: float
    glasses: str | None  # None, "round" or "square"


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random person from `rng`."""

    def vary(colour: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
        return tuple(int(np.clip(c + v, 0, 255)) for c, v in zip(colour, rng.integers(-spread, spread + 1, 3)))

    tone = rng.uniform()  # from dark to light skin
    skin = vary((round(95 + 150 * tone), round(60 + 145 * tone), round(40 + 140 * tone)), 10)
    dyed = rng.uniform() < 0.1
    hair = tuple(int(v) for v in rng.integers(20, 236, 3)) if dyed else _NATURAL_HAIR[rng.integers(len(_NATURAL_HAIR))]
    return Identity(
        background=tuple(int(v) for v in rng.integers(25, 231, 3)),
        skin=skin,
        hair=vary(hair, 15),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        shirt=tuple(int(v) for v in rng.integers(15, 241, 3)),
        iris=vary(((60, 40, 25), (40, 90, 140), (70, 110, 60), (110, 80, 45))[rng.integers(4)], 15),
        face_width=float(rng.uniform(0.21, 0.28)),
        face_height=float(rng.uniform(0.27, 0.32)),
        eye_height=float(rng.uniform(0.05, 0.18)),
        eye_spacing=float(rng.uniform(0.36, 0.48)),
        eye_size=float(rng.uniform(0.042, 0.055)),
        brow_height=float(rng.uniform(1.3, 1.8)),
        brow_thickness=float(rng.uniform(0.018, 0.028)),
        nose_length=float(rng.uniform(0.06, 0.1)),
        nose_width=float(rng.uniform(0.025, 0.045)),
        mouth_height=float(rng.uniform(0.5, 0.6)),
        mouth_width=float(rng.uniform(0.32, 0.42)),
        ear_size=float(rng.uniform(0.03, 0.045)),
        glasses=(None, "round", "square")[rng.choice(3, p=(0.7, 0.15, 0.15))],
    )


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """`colour` darkened (factor < 1) or lightened."""
    return tuple(int(min(255, c * factor)) for c in colour)


def _bump(t: float) -> float:
    """0 at the mouth corners, 1 in the middle; the root makes the ends round."""
    return math.sqrt(max(0.0, math.sin(math.pi * t)))


def render_face(identity: Identity, expression: str | int, rng: np.random.Generator, size: int = 64, *,
                jitter: bool = True) -> Image.Image:
    """Draw `identity` showing `expression` (a name or an index into EXPRESSIONS).

    Returns an RGB image of `size` x `size` pixels. `rng` sets this image's expression
    intensity, pose, light and noise; `jitter=False` gives the canonical pose at full
    intensity with flat light and no noise.
    """
    if isinstance(expression, (int, np.integer)) and 0 <= expression < len(EXPRESSIONS):
        expression = EXPRESSIONS[expression]
    if expression not in _SHAPES:
        raise ValueError(f"unknown expression {expression!r}; expected one of {EXPRESSIONS} or an index")
    shape = _SHAPES[expression]
    k = rng.uniform(0.75, 1.25) if jitter else 1.0  # how strongly this image shows the expression

    s = size * SUPERSAMPLE
    img = Image.new("RGB", (s, s), identity.background)
    draw = ImageDraw.Draw(img)
    cx, cy = s / 2, s * 0.45
    rx, ry = identity.face_width * s, identity.face_height * s
    line = max(1, round(s * 0.012))  # outlines: eyelids, glasses, nose, wrinkles

    # Body and head, back to front.
    shoulders = s * 0.5 * (identity.face_width / 0.25)
    draw.ellipse([cx - shoulders, s * 0.82, cx + shoulders, s * 1.4], fill=identity.shirt)
    draw.rectangle([cx - rx * 0.42, cy, cx + rx * 0.42, s * 0.9], fill=_shade(identity.skin, 0.82))
    style = identity.hair_style
    if style == "long":  # falls behind the face onto the shoulders
        draw.rounded_rectangle([cx - rx * 1.25, cy - ry * 1.12, cx + rx * 1.25, cy + ry * 1.2], radius=rx,
                               fill=identity.hair)
    eye_y = cy - identity.eye_height * ry
    ear = identity.ear_size * s
    for side in (-1, 1):
        ex = cx + side * rx * 0.97
        draw.ellipse([ex - ear, eye_y - ear * 0.4, ex + ear, eye_y + ear * 2.1], fill=_shade(identity.skin, 0.92))
    if style == "curly":  # a ring of curls around the top of the head
        curl = rx * 0.32
        for a in np.linspace(math.pi * 0.95, math.pi * 2.05, 11):
            x, y = cx + rx * 1.0 * math.cos(a), cy - ry * 0.25 + ry * 0.85 * math.sin(a)
            draw.ellipse([x - curl, y - curl, x + curl, y + curl], fill=identity.hair)
    elif style != "bald":  # a cap of hair a little larger than the skull
        draw.chord([cx - rx * 1.07, cy - ry * 1.1, cx + rx * 1.07, cy + ry * 0.6], 180, 360, fill=identity.hair)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=identity.skin)
    top = cy - ry
    if style in ("crop", "long", "curly"):  # hairline over the forehead
        draw.chord([cx - rx, top, cx + rx, top + ry * 0.55], 180, 360, fill=identity.hair)
    elif style == "fringe":
        draw.chord([cx - rx, top, cx + rx, top + ry * 0.95], 180, 360, fill=identity.hair)
    elif style == "parted":  # swept to one side from a parting
        points = [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(math.pi, 2 * math.pi, 25)]
        draw.polygon(points + [(cx + rx * 0.95, cy - ry * 0.55), (cx - rx * 0.2, cy - ry * 0.8),
                               (cx - rx * 0.95, cy - ry * 0.3)], fill=identity.hair)

    # Eyes: height from the eye opening; the lid line makes them read at small sizes.
    eye_r = identity.eye_size * s
    eye_h = eye_r * 0.62 * max(0.25, 1 + shape.eye_open * k)
    eye_dx = identity.eye_spacing * rx
    brow = max(1, round(identity.brow_thickness * s))
    # Brows take the hair's colour, but always darker than the skin so they read on any face.
    brow_colour = tuple(min(h, c) for h, c in zip(_shade(identity.hair, 0.55), _shade(identity.skin, 0.5)))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([ex - eye_r, eye_y - eye_h, ex + eye_r, eye_y + eye_h], fill=_SCLERA)
        iris_w = eye_r * 0.55
        iris_h = min(iris_w, eye_h)
        draw.ellipse([ex - iris_w, eye_y - iris_h, ex + iris_w, eye_y + iris_h], fill=identity.iris)
        draw.ellipse([ex - iris_w / 2, eye_y - iris_h / 2, ex + iris_w / 2, eye_y + iris_h / 2], fill=_PUPIL)
        draw.arc([ex - eye_r, eye_y - eye_h, ex + eye_r, eye_y + eye_h], 190, 350, fill=_PUPIL, width=line)

        # Brow from its inner end (towards the nose) over an arch to its outer end.
        base = eye_y - eye_r * (identity.brow_height + shape.brow_raise * k)
        inner = (ex - side * eye_r * (0.9 + shape.brow_pinch * k), base - shape.brow_tilt * k * eye_r * 0.75)
        outer = (ex + side * eye_r * 1.25, base + shape.brow_tilt * k * eye_r * 0.2)
        middle = ((inner[0] + 2 * outer[0]) / 3, (inner[1] + 2 * outer[1]) / 3 - eye_r * (0.3 + shape.brow_arch * k))
        draw.line([inner, middle, outer], fill=brow_colour, width=brow, joint="curve")
        for x, y in (inner, outer):  # round ends
            draw.ellipse([x - brow / 2, y - brow / 2, x + brow / 2, y + brow / 2], fill=brow_colour)

        if identity.glasses:
            g = eye_r * 1.55
            box = [ex - g, eye_y - g * 0.85, ex + g, eye_y + g * 0.85]
            if identity.glasses == "round":
                draw.ellipse(box, outline=(30, 30, 35), width=line)
            else:
                draw.rounded_rectangle(box, radius=g * 0.3, outline=(30, 30, 35), width=line)
    if shape.furrow:
        for side in (-1, 1):
            x = cx + side * eye_r * 0.3
            draw.line([(x, eye_y - eye_r * 2.2), (x - side * eye_r * 0.1, eye_y - eye_r * 0.9)],
                      fill=_shade(identity.skin, 0.6), width=line)
    if identity.glasses:
        g = eye_r * 1.55
        draw.line([(cx - eye_dx + g, eye_y), (cx + eye_dx - g, eye_y)], fill=(30, 30, 35), width=line)

    # Nose: a shaded side, nostrils, and wrinkles across the bridge in disgust.
    shade = _shade(identity.skin, 0.72)
    nose_bottom = eye_y + eye_r * 0.6 + identity.nose_length * s
    nw = identity.nose_width * s * (1 + 0.25 * shape.wrinkle * k)
    draw.line([(cx + nw * 0.3, eye_y + eye_r * 0.5), (cx + nw * 0.7, nose_bottom - nw * 0.3)], fill=shade, width=line)
    draw.arc([cx - nw, nose_bottom - nw * 0.8, cx + nw, nose_bottom + nw * 0.4], 20, 160, fill=shade, width=line)
    for side in (-1, 1):
        nx = cx + side * nw * 0.55
        draw.ellipse([nx - nw * 0.22, nose_bottom - nw * 0.2, nx + nw * 0.22, nose_bottom + nw * 0.08], fill=shade)
    if shape.wrinkle:
        for j in range(3):
            y = eye_y + eye_r * (0.4 + 0.45 * j)
            draw.line([(cx - nw * 0.8, y + nw * 0.15), (cx, y - nw * 0.1), (cx + nw * 0.8, y + nw * 0.15)],
                      fill=shade, width=line)

    # Mouth: a middle line bent by the smile, opened around it as a rounded slot.
    mouth_y = cy + identity.mouth_height * ry
    half = identity.mouth_width * rx * max(0.3, 1 + shape.width * k)
    smile, gap, snarl = shape.smile * k * ry, shape.open * k * ry, shape.snarl * k * ry
    ts = np.linspace(0, 1, 33)
    xs = [cx - half + 2 * half * t for t in ts]
    middle = [mouth_y - smile * (2 * t - 1) ** 2 for t in ts]
    upper = [(x, m - (gap * shape.upper_share + snarl * (1 - t)) * _bump(t)) for x, m, t in zip(xs, middle, ts)]
    lower = [(x, m + gap * (1 - shape.upper_share) * _bump(t)) for x, m, t in zip(xs, middle, ts)]
    lips = (int(min(255, identity.skin[0] * 0.6 + 75)), int(identity.skin[1] * 0.4), int(identity.skin[2] * 0.45))
    lip = max(2, round(s * 0.02))
    if gap + snarl > lip:
        draw.polygon(upper + lower[::-1], fill=_MOUTH)
        if shape.teeth:  # a band under the upper lip, never below the lower one
            teeth = [(x, min(y + (gap + snarl) * shape.teeth * _bump(t), low))
                     for (x, y), (_, low), t in zip(upper, lower, ts)]
            draw.polygon(upper + teeth[::-1], fill=_TEETH)
        draw.line(upper, fill=lips, width=lip, joint="curve")
        draw.line(lower, fill=lips, width=round(lip * 1.3), joint="curve")
    elif shape.press:
        draw.line(upper, fill=_shade(lips, 0.55), width=max(1, round(lip * 0.7)), joint="curve")
    else:
        draw.line(upper, fill=lips, width=round(lip * 1.3), joint="curve")

    if jitter:
        img = _pose(img, angle=rng.uniform(-8, 8), scale=rng.uniform(0.93, 1.07),
                    shift=rng.uniform(-0.04, 0.04, 2) * s, fill=identity.background)
    img = img.resize((size, size), Image.LANCZOS)
    if not jitter:
        return img

    # Light falling off across the face from a random side, then sensor noise.
    pixels = np.asarray(img, dtype=np.float64)
    direction, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.08, 0.25)
    axis = np.linspace(-1, 1, size)
    ramp = math.cos(direction) * axis[None, :] + math.sin(direction) * axis[:, None]
    pixels = pixels * (1 + strength * ramp)[..., None] + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _pose(img: Image.Image, angle: float, scale: float, shift: np.ndarray,
          fill: tuple[int, int, int]) -> Image.Image:
    """Rotate by `angle` degrees and scale about the centre, then shift by `shift` pixels."""
    c = img.size[0] / 2
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    # PIL asks where each output pixel comes from: the inverse map, output -> input.
    tx, ty = c + shift[0], c + shift[1]
    coeffs = (cos, sin, c - cos * tx - sin * ty, -sin, cos, c + sin * tx - cos * ty)
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill)


def generate_faces(num_subjects: int = 40, images_per_expression: int = 2, size: int = 64,
                   seed: int = 0) -> Iterator[tuple[Image.Image, int, str]]:
    """Yield (RGB image `size` x `size`, class index into EXPRESSIONS, subject id "S007").

    Subjects in order, then expressions, then repetitions; each image depends only on
    (seed >= 0, subject, expression, repetition), so any one can be regenerated alone.
    """
    for image, label, subject, _ in _faces(num_subjects, images_per_expression, size, seed):
        yield image, label, subject


def _faces(num_subjects: int, images_per_expression: int, size: int,
           seed: int) -> Iterator[tuple[Image.Image, int, str, int]]:
    """generate_faces with each image's repetition index k as well."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    for subject in range(num_subjects):
        # Separate streams for people (0) and images (1), so that neither shifts the other.
        identity = sample_identity(np.random.default_rng([seed, 0, subject]))
        for label in range(len(EXPRESSIONS)):
            for k in range(images_per_expression):
                rng = np.random.default_rng([seed, 1, subject, label, k])
                yield render_face(identity, label, rng, size), label, f"S{subject:03d}", k


def write_demo_dataset(out_dir: str | Path, num_subjects: int = 40, images_per_expression: int = 2, size: int = 64,
                       seed: int = 0, progress: bool = True) -> Path:
    """Write the demo faces as an ordinary image folder and return `out_dir`.

    Layout: ``out_dir/<expression>/<subject>_<expression>_<k>.png`` (`size` x `size` RGB)
    plus ``manifest.csv`` (path relative to out_dir, label, subject) and, last,
    ``demo.json`` with the parameters. Every file is written atomically. A folder that
    already holds the complete dataset for these parameters is returned untouched.
    """
    out = Path(out_dir)
    params = {"num_subjects": num_subjects, "images_per_expression": images_per_expression, "size": size,
              "seed": seed, "drawing": _DRAWING}
    stamp, manifest = out / "demo.json", out / "manifest.csv"
    if _complete(out, stamp, manifest, params):
        return out

    # The old stamp goes first: an interrupted rewrite must never pass as complete.
    stamp.unlink(missing_ok=True)
    for name in EXPRESSIONS:
        (out / name).mkdir(parents=True, exist_ok=True)
    rows = []
    faces = _faces(num_subjects, images_per_expression, size, seed)
    total = num_subjects * len(EXPRESSIONS) * images_per_expression
    for image, label, subject, k in tqdm(faces, total=total, disable=not progress, desc="demo faces", unit="img"):
        name = EXPRESSIONS[label]
        path = f"{name}/{subject}_{name}_{k}.png"
        atomic.save_png(out / path, image)
        rows.append((path, name, subject))

    # Images of an earlier, larger run, or temporary files of a killed one, would
    # otherwise sit beside the new images in the class folders.
    written = {out / path for path, _, _ in rows}
    ours = re.compile(r"^\.?S\d+_[a-z]+_\d+\.png(\..*\.tmp)?$")
    for name in EXPRESSIONS:
        for old in (out / name).iterdir():
            if ours.match(old.name) and old not in written:
                old.unlink()

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("path", "label", "subject"))
    writer.writerows(rows)
    atomic.write_text(manifest, table.getvalue())
    atomic.write_json(stamp, params)
    return out


def _complete(out: Path, stamp: Path, manifest: Path, params: dict) -> bool:
    """Whether `out` holds a finished dataset for `params`, with every listed image present."""
    try:
        if json.loads(stamp.read_text()) != params:
            return False
        with open(manifest, newline="", encoding="utf-8") as f:
            return all((out / row["path"]).is_file() for row in csv.DictReader(f))
    except (OSError, ValueError, KeyError):
        return False

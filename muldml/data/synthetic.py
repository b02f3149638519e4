"""Built-in demo faces: procedurally drawn identities showing the 7 basic expressions.

Identity (background, skin tone, face shape, hair, eye spacing, nose, glasses) covers
most of the pixels; expression (mouth curve and opening, brow angle and height, eye
opening) only a few. So raw pixel distance says more about who than about how they
feel, the problem of the paper's Fig. 1, and a metric must be learnt. Each image adds
pose (in-plane rotation, scale, shift), a lighting gradient and noise.

Everything is drawn with PIL from a seeded numpy Generator: the same seed gives the same
bytes. ``write_demo_dataset`` writes an ordinary image folder with subject ids, so the
loaders and subject-independent splits of real datasets apply unchanged.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.data.classes import EXPRESSIONS

SUPERSAMPLE = 4  # draw at 4× and downsample: smooth edges at any size

# Expression → (mouth curve (+ smile), mouth opening, mouth width scale, brow height,
# brow tilt (+ inner end lower, i.e. frown), eye opening, upper lip raise (asymmetric)).
_EXPRESSION_SHAPES = {
    "anger": (-0.10, 0.00, 0.80, -0.10, 0.55, 0.65, 0.0),
    "disgust": (-0.25, 0.10, 0.85, -0.06, 0.30, 0.55, 0.8),
    "fear": (-0.10, 0.35, 1.15, 0.22, -0.45, 1.35, 0.0),
    "happiness": (0.75, 0.20, 1.15, 0.04, 0.00, 0.75, 0.0),
    "sadness": (-0.70, 0.00, 0.85, 0.06, -0.55, 0.70, 0.0),
    "surprise": (0.00, 0.85, 0.60, 0.35, -0.05, 1.45, 0.0),
    "neutral": (0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.0),
}


@dataclass(frozen=True)
class Identity:
    """A person's look; all lengths relative to the canvas side, colours RGB 0–255."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 long, 2 bald, 3 fringe
    face_width: float
    face_height: float
    eye_spacing: float
    eye_size: float
    nose_length: float
    mouth_width: float
    brow_thickness: float
    glasses: bool


def sample_identity(rng: np.random.Generator) -> Identity:
    def colour(low, high):
        return tuple(int(v) for v in rng.integers(low, high, 3))

    tone = rng.uniform(0.35, 1.0)
    skin = (int(90 + 150 * tone), int(60 + 130 * tone), int(40 + 110 * tone))
    return Identity(
        background=colour(20, 235),
        skin=skin,
        hair=colour(10, 200),
        hair_style=int(rng.integers(4)),
        face_width=float(rng.uniform(0.25, 0.36)),
        face_height=float(rng.uniform(0.34, 0.42)),
        eye_spacing=float(rng.uniform(0.33, 0.48)),
        eye_size=float(rng.uniform(0.045, 0.065)),
        nose_length=float(rng.uniform(0.06, 0.12)),
        mouth_width=float(rng.uniform(0.30, 0.45)),
        brow_thickness=float(rng.uniform(0.012, 0.022)),
        glasses=bool(rng.random() < 0.3),
    )


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 24) -> list[tuple[float, float]]:
    """Points of a parabola from (x0, y) to (x1, y) whose middle sits `bend` lower."""
    return [(x0 + (x1 - x0) * t, y + bend * 4 * t * (1 - t)) for t in np.linspace(0, 1, n)]


def render_face(identity: Identity, expression: str | int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One RGB face, `size`×`size`, of `identity` showing `expression` (name or index)."""
    name = EXPRESSIONS[expression] if isinstance(expression, int) else expression
    curve, opening, width_scale, brow_up, brow_tilt, eye_open, lip_raise = _EXPRESSION_SHAPES[name]
    intensity = rng.uniform(0.8, 1.2)  # how strongly this image shows it
    s = size * SUPERSAMPLE
    img = Image.new("RGB", (s, s), identity.background)
    draw = ImageDraw.Draw(img)
    cx, cy = s / 2, s * 0.53
    rx, ry = identity.face_width * s, identity.face_height * s

    if identity.hair_style == 1:  # long hair falls behind the face
        draw.ellipse([cx - rx * 1.3, cy - ry * 1.15, cx + rx * 1.3, cy + ry * 1.05], fill=identity.hair)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=identity.skin)
    if identity.hair_style in (0, 1, 3):
        draw.chord([cx - rx * 1.05, cy - ry * 1.1, cx + rx * 1.05, cy + ry * 0.5], 180, 360, fill=identity.hair)
    if identity.hair_style == 3:  # a fringe over the forehead
        draw.rectangle([cx - rx * 0.8, cy - ry * 0.75, cx + rx * 0.5, cy - ry * 0.55], fill=identity.hair)

    eye_y = cy - ry * 0.18
    eye_dx = identity.eye_spacing * rx
    eye_r = identity.eye_size * s
    eye_h = eye_r * min(1.6, max(0.2, 0.6 * (1 + (eye_open - 1) * intensity)))
    dark = tuple(int(c * 0.25) for c in identity.hair)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([ex - eye_r, eye_y - eye_h, ex + eye_r, eye_y + eye_h], fill=(245, 245, 245))
        pupil = min(eye_r, eye_h) * 0.7
        draw.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=(30, 25, 20))
        # Brow: the inner end moves by the tilt (anger down, sadness and fear up).
        base = eye_y - eye_r * 1.9 - brow_up * intensity * ry * 0.35
        inner = (ex - side * eye_r * 0.2, base + brow_tilt * intensity * eye_r * 1.3)
        outer = (ex + side * eye_r * 1.5, base - brow_tilt * intensity * eye_r * 0.3)
        draw.line([inner, outer], fill=dark, width=max(1, int(identity.brow_thickness * s)))
        if identity.glasses:
            g = eye_r * 1.7
            draw.ellipse([ex - g, eye_y - g, ex + g, eye_y + g], outline=(25, 25, 25), width=max(1, s // 80))
    if identity.glasses:
        draw.line([(cx - eye_dx + eye_r * 1.7, eye_y), (cx + eye_dx - eye_r * 1.7, eye_y)], fill=(25, 25, 25),
                  width=max(1, s // 80))

    nose_top, nose_bottom = cy - ry * 0.05, cy - ry * 0.05 + identity.nose_length * s
    shade = tuple(int(c * 0.7) for c in identity.skin)
    draw.line([(cx, nose_top), (cx - eye_r * 0.5, nose_bottom), (cx + eye_r * 0.4, nose_bottom)], fill=shade,
              width=max(1, s // 70))
    if lip_raise:  # disgust: a wrinkled nose
        for k in (-1, 1):
            draw.line([(cx + k * eye_r * 0.9, nose_top + eye_r * 0.2), (cx + k * eye_r * 0.3, nose_top + eye_r * 0.9)],
                      fill=shade, width=max(1, s // 90))

    mouth_y = cy + ry * 0.5
    half = identity.mouth_width * rx * width_scale
    bend = curve * intensity * ry * 0.22  # image y points down: a positive bend is a smile
    gap = opening * intensity * ry * 0.3
    x0, x1 = cx - half, cx + half
    lips = (150, 50, 55)
    raise_left = lip_raise * intensity * ry * 0.12
    upper = [(x, y - raise_left * max(0.0, (cx - x) / half)) for x, y in _curve(x0, x1, mouth_y, bend * 0.6 - gap * 0.2)]
    lower = _curve(x0, x1, mouth_y, bend + gap)
    if gap > 1:
        draw.polygon(upper + lower[::-1], fill=(70, 20, 25), outline=lips)
    else:
        draw.line(upper, fill=lips, width=max(2, s // 40), joint="curve")

    # Pose: in-plane rotation, scale and shift, then down to the output size.
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.04, 0.04, 2) * s
    img = _affine(img, angle, scale, shift, identity.background)
    img = img.resize((size, size), Image.LANCZOS)

    # Light from a random side, and sensor noise.
    pixels = np.asarray(img, dtype=np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(direction) * np.linspace(-1, 1, size)[None, :] + np.sin(direction) * np.linspace(-1, 1, size)[:, None]
    pixels *= (1 + rng.uniform(0.1, 0.25) * ramp)[..., None]
    pixels += rng.normal(0, 5, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _affine(img: Image.Image, angle_deg: float, scale: float, shift: np.ndarray, fill) -> Image.Image:
    """Rotate by angle_deg and scale about the centre, then shift (pixels)."""
    s = img.size[0]
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    c = s / 2
    # PIL maps output (x, y) to input (ax + by + c, dx + ey + f).
    tx, ty = c + shift[0], c + shift[1]
    coeffs = (cos, sin, c - cos * tx - sin * ty, -sin, cos, c + sin * tx - cos * ty)
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill)


def generate_faces(num_subjects: int = 40, images_per_expression: int = 2, size: int = 64,
                   seed: int = 0) -> Iterator[tuple[Image.Image, int, str]]:
    """Yield (image, class index into EXPRESSIONS, subject id "S007") for every subject,
    expression and repetition; each image depends only on (seed, subject, expression, k)."""
    for subject in range(num_subjects):
        identity = sample_identity(np.random.default_rng([seed, subject]))
        for label in range(len(EXPRESSIONS)):
            for k in range(images_per_expression):
                rng = np.random.default_rng([seed, subject, label + 1, k])
                yield render_face(identity, label, rng, size), label, f"S{subject:03d}"


def write_demo_dataset(out_dir: str | Path, num_subjects: int = 40, images_per_expression: int = 2,
                       size: int = 64, seed: int = 0, progress: bool = True) -> Path:
    """Write the demo faces as out_dir/<expression>/<subject>_<expression>_<k>.png plus
    manifest.csv (path,label,subject). Idempotent: a folder already holding this exact
    dataset (demo.json, written last) is left as it is. Returns out_dir."""
    out = Path(out_dir)
    params = {"num_subjects": num_subjects, "images_per_expression": images_per_expression, "size": size,
              "seed": seed, "identity_fields": list(asdict(sample_identity(np.random.default_rng(0))))}
    stamp = out / "demo.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return out
    for name in EXPRESSIONS:
        (out / name).mkdir(parents=True, exist_ok=True)
    rows = []
    total = num_subjects * len(EXPRESSIONS) * images_per_expression
    counter: dict[tuple[str, int], int] = {}
    for image, label, subject in tqdm(generate_faces(num_subjects, images_per_expression, size, seed), total=total,
                                      disable=not progress, desc="demo faces", unit="img"):
        k = counter.get((subject, label), 0)
        counter[(subject, label)] = k + 1
        rel = f"{EXPRESSIONS[label]}/{subject}_{EXPRESSIONS[label]}_{k}.png"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        atomic.atomic_write(out / rel, lambda f: f.write(buffer.getvalue()))
        rows.append((rel, EXPRESSIONS[label], subject))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "subject"])
    writer.writerows(rows)
    atomic.write_text(out / "manifest.csv", text.getvalue())
    atomic.write_json(stamp, params)
    return out

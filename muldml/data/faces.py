"""Face detection and alignment: MTCNN's box and 5 landmarks → an upright, cropped face.

Detection uses facenet-pytorch's MTCNN, whose weights ship inside the package (nothing is
downloaded); without facenet-pytorch, detection is refused in one line giving `FACENET_INSTALL`. Alignment rotates the image about the eyes' midpoint so that the eyes are
level, then crops a square region of interest from the landmarks: centred between the
eyes and the mouth, its side 2.5× the eye-to-mouth distance (or 2.2× the eye distance,
whichever is larger), which spans brows to chin. It is resized to the output size (the
paper: 236×236).

Public functions, shared by ``muldml prepare`` and ``muldml predict`` so that both crop
faces the same way:

- `FaceDetector.detect_faces`: every face of each image (`ImageFaces`), most probable first;
  a failure on one image is recorded on that image, never raised.
- `align_face`: one face, given its landmarks, as a size×size upright crop.
- `center_square`: the fallback crop when no face is found.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from muldml.errors import UserError

#: How to install facenet-pytorch into an existing environment: its metadata pins torch < 2.3
#: and numpy < 2, yet it runs on muldml's stack, so it goes in without its declared dependencies
#: (those it uses, torchvision, requests, tqdm, pillow and numpy, are muldml's own).
FACENET_INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"
#: MTCNN's default smallest face side, pixels; an image smaller than this holds no face it can find.
MIN_FACE_SIZE = 20


@dataclass(frozen=True)
class Detection:
    """One face. box: (x0, y0, x1, y1) px; landmarks: (5, 2) px — left eye, right eye, nose,
    mouth left, mouth right (as seen in the image); probability in [0, 1]."""

    box: np.ndarray
    landmarks: np.ndarray
    probability: float


@dataclass(frozen=True)
class ImageFaces:
    """What detection found in one image: its faces, most probable first (empty when none),
    or ``error`` (one line) when detection raised on this image."""

    faces: tuple[Detection, ...] = ()
    error: str | None = None

    @property
    def best(self) -> Detection | None:
        """The most probable face, or None."""
        return self.faces[0] if self.faces else None


class FaceDetector:
    """MTCNN over batches of PIL images (same-size images share one forward pass)."""

    def __init__(self, device: str = "cpu", min_face_size: int = MIN_FACE_SIZE) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise UserError(f"face detection needs facenet-pytorch, which is not installed: {FACENET_INSTALL} "
                            "(or pass --no-detect for faces already cropped)") from None

        self.min_face_size = min_face_size
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)

    def detect_faces(self, images: Sequence[Image.Image]) -> list[ImageFaces]:
        """Every face in each image (any PIL mode; converted to RGB), most probable first.

        An image whose shorter side is below ``min_face_size`` has no face MTCNN can find
        (its scale pyramid would be empty): no faces, no error. If detection raises on a
        batch, each of its images is tried alone; an image that still fails gets the
        exception's one-line description in ``error``. Nothing is raised for one image.
        """
        results = [ImageFaces() for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            if min(img.size) >= self.min_face_size:
                by_size.setdefault(img.size, []).append(i)
        for indices in by_size.values():
            batch = [images[i].convert("RGB") for i in indices]
            try:
                found = self._detect(batch)
            except Exception:  # one bad image must not cost the batch: try each alone
                found = []
                for img in batch:
                    try:
                        found += self._detect([img])
                    except Exception as e:
                        found.append(ImageFaces(error=f"face detection failed: {e.__class__.__name__}: {str(e)[:120]}"))
            for i, faces in zip(indices, found):
                results[i] = faces
        return results

    def _detect(self, batch: list[Image.Image]) -> list[ImageFaces]:
        boxes, probs, landmarks = self.mtcnn.detect(batch, landmarks=True)
        out = []
        for b, p, l in zip(boxes, probs, landmarks):
            if b is None or len(b) == 0:
                out.append(ImageFaces())
                continue
            order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
            out.append(ImageFaces(tuple(Detection(np.asarray(b[k], dtype=float), np.asarray(l[k], dtype=float),
                                                  float(p[k])) for k in order)))
        return out


def eye_angle(landmarks: np.ndarray) -> float:
    """Angle of the line from the left to the right eye, degrees (0 = level; image y down)."""
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def rotate_points(points: np.ndarray, center: tuple[float, float], angle_deg: float) -> np.ndarray:
    """Where points land after PIL's Image.rotate(angle_deg, center=center)."""
    a = math.radians(angle_deg)
    cx, cy = center
    x, y = points[:, 0] - cx, points[:, 1] - cy
    # PIL rotates counter-clockwise on screen; with y pointing down that is this matrix.
    return np.stack([cx + x * math.cos(a) + y * math.sin(a), cy - x * math.sin(a) + y * math.cos(a)], axis=1)


def align_face(img: Image.Image, landmarks: np.ndarray, size: int, rotation: float = 0.0) -> Image.Image:
    """Rotate `img` so the eyes are level, crop the face's region of interest, resize to size².

    landmarks: (5, 2) px as in `Detection`. rotation: degrees (counter-clockwise) the
    upright face is turned afterwards, for the offline augmentation; the crop keeps the
    same scale at every angle and is cut from a larger region, so corners stay image.
    """
    eyes = (landmarks[0] + landmarks[1]) / 2
    angle = eye_angle(landmarks)
    center = (float(eyes[0]), float(eyes[1]))
    upright = img.rotate(angle, resample=Image.BICUBIC, center=center)
    points = rotate_points(landmarks, center, angle)
    eyes, mouth = (points[0] + points[1]) / 2, (points[3] + points[4]) / 2
    side = max(2.5 * np.linalg.norm(mouth - eyes), 2.2 * np.linalg.norm(points[1] - points[0]), 8.0)
    cx, cy = (eyes + mouth) / 2
    return _square(upright, cx, cy, side, rotation).resize((size, size), Image.BICUBIC)


def _square(img: Image.Image, cx: float, cy: float, side: float, rotation: float) -> Image.Image:
    """The side×side square centred at (cx, cy), turned by `rotation` degrees about its centre.

    Turning cuts from a 1.5× larger region (a turned square reaches at most √2/2 of its
    side from its centre), then takes the middle side×side: the scale does not change.
    """
    pad = 1.5 if rotation else 1.0
    half = side * pad / 2
    region = img.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    if not rotation:
        return region
    region = region.rotate(rotation, resample=Image.BICUBIC)
    inner = (region.size[0] - side) / 2
    return region.crop((round(inner), round(inner), round(inner + side), round(inner + side)))


def center_square(img: Image.Image, size: int, rotation: float = 0.0) -> Image.Image:
    """The largest centred square, resized to size², turned by `rotation` degrees at the same
    scale (corners beyond the image are black): the fallback when no face is found."""
    w, h = img.size
    return _square(img, w / 2, h / 2, min(w, h), rotation).resize((size, size), Image.BICUBIC)

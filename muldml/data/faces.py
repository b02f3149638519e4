"""Face detection and alignment: MTCNN's box and 5 landmarks → an upright, cropped face.

Detection uses facenet-pytorch's MTCNN, whose weights ship inside the package (nothing is
downloaded). Alignment rotates the image about the eyes' midpoint so that the eyes are
level, then crops a square region of interest from the landmarks: centred between the
eyes and the mouth, its side 2.5× the eye-to-mouth distance (or 2.2× the eye distance,
whichever is larger), which spans brows to chin. It is resized to the output size (the
paper: 236×236).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Detection:
    """box: (x0, y0, x1, y1) px; landmarks: (5, 2) px — left eye, right eye, nose, mouth
    left, mouth right (as seen in the image); probability in [0, 1]."""

    box: np.ndarray
    landmarks: np.ndarray
    probability: float


class FaceDetector:
    """MTCNN over batches of PIL images (same-size images share one forward pass)."""

    def __init__(self, device: str = "cpu", min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)

    def detect(self, images: Sequence[Image.Image]) -> list[Detection | None]:
        """The most probable face of each image, or None where none is found."""
        results: list[Detection | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.size, []).append(i)
        for indices in by_size.values():
            batch = [images[i] for i in indices]
            boxes, probs, landmarks = self.mtcnn.detect(batch, landmarks=True)
            for i, b, p, l in zip(indices, boxes, probs, landmarks):
                if b is None or len(b) == 0:
                    continue
                best = int(np.argmax(p))
                results[i] = Detection(np.asarray(b[best], dtype=float), np.asarray(l[best], dtype=float), float(p[best]))
        return results


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

    rotation: degrees (counter-clockwise) the upright face is turned afterwards, for the
    offline augmentation; the crop is cut from a larger region, so corners stay image.
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
    """The side×side square centred at (cx, cy), turned by `rotation` degrees about its centre."""
    pad = 1.5 if rotation else 1.0
    half = side * pad / 2
    region = img.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    if not rotation:
        return region
    region = region.rotate(rotation, resample=Image.BICUBIC)
    inner = (region.size[0] - side) / 2
    return region.crop((round(inner), round(inner), round(inner + side), round(inner + side)))


def center_square(img: Image.Image, size: int, rotation: float = 0.0) -> Image.Image:
    """The largest centred square, resized to size² (turned by `rotation` degrees, corners
    filled from the image where it reaches): the fallback when no face is found."""
    w, h = img.size
    side = min(w, h) / (1.5 if rotation else 1.0)
    return _square(img, w / 2, h / 2, side, rotation).resize((size, size), Image.BICUBIC)

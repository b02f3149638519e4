"""A video of the built-in demo faces (`muldml.data.synthetic`): for the video tests, the
README's frame and the frames-per-second measurement. No dataset image is involved.

Each of `subjects` generated people sits in their own column of the frame, drifts slowly
side to side and changes expression every `change_every` seconds, each person running
through the seven expressions from a different start. Faces are drawn once per
(person, expression) in the canonical pose and moved, so writing is cheap.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from muldml.data.synthetic import EXPRESSIONS, render_face, sample_identity


def expression_at(subject: int, t: float, change_every: float = 1.0) -> str:
    """The expression person `subject` (0-based) shows at time t (s)."""
    return EXPRESSIONS[(2 * subject + math.floor(t / change_every + 1e-9)) % len(EXPRESSIONS)]


def face_video_frames(width: int = 640, height: int = 480, seconds: float = 4.0, rate: float = 10.0,
                      subjects: int = 2, seed: int = 0, change_every: float = 1.0,
                      blank_after: float | None = None) -> list[tuple[float, Image.Image]]:
    """(time s, RGB frame width×height) for each frame at `rate` frames/s; frames after
    `blank_after` seconds show the background only (no face)."""
    people = [sample_identity(np.random.default_rng([seed, k])) for k in range(subjects)]
    column = width / subjects
    side = int(min(column * 0.8, height * 0.8))
    drawn: dict[tuple[int, str], Image.Image] = {}
    frames = []
    for i in range(max(1, round(seconds * rate))):
        t = i / rate
        frame = Image.new("RGB", (width, height), (70, 90, 110))
        if blank_after is None or t < blank_after:
            for k, person in enumerate(people):
                expression = expression_at(k, t, change_every)
                if (k, expression) not in drawn:
                    drawn[k, expression] = render_face(person, expression, np.random.default_rng(0), side, jitter=False)
                drift = 0.08 * side * math.sin(2 * math.pi * t / max(seconds, 1e-9))
                x = round(column * k + (column - side) / 2 + drift)
                frame.paste(drawn[k, expression], (x, (height - side) // 2))
        frames.append((t, frame))
    return frames


def write_face_video(path: str | Path, width: int = 640, height: int = 480, seconds: float = 4.0,
                     rate: float = 10.0, **kwargs) -> Path:
    """Write `face_video_frames(...)` as an H.264 MP4 (atomically, by PyAV); returns the path."""
    from muldml.video import VideoWriter

    writer = VideoWriter(Path(path), rate)
    try:
        for t, frame in face_video_frames(width, height, seconds, rate, **kwargs):
            writer.write(frame, t)
        return writer.close()
    finally:
        if writer.tmp.exists():
            writer.discard()

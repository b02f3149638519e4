"""Expressions in videos: `muldml predict VIDEO …` and `muldml predict --camera N`.

    muldml predict VIDEO … --checkpoint RUN [--out DIR] [--fps F] [--ema A] [--annotate] [--tta T]
                   [--resume | --overwrite]
    muldml predict --camera N --checkpoint RUN [--out DIR] [--fps F] [--duration S]

Frames are decoded by PyAV (FFmpeg) and sampled at ``--fps``: the first frame at or after
each multiple of 1/fps seconds (every frame when fps is at least the video's rate). Each
sampled frame goes the way of a photo in `muldml.inference.FERModel.predict`: MTCNN finds
every face, each is aligned as prepare and predict align stills and classified. Faces are
then tracked across frames (`IoUTracker`: boxes associated by intersection over union,
each track with an id) and each track's class probabilities are smoothed by an exponential
moving average (``--ema``: the weight of the newest frame; 1 is no smoothing).

For each video NAME, DIR holds:
- NAME.jsonl: one record per sampled frame and face (see `track_records`): time in seconds,
  frame index, track id, box, probabilities and smoothed probabilities; a frame without a
  face gets one "no_face" record, so every sampled frame is counted;
- NAME.timeline.png: each track's smoothed probabilities over time;
- NAME.annotated.mp4 with ``--annotate``: the sampled frames with each face's box, track id
  and smoothed expression drawn.

Writes are atomic. Each frame's detections are logged as soon as they are known
(DIR/.NAME.partial.jsonl); ``--resume`` reads them instead of detecting again and replays
the tracker over them, so an interrupted run ends with the files an uninterrupted one
writes. A finished video (NAME.jsonl present, no log) is kept by ``--resume`` and replaced
only with ``--overwrite``.

``--camera N`` reads webcam N through OpenCV (not a dependency: ``pip install
opencv-python-headless``) until ``--duration`` seconds have passed or Ctrl-C, with the same
records, named cameraN.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.errors import UserError
from muldml.inference import FaceRecord, FERModel

#: File name endings read as videos (anything else goes the photos' way).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")
#: Default sampling rate, frames per second, and smoothing weight of the newest frame.
DEFAULT_FPS = 5.0
DEFAULT_EMA = 0.5


def is_video(path: str | Path) -> bool:
    """Whether `path` names a video file, by its ending."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ModuleNotFoundError:
        raise UserError("reading videos needs PyAV: pip install av") from None
    return av


@dataclass
class Frame:
    """One sampled frame: index among the decoded frames (0-based), time in seconds from
    the start of the stream, and the picture (RGB)."""

    index: int
    time: float
    image: Image.Image


class Sampler:
    """Keeps the first frame at or after each multiple of 1/fps seconds (every frame when
    fps is None)."""

    def __init__(self, fps: float | None) -> None:
        self.fps, self.next = fps, -math.inf

    def keep(self, t: float) -> bool:
        if self.fps is None:
            return True
        if t + 1e-6 < self.next:
            return False
        self.next = (math.floor(t * self.fps + 1e-6) + 1) / self.fps
        return True


@dataclass
class VideoFile:
    """A video file opened for decoding. rate: its average frames per second (None when
    the file does not say); size: (width, height) px; error: why decoding stopped early,
    once `frames` has ended ("" when it read to the end)."""

    path: Path
    fps: float | None
    rate: float | None = None
    size: tuple[int, int] = (0, 0)
    duration: float | None = None
    error: str = ""
    _container: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        av = _av()
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise UserError(f"cannot read video {self.path}: {e.__class__.__name__}: {str(e)[:120]}") from None
        if not self._container.streams.video:
            self._container.close()
            raise UserError(f"{self.path} holds no video stream")
        stream = self._container.streams.video[0]
        self.rate = float(stream.average_rate) if stream.average_rate else None
        self.size = (stream.codec_context.width, stream.codec_context.height)
        if self._container.duration:
            self.duration = self._container.duration / 1e6  # FFmpeg's AV_TIME_BASE: microseconds

    def expected_frames(self) -> int | None:
        """About how many frames the sampling keeps (for the progress bar)."""
        if self.duration is None:
            return None
        rate = min(self.fps or math.inf, self.rate or math.inf)
        return None if math.isinf(rate) else max(1, round(self.duration * rate))

    def frames(self) -> Iterator[Frame]:
        """The sampled frames in order. A decoding error ends the iteration and is kept in
        ``error`` (the frames before it stand)."""
        av = _av()
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        sampler, index = Sampler(self.fps), -1
        try:
            for frame in self._container.decode(stream):
                index += 1
                t = float(frame.pts * stream.time_base) - start if frame.pts is not None else index / (self.rate or 1)
                if sampler.keep(t):
                    image = frame.to_image()
                    if frame.rotation:  # a phone's display matrix: upright, as EXIF rotation for photos
                        image = image.rotate(frame.rotation, expand=True)
                    yield Frame(index, round(t, 6), image)
        except av.error.FFmpegError as e:
            self.error = f"decoding stopped after frame {index}: {e.__class__.__name__}: {str(e)[:120]}"
        finally:
            self._container.close()


class Camera:
    """Webcam `number` through OpenCV, sampled at fps, for `duration` seconds (None: until
    Ctrl-C). Raises UserError when OpenCV is missing or the camera cannot be opened."""

    def __init__(self, number: int, fps: float | None, duration: float | None = None) -> None:
        try:
            import cv2
        except ModuleNotFoundError:
            raise UserError("--camera needs OpenCV: pip install opencv-python-headless") from None
        self.cv2, self.number, self.fps, self.duration, self.error = cv2, number, fps, duration, ""
        self.capture = cv2.VideoCapture(number)
        if not self.capture.isOpened():
            self.capture.release()
            raise UserError(f"no camera {number}: OpenCV cannot open it")
        self.rate = self.capture.get(cv2.CAP_PROP_FPS) or None
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def expected_frames(self) -> int | None:
        return round(self.duration * self.fps) if self.duration and self.fps else None

    def frames(self) -> Iterator[Frame]:
        """Frames as they come, until the duration is over, the camera stops, or Ctrl-C."""
        sampler, index, start = Sampler(self.fps), -1, time.monotonic()
        try:
            while True:
                ok, bgr = self.capture.read()
                t = time.monotonic() - start
                if not ok:
                    self.error = f"camera {self.number} stopped sending frames after {t:.1f} s"
                    return
                if self.duration is not None and t > self.duration:
                    return
                index += 1
                if sampler.keep(t):
                    yield Frame(index, round(t, 6), Image.fromarray(self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB)))
        except KeyboardInterrupt:  # the way to end a live run: keep what was recorded
            return
        finally:
            self.capture.release()


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face followed across frames: its id, last box, smoothed probabilities (C,) and
    how many sampled frames in a row it has been missing."""

    id: int
    box: list[float]
    smoothed: np.ndarray
    missed: int = 0


class IoUTracker:
    """Face tracks by box overlap, with an exponential moving average of each track's
    probabilities.

    Each frame, detections are matched one-to-one to live tracks by maximising the total
    IoU (scipy's linear_sum_assignment); a pair below ``min_iou`` is no match. A matched
    track takes the new box and smoothed = ema·p + (1 − ema)·smoothed; an unmatched
    detection starts a new track (ids 1, 2, … in order of appearance) with smoothed = p;
    a track missing for more than ``max_missed`` sampled frames in a row ends.
    Raises ValueError for ema outside (0, 1].
    """

    def __init__(self, ema: float = DEFAULT_EMA, min_iou: float = 0.3, max_missed: int = 5) -> None:
        if not 0 < ema <= 1:
            raise ValueError(f"the moving average's factor must be in (0, 1], got {ema}")
        self.ema, self.min_iou, self.max_missed = ema, min_iou, max_missed
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, boxes: Sequence[Sequence[float]], probabilities: Sequence[np.ndarray]) -> list[Track]:
        """Associate one frame's detections (boxes (x0, y0, x1, y1) px, probabilities (C,)
        each); returns the track of each detection, in the detections' order."""
        from scipy.optimize import linear_sum_assignment

        matched: dict[int, Track] = {}
        if self.tracks and len(boxes):
            overlap = np.array([[iou(t.box, b) for b in boxes] for t in self.tracks])
            rows, cols = linear_sum_assignment(overlap, maximize=True)
            matched = {int(c): self.tracks[r] for r, c in zip(rows, cols) if overlap[r, c] >= self.min_iou}
        out = []
        for k, (box, p) in enumerate(zip(boxes, probabilities)):
            p = np.asarray(p, dtype=np.float64)
            track = matched.get(k)
            if track is None:
                track = Track(self.next_id, list(box), p)
                self.next_id += 1
                self.tracks.append(track)
            else:
                track.box, track.smoothed, track.missed = list(box), self.ema * p + (1 - self.ema) * track.smoothed, 0
            out.append(track)
        seen = {id(t) for t in out}
        for t in self.tracks:
            if id(t) not in seen:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out


def track_records(frame: Frame, faces: Sequence[FaceRecord], tracker: IoUTracker,
                  classes: Sequence[str]) -> list[dict[str, Any]]:
    """One frame's records: each face's FaceRecord fields (`muldml.inference.FaceRecord`)
    plus frame (index), time (s), track (id; None without a face), smoothed (probability
    per class, the track's moving average) and smoothed_expression (its most probable
    class). The tracker advances by this frame."""
    ok = [f for f in faces if f.status == "ok"]
    tracks = tracker.update([f.box for f in ok],
                            [np.array([f.probabilities[c] for c in classes]) for f in ok])
    by_face = {id(f): t for f, t in zip(ok, tracks)}
    records = []
    for face in faces:
        track = by_face.get(id(face))
        record = {"source": face.source, "frame": frame.index, "time": frame.time,
                  "track": None if track is None else track.id} | face.to_dict()
        record["smoothed"] = None if track is None else {c: float(v) for c, v in zip(classes, track.smoothed)}
        record["smoothed_expression"] = None if track is None else classes[int(np.argmax(track.smoothed))]
        records.append(record)
    return records


def draw_frame(frame: Frame, records: Sequence[dict]) -> Image.Image:
    """The frame with each tracked face's box, landmarks, track id and smoothed expression
    drawn (by `muldml.predict.annotate`, as for photos)."""
    from muldml.predict import annotate

    shown = [FaceRecord(r["source"], r["track"], box=r["box"], landmarks=r["landmarks"],
                        expression=r["smoothed_expression"], probabilities=r["smoothed"])
             for r in records if r["track"] is not None]
    return annotate(frame.image, shown)


class VideoWriter:
    """An H.264 (or MPEG-4 Part 2 where libx264 is missing) MP4 written by PyAV into a
    temporary file beside `path`, renamed over it by `close`; `discard` removes it.

    Frames are timed by their own time stamps (s) on a 1/1000 s clock; sides are cut to
    even numbers (yuv420p needs them)."""

    def __init__(self, path: Path, rate: float) -> None:
        av = _av()
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp.mp4")
        self.container = av.open(str(self.tmp), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=Fraction(rate).limit_denominator(1000))
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, 1000)
        self.size: tuple[int, int] | None = None
        self.last_pts = -1

    def write(self, image: Image.Image, t: float) -> None:
        av = _av()
        if self.size is None:
            self.size = (image.width - image.width % 2, image.height - image.height % 2)
            self.stream.width, self.stream.height = self.size
        if image.size != self.size:
            image = image.crop((0, 0, *self.size)) if image.width >= self.size[0] and image.height >= self.size[1] \
                else image.resize(self.size)
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        frame.pts = self.last_pts = max(self.last_pts + 1, round(t * 1000))
        frame.time_base = Fraction(1, 1000)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> Path:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.tmp.replace(self.path)
        return self.path

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # already closed or never written: only the file matters
            pass
        self.tmp.unlink(missing_ok=True)


def plot_timeline(records: Sequence[dict], classes: Sequence[str], path: Path, title: str = "",
                  max_tracks: int = 8) -> Path:
    """PNG of each track's smoothed probability per class over time (s), one panel per track
    (the `max_tracks` longest, in order of appearance; the title says how many are left
    out); raw probabilities as faint dots. A video without faces gets a panel saying so."""
    import muldml.plots  # noqa: F401  (selects matplotlib's file-only backend)
    import matplotlib.pyplot as plt

    by_track: dict[int, list[dict]] = {}
    for r in records:
        if r["track"] is not None:
            by_track.setdefault(r["track"], []).append(r)
    shown = sorted(sorted(by_track, key=lambda k: -len(by_track[k]))[:max_tracks])
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(8, 0.6 + 1.9 * max(1, len(shown))), sharex=True,
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, track in zip(axes[:, 0], shown):
        rows = by_track[track]
        times = [r["time"] for r in rows]
        for k, c in enumerate(classes):
            ax.plot(times, [r["smoothed"][c] for r in rows], "-", color=colours(k % 10), label=c, lw=1.5)
            ax.plot(times, [r["probabilities"][c] for r in rows], ".", color=colours(k % 10), alpha=0.3, ms=3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"track {track}\nprobability", fontsize=8)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0, 0].transAxes)
    else:
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1, 0].set_xlabel("time (s)")
    left_out = len(by_track) - len(shown)
    fig.suptitle(title + (f" ({len(shown)} of {len(by_track)} tracks: the longest)" if left_out else ""), fontsize=9)
    path = atomic.save_figure(path, fig)
    plt.close(fig)
    return path


def read_log(path: Path, settings: dict) -> dict[int, list[FaceRecord]]:
    """Detections per frame index from an interrupted run's log (see predict.read_partial)."""
    from muldml.predict import read_partial

    return read_partial(path, settings, key="frame", field="faces")


@dataclass
class VideoResult:
    """What one video gave: its records, sampled frames, tracks, frames analysed (not
    read from a log), wall seconds from the first frame read to the last one written
    (decoding, detection, classification, tracking, drawing, encoding), and why decoding
    stopped early ("" if not)."""

    records: list[dict]
    frames: int
    tracks: int
    analysed: int
    seconds: float
    error: str

    def line(self, name: str) -> str:
        faces = sum(r["status"] == "ok" for r in self.records)
        empty = sum(r["status"] != "ok" for r in self.records)
        speed = f", {self.frames / self.seconds:.2f} frames/s end to end" if self.frames and self.seconds > 0 else ""
        return (f"{name}: {self.frames} frame(s) sampled, {faces} face(s) in {self.tracks} track(s), "
                f"{empty} frame(s) with no face{speed}" + (f"; {self.error}" if self.error else ""))


def predict_video(model: FERModel, source: VideoFile | Camera, name: str, tracker: IoUTracker,
                  embeddings: bool = False, batch_size: int | None = None, log: IO[str] | None = None,
                  done: dict[int, list[FaceRecord]] | None = None, writer: VideoWriter | None = None,
                  progress: bool = True) -> VideoResult:
    """Detect, classify and track the faces of `source`'s sampled frames (see the module
    doc), `batch_size` frames at a time (default the model's); name: the records' source. log: each frame's detections
    are appended as a JSON line once known; done: detections of frames already analysed
    (from such a log), reused; writer: receives each annotated frame."""
    done = done or {}
    batch_size = batch_size or model.batch_size
    records: list[dict] = []
    frames = analysed = 0

    def flush(batch: list[Frame]) -> None:
        nonlocal frames, analysed
        fresh = [f for f in batch if f.index not in done]
        faces: dict[int, list[FaceRecord]] = {f.index: [] for f in fresh}
        if fresh:
            # The frame index as the records' source groups them by frame; the video's name replaces it.
            for record in model.predict([f.image for f in fresh], True, embeddings, [str(f.index) for f in fresh]):
                faces[int(record.source)].append(record)
                record.source = name
            analysed += len(fresh)
        for frame in batch:
            found = done[frame.index] if frame.index in done else faces[frame.index]
            if log is not None and frame.index not in done:
                log.write(json.dumps({"frame": frame.index, "faces": [r.to_dict() for r in found]}) + "\n")
            rows = track_records(frame, found, tracker, model.classes)
            records.extend(rows)
            if writer is not None:
                writer.write(draw_frame(frame, rows), frame.time)
        if log is not None:
            log.flush()
        frames += len(batch)

    start = time.perf_counter()
    with tqdm(total=source.expected_frames(), disable=not progress, desc=name, unit="frame") as bar:
        batch: list[Frame] = []
        for frame in source.frames():
            batch.append(frame)
            if len(batch) == batch_size:
                flush(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            flush(batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    return VideoResult(records, frames, tracker.next_id - 1, analysed, seconds, source.error)


def format_records(records: Iterable[dict]) -> str:
    """JSON lines, one record per line."""
    return "".join(json.dumps(r) + "\n" for r in records)


def run(args: argparse.Namespace) -> int:
    """`muldml predict` for videos or a camera (see the module doc); one line and UserError
    for bad settings, unreadable videos and outputs that would be overwritten."""
    from muldml.inference import load_model
    from muldml.predict import annotated_names
    from muldml.training import check_writable

    if args.format != "jsonl":
        raise UserError("video records are JSON lines; --format csv applies to photos")
    if args.no_detect:
        raise UserError("--no-detect applies to photos of aligned faces, not to videos")
    if not args.fps > 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    if not 0 < args.ema <= 1:
        raise UserError(f"--ema must be in (0, 1] (1: no smoothing), got {args.ema}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration must be > 0 seconds, got {args.duration}")
    out = Path(args.out)
    if args.camera is not None:
        if args.inputs:
            raise UserError("give either --camera or video files, not both")
        if args.resume:
            raise UserError("a camera run cannot be resumed")
        jobs: list[tuple[str, Path | None]] = [(f"camera{args.camera}", None)]
    else:
        paths = [Path(p) for p in args.inputs]
        for p in paths:
            if not p.is_file():
                raise UserError(f"video not found: {p}")
            if not is_video(p):
                raise UserError(f"{p} is not a video ({', '.join(VIDEO_SUFFIXES)}); photos and videos go to "
                                "separate runs")
        jobs = [(n.removesuffix(".png"), p) for p, n in annotated_names(list(dict.fromkeys(paths))).items()]
    todo, kept = [], []
    for name, path in jobs:
        target, log = out / f"{name}.jsonl", out / f".{name}.partial.jsonl"
        if target.exists() and args.resume and not log.exists():
            kept.append(name)  # finished by the interrupted run
            continue
        if target.exists() and not args.overwrite:
            raise UserError(f"{target} exists; pass --overwrite to replace it")
        if log.exists() and not (args.resume or args.overwrite):
            raise UserError(f"{out} holds an interrupted run's records of {name}; pass --resume to continue it "
                            "or --overwrite to start again")
        todo.append((name, path))
    # Every video is opened before any work, so that an unreadable one stops the run at once.
    sources = [(name, Camera(args.camera, args.fps, args.duration) if path is None else VideoFile(path, args.fps))
               for name, path in todo]
    check_writable(out)
    model = load_model(args.checkpoint, args.device, args.face_size, args.batch_size, args.tta)
    # What the logged detections depend on (smoothing and drawing are redone on resume).
    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "face_size": args.face_size, "fps": args.fps,
                "tta": args.tta, "embeddings": args.embeddings}
    for (name, path), (_, source) in zip(todo, sources):
        target, log_path = out / f"{name}.jsonl", out / f".{name}.partial.jsonl"
        done = read_log(log_path, settings) if args.resume and log_path.exists() else {}
        rate = min(args.fps, source.rate or args.fps)
        writer = VideoWriter(out / f"{name}.annotated.mp4", rate) if args.annotate else None
        try:
            with open(log_path, "a" if done else "w", encoding="utf-8") as log:
                # after a stopped run, whatever it left half-written stays a line of its own
                log.write("\n" if done else json.dumps({"settings": settings}) + "\n")
                label = f"camera {args.camera}" if path is None else str(path)
                result = predict_video(model, source, label, IoUTracker(args.ema), args.embeddings,
                                       1 if args.camera is not None else None, log, done, writer, not args.quiet)
            if writer is not None and result.frames:
                writer.close()
        finally:
            if writer is not None and writer.tmp.exists():
                writer.discard()
        plot_timeline(result.records, model.classes, out / f"{name}.timeline.png",
                      f"{name}: smoothed probabilities (moving average, newest frame weighted {args.ema})")
        atomic.write_text(target, format_records(result.records))
        log_path.unlink()
        print(result.line(name) + (f" ({len(done)} read from the interrupted run)" if done else ""))
        print(f"records: {target}; timeline: {out / f'{name}.timeline.png'}"
              + (f"; annotated video: {writer.path}" if writer is not None and result.frames else ""))
    if kept:
        print(f"kept {len(kept)} video(s) finished by the interrupted run: {', '.join(kept)}")
    return 0

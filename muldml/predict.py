"""`muldml predict`: every face's expression in photos, as JSON lines or CSV.

    muldml predict PHOTO|FOLDER|GLOB … --checkpoint RUN [--out DIR] [--format jsonl|csv]
                   [--annotate] [--embeddings] [--no-detect] [--batch-size N] [--device D]
                   [--resume | --overwrite]

Folders are read recursively, each real folder and file once however many links lead to
it; the output folder is never read back; operating-system metadata and hidden files are
left out, and other files that are not images are counted as ignored. Each image becomes one
record per face (see `muldml.inference.FaceRecord`), one "no_face" record when none is
found, or one "unreadable" record with the reason; the run goes on and counts them.
DIR/predictions.jsonl (or .csv) is written atomically at the end; ``--annotate`` writes
DIR/annotated/<image>.png with each face's box and label drawn. An existing predictions
file is replaced only with ``--overwrite``. Each image's records are also logged as soon as
they are known (DIR/.predictions.partial.jsonl), so an interrupted run continues with
``--resume`` and ends with the same file an uninterrupted run writes.

Video files (and ``--camera N``) go to `muldml.video`: sampled frames, tracked faces,
smoothed probabilities, a timeline and an annotated video.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.errors import UserError
from muldml.inference import FACE_SIZE, LANDMARKS, TTA_MODES, FaceRecord, FERModel, load_model
from muldml.training import check_writable

FORMATS = ("jsonl", "csv")
PARTIAL = ".predictions.partial.jsonl"  # records so far, one line per image: what --resume reads


def collect_inputs(inputs: Sequence[str], out: str | Path | None = None) -> tuple[list[Path], int]:
    """Image files named by `inputs` (files, folders read recursively, or glob patterns), in
    order without repeats, and the number of non-image files left out of folders.

    A file named explicitly is always tried (an unreadable one gets its own record);
    metadata and hidden files are never data. Each real folder is entered once and each
    real file taken once, however many links or inputs lead to it (`muldml.data.files.walk`).
    ``out``, the command's output folder, is never read: walks and globs leave it out.
    Raises UserError for an input that names nothing, an input inside ``out``, or when no
    image is found at all.
    """
    from muldml.data.files import glob_paths, identity, is_image_file, is_left_out, is_metadata, leaving_out, walk

    files: list[Path] = []
    seen: set = set()  # real folders and files taken so far
    ignored = 0

    def take(path: Path) -> None:
        real = identity(path)
        if real not in seen:
            seen.add(real)
            files.append(path)

    def take_folder(folder: Path) -> None:
        nonlocal ignored
        for _, images, others in walk(folder, seen):
            files.extend(images)
            ignored += len(others)

    with leaving_out(out):
        for text in inputs:
            path = Path(text)
            if (path.exists() or not glob.has_magic(text)) and is_left_out(path):
                raise UserError(f"input {text} lies in the output folder {out}; choose another --out")
            if path.is_dir():
                take_folder(path)
            elif path.is_file():
                take(path)
            elif glob.has_magic(text):
                matches = glob_paths(text)
                if not matches:
                    raise UserError(f"no file matches {text!r}")
                for match in matches:
                    if is_left_out(match):
                        continue  # this command's own output
                    if match.is_dir():
                        take_folder(match)
                    elif not is_metadata(match) and match.is_file():
                        if is_image_file(match):
                            take(match)
                        elif identity(match) not in seen:
                            seen.add(identity(match))
                            ignored += 1
            else:
                raise UserError(f"input not found: {text}")
    if not files:
        raise UserError(f"no image files found in {', '.join(inputs)}")
    return files, ignored


def open_photo(path: Path) -> tuple[Image.Image | None, str]:
    """(8-bit RGB image, "") or (None, reason), converted as prepare converts its sources."""
    from muldml.data.images import open_image

    try:
        return open_image(path)[0], ""
    except Exception as e:  # zero-byte, truncated, not an image, permission …
        return None, f"unreadable image: {e.__class__.__name__}: {str(e)[:120]}"


def csv_columns(classes: Sequence[str], embeddings: bool) -> list[str]:
    columns = ["source", "face", "status", "reason", "box_x0", "box_y0", "box_x1", "box_y1"]
    columns += [f"{name}_{axis}" for name in LANDMARKS for axis in "xy"]
    columns += ["detector_probability", "expression"] + [f"p_{c}" for c in classes] + ["tta"]
    return columns + (["embedding"] if embeddings else [])


def csv_row(record: FaceRecord, classes: Sequence[str]) -> dict:
    """One flat CSV row: box and landmark coordinates in columns, a probability column per
    class, the embedding as space-separated numbers."""
    row = {"source": record.source, "face": record.face, "status": record.status, "reason": record.reason,
           "detector_probability": "" if record.detector_probability is None else record.detector_probability,
           "expression": record.expression or "", "tta": record.tta}
    row |= dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), record.box or [""] * 4))
    points = record.landmarks or [["", ""]] * len(LANDMARKS)
    row |= {f"{name}_{axis}": point[k] for name, point in zip(LANDMARKS, points) for k, axis in enumerate("xy")}
    row |= {f"p_{c}": (record.probabilities or {}).get(c, "") for c in classes}
    if record.embedding is not None:
        row["embedding"] = " ".join(f"{v:.7g}" for v in record.embedding)
    return row


def format_records(records: Sequence[FaceRecord], fmt: str, classes: Sequence[str], embeddings: bool) -> str:
    """The predictions file's text: JSON lines (one object per record) or CSV."""
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_dict() if embeddings else r.to_dict() | {"embedding": None}) + "\n"
                       for r in records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(classes, embeddings), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_row(r, classes) for r in records)
    return buffer.getvalue()


def annotate(picture: Image.Image, records: Sequence[FaceRecord]) -> Image.Image:
    """A copy of `picture` with each face's box, landmarks, expression and probability drawn."""
    out = picture.copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(10, round(max(out.size) / 40)))
    for r in records:
        if r.status != "ok" or r.box is None:
            continue
        x0, y0, x1, y1 = r.box
        draw.rectangle((x0, y0, x1, y1), outline=(255, 40, 40), width=width)
        for x, y in r.landmarks or []:
            draw.ellipse((x - width, y - width, x + width, y + width), fill=(40, 255, 40))
        label = f"{r.face}: {r.expression} {r.probabilities[r.expression]:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), label, font=font)
        shift = bottom - top + 2 * width
        shift = shift if y0 - shift >= 0 else -2 * width  # above the box, or inside it at the top edge
        draw.rectangle((left - width, top - shift - width, right + width, bottom - shift + width), fill=(255, 40, 40))
        draw.text((x0, y0 - shift), label, fill=(255, 255, 255), font=font)
    return out


def annotated_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct PNG name per input file: its path below the inputs' common folder, with
    '/' turned into '__' (a clash gets a counter)."""
    resolved = [f.resolve() for f in files]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    names, taken = {}, set()
    for f, r in zip(files, resolved):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", r.relative_to(root).with_suffix("").as_posix().replace("/", "__"))
        name, k = f"{stem}.png", 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}.png"
        taken.add(name)
        names[f] = name
    return names


def predict_files(model: FERModel, files: Sequence[Path], detect: bool = True, embeddings: bool = False,
                  annotate_dir: Path | None = None, progress: bool = True, log: IO[str] | None = None,
                  done: dict[str, list[FaceRecord]] | None = None) -> list[FaceRecord]:
    """Records for `files` in their order, read ``model.batch_size`` images at a time (see the
    module doc). log: each image's records are appended to it as one JSON line as soon as
    they are known; done: records of images already predicted (from such a log), reused."""
    done = done or {}
    names = annotated_names(files) if annotate_dir is not None else {}
    todo = [path for path in files if str(path) not in done]
    fresh: dict[str, list[FaceRecord]] = {}
    with tqdm(total=len(files), initial=len(files) - len(todo), disable=not progress, desc="predict",
              unit="img") as bar:
        for start in range(0, len(todo), model.batch_size):
            chunk = todo[start : start + model.batch_size]
            opened = [(path, *open_photo(path)) for path in chunk]
            readable = [(path, picture) for path, picture, _ in opened if picture is not None]
            for record in model.predict([p for _, p in readable], detect, embeddings, [str(p) for p, _ in readable]):
                fresh.setdefault(record.source, []).append(record)
            for path, picture, reason in opened:
                if picture is None:
                    fresh[str(path)] = [FaceRecord(str(path), status="unreadable", reason=reason)]
                elif annotate_dir is not None:
                    atomic.save_png(annotate_dir / names[path], annotate(picture, fresh[str(path)]))
                if log is not None:
                    log.write(json.dumps({"source": str(path), "records": [r.to_dict() for r in fresh[str(path)]]}) + "\n")
            if log is not None:
                log.flush()
            bar.update(len(chunk))
    return [record for path in files for record in done.get(str(path)) or fresh[str(path)]]


def read_partial(path: Path, settings: dict, key: str = "source", field: str = "records") -> dict:
    """Records per item from an interrupted run's log, one JSON line per item holding its
    ``key`` and a list of FaceRecords under ``field`` (photos: per source; videos: per
    frame); a torn last line is ignored. Raises UserError when the log was written with
    other settings."""
    done: dict = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the run stopped
                continue
            if "settings" in entry:
                changed = sorted(k for k in settings if entry["settings"].get(k) != settings[k])
                if changed:
                    raise UserError(f"cannot resume {path}: settings differ from the interrupted run's "
                                    f"({', '.join(changed)}); pass --overwrite to start again")
            else:
                done[entry[key]] = [FaceRecord(**r) for r in entry[field]]
    return done


def summary_lines(records: Sequence[FaceRecord], ignored: int = 0) -> list[str]:
    """images, faces, no-face and unreadable counts (and files ignored as not images)."""
    status = Counter(r.status for r in records)
    images = len({r.source for r in records})
    lines = [f"{images} image(s): {status['ok']} face(s), {status['no_face']} with no face, "
             f"{status['unreadable']} unreadable"]
    if ignored:
        lines.append(f"{ignored} file(s) ignored: not images")
    return lines


def run(args: argparse.Namespace) -> int:
    from muldml import video

    if args.camera is not None or any(video.is_video(text) for text in args.inputs):
        return video.run(args)
    if not args.inputs:
        raise UserError("no input given: photos, folders, globs or videos (or --camera N)")
    out = Path(args.out)
    target, partial = out / f"predictions.{args.format}", out / PARTIAL
    if target.exists() and not args.overwrite:
        raise UserError(f"{target} exists; pass --overwrite to replace it")
    if partial.exists() and not (args.resume or args.overwrite):
        raise UserError(f"{out} holds an interrupted run's predictions; pass --resume to continue it "
                        "or --overwrite to start again")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    files, ignored = collect_inputs(args.inputs, out)
    check_writable(out)
    annotate_dir = out / "annotated" if args.annotate else None
    if annotate_dir is not None:
        check_writable(annotate_dir)
    model = load_model(args.checkpoint, args.device, args.face_size, args.batch_size, args.tta)
    # What the records depend on: a resumed run must not mix records made otherwise.
    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "detect": not args.no_detect,
                "embeddings": args.embeddings, "face_size": args.face_size, "annotate": args.annotate,
                "tta": args.tta}
    done = read_partial(partial, settings) if args.resume and partial.exists() else {}
    with open(partial, "a" if done else "w", encoding="utf-8") as log:
        if done:
            log.write("\n")  # whatever the stopped run left half-written stays a line of its own
        else:
            log.write(json.dumps({"settings": settings}) + "\n")
        records = predict_files(model, files, not args.no_detect, args.embeddings, annotate_dir, not args.quiet,
                                log, done)
    atomic.write_text(target, format_records(records, args.format, model.classes, args.embeddings))
    partial.unlink()
    print("\n".join(summary_lines(records, ignored)))
    if done:
        print(f"resumed: {sum(str(f) in done for f in files)} image(s) from the interrupted run")
    print(f"predictions: {target}" + (f"; annotated images: {annotate_dir}" if annotate_dir else ""))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `muldml predict` on the CLI's subparsers."""
    p = subparsers.add_parser("predict", help="every face's expression in photos (JSON lines or CSV)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders (read recursively) or globs; or video files (see --fps)")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint file")
    p.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="predictions file format (default jsonl)")
    p.add_argument("--annotate", action="store_true", help="also write each image with boxes and labels drawn")
    p.add_argument("--embeddings", action="store_true", help="add each face's (N·d) embedding to its record")
    p.add_argument("--no-detect", action="store_true", help="inputs are aligned faces already (e.g. a prepared folder)")
    p.add_argument("--face-size", type=int, default=FACE_SIZE, help="side the training faces were aligned to (prepare --size)")
    p.add_argument("--batch-size", type=int, default=32, help="images read and faces classified at a time")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: none (centre crop), flip (and its mirror) or ten-crop (corners, "
                        "centre and their mirrors), class probabilities averaged; each record names it (default none)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in the same --out folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing predictions file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from muldml.video import DEFAULT_EMA, DEFAULT_FPS

    videos = p.add_argument_group("videos (files or a camera)")
    videos.add_argument("--fps", type=float, default=DEFAULT_FPS,
                        help=f"frames analysed per second of video (default {DEFAULT_FPS:g}; at least the video's rate: every frame)")
    videos.add_argument("--ema", type=float, default=DEFAULT_EMA,
                        help="weight of the newest frame in each track's moving average of probabilities, in (0, 1]; "
                             f"1: no smoothing (default {DEFAULT_EMA:g})")
    videos.add_argument("--camera", type=int, metavar="N", help="read webcam N live (needs OpenCV) instead of files")
    videos.add_argument("--duration", type=float, help="--camera: stop after this many seconds (default: at Ctrl-C)")
    p.set_defaults(run=run)
    return p

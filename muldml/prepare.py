"""`muldml prepare`: a dataset as distributed → aligned face crops + manifest.csv.

For every source image (see muldml.data.sources): open it robustly (`muldml.data.images.to_rgb`:
EXIF orientation applied; CMYK, palette, 16-bit and alpha images converted to 8-bit RGB), detect the face
and its 5 landmarks with MTCNN, level the eyes, crop the region of interest and resize to
``size`` (236 in the paper). No face → the centred square, status ``no_face``. Training
images (and every image of a dataset without an official split, whose folds are made
later) also get the paper's offline rotations, written beside the original with their
angle in the manifest; training code uses rotations for training samples only.

Output: OUT/<label>/<name>.png and OUT/manifest.csv with columns path, label, subject,
split, source, rotation, probability, status (ok / no_face / skipped), reason.
<name> comes from the source's key (`output_stem`); every source gets its own files, a
name two sources would share being made distinct with a hash of the key (and counted).
Any file in a source folder that is not an image Pillow reads is listed as skipped by its
reader; an image that cannot be read, detected in or cropped is skipped with its reason:
every source is counted, and one bad image never stops the run.
Every image is written atomically; progress is logged per source image, so an
interrupted run resumes where it stopped and a finished one is a no-op.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.data.files import is_image_file
from muldml.data.images import to_rgb
from muldml.data.sources import RawItem, SourceDataset

PAPER_ROTATIONS = (-10, -5, 0, 5, 10)
MIN_SIDE = 16  # pixels; anything smaller holds no usable face
MANIFEST_COLUMNS = ("path", "label", "subject", "split", "source", "rotation", "probability", "status", "reason", "sha1")
LOG = ".prepare-log.csv"


@dataclass
class Summary:
    """What a prepare run did, counted per status and per warning."""

    statuses: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    images_written: int = 0

    def lines(self) -> list[str]:
        out = [f"{n} source image(s) {status}" for status, n in sorted(self.statuses.items())]
        out += [f"  warning: {n}× {w}" for w, n in self.warnings.most_common()]
        out.append(f"{self.images_written} image file(s) written")
        return out


def _open(item: RawItem) -> tuple[Image.Image | None, list[str], str]:
    """(image, notes, error): loads fully so that truncated files fail here."""
    try:
        img = item.load()
        img.load()
        rgb, notes = to_rgb(img)
    except Exception as e:  # zero-byte, truncated, not an image, unreadable …
        return None, [], f"unreadable image: {e.__class__.__name__}: {str(e)[:120]}"
    if min(rgb.size) < MIN_SIDE:
        return None, notes, f"too small ({rgb.size[0]}×{rgb.size[1]} px)"
    return rgb, notes, ""


def output_stem(key: str) -> str:
    """A file-system-safe stem from a source key: folders joined by ``__``, an image file's
    extension dropped, other characters outside ``[A-Za-z0-9._-]`` replaced by ``_``
    (``fer2013.csv#row=7`` → ``fer2013.csv_row_7``). Different keys can give the same stem;
    `prepare` makes them distinct."""
    path = Path(key)
    if is_image_file(path):
        path = path.with_suffix("")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.as_posix().replace("/", "__")).strip("._")
    if not stem or len(stem) > 150:  # file names stay well inside 255 bytes
        stem = f"{stem[:100]}-{_key_hash(key)}".strip("._-")
    return stem


def _key_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:10]


class _Outputs:
    """Output paths claimed so far (compared case-folded, as on case-insensitive file systems):
    each source gets paths no other source has; a clash is resolved with a hash of its key."""

    def __init__(self, rows: Iterable[dict]) -> None:
        self.owner = {row["path"].casefold(): row["source"] for row in rows if row["path"]}

    def paths(self, item: RawItem, angles: Sequence[int], summary: Summary) -> list[str]:
        stem = output_stem(item.key)
        for candidate in (stem, f"{stem}-{_key_hash(item.key)}"):
            paths = [f"{item.label}/{candidate}{'' if a == 0 else f'_r{a:+d}'}.png" for a in angles]
            if all(self.owner.get(p.casefold(), item.key) == item.key for p in paths):
                break
            summary.warnings["output name shared with another source, made distinct by a hash of its key"] += 1
        else:  # a hash clash too: not expected, but never overwrite
            raise RuntimeError(f"no distinct output name for {item.key}")
        self.owner.update((p.casefold(), item.key) for p in paths)
        return paths


def _read_log(path: Path) -> dict[str, list[dict]]:
    """Rows already written, grouped by source key. A source's rows start with its
    rotation-0 (or skipped) row, so a source written again replaces its earlier rows;
    a torn last line is ignored."""
    done: dict[str, list[dict]] = {}
    if not path.exists():
        return done
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, fieldnames=MANIFEST_COLUMNS):
            if row.get("sha1") is None:  # torn line
                continue
            if row["rotation"] in ("", "0"):
                done[row["source"]] = []
            done.setdefault(row["source"], []).append(row)
    return done


def _ends_torn(path: Path) -> bool:
    """Whether a non-empty file lacks its final newline."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def _angles(item: RawItem, rotations: Sequence[int]) -> list[int]:
    """Rotations written for an item: all for training images (and for datasets without an
    official split, whose folds are made later), none for validation and test images."""
    angles = rotations if item.split in (None, "train") else ()
    return sorted(set(angles) | {0}, key=lambda a: (a != 0, a))


def _finished(item: RawItem, rows: list[dict], rotations: Sequence[int]) -> bool:
    if rows and rows[0]["status"] == "skipped":
        return True
    return sorted(int(r["rotation"]) for r in rows) == sorted(_angles(item, rotations))


def prepare(
    source: SourceDataset,
    out: str | Path,
    size: int = 236,
    detect: bool = True,
    rotations: Sequence[int] = PAPER_ROTATIONS,
    device: str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
) -> Summary:
    """Prepare `source` into `out` (see the module doc). Returns the run's summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG
    logged = _read_log(log_path)
    done = {item.key: logged[item.key] for item in source.items
            if item.key in logged and _finished(item, logged[item.key], rotations)}
    summary = Summary()
    _redo_shared_outputs(out, done, summary)
    todo = [item for item in source.items if item.key not in done]
    manifest = dict(done)  # source key → its rows: what manifest.csv will hold
    for rows in done.values():
        summary.statuses[rows[0]["status"]] += 1
    summary.warnings.update(source.warnings)
    detector = None
    if detect and any(item.label for item in todo):
        from muldml.data.faces import FaceDetector

        detector = FaceDetector(device)
    run = _Run(out, size, detect, rotations, summary, _Outputs(row for rows in done.values() for row in rows),
               seen={row["sha1"]: key for key, rows in done.items() for row in rows if row["sha1"]})
    bar = tqdm(total=len(source.items), initial=len(source.items) - len(todo), disable=not progress,
               desc=f"prepare {source.name}", unit="img")
    with open(log_path, "a", newline="", encoding="utf-8") as log:
        if _ends_torn(log_path):
            log.write("\n")  # an interrupted run's torn last line stays a line of its own
        writer = csv.writer(log)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            opened = [(item, *_open(item)) if item.label else (item, None, [], item.skip_reason or "no label")
                      for item in chunk]
            images = [img for _, img, _, _ in opened if img is not None]
            found = iter(detector.detect_faces(images) if detector and images else [None] * len(images))
            for item, img, notes, error in opened:
                rows = _process(run, item, img, notes, error, next(found) if img is not None else None)
                writer.writerows([[row[c] for c in MANIFEST_COLUMNS] for row in rows])
                log.flush()
                manifest[item.key] = rows
                bar.update(1)
    bar.close()
    _write_manifest(out, [row for rows in manifest.values() for row in rows])
    return summary


def _redo_shared_outputs(out: Path, done: dict[str, list[dict]], summary: Summary) -> None:
    """An earlier run may have written several sources to one file (names cut to a shared
    stem): those sources are done again under distinct names and the shared files removed."""
    owners: dict[str, set[str]] = {}
    for key, rows in done.items():
        for row in rows:
            if row["path"]:
                owners.setdefault(row["path"].casefold(), set()).add(key)
    shared = {path for path, keys in owners.items() if len(keys) > 1}
    redo = {key for path in shared for key in owners[path]}
    for key in redo:
        for row in done.pop(key):
            if row["path"].casefold() in shared:
                (out / row["path"]).unlink(missing_ok=True)
    if redo:
        summary.warnings["written to a file shared with another source by an earlier run, prepared again"] += len(redo)


@dataclass
class _Run:
    """What every source image of one prepare run shares."""

    out: Path
    size: int
    detect: bool
    rotations: Sequence[int]
    summary: Summary
    outputs: _Outputs
    seen: dict[str, str]  # sha1 of pixels → the source key that first had them


def _process(run: _Run, item: RawItem, img: Image.Image | None, notes: list[str], error: str, found) -> list[dict]:
    """Write one source image's outputs; returns its manifest rows. `found`: its `ImageFaces`,
    None without detection. A failure on this image (reading, detection, cropping) skips it,
    counted and with its reason; it never stops the run."""
    from muldml.data.faces import MIN_FACE_SIZE, align_face, center_square

    out, size, summary, seen = run.out, run.size, run.summary, run.seen

    base = {"label": item.label or "", "subject": item.subject or "", "split": item.split or "",
            "source": item.key, "rotation": "", "probability": "", "path": "", "sha1": ""}

    def skipped(reason: str) -> list[dict]:
        summary.statuses["skipped"] += 1
        summary.warnings[reason.split(":")[0]] += 1
        return [base | {"status": "skipped", "reason": reason}]

    if img is None:
        return skipped(error)
    digest = hashlib.sha1(img.tobytes()).hexdigest()
    if digest in seen:
        summary.statuses["skipped"] += 1
        summary.warnings["duplicate image"] += 1
        return [base | {"status": "skipped", "reason": f"duplicate of {seen[digest]}"}]
    if found is not None and found.error:
        return skipped(found.error)
    status, detection = "ok", found.best if found is not None else None
    if detection is not None:
        face = lambda angle: align_face(img, detection.landmarks, size, angle)  # noqa: E731
        base["probability"] = f"{detection.probability:.4f}"
    else:
        face = lambda angle: center_square(img, size, angle)  # noqa: E731
        if run.detect:
            status = "no_face"
            summary.warnings["no face found, centred crop used"] += 1
            if min(img.size) < MIN_FACE_SIZE:
                notes = notes + [f"smaller than the smallest face MTCNN finds ({MIN_FACE_SIZE} px)"]
    angles = _angles(item, run.rotations)
    try:
        crops = [face(angle) for angle in angles]
    except Exception as e:  # degenerate landmarks, a decoder error surfacing late …
        return skipped(f"cropping failed: {e.__class__.__name__}: {str(e)[:120]}")
    seen[digest] = item.key
    for note in notes:
        summary.warnings[note] += 1
    if min(img.size) < size:
        summary.warnings["smaller than the output size, upscaled"] += 1
    rows = []
    for angle, crop, rel in zip(angles, crops, run.outputs.paths(item, angles, summary)):
        (out / item.label).mkdir(exist_ok=True)
        atomic.save_png(out / rel, crop)
        summary.images_written += 1
        rows.append(base | {"path": rel, "rotation": str(angle), "status": status, "reason": "; ".join(notes),
                            "sha1": digest if angle == 0 else ""})
    summary.statuses[status] += 1
    return rows


def _write_manifest(out: Path, rows: list[dict]) -> None:
    rows.sort(key=lambda r: (r["source"], int(r["rotation"] or 0)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out / "manifest.csv", buffer.getvalue())

"""The run-folder contract every command that trains or scores shares (train, each cv fold,
pretrain, each study cell, the demo):

    settings.json   the settings fingerprint: the Config and every runtime option that
                    changes what is learnt (resolved mixed precision, gradient-cache chunk,
                    BatchNorm statistics (sync-bn), global batch, world size where BatchNorm
                    makes it matter) and a digest of the training images; written before
                    training starts
    split.json      which images trained, validated and were held out (evaluate reads it)
    checkpoint.pt   model, optimiser, schedule, GradScaler, every RNG, position (checkpoint.py)
    result.json     the run's outcome, written last and atomically: a run is done only when it
                    exists and its fingerprint equals the one asked for

A folder made with other settings is never reused silently: ``check_folder`` refuses in one
line naming each differing setting with its recorded and requested values, unless the caller
overwrites (the folder's run files are then removed first).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from muldml import io as atomic
from muldml.config import Config, Runtime
from muldml.errors import UserError

SETTINGS = "settings.json"
SPLIT = "split.json"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
# Files of a run that --overwrite removes (and nothing else in the folder).
RUN_FILES = (CHECKPOINT, "history.csv", RESULT, SETTINGS, SPLIT, "metrics.json", "report.md", "incomplete.json")
# Settings a resumed run may change, with why that is safe:
#   epochs   how long it runs; a cosine schedule is re-planned over the new length
#   backend  which implementation computes the same loss (reference, torch, triton)
RESUMABLE_CHANGES = frozenset({"epochs", "backend"})


def resolved_amp(amp: str, device_type: str) -> str:
    """--amp auto is bf16 on CUDA and off on the CPU."""
    if amp == "auto":
        return "bf16" if device_type == "cuda" else "off"
    return amp


def images_digest(samples: Sequence[Any]) -> str:
    """sha1 of the training images (class folder/file name and label, sorted): the same
    images give the same digest wherever the dataset folder lies."""
    keys = sorted(f"{Path(s.path).parent.name}/{Path(s.path).name}:{s.label}:{s.rotation}" for s in samples)
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]


def fingerprint(cfg: Config, runtime: Runtime, device_type: str, train_samples: Sequence[Any] = (),
                world: int | None = None) -> dict[str, Any]:
    """What makes two runs the same run: flat {setting: value}.

    batchnorm_statistics: "global batch" in one process or with sync_bn, else "per process";
    world_size is recorded only in the second case ("any" otherwise): each process then
    normalises its own share of the batch, so the number of processes changes the gradients,
    while with global statistics K processes equal one (a run may resume with another K).
    """
    from muldml.training.distributed import launch_world

    world = launch_world() if world is None else world
    per_process = world > 1 and not runtime.sync_bn
    values = dict(cfg.to_dict())
    values |= {"amp": resolved_amp(runtime.amp, device_type), "grad_cache": runtime.grad_cache,
               "batchnorm_statistics": "per process" if per_process else "global batch",
               "global_batch": cfg.batch_size, "world_size": world if per_process else "any",
               "training_images": f"{len(train_samples)} images, sha1 {images_digest(train_samples)}"}
    return json.loads(json.dumps(values))  # plain JSON values, as read back from settings.json


def differences(recorded: dict[str, Any], requested: dict[str, Any], allowed: frozenset = frozenset()) -> list[str]:
    """'setting recorded → requested' for every setting that differs (keys a folder made by
    an older muldml did not record are not compared)."""
    return [f"{k} {recorded[k]!r} → {requested[k]!r}" for k in requested
            if k in recorded and k not in allowed and recorded[k] != requested[k]]


def refuse_other_settings(out: Path, changed: list[str]) -> None:
    """Raise the one-line UserError for a folder holding a run of other settings."""
    raise UserError(f"{out} holds a run made with other settings ({'; '.join(changed)}); "
                    "use --overwrite to replace it, or another --out")


def read_json(path: Path) -> dict | None:
    """A JSON file's mapping, or None when absent, torn or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def holds_run(out: Path) -> bool:
    return (out / CHECKPOINT).exists() or (out / RESULT).exists()


def recorded_settings(out: Path) -> dict[str, Any] | None:
    """The folder's fingerprint: settings.json, else (older folders) its checkpoint's config."""
    settings = read_json(out / SETTINGS)
    if settings is not None:
        return settings
    if (out / CHECKPOINT).is_file():
        from muldml.training.checkpoint import load_checkpoint

        state = load_checkpoint(out)
        return state.get("fingerprint") or dict(state["config"])
    return None


def check_folder(out: Path, requested: dict[str, Any], overwrite: bool, allowed: frozenset = RESUMABLE_CHANGES,
                 main: bool = True) -> bool:
    """Make `out` ready for the run `requested` describes; True when it already holds a run of
    those settings (to resume, or done when result.json exists).

    A folder holding a run of other settings raises UserError naming each difference, unless
    `overwrite`: then the run's files are removed (by the main process) and False returned.
    """
    if not holds_run(out):
        return False
    recorded = recorded_settings(out) or {}
    changed = differences(recorded, requested, allowed)
    if not changed:
        return True
    if not overwrite:
        refuse_other_settings(out, changed)
    if main:
        clear(out)
    return False


def clear(out: Path) -> None:
    """Remove a run's files from `out` (reports of other commands and foreign files stay)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def write_settings(out: Path, requested: dict[str, Any]) -> None:
    atomic.write_json(out / SETTINGS, requested)


def write_split(out: Path, policy: str, seed: int, parts: dict[str, Sequence[Any]],
                source: dict[str, Any] | None = None) -> None:
    """split.json: the policy and seed that made the split, where the data came from
    (`source`: the data folder and how subjects were read, for `train --resume`), and for
    each part (train, val, test) its images (resolved paths) and subjects."""
    record = {"policy": policy, "seed": seed, "source": source}
    for name, samples in parts.items():
        record[name] = {"images": sorted(str(Path(s.path).resolve()) for s in samples),
                        "subjects": sorted({str(s.subject) for s in samples if s.subject is not None})}
    atomic.write_json(out / SPLIT, record)


def read_split(out: Path) -> dict | None:
    return read_json(out / SPLIT)


def write_result(out: Path, result: dict[str, Any]) -> Path:
    """result.json, atomically, with the folder's fingerprint: written last, it marks the run done."""
    return atomic.write_json(out / RESULT, {**result, "settings": read_json(out / SETTINGS)})


def read_result(out: Path, requested: dict[str, Any] | None = None) -> dict | None:
    """The finished run's result, or None when the run is not finished (no or torn result.json,
    or fewer epochs than requested). With `requested`, a result made with other settings
    raises UserError (see check_folder); pass it through check_folder to overwrite instead."""
    result = read_json(out / RESULT)
    if result is None:
        return None
    if requested is not None:
        changed = differences(result.get("settings") or {}, requested, RESUMABLE_CHANGES)
        if changed:
            refuse_other_settings(out, changed)
        if result.get("epochs") is not None and result["epochs"] != requested.get("epochs", result["epochs"]):
            return None  # asked for another length: resume the checkpoint
    return result


def resumable(out: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(config, runtime options, data source) a run in `out` was made with, for `--resume`
    without repeating its options; None when `out` holds no checkpoint."""
    if not (out / CHECKPOINT).is_file():
        return None
    from muldml.training.checkpoint import load_checkpoint

    state = load_checkpoint(out)
    settings = read_json(out / SETTINGS) or state.get("fingerprint") or {}
    runtime = {}
    if "amp" in settings:
        runtime["amp"] = settings["amp"]
    if "grad_cache" in settings:
        runtime["grad_cache"] = settings["grad_cache"]
    if settings.get("batchnorm_statistics") == "global batch" and settings.get("world_size") == "any":
        runtime["sync_bn"] = True  # global statistics: keep them global under any number of processes
    return dict(state["config"]), runtime, (read_split(out) or {}).get("source") or {}

"""Checkpoints: what a run folder holds, how it is read back safely, and what may change on resume.

``checkpoint.pt`` holds only tensors and plain Python values (no pickled objects), so it
loads with ``torch.load(weights_only=True)``: loading a file never runs code from it.
It holds no device: weights load on the CPU and go wherever the command says (--device).

    format      CHECKPOINT_FORMAT
    model       state_dict            optimizer   Adam state_dict
    schedule    {"start", "factor", "epochs"}: the learning-rate plan (see lr_factor)
    rng         torch / numpy / python / loader generator / cuda states as tensors and ints
    scaler      the fp16 GradScaler's state ({} without one)
    position    {"epoch", "batch"}: where the sampler and loader stand. Checkpoints are taken
                at epoch ends (batch 0 of the next epoch); every epoch reseeds the sampler,
                the augmentation and dropout from (seed, epoch), so that is all they need.
    epoch       epochs completed      config      Config.to_dict()
    fingerprint the run's settings fingerprint (runfolder.py)
    history     one dict of floats per epoch (also in history.csv)
    loss        the metric loss's state_dict where it has one: HIST's parameters, or the
                cross-batch memory's queue (xbm_size), so that a resumed run mines as before
"""
from __future__ import annotations

import csv
import io
import math
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muldml import io as atomic
from muldml.config import Config
from muldml.errors import UserError
from muldml.model import MulDMLNet
from muldml.training.build import build_model
from muldml.training.runfolder import CHECKPOINT, RESUMABLE_CHANGES  # noqa: F401  (re-exported)

HISTORY = "history.csv"
CHECKPOINT_FORMAT = 2


def lr_factor(schedule: dict[str, Any], epoch: int, kind: str) -> float:
    """Multiplier of the base learning rate in `epoch` (0-based).

    constant: 1. cosine: from ``factor`` at epoch ``start`` down to 0 at ``epochs``,
    factor·(1 + cos(π·(epoch − start)/(epochs − start)))/2; a fresh run has start 0 and
    factor 1 (torch's CosineAnnealingLR with T_max = epochs). A resumed run whose length
    changed starts a new segment at the lr it last used, so the rate never rises.
    """
    if kind == "constant":
        return 1.0
    start, factor, end = schedule["start"], schedule["factor"], schedule["epochs"]
    if epoch >= end:
        return 0.0
    return factor * (1 + math.cos(math.pi * (epoch - start) / (end - start))) / 2


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from, as tensors and plain values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss_next},
        "loader": loader_generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Restore what rng_state saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["words"].tolist()), p["gauss"]))
    loader_generator.set_state(state["loader"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, state: dict[str, Any]) -> Path:
    """Write out/checkpoint.pt atomically (a crash leaves the previous one intact)."""
    return atomic.save_torch(out / CHECKPOINT, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (a file or a run folder) with weights_only=True onto the CPU.

    Raises UserError (one line) for missing, truncated, foreign, unsafe or newer files.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise UserError(f"checkpoint {path} holds pickled objects, which are not loaded for safety "
                            "(not a muldml checkpoint, or one from before format 2)") from None
        raise UserError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): UnpicklingError") from None
    except Exception as e:
        raise UserError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {e.__class__.__name__}") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise UserError(f"{path} is not a muldml checkpoint")
    if state.get("format", 1) > CHECKPOINT_FORMAT:
        raise UserError(f"{path} has checkpoint format {state['format']}, newer than this muldml reads "
                        f"({CHECKPOINT_FORMAT}); upgrade muldml")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> tuple[MulDMLNet, Config]:
    """(model on the CPU, its Config) from a loaded checkpoint; move the model where needed."""
    cfg = Config.from_dict(state["config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit its own config: {str(e).splitlines()[0]}") from None
    return model, cfg


def write_history(out: Path, history: list[dict]) -> None:
    """history.csv: one row per epoch, columns in first-seen order."""
    if not history:
        return
    buffer = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic.write_text(out / HISTORY, buffer.getvalue())

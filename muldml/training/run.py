"""``fit()``: the one training entry point that the CLI, cross-validation and the demo call.

A run folder holds ``checkpoint.pt`` (written atomically after every epoch, see
checkpoint.py) and ``history.csv`` (one row per epoch: learning rate, cross-entropy, each
slice's triplet loss and active fraction, accuracy, for train and val). ``resume=True``
continues from the checkpoint and reaches the same final weights as an uninterrupted run.
"""
from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.config import Config, Runtime
from muldml.data.augment import eval_transform, train_transform
from muldml.data.folder import FaceDataset, Sample, class_counts
from muldml.data.samplers import PKSampler
from muldml.errors import UserError
from muldml.losses import MultiThresholdTripletLoss
from muldml.model import MulDMLNet, load_init
from muldml.training.checkpoint import (CHECKPOINT, check_resumable, load_checkpoint, lr_factor, rng_state,
                                        save_checkpoint, set_rng_state, write_history)
from muldml.training.distributed import resolve_device
from muldml.training.loop import run_epoch


def build_model(cfg: Config) -> MulDMLNet:
    """The network `cfg` describes, on the CPU, freshly initialised."""
    return MulDMLNet(len(cfg.classes), cfg.num_slices, cfg.slice_dim, cfg.classifier_input,
                     cfg.multitask, cfg.dropout)


def build_triplet_loss(cfg: Config) -> MultiThresholdTripletLoss | None:
    """The multi-threshold triplet loss of `cfg`, or None for softmax-only presets."""
    if not cfg.margins:
        return None
    return MultiThresholdTripletLoss(margins=cfg.margins, slice_dim=cfg.slice_dim, dual=cfg.dual,
                                     lam=cfg.lam, backend=cfg.backend)


def check_writable(out: Path) -> None:
    """Create `out` if needed; UserError when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / ".write-test", "")
        (out / ".write-test").unlink()
    except OSError as e:
        raise UserError(f"output folder {out} is not writable: {e.strerror}") from None


def tensorboard_writer(out: Path):
    """A TensorBoard SummaryWriter logging into out/tensorboard, or None when TensorBoard is
    not installed (it is optional: history.csv holds the same numbers)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _loaders(cfg: Config, runtime: Runtime, train_samples: Sequence[Sample], val_samples: Sequence[Sample],
             generator: torch.Generator):
    workers = runtime.workers
    train_set = FaceDataset(train_samples, train_transform(cfg.image_size, cfg.crop))
    if cfg.sampler == "pk":
        batches = PKSampler([s.label for s in train_samples], cfg.batch_size, cfg.pk_samples, generator)
        train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=workers)
    else:
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                                   drop_last=len(train_set) > cfg.batch_size,
                                                   generator=generator, num_workers=workers)
    val_loader = None
    if val_samples:
        val_set = FaceDataset(val_samples, eval_transform(cfg.image_size, cfg.crop))
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=workers)
    return train_loader, val_loader


def fit(
    cfg: Config,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out: str | Path,
    runtime: Runtime | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `cfg` on the samples, checkpointing into `out` after every epoch.

    runtime: device and loader settings (default: auto device, min(8, CPUs) workers).
    resume: continue from out/checkpoint.pt (its config must be the same run's, up to
    RESUMABLE_CHANGES); without it, a folder that holds a checkpoint is refused unless
    overwrite. stop_after: end after this epoch (an interruption, for tests).
    Returns the final checkpoint state (see checkpoint.py). Raises UserError for
    unwritable or occupied folders, classes without samples and checkpoints that do not fit.
    """
    runtime = runtime or Runtime()
    out = Path(out)
    if (out / CHECKPOINT).exists() and not resume and not overwrite:
        raise UserError(f"{out} already holds a run ({CHECKPOINT}); use --resume to continue it or --overwrite to replace it")
    check_writable(out)
    if not cfg.classes:
        raise UserError("the config names no classes")
    counts = class_counts(train_samples, len(cfg.classes))
    empty = [name for name, n in zip(cfg.classes, counts) if n == 0]
    if empty:
        raise UserError(f"class(es) with no training samples: {', '.join(empty)}")
    device = resolve_device(runtime.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    loader_generator = torch.Generator().manual_seed(cfg.seed)

    resuming = resume and (out / CHECKPOINT).exists()
    model = build_model(cfg)
    if cfg.init and not resuming:
        missing, unexpected = load_init(model, cfg.init)
        print(f"init {cfg.init}: {len(missing)} missing key(s) (new layers: {', '.join(sorted({k.split('.')[0] for k in missing})) or 'none'}), "
              f"{len(unexpected)} unexpected")
    model.to(device)
    triplet_loss = build_triplet_loss(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = {"start": 0, "factor": 1.0, "epochs": cfg.epochs}
    history: list[dict] = []
    start_epoch = 0
    if resuming:
        state = load_checkpoint(out / CHECKPOINT)
        check_resumable(out, Config.from_dict(state["config"]), cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], loader_generator)
        history, start_epoch, schedule = state["history"], state["epoch"], state["schedule"]
        if schedule["epochs"] != cfg.epochs:
            # A new length: continue from the last rate used, down to 0 at the new end.
            last = history[-1]["lr"] / cfg.lr if history else lr_factor(schedule, start_epoch, cfg.scheduler)
            schedule = {"start": start_epoch, "factor": last, "epochs": cfg.epochs}

    train_loader, val_loader = _loaders(cfg, runtime, train_samples, val_samples, loader_generator)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(total=max(0, last - start_epoch) * len(train_loader), disable=not progress,
               desc=f"{cfg.preset}", unit="batch", dynamic_ncols=True)
    state = None
    if overwrite and not resuming:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)  # the replaced run's curves
    board = tensorboard_writer(out)
    for epoch in range(start_epoch, last):
        bar.set_description(f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}")
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(schedule, epoch, cfg.scheduler)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row |= run_epoch(model, triplet_loss, train_loader, device, optimizer, bar).row("train")
        if val_loader is not None:
            # Evaluation draws no random numbers, so it leaves the training RNG stream intact.
            row |= run_epoch(model, triplet_loss, val_loader, device).row("val")
        history.append(row)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule,
                 "rng": rng_state(loader_generator), "epoch": epoch + 1, "config": cfg.to_dict(), "history": history}
        save_checkpoint(out, state)
        write_history(out, history)
        if board is not None:
            for key, value in row.items():
                board.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
    bar.close()
    if board is not None:
        board.close()
    return state if state is not None else load_checkpoint(out / CHECKPOINT)

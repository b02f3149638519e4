"""``fit()``: the one training entry point that train, pretrain, cross-validation, the demo
and the studies call, in one process or under torchrun.

A run folder follows the run-folder contract (runfolder.py): settings.json and split.json
before training, ``checkpoint.pt`` (written atomically by rank 0 after every epoch, see
checkpoint.py), ``history.csv`` (one row per epoch: learning rate, cross-entropy, each
slice's triplet loss and active fraction, accuracy for train and val, training images per
second and peak memory; and every loss term with its share and the threshold regime's
diagnostics, see training/loop.Meter and muldml/regime.py), and the caller's result.json
last. ``resume=True`` continues from the checkpoint and reaches the same final weights as an
uninterrupted run: every epoch reseeds its random streams from (seed, epoch, rank), each
image is augmented from its own seed (data/samplers.py), the loaders draw their workers'
seeds from their own generator, and the fp16 GradScaler is restored, so neither loader
workers nor the point of interruption change what is drawn.

Under torchrun (K processes) the global batch is ``batch_size``: each process takes
batch_size / K images of every global batch, the triplet loss mines over the all-gathered
global batch (muldml.kernels.triplet.gather), and DDP averages gradients. With ``Runtime.sync_bn``
BatchNorm uses the global batch's statistics too, and one step equals one process on the
whole batch; without it each process normalises its own share (as usual with DDP), and the
run's settings record the number of processes. Batches come from one generator seeded alike
in every process rather than from torch's DistributedSampler, so the global batches (and
their augmentation) do not depend on the number of processes: with sync_bn a run may
resume with another world size. Validation runs in every process over the whole validation
set without collectives; rank 0 records it.
"""
from __future__ import annotations

import random
import resource
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
from muldml.data.samplers import PKSampler, SeededDataset, ShardedBatches, random_batches
from muldml.errors import UserError
from muldml.model import load_init
from muldml.regime import ALL_ACTIVE, UNDIFFERENTIATED, undifferentiated
from muldml.training import runfolder
from muldml.training.build import build_model, build_triplet_loss
from muldml.training.checkpoint import (CHECKPOINT, load_checkpoint, lr_factor, rng_state, save_checkpoint,
                                        set_rng_state, write_history)
from muldml.training.distributed import (Processes, barrier, resolve_device, restart_count, setup,
                                         sum_over_processes, sync_batchnorm, teardown)
from muldml.training.loop import Precision, run_epoch

# Columns of history.csv that measure the machine, not the learning (they differ between
# an interrupted and an uninterrupted run).
THROUGHPUT_COLUMNS = ("images_per_s", "peak_memory_mb")


def precision_for(amp: str, device: torch.device) -> Precision:
    """--amp (auto resolved by runfolder.resolved_amp); fp16 adds a GradScaler and needs CUDA."""
    amp = runfolder.resolved_amp(amp, device.type)
    if amp == "fp16" and device.type != "cuda":
        raise UserError(f"--amp fp16 needs a CUDA device (this run is on {device.type}); use --amp bf16 or off")
    if amp == "off":
        return Precision()
    if amp == "bf16":
        return Precision(torch.bfloat16)
    return Precision(torch.float16, torch.amp.GradScaler(device.type))


def check_writable(out: Path, rank: int = 0) -> None:
    """Create `out` if needed; UserError when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{rank}"
        atomic.write_text(probe, "")
        probe.unlink()
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


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one process's random streams in one epoch."""
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (1 << 63)


def _loaders(cfg: Config, runtime: Runtime, procs: Processes, train_samples: Sequence[Sample],
             val_samples: Sequence[Sample], generator: torch.Generator):
    workers = runtime.workers
    # A DataLoader draws its workers' base seed when its iterator starts: from the global RNG
    # unless given a generator. Persistent workers start once per process, so that draw would
    # shift the dropout stream of the first epoch after a resumption; their own generator
    # keeps the global stream untouched (SeededDataset seeds each image anyway).
    options = dict(num_workers=workers, pin_memory=procs.device.type == "cuda", persistent_workers=workers > 0,
                   prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.sampler == "pk":
        batches = PKSampler([s.label for s in train_samples], cfg.batch_size, cfg.pk_samples, generator)
    else:
        batches = random_batches(len(train_samples), cfg.batch_size, generator,
                                 drop_last=procs.world > 1 or len(train_samples) > cfg.batch_size)
        if len(batches) == 0:
            raise UserError(f"{len(train_samples)} training images cannot fill one global batch of {cfg.batch_size}")
    train_set = SeededDataset(FaceDataset(train_samples, train_transform(cfg.image_size, cfg.crop)))
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=ShardedBatches(batches, generator, procs.rank, procs.world), **options)
    val_loader = None
    if val_samples:
        val_set = FaceDataset(val_samples, eval_transform(cfg.image_size, cfg.crop))
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, **options)
    return train_loader, val_loader


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this epoch on CUDA (allocated tensors); on the CPU the process's peak
    resident set size so far (Linux reports it in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    test_samples: Sequence[Sample] = (),
    split_policy: str = "",
    data_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `cfg` on the samples, checkpointing into `out` after every epoch.

    The folder follows the run-folder contract (runfolder.py): settings.json (the settings
    fingerprint) and split.json (train / val / test images, `split_policy`) are written
    before training (with `data_source`, where the images came from). runtime: device, loaders, precision, compilation, gradient caching,
    sync-bn (default: Runtime()). resume: continue from out/checkpoint.pt; its fingerprint
    must equal this run's up to RESUMABLE_CHANGES. Without it, a folder that holds a run is
    refused unless overwrite, which replaces it. An elastic restart under torchrun resumes
    by itself. stop_after: end after this epoch (an interruption, for tests).
    Returns the final checkpoint state (see checkpoint.py). Raises UserError for
    unwritable folders, folders holding a run of other settings (naming each difference),
    fewer than two classes, classes without samples, a global batch that does not split
    over the processes, --amp fp16 without CUDA and checkpoints that do not fit.
    """
    runtime = (runtime or Runtime()).validate()
    out = Path(out)
    resume = resume or restart_count() > 0
    if len(cfg.classes) < 2:
        raise UserError(f"the data has {len(cfg.classes)} class(es) ({', '.join(cfg.classes) or 'none'}): "
                        "triplets and classification need at least two")
    counts = class_counts(train_samples, len(cfg.classes))
    empty = [name for name, n in zip(cfg.classes, counts) if n == 0]
    if empty:
        raise UserError(f"class(es) with no training samples: {', '.join(empty)}")
    procs = setup(runtime.device)
    try:
        return _fit(cfg, train_samples, val_samples, out, runtime, procs, resume, overwrite, progress, stop_after,
                    test_samples, split_policy, data_source)
    finally:
        teardown(procs)


def _prepare_folder(out: Path, requested: dict, procs: Processes, resume: bool, overwrite: bool) -> bool:
    """Apply the run-folder contract before training; True when a checkpoint is resumed."""
    check_writable(out, procs.rank)
    if overwrite and not resume and procs.main:
        runfolder.clear(out)
    barrier()
    holds = runfolder.check_folder(out, requested, overwrite, main=procs.main)
    barrier()
    if holds and not resume:
        raise UserError(f"{out} already holds a run ({CHECKPOINT}); use --resume to continue it or --overwrite to "
                        "replace it")
    return holds and (out / CHECKPOINT).exists()


def _fit(cfg, train_samples, val_samples, out, runtime, procs, resume, overwrite, progress, stop_after,
         test_samples, split_policy, data_source):
    device = procs.device
    if cfg.batch_size % procs.world:
        raise UserError(f"batch_size {cfg.batch_size} (the global batch) does not split over {procs.world} processes")
    precision = precision_for(runtime.amp, device)
    requested = runfolder.fingerprint(cfg, runtime, device.type, train_samples, procs.world)
    resuming = _prepare_folder(out, requested, procs, resume, overwrite)
    if procs.main:
        runfolder.write_settings(out, requested)
        runfolder.write_split(out, split_policy, cfg.seed,
                              {"train": train_samples, "val": val_samples, "test": test_samples}, data_source)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    loader_generator = torch.Generator().manual_seed(cfg.seed)

    model = build_model(cfg)
    if cfg.init and not resuming:
        missing, unexpected = load_init(model, cfg.init)
        if procs.main:
            print(f"init {cfg.init}: {len(missing)} missing key(s) (new layers: "
                  f"{', '.join(sorted({k.split('.')[0] for k in missing})) or 'none'}), {len(unexpected)} unexpected")
    triplet_loss = build_triplet_loss(cfg)
    # A loss with parameters of its own (HIST's class distributions and HGNN) trains with the model.
    loss_parameters = list(triplet_loss.parameters()) if triplet_loss is not None else []
    if loss_parameters and procs.world > 1:
        raise UserError(f"metric_loss {cfg.metric_loss} trains in one process (its parameters are not synchronised)")
    optimizer = torch.optim.Adam([*model.parameters(), *loss_parameters], lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = {"start": 0, "factor": 1.0, "epochs": cfg.epochs}
    history: list[dict] = []
    start_epoch = 0
    if resuming:
        state = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(state["model"])
        if "loss" in state:  # parameters (HIST) or the cross-batch memory's queue
            triplet_loss.load_state_dict(state["loss"])
        set_rng_state(state["rng"], loader_generator)
        if precision.scaler is not None and state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
        history, start_epoch, schedule = state["history"], state["epoch"], state["schedule"]
        if schedule["epochs"] != cfg.epochs:
            # A new length: continue from the last rate used, down to 0 at the new end.
            last = history[-1]["lr"] / cfg.lr if history else lr_factor(schedule, start_epoch, cfg.scheduler)
            schedule = {"start": start_epoch, "factor": last, "epochs": cfg.epochs}
    if runtime.sync_bn and procs.world > 1:
        model = sync_batchnorm(model, device)
    if runtime.grad_cache and procs.main:
        print(f"gradient caching in chunks of {runtime.grad_cache}: BatchNorm in train mode normalises each chunk by "
              "its own statistics (as if each chunk were its own batch); mining and the loss see the whole batch")
    model.to(device)
    if triplet_loss is not None:
        triplet_loss.to(device)
    if resuming:
        optimizer.load_state_dict(state["optimizer"])  # after .to(): its moments follow the parameters
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    if runtime.compile:
        model.backbone.compile()  # in place: state_dict keys stay the same
    trained = model
    if procs.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    # Every process validates on its own (a loss with parameters is the trained one itself).
    val_loss = triplet_loss if loss_parameters else build_triplet_loss(cfg, all_gather=False, memory=False)

    train_loader, val_loader = _loaders(cfg, runtime, procs, train_samples, val_samples, loader_generator)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(total=max(0, last - start_epoch) * len(train_loader), disable=not (progress and procs.main),
               desc=f"{cfg.preset}", unit="batch", dynamic_ncols=True)
    if not resuming and procs.main:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)  # the replaced run's curves
    board = tensorboard_writer(out) if procs.main else None
    state = None
    for epoch in range(start_epoch, last):
        bar.set_description(f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}")
        torch.manual_seed(epoch_seed(cfg.seed, epoch, procs.rank))  # dropout, per process
        loader_generator.manual_seed(epoch_seed(cfg.seed, epoch))  # batches and augmentation, shared
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(schedule, epoch, cfg.scheduler)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        if cfg.xbm_size:  # the queue fills from the start and is mined from epoch xbm_start_epoch + 1
            triplet_loss.memory_active = epoch >= cfg.xbm_start_epoch
        meter = run_epoch(trained, triplet_loss, train_loader, device, optimizer, bar, precision,
                          runtime.grad_cache, runtime.channels_last)
        meter.reduce(sum_over_processes)
        row |= meter.row("train")
        if val_loader is not None:
            # Evaluation draws no random numbers, so it leaves the training RNG stream intact.
            row |= run_epoch(model, val_loss, val_loader, device, precision=precision,
                             channels_last=runtime.channels_last).row("val")
        row["images_per_s"] = meter.samples / max(meter.seconds, 1e-9)
        row["peak_memory_mb"] = _peak_memory_mb(device)  # rank 0's
        history.append(row)
        if procs.main and not progress:  # --quiet: no bars, one line per epoch
            val = f", val acc {row['val_acc']:.3f}" if "val_acc" in row else ""
            print(f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}: train ce {row['train_ce']:.4f}, "
                  f"train acc {row['train_acc']:.3f}{val}", flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule,
                 "rng": rng_state(loader_generator), "epoch": epoch + 1, "config": cfg.to_dict(), "history": history,
                 "fingerprint": requested, "position": {"epoch": epoch + 1, "batch": 0},
                 "scaler": precision.scaler.state_dict() if precision.scaler is not None else {}}
        if loss_parameters or cfg.xbm_size:
            state["loss"] = triplet_loss.state_dict()
        if procs.main:
            save_checkpoint(out, state)
            write_history(out, history)
            if board is not None:
                for key, value in row.items():
                    board.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
    bar.close()
    if board is not None:
        board.close()
    if procs.main and undifferentiated(history):
        print(f"warning: {UNDIFFERENTIATED} (every slice ≥ {100 * ALL_ACTIVE:g}% active in most epochs)")
    return state if state is not None else load_checkpoint(out / CHECKPOINT)

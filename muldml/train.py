"""Training: softmax + λ·Σ_i w_i·(dual) triplet loss_i, with per-epoch checkpoints and resume.

A run directory holds ``checkpoint.pt`` (written atomically after every epoch: model,
optimiser, scheduler, RNG states, epoch, config, history) and ``history.csv`` (one row
per epoch: cross-entropy, each slice's triplet loss and active fraction, accuracy, for
train and val). ``resume=True`` continues from the checkpoint and reaches the same final
weights as an uninterrupted run (CPU, num_workers = 0).
"""
from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.config import Config
from muldml.data.augment import eval_transform, train_transform
from muldml.data.folder import FaceDataset, Sample, class_counts
from muldml.errors import UserError
from muldml.losses import MultiThresholdTripletLoss
from muldml.model import MulDMLNet, load_init, vote

CHECKPOINT = "checkpoint.pt"
# Settings a resumed run may change: how long and where it runs, not what it learns.
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "backend"}
HISTORY = "history.csv"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: Config) -> MulDMLNet:
    return MulDMLNet(len(cfg.classes), cfg.num_slices, cfg.slice_dim, cfg.classifier_input,
                     cfg.multitask, cfg.dropout)


def build_triplet_loss(cfg: Config) -> MultiThresholdTripletLoss | None:
    if not cfg.margins:
        return None
    return MultiThresholdTripletLoss(margins=cfg.margins, slice_dim=cfg.slice_dim, dual=cfg.dual,
                                     lam=cfg.lam, backend=cfg.backend)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax loss; with per-slice classifiers (N, B, C), the mean over slices."""
    if logits.dim() == 3:
        return torch.stack([F.cross_entropy(l, labels) for l in logits]).mean()
    return F.cross_entropy(logits, labels)


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P classes × K images, so that batch-hard mining always finds positives.

    P = batch_size // K classes drawn without replacement (all of them if fewer), K images
    each (with replacement when a class has fewer); len(dataset) // batch_size batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, k: int, generator: torch.Generator) -> None:
        self.by_class = [torch.tensor([i for i, y in enumerate(labels) if y == c])
                         for c in sorted(set(labels))]
        self.k, self.p = k, max(1, batch_size // k)
        self.num_batches = max(1, len(labels) // batch_size)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            classes = torch.randperm(len(self.by_class), generator=self.generator)[: self.p]
            batch = []
            for c in classes.tolist():
                members = self.by_class[c]
                if len(members) >= self.k:
                    pick = torch.randperm(len(members), generator=self.generator)[: self.k]
                else:
                    pick = torch.randint(len(members), (self.k,), generator=self.generator)
                batch += members[pick].tolist()
            yield batch


@dataclass
class Meter:
    """Sums over an epoch of the quantities logged per epoch."""

    num_slices: int
    samples: int = 0
    correct: int = 0
    ce: float = 0.0
    batches: int = 0

    def __post_init__(self) -> None:
        self.triplet = np.zeros(self.num_slices)
        self.active = np.zeros(self.num_slices)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor, triplet) -> None:
        self.samples += len(labels)
        self.correct += int((vote(logits.detach()) == labels).sum())
        self.ce += float(ce) * len(labels)
        if triplet is not None:
            self.batches += 1
            self.triplet += triplet.slice_losses.cpu().numpy()
            self.active += triplet.active_fraction.cpu().numpy()

    def row(self, prefix: str) -> dict[str, float]:
        n = max(self.samples, 1)
        row = {f"{prefix}_ce": self.ce / n, f"{prefix}_acc": self.correct / n}
        for i in range(self.num_slices if self.batches else 0):
            row[f"{prefix}_triplet_{i}"] = self.triplet[i] / self.batches
            row[f"{prefix}_active_{i}"] = self.active[i] / self.batches
        return row


def _rng_state(loader_generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "loader": loader_generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader_generator.set_state(state["loader"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint, with one clear error for missing, truncated or foreign files."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        # Checkpoints carry numpy's RNG state, so they are unpickled: load only trusted files.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {e.__class__.__name__}") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise UserError(f"{path} is not a muldml checkpoint")
    return state


def model_from_checkpoint(state: dict) -> tuple[MulDMLNet, Config]:
    cfg = Config.from_dict(state["config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit its own config: {str(e).splitlines()[0]}") from None
    return model, cfg


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / ".write-test", "")
        (out / ".write-test").unlink()
    except OSError as e:
        raise UserError(f"output folder {out} is not writable: {e.strerror}") from None


def write_history(out: Path, history: list[dict]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic.write_text(out / HISTORY, buffer.getvalue())


def tensorboard_writer(out: Path):
    """A TensorBoard SummaryWriter logging into out/tensorboard, or None when TensorBoard is
    not installed (it is optional: history.csv holds the same numbers)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def run_epoch(model, triplet_loss, loader, device, optimizer=None, progress=None) -> Meter:
    """One pass over `loader`: trains when an optimiser is given, else evaluates."""
    training = optimizer is not None
    model.train(training)
    meter = Meter(triplet_loss.num_slices if triplet_loss else 0)
    with torch.set_grad_enabled(training):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            out = model(images)
            ce = cross_entropy(out.logits, labels)
            loss, triplet = ce, None
            if triplet_loss is not None:
                loss = loss + triplet_loss(out.embedding, labels)
                triplet = triplet_loss.last_output
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            meter.add(out.logits, labels, ce.detach(), triplet)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{meter.correct / meter.samples:.2f}")
    return meter


def train(
    cfg: Config,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `cfg` on the samples, checkpointing into `out` every epoch.

    resume: continue from out/checkpoint.pt (its config must be the same run's).
    stop_after: end after this epoch (an interruption, for tests). Returns the final state.
    """
    out = Path(out)
    check_writable(out)
    if not cfg.classes:
        raise UserError("the config names no classes")
    counts = class_counts(train_samples, len(cfg.classes))
    empty = [name for name, n in zip(cfg.classes, counts) if n == 0]
    if empty:
        raise UserError(f"class(es) with no training samples: {', '.join(empty)}")
    device = resolve_device(cfg.device)
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
    if cfg.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    history: list[dict] = []
    start_epoch = 0
    if resuming:
        state = load_checkpoint(out / CHECKPOINT)
        saved = Config.from_dict(state["config"])
        if saved.preset != cfg.preset:
            raise UserError(f"{out / CHECKPOINT} was trained with preset {saved.preset!r}, not {cfg.preset!r}")
        changed = [k for k, v in saved.to_dict().items() if k not in RESUMABLE_CHANGES and cfg.to_dict()[k] != v]
        if changed:
            raise UserError(f"cannot resume {out}: settings differ from its checkpoint ({', '.join(changed)})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], loader_generator)
        history, start_epoch = state["history"], state["epoch"]

    train_set = FaceDataset(train_samples, train_transform(cfg.image_size, cfg.crop))
    if cfg.sampler == "pk":
        batches = PKSampler([s.label for s in train_samples], cfg.batch_size, cfg.pk_samples, loader_generator)
        train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=cfg.num_workers)
    else:
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                                   drop_last=len(train_set) > cfg.batch_size,
                                                   generator=loader_generator, num_workers=cfg.num_workers)
    val_loader = None
    if val_samples:
        val_set = FaceDataset(val_samples, eval_transform(cfg.image_size, cfg.crop))
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)

    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(total=(last - start_epoch) * len(train_loader), disable=not progress,
               desc=f"{cfg.preset}", unit="batch", dynamic_ncols=True)
    state = None
    board = tensorboard_writer(out)
    for epoch in range(start_epoch, last):
        bar.set_description(f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row |= run_epoch(model, triplet_loss, train_loader, device, optimizer, bar).row("train")
        scheduler.step()
        if val_loader is not None:
            # Evaluation draws no random numbers, so it leaves the training RNG stream intact.
            row |= run_epoch(model, triplet_loss, val_loader, device).row("val")
        history.append(row)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": _rng_state(loader_generator),
                 "epoch": epoch + 1, "config": cfg.to_dict(), "history": history}
        atomic.save_torch(out / CHECKPOINT, state)
        write_history(out, history)
        if board is not None:
            for key, value in row.items():
                board.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
    bar.close()
    if board is not None:
        board.close()
    return state if state is not None else load_checkpoint(out / CHECKPOINT)

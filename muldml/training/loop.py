"""The epoch step: forward, loss (softmax + λ·Σ_i w_i·triplet_i, Eq. 9), backward, update,
and the per-epoch meters written to history.csv."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from muldml.losses import MultiThresholdTripletLoss
from muldml.model import MulDMLNet, vote
from muldml.outputs import TripletLossOutput


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax loss; with per-slice classifiers (N, B, C), the mean over slices."""
    if logits.dim() == 3:
        return torch.stack([F.cross_entropy(l, labels) for l in logits]).mean()
    return F.cross_entropy(logits, labels)


@dataclass
class Meter:
    """Sums over an epoch of the quantities logged per epoch.

    Per-slice triplet losses are means over the epoch's triplets: each batch's loss_i is
    weighted by its K (anchors with a positive and a negative), so batches without a
    triplet do not pull the mean towards 0. The active fraction is active hinge terms
    over all hinge terms of the epoch.
    """

    num_slices: int
    samples: int = 0
    correct: int = 0
    ce: float = 0.0
    triplets: int = 0  # Σ K over batches
    terms: int = 0  # Σ hinge terms (K, or 2K for the dual loss)
    triplet: list[float] = field(default_factory=list)
    active: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.triplet = [0.0] * self.num_slices
        self.active = [0] * self.num_slices

    def add(self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor,
            triplet: TripletLossOutput | None) -> None:
        self.samples += len(labels)
        self.correct += int((vote(logits.detach()) == labels).sum())
        self.ce += float(ce) * len(labels)
        if triplet is not None:
            k = int(triplet.num_triplets)
            self.triplets += k
            self.terms += k * (2 if triplet.dual else 1)
            for i, (loss, active) in enumerate(zip(triplet.slice_losses.tolist(), triplet.num_active.tolist())):
                self.triplet[i] += loss * k
                self.active[i] += active

    def row(self, prefix: str) -> dict[str, float]:
        """Plain floats (checkpoints hold no numpy objects)."""
        n = max(self.samples, 1)
        row = {f"{prefix}_ce": self.ce / n, f"{prefix}_acc": self.correct / n}
        for i in range(self.num_slices):
            row[f"{prefix}_triplet_{i}"] = self.triplet[i] / max(self.triplets, 1)
            row[f"{prefix}_active_{i}"] = self.active[i] / max(self.terms, 1)
        return row


def run_epoch(model: MulDMLNet, triplet_loss: MultiThresholdTripletLoss | None, loader: Iterable,
              device: torch.device, optimizer: torch.optim.Optimizer | None = None, progress=None) -> Meter:
    """One pass over `loader` of (images (B, C, H, W), labels (B,)): trains when an
    optimiser is given, else evaluates. Returns the epoch's meter."""
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

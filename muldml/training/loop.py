"""The epoch step: forward, loss (softmax + λ·Σ_i w_i·triplet_i, Eq. 9), backward, update,
with mixed precision and gradient caching, and the per-epoch meters of history.csv.

Gradient caching (Gao et al., "Scaling deep contrastive learning batch size under memory
limited setup", 2021) trains a batch larger than memory holds activations for:
  1. embed the batch chunk by chunk without autograd, remembering each chunk's RNG state;
  2. compute the loss on the whole batch's embeddings and logits (leaf tensors) and
     backpropagate it to them: dL/d(embedding), dL/d(logits);
  3. re-run each chunk with autograd, the RNG restored so dropout draws the same masks,
     and backpropagate the cached gradient through it.
Parameter gradients equal plain training on the whole batch when the network has no
cross-sample coupling: BatchNorm in train mode normalises each chunk by the chunk's own
statistics (as DDP does per process), so it is exact with frozen BatchNorm statistics.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from muldml.losses import MultiThresholdTripletLoss
from muldml.model import vote
from muldml.kernels.triplet.outputs import TripletLossOutput
from muldml.regime import hinge_margins


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax loss; with per-slice classifiers (N, B, C), the mean over slices."""
    if logits.dim() == 3:
        return torch.stack([F.cross_entropy(l, labels) for l in logits]).mean()
    return F.cross_entropy(logits, labels)


@dataclass
class Precision:
    """Mixed precision of a step: autocast dtype (None: fp32) and, for fp16, a GradScaler."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


@dataclass
class StepOutput:
    """One step's loss (scalar, detached), cross-entropy, triplet diagnostics and logits.

    embedding: (B, N·d) detached, for the per-slice hinge margins; gradient_norms: (2,)
    norms of the cross-entropy's and the metric loss's gradients at the embedding (None
    when not measured).
    """

    loss: torch.Tensor
    ce: torch.Tensor
    triplet: TripletLossOutput | None
    logits: torch.Tensor
    embedding: torch.Tensor | None = None
    gradient_norms: torch.Tensor | None = None


def _loss(triplet_loss, embedding, logits, labels) -> tuple[torch.Tensor, torch.Tensor, TripletLossOutput | None]:
    ce = cross_entropy(logits, labels)  # autocast runs cross-entropy in fp32
    if triplet_loss is None:
        return ce, ce, None
    return ce + triplet_loss(embedding, labels), ce, triplet_loss.last_output


def _gradient_norms(ce: torch.Tensor, loss: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor | None:
    """(2,) norms of d(CE)/d(embedding) and d(metric term)/d(embedding), the metric term
    being loss − CE (λ included): two extra backward passes through the head only, the
    graph kept for the step's own backward. None for softmax-only steps."""
    metric = loss - ce
    if not metric.requires_grad or not embedding.requires_grad:
        return None
    grads = [torch.autograd.grad(term, embedding, retain_graph=True, allow_unused=True)[0] for term in (ce, metric)]
    return torch.stack([torch.zeros((), device=embedding.device) if g is None else g.float().norm() for g in grads])


def _rng_snapshot(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _rng_restore(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _norm_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of every normalisation layer's running statistics."""
    return [(b, b.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
            for b in m.buffers()]


def train_step(model: nn.Module, triplet_loss: MultiThresholdTripletLoss | None, images: torch.Tensor,
               labels: torch.Tensor, optimizer: torch.optim.Optimizer, precision: Precision | None = None,
               chunk: int | None = None) -> StepOutput:
    """One optimisation step on a batch: images (B, C, H, W), labels (B,).

    chunk: gradient caching with chunks of this many images (None: one plain pass).
    Under DDP ``model`` is the DistributedDataParallel wrapper; with chunks, gradients are
    synchronised once, after the last chunk.
    """
    precision = precision or Precision()
    optimizer.zero_grad(set_to_none=True)
    sizes = chunk_sizes(len(images), chunk)
    if len(sizes) == 1:
        with precision.autocast(images.device):
            out = model(images)
            loss, ce, triplet = _loss(triplet_loss, out.embedding, out.logits, labels)
        norms = _gradient_norms(ce, loss, out.embedding) if triplet_loss is not None else None
        _backward(loss, precision)
        logits, embedding = out.logits.detach(), out.embedding.detach()
    else:
        loss, ce, triplet, logits = _cached_backward(model, triplet_loss, images, labels, precision, sizes)
        # Under gradient caching the cross-entropy reaches the embedding only through the
        # classifier, outside the cached graph: the gradient shares are not measured.
        embedding, norms = None, None
    if precision.scaler is not None:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    return StepOutput(loss.detach(), ce.detach(), triplet, logits, embedding, norms)


def _backward(loss: torch.Tensor, precision: Precision) -> None:
    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()


#: Fewest images in a gradient-cache chunk: BatchNorm in train mode needs more than one
#: value per channel, which one image at 32 px (a 1×1 last feature map) does not give.
MIN_CHUNK = 2


def chunk_sizes(batch: int, chunk: int | None) -> list[int]:
    """Images per gradient-cache chunk for a batch of ``batch`` images: ``chunk`` each, a
    remainder below `MIN_CHUNK` folded into the previous chunk (8 in chunks of 7 → [8];
    15 in chunks of 7 → [7, 8]). One chunk ([batch]) means a plain pass."""
    if chunk is None or chunk >= batch:
        return [batch]
    sizes = [chunk] * (batch // chunk)
    remainder = batch % chunk
    if remainder >= MIN_CHUNK:
        sizes.append(remainder)
    elif remainder:
        sizes[-1] += remainder
    return sizes


def _cached_backward(model, triplet_loss, images, labels, precision, sizes):
    device = images.device
    chunks = images.split(sizes)
    saved = _norm_buffers(model)  # pass 1 must not move running statistics: pass 2 does
    states, embeddings, logits = [], [], []
    with torch.no_grad():
        for x in chunks:
            states.append(_rng_snapshot(device))
            with precision.autocast(device):
                out = model(x)
            embeddings.append(out.embedding)
            logits.append(out.logits)
    for buffer, copy in saved:
        buffer.copy_(copy)
    embedding = torch.cat(embeddings).requires_grad_()
    logit = torch.cat(logits, dim=-2).requires_grad_()  # batch is dim -2 of (B, C) and (N, B, C)
    with precision.autocast(device):
        loss, ce, triplet = _loss(triplet_loss, embedding, logit, labels)
    _backward(loss, precision)
    start = 0
    for i, x in enumerate(chunks):
        rows = slice(start, start + len(x))
        start += len(x)
        _rng_restore(states[i], device)  # dropout draws pass 1's masks again
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with precision.autocast(device):
                out = model(x)
            surrogate = (out.logits * logit.grad[..., rows, :]).sum()
            if embedding.grad is not None:
                surrogate = surrogate + (out.embedding * embedding.grad[rows]).sum()
            surrogate.backward()
    return loss, ce, triplet, logit.detach()


@dataclass
class Meter:
    """Sums over an epoch of the quantities logged per epoch.

    Per-slice triplet losses are means over the epoch's triplets: each batch's loss_i is
    weighted by its K (anchors with a positive and a negative), so batches without a
    triplet do not pull the mean towards 0. The active fraction is active hinge terms
    over all hinge terms of the epoch. Under DDP the triplet output is the global batch's
    (the same on every process); sample counts are reduced over processes by ``reduce``.

    Every loss term is logged: ``metric`` is the metric loss as it enters the total
    (λ·Σ_i w_i·loss_i, or λ·Circle / λ·HIST), per sample like the cross-entropy, and
    ``metric_share`` its share of the total loss. ``margin_i`` is the mean hinge margin
    d(a,n*) − d(a,p*) of slice i over the epoch's triplets (muldml.regime; not measured
    under gradient caching or when the loss mines over other processes' rows or its cross-batch
    memory).
    The gradient norms at the embedding (``grad_ce``, ``grad_metric``) are a running mean
    over every training batch of the epoch, measured by autograd on the batch before its
    backward pass (rank 0's under DDP; not under gradient caching), and ``grad_metric_share``
    is grad_metric / (grad_ce + grad_metric) of those means.
    """

    num_slices: int
    samples: int = 0
    correct: int = 0
    ce: float = 0.0
    triplets: int = 0  # Σ K over batches
    terms: int = 0  # Σ hinge terms (K, or 2K for the dual loss)
    seconds: float = 0.0
    triplet: list[float] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    metric: float | None = None  # Σ batch metric term × batch size; None: no metric loss
    margin: list[float] | None = None  # per slice Σ d(a,n*) − d(a,p*); None: not measured
    margin_triplets: int = 0
    gradient_norms: list[float] | None = None  # Σ over batches of (|g_ce|, |g_metric|)
    gradient_batches: int = 0
    metric_terms: dict[str, float] = field(default_factory=dict)  # a loss's own parts (HIST: L_D, L_S), Σ × batch size

    def __post_init__(self) -> None:
        self.triplet = [0.0] * self.num_slices
        self.active = [0] * self.num_slices

    def add_diagnostics(self, step: "StepOutput", batch: int, slice_dim: int | None = None, normalize: bool = True,
                        terms: dict[str, torch.Tensor] | None = None) -> None:
        """Add one step's metric term, hinge margins (given slice_dim) and gradient norms."""
        self.metric = (self.metric or 0.0) + float(step.loss - step.ce) * batch
        for name, value in (terms or {}).items():
            self.metric_terms[name] = self.metric_terms.get(name, 0.0) + float(value) * batch
        if step.triplet is not None and step.embedding is not None and slice_dim is not None:
            sums = hinge_margins(step.embedding, step.triplet, slice_dim, normalize)
            if sums is not None:
                self.margin = [a + b for a, b in zip(self.margin or [0.0] * len(sums), sums.tolist())]
                self.margin_triplets += int(step.triplet.num_triplets)
        if step.gradient_norms is not None:
            norms = step.gradient_norms.tolist()
            self.gradient_norms = [a + b for a, b in zip(self.gradient_norms or [0.0, 0.0], norms)]
            self.gradient_batches += 1

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

    def reduce(self, sum_over_processes) -> None:
        """Sum samples, correct and cross-entropy over processes (a callable on a list of floats)."""
        self.samples, self.correct, self.ce = sum_over_processes([self.samples, self.correct, self.ce])
        self.samples, self.correct = int(self.samples), int(self.correct)
        if self.metric is not None:  # the same value on every process, weighted by each one's rows
            self.metric = sum_over_processes([self.metric])[0]

    def row(self, prefix: str) -> dict[str, float]:
        """Plain floats (checkpoints hold no numpy objects)."""
        n = max(self.samples, 1)
        row = {f"{prefix}_ce": self.ce / n, f"{prefix}_acc": self.correct / n}
        for i in range(self.num_slices):
            row[f"{prefix}_triplet_{i}"] = self.triplet[i] / max(self.triplets, 1)
            row[f"{prefix}_active_{i}"] = self.active[i] / max(self.terms, 1)
        if self.metric is not None:
            row[f"{prefix}_metric"] = self.metric / n
            row[f"{prefix}_metric_share"] = self.metric / max(self.ce + self.metric, 1e-12)
        for name, value in self.metric_terms.items():
            row[f"{prefix}_metric_{name}"] = value / n
        if self.margin is not None:
            for i, value in enumerate(self.margin):
                row[f"{prefix}_margin_{i}"] = value / max(self.margin_triplets, 1)
        if self.gradient_norms is not None:
            g_ce, g_metric = (v / self.gradient_batches for v in self.gradient_norms)
            row[f"{prefix}_grad_ce"], row[f"{prefix}_grad_metric"] = g_ce, g_metric
            row[f"{prefix}_grad_metric_share"] = g_metric / max(g_ce + g_metric, 1e-30)
        return row


def _loss_terms(metric_loss: nn.Module) -> dict[str, torch.Tensor]:
    """The parts of a metric loss that has several (HIST: distribution and tuplet losses,
    before its weight λ), from its last call."""
    terms = getattr(metric_loss, "last_terms", None)
    return {} if terms is None else {"distribution": terms[0], "tuplet": terms[1]}


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def run_epoch(model: nn.Module, triplet_loss: MultiThresholdTripletLoss | None, loader: Iterable,
              device: torch.device, optimizer: torch.optim.Optimizer | None = None, progress=None,
              precision: Precision | None = None, chunk: int | None = None, channels_last: bool = False) -> Meter:
    """One pass over `loader` of (images (B, C, H, W), labels (B,)): trains when an
    optimiser is given, else evaluates. Returns the epoch's meter (seconds: training time)."""
    precision = precision or Precision()
    training = optimizer is not None
    model.train(training)
    if triplet_loss is not None:
        triplet_loss.train(training)  # a cross-batch memory is used and filled in training only
    meter = Meter(triplet_loss.num_slices if triplet_loss else 0)
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, channels_last)
        if training:
            step = train_step(model, triplet_loss, images, labels, optimizer, precision, chunk)
        else:
            with torch.no_grad(), precision.autocast(device):
                out = model(images)
                loss, ce, triplet = _loss(triplet_loss, out.embedding, out.logits, labels)
            step = StepOutput(loss, ce, triplet, out.logits, out.embedding)
        meter.add(step.logits, labels, step.ce, step.triplet)
        if triplet_loss is not None:
            meter.add_diagnostics(step, len(labels), getattr(triplet_loss, "slice_dim", None),
                                  getattr(triplet_loss, "normalize", True), _loss_terms(triplet_loss))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(step.loss):.3f}", acc=f"{meter.correct / meter.samples:.2f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    meter.seconds = time.perf_counter() - start
    return meter

"""Multi-threshold triplet loss: the public API, input checks and backend dispatch.

The op itself (reference, backends, output type) is the folder kernels/triplet/.

Backends compute the same thing (definitions in the README) and return a TripletLossOutput:
- "reference": the naive per-slice loop (muldml.kernels.triplet.naive), the oracle;
- "torch": vectorised and memory-lean (muldml.kernels.triplet.chunked), for CPUs and as GPU fallback;
- "triton": fused Triton kernels (muldml.kernels.triplet.fused: kernels/triplet/ in the repository);
- "auto": triton for CUDA tensors, torch otherwise.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from muldml.kernels.triplet.chunked import torch_triplet_loss
from muldml.kernels.triplet.gather import distributed_world, gather_rows
from muldml.kernels.triplet.naive import NORMALIZE_EPS, reference_triplet_loss
from muldml.kernels.triplet.outputs import TripletLossOutput

BACKENDS = ("auto", "torch", "triton", "reference")
PRECISIONS = ("tf32", "tf32x3", "bf16")  # the Triton backend's mining precision


def threshold_range(tau_min: float = 0.15, tau_max: float = 0.75, step: float = 0.1) -> list[float]:
    """Margins τ_i = τ_min + step·(i − 1), i = 1..N, with N = (τ_max − τ_min)/step + 1."""
    if not (math.isfinite(tau_min) and math.isfinite(tau_max) and math.isfinite(step)):
        raise ValueError("tau_min, tau_max and step must be finite numbers")
    if tau_min < 0 or tau_max < tau_min:
        raise ValueError(f"need 0 <= tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")
    if tau_max == tau_min:
        return [float(tau_min)]
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    intervals = (tau_max - tau_min) / step
    if abs(intervals - round(intervals)) > 1e-6:
        raise ValueError(
            f"(tau_max - tau_min) / step must be a whole number, got ({tau_max} - {tau_min}) / {step}"
        )
    return [round(tau_min + step * i, 10) for i in range(round(intervals) + 1)]


def _check_inputs(
    embeddings: torch.Tensor, labels: torch.Tensor, num_slices: int, slice_dim: int, check_finite: bool | None
) -> None:
    """Raise one clear TypeError/ValueError naming the first problem found.

    The finiteness scan needs the result on the host: a synchronisation on a GPU. It runs
    when ``check_finite`` is True, or when it is None and the tensors are on the CPU.
    """
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (B, N*d), got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be floating point, got {embeddings.dtype}")
    batch, width = embeddings.shape
    if batch == 0:
        raise ValueError("empty batch: embeddings have 0 rows")
    if width != num_slices * slice_dim:
        raise ValueError(
            f"embedding width {width} != number of margins ({num_slices}) x slice_dim ({slice_dim})"
        )
    if labels.dim() != 1 or labels.numel() != batch:
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.device != embeddings.device:
        raise ValueError(f"labels on {labels.device} but embeddings on {embeddings.device}")
    if check_finite is None:
        check_finite = not embeddings.is_cuda
    # A finite sum proves every entry finite; only an infinite or NaN sum needs the full scan.
    if check_finite and not torch.isfinite(embeddings.sum()) and not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or Inf")


def _check_memory(memory, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise one clear TypeError/ValueError for a bad (memory rows, memory labels) pair."""
    if not (isinstance(memory, tuple) and len(memory) == 2 and all(isinstance(t, torch.Tensor) for t in memory)):
        raise TypeError("memory must be a pair of tensors (rows (M, N*d), labels (M,))")
    rows, mem_labels = memory
    if rows.dim() != 2 or rows.shape[1] != embeddings.shape[1] or not rows.is_floating_point():
        raise ValueError(f"memory rows must be floating point of shape (M, {embeddings.shape[1]}), got "
                         f"{rows.dtype} {tuple(rows.shape)}")
    if mem_labels.dim() != 1 or mem_labels.numel() != rows.shape[0]:
        raise ValueError(f"memory labels must have shape ({rows.shape[0]},), got {tuple(mem_labels.shape)}")
    if mem_labels.dtype == torch.bool or mem_labels.is_floating_point() or mem_labels.is_complex():
        raise TypeError(f"memory labels must be an integer tensor, got {mem_labels.dtype}")
    if rows.device != embeddings.device or mem_labels.device != labels.device:
        raise ValueError(f"memory on {rows.device} but embeddings on {embeddings.device}")
    if embeddings.shape[0] + rows.shape[0] >= 2**31:
        raise ValueError("batch + memory must hold fewer than 2^31 rows")


def _check_options(backend: str, precision: str, slice_dim: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if slice_dim < 1:
        raise ValueError(f"slice_dim must be >= 1, got {slice_dim}")


def _as_floats(values: Sequence[float] | torch.Tensor, name: str) -> tuple[float, ...]:
    """Margins or weights as host floats (a tensor is read back: a synchronisation on a GPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().flatten().tolist()
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not floats:
        raise ValueError(f"{name} must not be empty")
    if not all(math.isfinite(v) and v >= 0 for v in floats):
        raise ValueError(f"{name} must be finite and >= 0, got {list(floats)}")
    return floats


@functools.lru_cache(maxsize=64)
def _device_vectors(margins: tuple[float, ...], weights: tuple[float, ...], device: torch.device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins and weights on the device, made once per (values, device, dtype): a warm call
    makes no host-to-device copy (and can be captured in a CUDA graph)."""
    return (torch.tensor(margins, dtype=dtype).to(device), torch.tensor(weights, dtype=dtype).to(device))


def multi_threshold_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margins: Sequence[float] | torch.Tensor,
    slice_dim: int | None = None,
    *,
    dual: bool = True,
    normalize: bool = True,
    weights: Sequence[float] | torch.Tensor | None = None,
    lam: float | None = None,
    backend: str = "auto",
    precision: str = "tf32",
    check_finite: bool | None = None,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TripletLossOutput:
    """Multi-threshold batch-hard (dual) triplet loss, Mul-DML Eq. 2 / 10 and 9.

    embeddings: (B, N·d) float (fp32/fp64/fp16/bf16); the N slices of d dims each get
    margin τ_i = margins[i]. labels: (B,) integer class ids. slice_dim d defaults to
    width / N. Returns λ·Σ_i w_i·loss_i with λ = 0.5/N (``lam`` overrides) and w_i = 1
    (``weights`` overrides), plus diagnostics (see TripletLossOutput).
    ``precision`` is the Triton backend's mining precision: "tf32" (tensor cores, the
    default), "tf32x3" (about fp32 accuracy on tensor cores) or "bf16"; it decides only
    near-ties between candidates (muldml.kernels.triplet.fused says how near); the hinge always
    uses exact fp32 distances. The torch backend mines in fp32 (fp64 input: fp64) whatever
    ``precision`` says. Every backend is autocast-safe: under torch.autocast it computes as
    without it. ``check_finite``: raise ValueError on NaN/Inf embeddings;
    the default (None) checks CPU tensors only, since on a GPU the check synchronises with
    the host. Unchecked non-finite embeddings give a NaN loss (and, triton backend, an
    all-NaN gradient). Margins and weights given as lists are moved to the device once
    per distinct value (cached); given as tensors they are read back to the host.
    ``memory`` = (rows (M, N·d), labels (M,)): cross-batch memory (XBM). Its rows are
    extra candidates for every anchor's hardest positive and negative, never anchors and
    never differentiated, taken as given (already normalised per slice when ``normalize``;
    MultiThresholdTripletLoss(memory_size=Q) keeps such a queue). Indices in pos_idx /
    neg_idx run over [batch, memory] (memory row m is B + m); ties go to the lowest. The
    dual term's d(p*, n*) may join two memory rows. K counts batch anchors with a positive
    and a negative in batch ∪ memory; gradients reach batch rows only.
    Raises TypeError/ValueError naming the first bad argument.
    """
    margin_vec = _as_floats(margins, "margins")
    num_slices = len(margin_vec)
    weight_vec = (1.0,) * num_slices if weights is None else _as_floats(weights, "weights")
    if slice_dim is None:
        width = embeddings.shape[-1] if isinstance(embeddings, torch.Tensor) and embeddings.dim() else 0
        if width % num_slices:
            raise ValueError(f"embedding width {width} is not a multiple of the number of margins ({num_slices})")
        slice_dim = width // num_slices
    if len(weight_vec) != num_slices:
        raise ValueError(f"got {len(weight_vec)} weights for {num_slices} margins")
    _check_options(backend, precision, slice_dim)
    _check_inputs(embeddings, labels, num_slices, slice_dim, check_finite)
    if memory is not None:
        _check_memory(memory, embeddings, labels)
    margin_t, weight_t = _device_vectors(margin_vec, weight_vec, embeddings.device, _compute_dtype(embeddings, backend))
    return _dispatch(embeddings, labels, margin_t, weight_t, slice_dim, dual, normalize,
                     0.5 / num_slices if lam is None else float(lam), backend, precision, memory)


def _compute_dtype(embeddings: torch.Tensor, backend: str) -> torch.dtype:
    """The oracle computes in float64 (half input included); the fast backends in float32 below fp64."""
    return torch.float64 if embeddings.dtype == torch.float64 or backend == "reference" else torch.float32


def _dispatch(embeddings, labels, margin_vec, weight_vec, slice_dim, dual, normalize, lam, backend, precision,
              memory=None):
    """Run a backend on checked inputs; margins and weights already on the device."""
    if backend == "auto":
        backend = "triton" if embeddings.is_cuda else "torch"
    if memory is not None and memory[0].shape[0] == 0:
        memory = None
    if backend == "reference":
        return reference_triplet_loss(
            embeddings, labels, margin_vec, slice_dim,
            dual=dual, normalize=normalize, weights=weight_vec, lam=lam, memory=memory,
        )
    if backend == "torch":
        return torch_triplet_loss(
            embeddings, labels, margin_vec, weight_vec, lam, slice_dim, dual=dual, normalize=normalize, memory=memory,
        )
    if not embeddings.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            "the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before import "
            "for Triton's CPU interpreter); use backend='torch' on CPU"
        )
    from muldml.kernels.triplet.fused import triton_triplet_loss  # imported lazily: it needs triton

    return triton_triplet_loss(
        embeddings, labels, margin_vec, weight_vec, lam, slice_dim,
        dual=dual, normalize=normalize, precision=precision, memory=memory,
    )


class MultiThresholdTripletLoss(nn.Module):
    """Mul-DML's multi-threshold (dual) triplet loss as a module.

    The embedding (B, N·d) is cut into N slices of ``slice_dim`` dims; slice i is trained
    with a batch-hard triplet loss of margin τ_i. Margins come from ``margins`` or from
    the range [tau_min, tau_max] in steps of ``step`` (default 0.15…0.75 by 0.1: N = 7).
    ``forward`` returns the scalar λ·Σ w_i·loss_i; ``last_output`` keeps the full
    TripletLossOutput (per-slice losses, mined indices, active terms) for logging.
    ``precision`` and ``check_finite`` as in multi_threshold_triplet_loss. The module keeps
    its margins and weights on each device it meets, so a call on CUDA tensors with the
    triton backend makes no host synchronisation and can be captured in a CUDA graph.

    Cross-batch memory (XBM; Wang et al., CVPR 2020): ``memory_size=Q`` > 0 keeps a FIFO
    queue of the last Q rows seen in training, as buffers (so in ``state_dict`` and a
    checkpoint resumes it exactly): ``memory_embeddings`` (Q, N·d) fp32, the slices as
    distances see them (normalised when ``normalize``), ``memory_labels`` (Q,) and
    ``memory_seen``, the rows enqueued so far (row r sits in slot r mod Q). In training
    mode (``.train()``, the default) each call mines the batch's anchors against batch ∪
    the queue's filled slots, then enqueues the batch (detached): the memory holds earlier
    batches only, never the current one. ``memory_active = False`` (a warm-up) keeps
    enqueueing but mines the batch alone; in ``.eval()`` mode the memory is neither used
    nor filled. Under torchrun with all_gather the queue receives the global batch, so it
    is the same on every process. Indices and ties as in multi_threshold_triplet_loss
    (memory slot m is candidate B + m).
    Why an option here, not a wrapper like pytorch-metric-learning's CrossBatchMemory: the
    queue must hold the slices as the distances use them (cut and normalised: the loss's
    own knowledge) and the backends must see the memory as candidates only, never as
    anchors, so that no B×(B+Q) matrix is formed; a wrapper that concatenates embeddings
    and memory would give up both.
    """

    def __init__(
        self,
        margins: Sequence[float] | None = None,
        tau_min: float = 0.15,
        tau_max: float = 0.75,
        step: float = 0.1,
        slice_dim: int = 256,
        dual: bool = True,
        normalize: bool = True,
        weights: Sequence[float] | None = None,
        lam: float | None = None,
        backend: str = "auto",
        precision: str = "tf32",
        check_finite: bool | None = None,
        all_gather: bool | None = None,
        memory_size: int = 0,
    ) -> None:
        super().__init__()
        margin_vec = _as_floats(threshold_range(tau_min, tau_max, step) if margins is None else margins, "margins")
        weight_vec = (1.0,) * len(margin_vec) if weights is None else _as_floats(weights, "weights")
        if len(weight_vec) != len(margin_vec):
            raise ValueError(f"got {len(weight_vec)} weights for {len(margin_vec)} margins")
        _check_options(backend, precision, slice_dim)
        self.margins: list[float] = list(margin_vec)
        self.weights: list[float] = list(weight_vec)
        self.slice_dim, self.dual, self.normalize = slice_dim, dual, normalize
        self.lam = 0.5 / self.num_slices if lam is None else float(lam)
        self.backend, self.precision, self.check_finite = backend, precision, check_finite
        # Mine over the global batch of all processes (muldml.kernels.triplet.gather); None: when distributed.
        self.all_gather = all_gather
        self.last_output: TripletLossOutput | None = None
        if isinstance(memory_size, bool) or not isinstance(memory_size, int) or memory_size < 0:
            raise ValueError(f"memory_size must be an integer >= 0, got {memory_size!r}")
        self.memory_size = memory_size
        self.memory_active = True
        if memory_size:
            width = self.num_slices * slice_dim
            self.register_buffer("memory_embeddings", torch.zeros(memory_size, width))
            self.register_buffer("memory_labels", torch.zeros(memory_size, dtype=torch.long))
            self.register_buffer("memory_seen", torch.zeros((), dtype=torch.long))
            self._seen = 0  # host copy of memory_seen: no synchronisation per step
            self.register_load_state_dict_post_hook(_reread_memory_count)

    @property
    def num_slices(self) -> int:
        return len(self.margins)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings: (B, N·d); labels: (B,). Returns the scalar loss."""
        _check_inputs(embeddings, labels, self.num_slices, self.slice_dim, self.check_finite)
        if self.all_gather is not False and distributed_world() > 1:
            embeddings, labels = gather_rows(embeddings), gather_rows(labels)
        # Made once per (values, device, dtype): no host-to-device copy per step.
        margins, weights = _device_vectors(tuple(self.margins), tuple(self.weights), embeddings.device,
                                           _compute_dtype(embeddings, self.backend))
        memory = None
        if self.memory_size and self.training and self.memory_active:
            filled = min(self._seen, self.memory_size)
            memory = (self.memory_embeddings[:filled], self.memory_labels[:filled])
        self.last_output = _dispatch(embeddings, labels, margins, weights, self.slice_dim, self.dual, self.normalize,
                                     self.lam, self.backend, self.precision, memory)
        if self.memory_size and self.training:
            self.enqueue(embeddings, labels)
        return self.last_output.loss

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Push a batch's rows (B, N·d), normalised per slice when the loss normalises, and
        labels (B,) into the queue, overwriting the oldest; a batch longer than the queue
        leaves its last Q rows."""
        rows = embeddings.detach().float().reshape(len(embeddings), self.num_slices, self.slice_dim)
        if self.normalize:
            rows = torch.nn.functional.normalize(rows, dim=2, eps=NORMALIZE_EPS)
        batch = len(rows)
        rows, labels = rows.reshape(batch, -1)[-self.memory_size :], labels[-self.memory_size :]
        start = (self._seen + batch - len(rows)) % self.memory_size  # row r of all rows seen sits in slot r mod Q
        first = min(len(rows), self.memory_size - start)  # up to the end of the buffer, then wrap
        self.memory_embeddings[start : start + first] = rows[:first]
        self.memory_labels[start : start + first] = labels[:first]
        if len(rows) > first:
            self.memory_embeddings[: len(rows) - first] = rows[first:]
            self.memory_labels[: len(rows) - first] = labels[first:]
        self._seen += batch
        self.memory_seen.fill_(self._seen)

    def extra_repr(self) -> str:
        margins = ", ".join(f"{m:g}" for m in self.margins)
        memory = f", memory_size={self.memory_size}" if self.memory_size else ""
        return (f"margins=[{margins}], slice_dim={self.slice_dim}, dual={self.dual}, normalize={self.normalize}, "
                f"backend={self.backend!r}{memory}")


def _reread_memory_count(module: MultiThresholdTripletLoss, _incompatible) -> None:
    """After load_state_dict: the host copy of the queue's counter follows the loaded buffer."""
    module._seen = int(module.memory_seen)

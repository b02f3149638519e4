"""What users would run instead of muldml's loss, written the way they would write it.

- ``pml_loop``: pytorch-metric-learning's BatchHardMiner + TripletMarginLoss, one slice
  at a time (traditional loss only: PML has no dual term).
- ``PMLCrossBatchMemory``: the same per slice inside PML's CrossBatchMemory wrapper, one
  queue of Q rows per slice (its miner forms B×Q matrices).
- ``vectorised``: plain PyTorch over all slices at once with full (N, B, B) distance
  matrices, autograd through cdist; ``compiled`` is the same under torch.compile.
- ``gram_floor``: only the N Gram matrices E_i·E_iᵀ, summed (forward + backward: the CPU floor).
- ``gram_matrices``: only the N Gram matrices in cuBLAS (TF32 or bf16), forward only: the
  floor the GPU sweep holds the fused forward against.
"""
from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F


def pml_loop(x: torch.Tensor, labels: torch.Tensor, margins: list[float], slice_dim: int) -> torch.Tensor:
    """Σ_i λ·loss_i with PML's miner and loss per slice (x: (B, N·d))."""
    from pytorch_metric_learning import distances, losses, miners, reducers

    distance = distances.LpDistance(normalize_embeddings=True, p=2, power=1)
    miner = miners.BatchHardMiner(distance=distance)
    total = x.new_zeros(())
    for i, margin in enumerate(margins):
        e = x[:, i * slice_dim : (i + 1) * slice_dim]
        loss_fn = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer())
        total = total + loss_fn(e, labels, miner(e, labels))
    return 0.5 / len(margins) * total


class PMLCrossBatchMemory:
    """Σ_i λ·loss_i with one pytorch-metric-learning CrossBatchMemory(TripletMarginLoss,
    BatchHardMiner) per slice, each with a full queue of `memory_size` random rows.

    PML enqueues the batch before mining (its queue then holds the batch too, and it drops
    self-comparisons); muldml mines against the earlier rows and enqueues after: the same
    work for timing, not the same definition."""

    def __init__(self, margins: list[float], slice_dim: int, memory_size: int, num_classes: int = 7,
                 device: str = "cpu", seed: int = 0):
        from pytorch_metric_learning import distances, losses, miners, reducers

        distance = distances.LpDistance(normalize_embeddings=True, p=2, power=1)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.slice_dim, self.scale = slice_dim, 0.5 / len(margins)
        self.memories = []
        for margin in margins:
            memory = losses.CrossBatchMemory(
                losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer()),
                slice_dim, memory_size, miner=miners.BatchHardMiner(distance=distance)).to(device)
            memory.embedding_memory.normal_(generator=gen)  # in place: no transient copy of the queue
            memory.label_memory.random_(0, num_classes, generator=gen)
            memory.has_been_filled = True
            self.memories.append(memory)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = self.slice_dim
        return self.scale * sum(m(x[:, i * d : (i + 1) * d], labels) for i, m in enumerate(self.memories))


def vectorised(
    x: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, slice_dim: int, dual: bool = False
) -> torch.Tensor:
    """Batch-hard multi-threshold triplet loss through full (N, B, B) distance matrices."""
    batch, num_slices = x.shape[0], margins.numel()
    s = F.normalize(x.reshape(batch, num_slices, slice_dim).transpose(0, 1), dim=2)
    dist = torch.cdist(s, s)
    same = labels[:, None] == labels[None, :]
    is_pos = same & ~torch.eye(batch, dtype=torch.bool, device=x.device)
    d_ap, p = dist.masked_fill(~is_pos, float("-inf")).max(-1)
    d_an, n = dist.masked_fill(same, float("inf")).min(-1)
    valid = is_pos.any(1) & (~same).any(1)
    d_ap, d_an = torch.where(valid, d_ap, 0.0), torch.where(valid, d_an, 0.0)
    hinge = F.relu(d_ap - d_an + margins[:, None]) * valid
    terms = 1
    if dual:
        d_pn = dist[torch.arange(num_slices, device=x.device)[:, None], p, n]
        hinge = hinge + F.relu(d_ap - d_pn + margins[:, None]) * valid
        terms = 2
    per_slice = hinge.sum(1) / (valid.sum().clamp_min(1) * terms)
    return 0.5 / num_slices * per_slice.sum()


@cache
def compiled():
    """``vectorised`` under torch.compile (built once per process)."""
    return torch.compile(vectorised, dynamic=False)


_BF16_COPIES: dict = {}


def gram_matrices(x: torch.Tensor, num_slices: int, slice_dim: int, precision: str) -> torch.Tensor:
    """Only the N Gram matrices E_i·E_iᵀ (2·N·B²·d flop), forward, no reduction: the least a
    batch-hard miner computes. precision "tf32": fp32 operands with TF32 switched on for
    this call; "bf16": a bf16 copy of x, made once per input outside the timed call.
    Above 16 GiB of output the slices are multiplied one by one (same flop, one B×B at a time).
    """
    if precision == "bf16":
        key = (x.data_ptr(), tuple(x.shape))
        if key not in _BF16_COPIES:
            _BF16_COPIES.clear()
            _BF16_COPIES[key] = x.detach().to(torch.bfloat16)
        x = _BF16_COPIES[key]
    s = x.detach().reshape(x.shape[0], num_slices, slice_dim).transpose(0, 1)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        if num_slices * x.shape[0] ** 2 * s.element_size() <= 16 * 2**30:
            return torch.bmm(s, s.transpose(1, 2))
        for i in range(num_slices):
            out = s[i] @ s[i].T
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def gram_floor(x: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, slice_dim: int) -> torch.Tensor:
    """Only the N Gram matrices E_i·E_iᵀ, summed so that backward has something to do."""
    s = x.reshape(x.shape[0], margins.numel(), slice_dim).transpose(0, 1)
    return torch.bmm(s, s.transpose(1, 2)).sum()

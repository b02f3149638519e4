"""All-gather with gradient, for losses that mine over the global batch of every process.

Under DistributedDataParallel each process holds B_r rows of a global batch. Mining the
hardest positive and negative over the whole batch needs every row on every process:
``gather_rows`` concatenates all processes' rows (in rank order) so that the loss is
computed on the global batch. Only this process's rows keep their autograd path; the
others are constants here (their own process differentiates them). Backward returns this
process's slice of the incoming gradient multiplied by the world size: DDP then averages
parameter gradients over the W processes, and W·(1/W)·Σ_r gives exactly the gradient of
one process on the concatenated batch (every process computes the same global loss, so
each row's gradient is complete on its own process).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([rows.shape[0]], device=rows.device))
        sizes = [int(s) for s in sizes]
        parts = [rows.new_empty((n, *rows.shape[1:])) for n in sizes]
        dist.all_gather(parts, rows.contiguous())
        ctx.start, ctx.stop, ctx.world = sum(sizes[:rank]), sum(sizes[: rank + 1]), world
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.start : ctx.stop] * ctx.world


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """(B_r, …) on each process → (Σ_r B_r, …) in rank order, differentiable for own rows.

    Ranks may hold different row counts. Returns `rows` unchanged outside a process group.
    """
    if distributed_world() == 1:
        return rows
    if rows.requires_grad:
        return _GatherRows.apply(rows)
    with torch.no_grad():
        return _GatherRows.apply(rows)

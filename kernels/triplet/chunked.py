"""Vectorised, memory-lean PyTorch backend: the CPU path and the GPU fallback.

Mining runs under no_grad over chunks of anchor rows, so no N×B×B tensor is ever kept
for backward; the hinge is then formed on the gathered (a, p*, n*) rows, so autograd
stores O(N·B·d).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from muldml.kernels.triplet.outputs import TripletLossOutput
from muldml.kernels.triplet.naive import NORMALIZE_EPS, safe_norm

# Elements of one (N, r, c) block of squared distances during mining: 2^21 floats = 8 MiB
# in fp32. Row chunks of this size measured on 2 CPU cores (N = 7, B = 2048): 180 ms per
# mining pass at 2^20–2^22, 216 ms at 2^24 (large temporaries fall out of cache).
MINING_CHUNK_ELEMENTS = 1 << 21
# On a GPU, blocks that small would mean thousands of small launches at B = 65,536.
GPU_MINING_CHUNK_ELEMENTS = 1 << 26


def valid_anchors(labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: anchors with at least one positive and one negative in the batch."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    class_size = counts[inverse]
    return (class_size > 1) & (class_size < labels.numel())


def _keep_best(best: torch.Tensor, best_idx: torch.Tensor, rows: slice, values: torch.Tensor,
               idx: torch.Tensor, larger: bool) -> None:
    """Merge candidates into the running best of `rows`; equal values keep the lower index."""
    old, old_idx = best[:, rows], best_idx[:, rows]
    better = (values > old) if larger else (values < old)
    better |= (values == old) & (idx < old_idx)
    best[:, rows] = torch.where(better, values, old)
    best_idx[:, rows] = torch.where(better, idx, old_idx)


@torch.no_grad()
def mine_batch_hard(
    slices: torch.Tensor, labels: torch.Tensor, chunk_elements: int | None = None,
    memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest positive and negative per slice and anchor.

    slices: (N, B, d) (already normalised if the loss normalises); labels: (B,).
    Returns (pos_idx, neg_idx), each (N, B) int64; entries of anchors without a
    positive (negative) are meaningless and must be masked by the caller.
    Squared distances are formed block by block; the matrix is symmetric, so each
    off-diagonal block is computed once and reduced along both axes (half the matmuls).
    Ties go to the lowest index. Autocast is off inside: the products run in the slices'
    dtype (fp32 for half input, which is upcast), whatever the caller's autocast state.
    memory = (rows (M, N·d), labels (M,), centre (N, 1, d)): cross-batch memory, further
    candidates (never anchors) numbered B + m; each chunk of its rows is moved by
    ``-centre`` (the translation applied to ``slices``) and scored against every anchor,
    so no (B, M) matrix exists: memory O(chunk_elements), not O(B·M).
    """
    if slices.dtype in (torch.float16, torch.bfloat16):
        slices = slices.float()
    with torch.autocast(slices.device.type, enabled=False):
        return _mine_blocks(slices, labels, chunk_elements, memory)


def _mine_blocks(slices: torch.Tensor, labels: torch.Tensor, chunk_elements: int | None,
                 memory=None) -> tuple[torch.Tensor, torch.Tensor]:
    num_slices, batch, _ = slices.shape
    if chunk_elements is None:
        chunk_elements = GPU_MINING_CHUNK_ELEMENTS if slices.is_cuda else MINING_CHUNK_ELEMENTS
    sq = (slices * slices).sum(-1)  # (N, B)
    block = max(1, int((chunk_elements / num_slices) ** 0.5))
    best_pos = torch.full((num_slices, batch), float("-inf"), dtype=slices.dtype, device=slices.device)
    best_neg = torch.full_like(best_pos, float("inf"))
    pos_idx = torch.zeros(num_slices, batch, dtype=torch.long, device=slices.device)
    neg_idx = torch.zeros_like(pos_idx)
    starts = range(0, batch, block)
    for i in starts:
        rows = slice(i, i + block)
        for j in (j for j in starts if j >= i):
            cols = slice(j, j + block)
            dist = torch.baddbmm(sq[:, rows, None] + sq[:, None, cols], slices[:, rows],
                                 slices[:, cols].transpose(1, 2), alpha=-2.0)  # (N, r, c) squared distances
            same = labels[rows, None] == labels[None, cols]
            is_pos = same
            if i == j:
                is_pos = same & ~torch.eye(same.shape[0], dtype=torch.bool, device=same.device)
            pos = dist.masked_fill(~is_pos, float("-inf"))
            neg = dist.masked_fill_(same, float("inf"))
            # Rows of this block against its columns …
            for values, larger, best, best_idx in ((pos, True, best_pos, pos_idx), (neg, False, best_neg, neg_idx)):
                value, arg = values.max(2) if larger else values.min(2)
                _keep_best(best, best_idx, rows, value, arg + j, larger)
                if i != j:  # … and, by symmetry, its columns against its rows.
                    value, arg = values.max(1) if larger else values.min(1)
                    _keep_best(best, best_idx, cols, value, arg + i, larger)
    if memory is not None:
        _mine_memory(slices, sq, labels, memory, block, chunk_elements, best_pos, best_neg, pos_idx, neg_idx)
    return pos_idx, neg_idx


def _mine_memory(slices, sq, labels, memory, block, chunk_elements, best_pos, best_neg, pos_idx, neg_idx) -> None:
    """Merge the memory's rows, chunk by chunk, into the running hardest candidates.

    Memory rows are never anchors: only the rows-against-columns half of a batch tile.
    """
    rows_mem, labels_mem, centre = memory
    num_slices, batch, slice_dim = slices.shape
    # Memory rows per chunk: their centred copy (N, c, d) and the distance block (N, r, c)
    # together hold about chunk_elements values.
    width = max(1, chunk_elements // (num_slices * (min(batch, block) + slice_dim)))
    for i in range(0, batch, block):
        rows = slice(i, i + block)
        for j in range(0, rows_mem.shape[0], width):
            chunk = rows_mem[j : j + width].to(slices.dtype).reshape(-1, num_slices, slice_dim).transpose(0, 1) - centre
            sq_chunk = torch.linalg.vector_norm(chunk, dim=-1).square()  # no (N, c, d) temporary
            dist = torch.baddbmm(sq[:, rows, None] + sq_chunk[:, None, :], slices[:, rows],
                                 chunk.transpose(1, 2), alpha=-2.0)  # (N, r, c) squared distances
            same = labels[rows, None] == labels_mem[None, j : j + width]
            value, arg = dist.masked_fill(~same, float("-inf")).max(2)
            _keep_best(best_pos, pos_idx, rows, value, arg + batch + j, True)
            value, arg = dist.masked_fill_(same, float("inf")).min(2)
            _keep_best(best_neg, neg_idx, rows, value, arg + batch + j, False)


def torch_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margins: torch.Tensor,
    weights: torch.Tensor,
    lam: float,
    slice_dim: int,
    *,
    dual: bool = True,
    normalize: bool = True,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TripletLossOutput:
    """Multi-threshold batch-hard (dual) triplet loss, vectorised over slices.

    embeddings: (B, N·d) float; labels: (B,) int; margins, weights: (N,).
    Half-precision input is computed in float32, and autocast is off inside: under
    torch.autocast the loss and its mining still run in float32 (fp64 input in fp64).
    memory: cross-batch memory (rows (M, N·d), labels (M,)) as in
    muldml.kernels.triplet.naive.reference_triplet_loss; mined in chunks (no (B, M) matrix), so the
    extra memory is O(B + chunk), beyond the memory itself.
    """
    with torch.autocast(embeddings.device.type, enabled=False):
        return _torch_triplet_loss(embeddings, labels, margins, weights, lam, slice_dim, dual, normalize, memory)


def _torch_triplet_loss(embeddings, labels, margins, weights, lam, slice_dim, dual, normalize,
                        memory=None) -> TripletLossOutput:
    batch = embeddings.shape[0]
    num_slices = margins.numel()
    x = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    slices = x.reshape(batch, num_slices, slice_dim).transpose(0, 1)  # (N, B, d)
    if normalize:
        slices = F.normalize(slices, dim=2, eps=NORMALIZE_EPS)
    if memory is not None and memory[0].shape[0] == 0:
        memory = None
    valid = valid_anchors(labels if memory is None else torch.cat([labels, memory[1].to(labels.dtype)]))[:batch]
    # Distances are translation-invariant: centring each slice on its batch mean keeps the
    # Gram expansion used for mining from cancelling away for large-norm features.
    centred = slices.detach()
    centre = centred.mean(1, keepdim=True)  # (N, 1, d)
    pos_idx, neg_idx = mine_batch_hard(centred - centre, labels,
                                       memory=None if memory is None else (memory[0], memory[1], centre))
    pos_idx = torch.where(valid, pos_idx, 0)
    neg_idx = torch.where(valid, neg_idx, 0)

    def rows(idx: torch.Tensor) -> torch.Tensor:
        """(N, B, d) candidate rows: batch indices from the slices, B + m from memory row m."""
        own = torch.gather(slices, 1, idx.clamp_max(batch - 1)[..., None].expand(-1, -1, slice_dim))
        if memory is None:
            return own
        remembered = memory[0].detach().to(slices.dtype).reshape(-1, num_slices, slice_dim)
        remembered = remembered[(idx - batch).clamp_min(0), torch.arange(num_slices, device=idx.device)[:, None]]
        return torch.where((idx < batch)[..., None], own, remembered)

    positives, negatives = rows(pos_idx), rows(neg_idx)
    margin = margins.to(slices.dtype)[:, None]
    d_ap = safe_norm(slices - positives)  # (N, B), exact from the rows
    terms = [F.relu(d_ap - safe_norm(slices - negatives) + margin) * valid]
    if dual:  # the negative must also be farther from the positive than the anchor is
        terms.append(F.relu(d_ap - safe_norm(positives - negatives) + margin) * valid)
    num_triplets = valid.sum()
    denominator = num_triplets.clamp_min(1) * len(terms)
    slice_losses = sum(t.sum(1) for t in terms) / denominator
    return TripletLossOutput(
        loss=lam * (weights.to(slice_losses.dtype) * slice_losses).sum(),
        slice_losses=slice_losses.detach(),
        pos_idx=torch.where(valid, pos_idx, -1),
        neg_idx=torch.where(valid, neg_idx, -1),
        num_active=sum((t > 0).sum(1) for t in terms),
        num_triplets=num_triplets,
        dual=dual,
    )

"""The naive multi-threshold triplet loss: one slice at a time, full distance matrices.

This is the oracle the fast backends are tested and benchmarked against. It is written
for clarity, not speed or memory (it holds a B×B distance matrix per slice); run it in
float64 for tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from muldml.kernels.triplet.outputs import TripletLossOutput

NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize: x / max(‖x‖, eps)


def safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim whose gradient is 0 (not NaN) at v = 0."""
    sq = (v * v).sum(-1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, 1.0).sqrt(), 0.0)


def reference_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margins: torch.Tensor,
    slice_dim: int,
    *,
    dual: bool = True,
    normalize: bool = True,
    weights: torch.Tensor | None = None,
    lam: float | None = None,
    indices: tuple[torch.Tensor, torch.Tensor] | None = None,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TripletLossOutput:
    """Multi-threshold batch-hard (dual) triplet loss, computed naively.

    embeddings: (B, N·d); labels: (B,) integers; margins: (N,) τ_i; weights: (N,) w_i
    (default 1); lam: λ (default 0.5/N). ``indices`` = (pos_idx, neg_idx), each (N, B),
    replaces the mining with given triplets: tests use it to compare gradients at the
    triplets a fast backend chose. Half-precision input (fp16/bf16) is computed in
    float64, the oracle's precision. Outputs live on the embeddings' device. Autocast is
    off inside: the dtype computed in is the input's whatever the autocast state.

    ``memory`` = (memory_embeddings (M, N·d), memory_labels (M,)): cross-batch memory.
    Its rows are candidates (positives and negatives), never anchors, and constants (no
    gradient); they are taken as given, in the space distances are measured in (already
    normalised when ``normalize``). Candidates are numbered over [batch, memory]: memory
    row m is index B + m in pos_idx / neg_idx, and ties go to the lowest such index.
    K counts the batch's anchors that have a positive and a negative in batch ∪ memory.
    """
    with torch.autocast(embeddings.device.type, enabled=False):
        return _reference_triplet_loss(embeddings, labels, margins, slice_dim, dual, normalize, weights, lam, indices,
                                       memory)


def _reference_triplet_loss(embeddings, labels, margins, slice_dim, dual, normalize, weights, lam, indices, memory):
    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.double()
    device = embeddings.device
    batch = embeddings.shape[0]
    num_slices = margins.numel()
    weights = torch.ones(num_slices, dtype=embeddings.dtype, device=device) if weights is None else weights
    lam = 0.5 / num_slices if lam is None else lam
    if memory is None:
        memory = (embeddings.new_zeros(0, embeddings.shape[1]), labels.new_zeros(0))
    memory_rows = memory[0].detach().to(embeddings.dtype)
    candidate_labels = torch.cat([labels, memory[1].to(labels.dtype)])
    same = labels[:, None] == candidate_labels[None, :]  # (B, B + M)
    not_self = ~torch.eye(batch, len(candidate_labels), dtype=torch.bool, device=labels.device)
    is_pos, is_neg = same & not_self, ~same
    valid = is_pos.any(1) & is_neg.any(1)
    num_triplets = int(valid.sum())

    slice_losses, pos_all, neg_all, active_all = [], [], [], []
    for i in range(num_slices):
        x = embeddings[:, i * slice_dim : (i + 1) * slice_dim]
        if normalize:
            x = F.normalize(x, dim=1, eps=NORMALIZE_EPS)
        candidates = torch.cat([x, memory_rows[:, i * slice_dim : (i + 1) * slice_dim]])
        if indices is None:
            with torch.no_grad():
                dist = torch.cdist(x, candidates, compute_mode="donot_use_mm_for_euclid_dist")
                # argmax/argmin return the first extremum: ties go to the lowest index.
                pos = dist.masked_fill(~is_pos, float("-inf")).argmax(1)
                neg = dist.masked_fill(~is_neg, float("inf")).argmin(1)
        else:
            pos = indices[0][i].clamp_min(0)
            neg = indices[1][i].clamp_min(0)
        d_ap = safe_norm(x - candidates[pos])
        d_an = safe_norm(x - candidates[neg])
        hinge = F.relu(d_ap - d_an + margins[i]) * valid
        terms = [hinge]
        if dual:  # the negative must also be farther from the positive than the anchor is
            d_pn = safe_norm(candidates[pos] - candidates[neg])
            terms.append(F.relu(d_ap - d_pn + margins[i]) * valid)
        total = sum(t.sum() for t in terms)
        slice_losses.append(total / (max(num_triplets, 1) * len(terms)))
        active_all.append(sum((t > 0).sum() for t in terms))
        pos_all.append(torch.where(valid, pos, -1))
        neg_all.append(torch.where(valid, neg, -1))

    per_slice = torch.stack(slice_losses)
    return TripletLossOutput(
        loss=lam * (weights.to(per_slice.dtype).to(device) * per_slice).sum(),
        slice_losses=per_slice.detach(),
        pos_idx=torch.stack(pos_all),
        neg_idx=torch.stack(neg_all),
        num_active=torch.stack(active_all),
        num_triplets=torch.tensor(num_triplets, device=device),
        dual=dual,
    )

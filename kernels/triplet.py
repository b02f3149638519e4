"""Fused multi-threshold batch-hard (dual) triplet loss in Triton.

Forward, one launch over a grid of (anchor-row blocks × slices). Each program streams
column tiles of the batch, forms dot products with tl.dot, turns them into squared
distances, masks them by label and keeps a running hardest positive / negative with its
index: no B×B matrix exists anywhere. The chosen triplets' distances are then recomputed
exactly from the rows (the Gram expansion used for mining loses precision), the hinge
terms formed and each slice's sum reduced with atomics.

Backward, one launch over the same grid: every active hinge term scatters its analytic
gradient into the rows a, p*, n* (through the slice's L2 normalisation when the loss
normalises) with atomic adds.

Determinism: per-slice sums (forward) and row gradients (backward) are accumulated with
fp32 atomics, whose order varies between runs on a GPU: results agree to rounding, not
bit for bit. Mining and the mined indices are deterministic.

Memory beyond inputs and gradient: O(B·N) (two indices, three distances, one norm per
anchor and slice).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from muldml.outputs import TripletLossOutput
from muldml.reference import NORMALIZE_EPS


@triton.jit
def _load_rows(X, rows, cols, row_mask, col_mask, stride_row, stride_col):
    """Load X[rows, cols] as an fp32 (len(rows), len(cols)) tile, zero outside the masks."""
    ptrs = X + rows.to(tl.int64)[:, None] * stride_row + cols.to(tl.int64)[None, :] * stride_col
    return tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _inverse_norm(sq_norm, EPS, NORMALIZE: tl.constexpr):
    """1 / max(‖x‖, eps) as F.normalize uses it, or 1 when the loss does not normalise."""
    if NORMALIZE:
        return 1.0 / tl.maximum(tl.sqrt(sq_norm), EPS)
    else:
        return tl.full(sq_norm.shape, 1.0, tl.float32)


@triton.jit
def _triplet_forward_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d), any float dtype, any strides
    LABELS, stride_label,  # (B,) int, any stride
    MARGINS,  # (N,) fp32
    POS, NEG,  # (N, B) int32 out: hardest positive / negative, -1 where no triplet
    DIST,  # (3, N, B) fp32 out: d(a,p*), d(a,n*), d(p*,n*)
    NORMS,  # (N, B) fp32 out: ‖x_a‖ of each slice before normalisation
    SUMS,  # (N,) fp32 accumulated: Σ hinge terms per slice
    ACTIVE,  # (N,) int32 accumulated: hinge terms > 0 per slice
    COUNT,  # (1,) int32 accumulated: K, anchors with a positive and a negative
    B, D, EPS,
    DUAL: tl.constexpr, NORMALIZE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    first_col = slice_id * D
    dims = tl.arange(0, BLOCK_D)
    labels_a = tl.load(LABELS + rows.to(tl.int64) * stride_label, mask=row_ok, other=0)

    sq_a = tl.zeros((BLOCK_M,), tl.float32)
    for k in range(0, D, BLOCK_D):
        a = _load_rows(X, rows, first_col + k + dims, row_ok, k + dims < D, stride_row, stride_col)
        sq_a += tl.sum(a * a, axis=1)
    inv_a = _inverse_norm(sq_a, EPS, NORMALIZE)

    # Running hardest positive (largest distance) and negative (smallest), with indices.
    best_pos = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    best_neg = tl.full((BLOCK_M,), float("inf"), tl.float32)
    pos_idx = tl.full((BLOCK_M,), -1, tl.int32)
    neg_idx = tl.full((BLOCK_M,), -1, tl.int32)
    for start in range(0, B, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < B
        dot = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        sq_b = tl.zeros((BLOCK_N,), tl.float32)
        for k in range(0, D, BLOCK_D):
            dim_ok = k + dims < D
            a = _load_rows(X, rows, first_col + k + dims, row_ok, dim_ok, stride_row, stride_col)
            # The column tile is loaded transposed, (BLOCK_D, BLOCK_N), ready for the dot.
            b_ptrs = X + cols.to(tl.int64)[None, :] * stride_row + (first_col + k + dims).to(tl.int64)[:, None] * stride_col
            b = tl.load(b_ptrs, mask=dim_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
            dot = tl.dot(a, b, dot, input_precision=PRECISION)
            sq_b += tl.sum(b * b, axis=0)
        inv_b = _inverse_norm(sq_b, EPS, NORMALIZE)
        # Squared distance minus the row constant ‖x̂_a‖²: ranks the columns of a row alike.
        score = (sq_b * inv_b * inv_b)[None, :] - 2.0 * dot * inv_a[:, None] * inv_b[None, :]
        labels_b = tl.load(LABELS + cols.to(tl.int64) * stride_label, mask=col_ok, other=0)
        same = labels_a[:, None] == labels_b[None, :]
        is_pos = same & (rows[:, None] != cols[None, :]) & col_ok[None, :]
        is_neg = (labels_a[:, None] != labels_b[None, :]) & col_ok[None, :]

        pos_score = tl.where(is_pos, score, float("-inf"))
        tile_max = tl.max(pos_score, axis=1)
        # Lowest column index reaching the maximum: ties go to the lowest index.
        tile_arg = tl.min(tl.where(is_pos & (pos_score == tile_max[:, None]), cols[None, :], B), axis=1)
        better = tile_max > best_pos  # strict: an earlier (lower) index wins a tie across tiles
        best_pos = tl.where(better, tile_max, best_pos)
        pos_idx = tl.where(better, tile_arg, pos_idx)

        neg_score = tl.where(is_neg, score, float("inf"))
        tile_min = tl.min(neg_score, axis=1)
        tile_arg = tl.min(tl.where(is_neg & (neg_score == tile_min[:, None]), cols[None, :], B), axis=1)
        better = tile_min < best_neg
        best_neg = tl.where(better, tile_min, best_neg)
        neg_idx = tl.where(better, tile_arg, neg_idx)

    valid = row_ok & (pos_idx >= 0) & (neg_idx >= 0)
    p = tl.where(valid, pos_idx, 0)
    n = tl.where(valid, neg_idx, 0)

    # Exact distances of the chosen triplets, from the rows: first their norms, then differences.
    sq_p = tl.zeros((BLOCK_M,), tl.float32)
    sq_n = tl.zeros((BLOCK_M,), tl.float32)
    if NORMALIZE:
        for k in range(0, D, BLOCK_D):
            dim_ok = k + dims < D
            xp = _load_rows(X, p, first_col + k + dims, valid, dim_ok, stride_row, stride_col)
            xn = _load_rows(X, n, first_col + k + dims, valid, dim_ok, stride_row, stride_col)
            sq_p += tl.sum(xp * xp, axis=1)
            sq_n += tl.sum(xn * xn, axis=1)
    inv_p = _inverse_norm(sq_p, EPS, NORMALIZE)
    inv_n = _inverse_norm(sq_n, EPS, NORMALIZE)
    sq_ap = tl.zeros((BLOCK_M,), tl.float32)
    sq_an = tl.zeros((BLOCK_M,), tl.float32)
    sq_pn = tl.zeros((BLOCK_M,), tl.float32)
    for k in range(0, D, BLOCK_D):
        dim_ok = k + dims < D
        xa = _load_rows(X, rows, first_col + k + dims, valid, dim_ok, stride_row, stride_col) * inv_a[:, None]
        xp = _load_rows(X, p, first_col + k + dims, valid, dim_ok, stride_row, stride_col) * inv_p[:, None]
        xn = _load_rows(X, n, first_col + k + dims, valid, dim_ok, stride_row, stride_col) * inv_n[:, None]
        sq_ap += tl.sum((xa - xp) * (xa - xp), axis=1)
        sq_an += tl.sum((xa - xn) * (xa - xn), axis=1)
        if DUAL:
            sq_pn += tl.sum((xp - xn) * (xp - xn), axis=1)
    d_ap = tl.sqrt(sq_ap)
    d_an = tl.sqrt(sq_an)
    d_pn = tl.sqrt(sq_pn)

    margin = tl.load(MARGINS + slice_id)
    hinge_an = tl.where(valid, tl.maximum(d_ap - d_an + margin, 0.0), 0.0)
    total = tl.sum(hinge_an, axis=0)
    active = tl.sum((hinge_an > 0).to(tl.int32), axis=0)
    if DUAL:  # the negative must also be farther from the positive than the anchor is
        hinge_pn = tl.where(valid, tl.maximum(d_ap - d_pn + margin, 0.0), 0.0)
        total += tl.sum(hinge_pn, axis=0)
        active += tl.sum((hinge_pn > 0).to(tl.int32), axis=0)

    out = slice_id * B + rows
    tl.store(POS + out, tl.where(valid, pos_idx, -1), mask=row_ok)
    tl.store(NEG + out, tl.where(valid, neg_idx, -1), mask=row_ok)
    tl.store(DIST + out, d_ap, mask=row_ok)
    tl.store(DIST + tl.num_programs(1) * B + out, d_an, mask=row_ok)
    tl.store(DIST + 2 * tl.num_programs(1) * B + out, d_pn, mask=row_ok)
    tl.store(NORMS + out, tl.sqrt(sq_a), mask=row_ok)
    tl.atomic_add(SUMS + slice_id, total)
    tl.atomic_add(ACTIVE + slice_id, active)
    if slice_id == 0:
        tl.atomic_add(COUNT, tl.sum(valid.to(tl.int32), axis=0))


@triton.jit
def _triplet_backward_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d)
    GRAD,  # (B, N·d) fp32 contiguous, zero-initialised; accumulated
    POS, NEG, DIST, NORMS, MARGINS,  # saved by the forward (see there)
    WEIGHTS,  # (N,) fp32 w_i
    GRAD_OUT,  # (1,) fp32 upstream gradient of the scalar loss
    COUNT,  # (1,) int32 K
    SCALE,  # λ / terms per anchor (1 traditional, 2 dual)
    B, D, EPS,
    DUAL: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    first_col = slice_id * D
    dims = tl.arange(0, BLOCK_D)
    idx = slice_id * B + rows
    pos_idx = tl.load(POS + idx, mask=row_ok, other=-1)
    neg_idx = tl.load(NEG + idx, mask=row_ok, other=-1)
    valid = row_ok & (pos_idx >= 0)
    p = tl.where(valid, pos_idx, 0)
    n = tl.where(valid, neg_idx, 0)
    d_ap = tl.load(DIST + idx, mask=valid, other=0.0)
    d_an = tl.load(DIST + tl.num_programs(1) * B + idx, mask=valid, other=0.0)
    d_pn = tl.load(DIST + 2 * tl.num_programs(1) * B + idx, mask=valid, other=0.0)

    # dLoss/d(hinge term) for an active term: grad_out · λ · w_i / (K · terms per anchor).
    count = tl.maximum(tl.load(COUNT), 1).to(tl.float32)
    coef = tl.load(GRAD_OUT) * SCALE * tl.load(WEIGHTS + slice_id) / count
    margin = tl.load(MARGINS + slice_id)
    active_an = valid & (d_ap - d_an + margin > 0)
    g_ap = tl.where(active_an, coef, 0.0)
    g_an = tl.where(active_an, -coef, 0.0)
    g_pn = tl.zeros((BLOCK_M,), tl.float32)
    if DUAL:
        active_pn = valid & (d_ap - d_pn + margin > 0)
        g_ap += tl.where(active_pn, coef, 0.0)
        g_pn = tl.where(active_pn, -coef, 0.0)
    # ∂d(u,v)/∂û = (û − v̂)/d(u,v); 0 where d = 0 (coincident points pull nowhere).
    c_ap = tl.where(d_ap > 0, g_ap / tl.where(d_ap > 0, d_ap, 1.0), 0.0)
    c_an = tl.where(d_an > 0, g_an / tl.where(d_an > 0, d_an, 1.0), 0.0)
    c_pn = tl.where(d_pn > 0, g_pn / tl.where(d_pn > 0, d_pn, 1.0), 0.0)
    touched = valid & ((c_ap != 0) | (c_an != 0) | (c_pn != 0))

    norm_a = tl.load(NORMS + idx, mask=valid, other=1.0)
    norm_p = tl.load(NORMS + slice_id * B + p, mask=valid, other=1.0)
    norm_n = tl.load(NORMS + slice_id * B + n, mask=valid, other=1.0)
    inv_a = _inverse_norm(norm_a * norm_a, EPS, NORMALIZE)
    inv_p = _inverse_norm(norm_p * norm_p, EPS, NORMALIZE)
    inv_n = _inverse_norm(norm_n * norm_n, EPS, NORMALIZE)

    # Through x̂ = x / max(‖x‖, eps): ∂L/∂x = (ĝ − x̂ (x̂·ĝ)) / ‖x‖ above eps, ĝ / eps below.
    # The projections x̂·ĝ need a first pass over the slice.
    proj_a = tl.zeros((BLOCK_M,), tl.float32)
    proj_p = tl.zeros((BLOCK_M,), tl.float32)
    proj_n = tl.zeros((BLOCK_M,), tl.float32)
    if NORMALIZE:
        for k in range(0, D, BLOCK_D):
            dim_ok = k + dims < D
            xa = _load_rows(X, rows, first_col + k + dims, touched, dim_ok, stride_row, stride_col) * inv_a[:, None]
            xp = _load_rows(X, p, first_col + k + dims, touched, dim_ok, stride_row, stride_col) * inv_p[:, None]
            xn = _load_rows(X, n, first_col + k + dims, touched, dim_ok, stride_row, stride_col) * inv_n[:, None]
            u_ap = xa - xp
            u_an = xa - xn
            u_pn = xp - xn
            proj_a += tl.sum(xa * (c_ap[:, None] * u_ap + c_an[:, None] * u_an), axis=1)
            proj_p += tl.sum(xp * (c_pn[:, None] * u_pn - c_ap[:, None] * u_ap), axis=1)
            proj_n += tl.sum(xn * (-c_an[:, None] * u_an - c_pn[:, None] * u_pn), axis=1)
        proj_a = tl.where(norm_a > EPS, proj_a, 0.0)
        proj_p = tl.where(norm_p > EPS, proj_p, 0.0)
        proj_n = tl.where(norm_n > EPS, proj_n, 0.0)

    for k in range(0, D, BLOCK_D):
        dim_ok = k + dims < D
        cols = first_col + k + dims
        xa = _load_rows(X, rows, cols, touched, dim_ok, stride_row, stride_col) * inv_a[:, None]
        xp = _load_rows(X, p, cols, touched, dim_ok, stride_row, stride_col) * inv_p[:, None]
        xn = _load_rows(X, n, cols, touched, dim_ok, stride_row, stride_col) * inv_n[:, None]
        u_ap = xa - xp
        u_an = xa - xn
        u_pn = xp - xn
        grad_a = c_ap[:, None] * u_ap + c_an[:, None] * u_an
        grad_p = c_pn[:, None] * u_pn - c_ap[:, None] * u_ap
        grad_n = -c_an[:, None] * u_an - c_pn[:, None] * u_pn
        if NORMALIZE:
            grad_a = (grad_a - xa * proj_a[:, None]) * inv_a[:, None]
            grad_p = (grad_p - xp * proj_p[:, None]) * inv_p[:, None]
            grad_n = (grad_n - xn * proj_n[:, None]) * inv_n[:, None]
        mask = touched[:, None] & dim_ok[None, :]
        width = (tl.num_programs(1) * D).to(tl.int64)
        tl.atomic_add(GRAD + rows[:, None] * width + cols[None, :], grad_a, mask=mask)
        tl.atomic_add(GRAD + p[:, None] * width + cols[None, :], grad_p, mask=mask)
        tl.atomic_add(GRAD + n[:, None] * width + cols[None, :], grad_n, mask=mask)


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and warps of one kernel launch."""

    block_m: int
    block_n: int  # column tile of the forward's mining loop (unused by the backward)
    block_d: int
    num_warps: int
    num_stages: int


def forward_config(slice_dim: int) -> LaunchConfig:
    """Forward tiles: 64 anchors × 32 columns per mining step, the slice in 16-wide chunks.

    8 warps and no software pipelining. ptxas reports no spills for every switch and
    input type on sm_80 and sm_90 with both Triton 3.8 and 3.6 (the GPU machines' version,
    which caps these at 128 registers); 64×64 column tiles or 32-wide chunks spill there,
    4 warps spill hundreds of bytes. tf32 mining uses wgmma on sm_90.
    tests/test_gpu_compile.py holds this for the installed Triton.
    """
    return LaunchConfig(block_m=64, block_n=32, block_d=16, num_warps=8, num_stages=1)


def backward_config(slice_dim: int) -> LaunchConfig:
    """Backward tiles: 32 anchors × 64 dims per step (16 for d ≤ 16); 4 warps spill here."""
    return LaunchConfig(block_m=32, block_n=0, block_d=16 if slice_dim <= 16 else 64, num_warps=8, num_stages=1)


def all_launch_configs() -> list[tuple[str, LaunchConfig]]:
    """Every (kernel, config) the launcher can pick: what the GPU compile test builds."""
    return [("forward", forward_config(256))] + [("backward", backward_config(d)) for d in (16, 256)]


class _TripletLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embeddings, labels, margins, weights, lam, slice_dim, dual, normalize, precision):
        batch = embeddings.shape[0]
        num_slices = margins.numel()
        device = embeddings.device
        pos = torch.empty(num_slices, batch, dtype=torch.int32, device=device)
        neg = torch.empty_like(pos)
        dist = torch.empty(3, num_slices, batch, dtype=torch.float32, device=device)
        norms = torch.empty(num_slices, batch, dtype=torch.float32, device=device)
        sums = torch.zeros(num_slices, dtype=torch.float32, device=device)
        active = torch.zeros(num_slices, dtype=torch.int32, device=device)
        count = torch.zeros(1, dtype=torch.int32, device=device)
        margins = margins.to(torch.float32)
        cfg = forward_config(slice_dim)
        grid = (triton.cdiv(batch, cfg.block_m), num_slices)
        _triplet_forward_kernel[grid](
            embeddings, embeddings.stride(0), embeddings.stride(1), labels, labels.stride(0), margins,
            pos, neg, dist, norms, sums, active, count,
            batch, slice_dim, NORMALIZE_EPS,
            DUAL=dual, NORMALIZE=normalize, PRECISION=precision,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        terms = 2 if dual else 1
        slice_losses = sums / (count.clamp_min(1) * terms)
        weights = weights.to(torch.float32)
        loss = lam * (weights * slice_losses).sum()
        ctx.save_for_backward(embeddings, pos, neg, dist, norms, margins, weights, count)
        ctx.config = (lam / terms, slice_dim, dual, normalize)
        ctx.mark_non_differentiable(slice_losses, pos, neg, active, count)
        return loss, slice_losses, pos, neg, active, count

    @staticmethod
    def backward(ctx, grad_loss, *_):
        embeddings, pos, neg, dist, norms, margins, weights, count = ctx.saved_tensors
        scale, slice_dim, dual, normalize = ctx.config
        batch, width = embeddings.shape
        grad = torch.zeros(batch, width, dtype=torch.float32, device=embeddings.device)
        cfg = backward_config(slice_dim)
        grid = (triton.cdiv(batch, cfg.block_m), margins.numel())
        _triplet_backward_kernel[grid](
            embeddings, embeddings.stride(0), embeddings.stride(1), grad,
            pos, neg, dist, norms, margins, weights,
            grad_loss.reshape(1).to(torch.float32), count, scale,
            batch, slice_dim, NORMALIZE_EPS,
            DUAL=dual, NORMALIZE=normalize,
            BLOCK_M=cfg.block_m, BLOCK_D=cfg.block_d, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        return grad.to(embeddings.dtype), None, None, None, None, None, None, None, None


def triton_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margins: torch.Tensor,
    weights: torch.Tensor,
    lam: float,
    slice_dim: int,
    *,
    dual: bool = True,
    normalize: bool = True,
    precision: str = "ieee",
) -> TripletLossOutput:
    """Fused multi-threshold triplet loss. Same contract as muldml.backend_torch.torch_triplet_loss.

    embeddings: (B, N·d) fp32/fp16/bf16 (fp64 is computed in fp32); labels: (B,) int;
    margins, weights: (N,). precision: "ieee" (exact fp32 mining) or "tf32".
    """
    loss, slice_losses, pos, neg, active, count = _TripletLossFunction.apply(
        embeddings, labels.long(), margins, weights, lam, slice_dim, dual, normalize, precision
    )
    return TripletLossOutput(
        loss=loss.to(embeddings.dtype) if embeddings.dtype == torch.float64 else loss,
        slice_losses=slice_losses,
        pos_idx=pos.long(),
        neg_idx=neg.long(),
        num_active=active.long(),
        num_triplets=count[0].long(),
        dual=dual,
    )

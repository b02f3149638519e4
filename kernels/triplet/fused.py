"""Fused multi-threshold batch-hard (dual) triplet loss in Triton.

Forward, one zero-fill and five Triton launches, no host synchronisation and no
host-to-device copy (capturable in a CUDA graph):

1. Stats, grid (row blocks × slices): each slice row x is read, its norm ‖x‖ kept, and
   x̂ = x/max(‖x‖, eps) (x when the loss does not normalise) added atomically into the
   slice's sum; rows whose squared norm is not finite are counted.
2. Pre-pass, grid (row blocks × slices): the mining copy y = x̂ − c, c the slice's batch
   mean of x̂, written contiguously in the mining precision (rounded to it here), with
   ‖y‖² of the stored values. Distances are translation-invariant, so centring changes no
   distance, yet it keeps the Gram expansion ‖y_a − y_b‖² = ‖y_a‖² − 2·y_a·y_b + ‖y_b‖²
   accurate for large-norm or clustered features, where the three terms would otherwise cancel.
3. Mining, grid (tiles (i, j) × slices): each program forms one tile of products y_a·y_b
   on tensor cores (tl.dot); anchors of block i score their candidates by rows,
   ‖y_b‖² − 2·y_a·y_b (the squared distance minus a per-anchor constant). With symmetric
   tiles (an autotuner configuration) only tiles i ≤ j run, and off the diagonal they also
   serve the anchors of block j by columns, ‖y_a‖² − 2·y_a·y_b: half the products, a
   costlier epilogue (bench/README.md weighs the two). Scores are masked by label, reduced
   to the hardest positive (largest) and negative (smallest) per anchor, and merged into
   the anchor's best with one 64-bit atomic max/min of (score, index) keys, ties to the
   lowest index, whatever the order of the tiles. No B×B matrix exists.
4. Hinge, grid (row blocks × slices): reads the mined indices, recomputes the chosen
   triplets' distances exactly in fp32 from the input rows, forms the hinge terms and adds
   them up per slice (atomics), with the count K of valid anchors.
5. Finish, one program: slice losses, the weighted loss λ·Σ w_i·loss_i, and the
   diagnostics as int64 (indices are written as int64 by step 4): no cast is left to do.

Cross-batch memory (``memory=(rows (M, N·d), labels (M,))``): two launches more between
steps 3 and 4. A pre-pass writes the memory's mining copy m − c (the batch's centre c,
rounded as the batch's copy), and a mining kernel over (anchor block × memory block ×
slice) tiles scores memory rows by rows only, as the rows half of a batch tile, merging
into the same keys with candidate index B + m: memory rows are extra columns, never
anchors, and no (B, B + M) matrix exists. The hinge reads chosen memory rows exactly in
fp32 and keeps an (N, B, d) copy of them per p* and n* for the backward, which scatters
gradient to batch rows only (the queue may change between forward and backward).

Backward, one zero-fill and one Triton launch over (row blocks × slices): every active
hinge term scatters its analytic gradient into the rows a, p*, n* (through the slice's L2
normalisation when the loss normalises) with relaxed fp32 atomic adds. Every launch runs
under the input's device (torch.cuda.device), not the current one.

Mining precision (``precision``), for fp32 mining copies unless said otherwise:
- "tf32" (default): one tensor-core product with 10-bit mantissas. The pre-pass rounds the
  copy to tf32 (to nearest, ties away from zero, as cvt.rna.tf32.f32): the tensor cores,
  which read only the top 19 bits of an fp32 operand, then multiply exactly these values
  rather than truncated ones, and the interpreter (which multiplies exactly) mines what a
  GPU mines, up to the order of the fp32 accumulation. Unit roundoff 2⁻¹¹.
- "tf32x3": three tf32 products (split operands), about fp32 accuracy on tensor cores.
- "bf16": the mining copy is stored in bf16 (8-bit mantissas, round to nearest even), half
  the traffic; products of bf16 values are exact in fp32.
Mining only ranks candidates; the loss and gradient always use exact fp32 distances of
the triplets chosen. With unit roundoff u (2⁻¹¹ tf32, 2⁻⁸ bf16, about 2⁻²² tf32x3) and R
the largest centred norm ‖y‖ of the slice, a squared distance of the rounded copy is off
by at most about 4·u·R² (plus the fp32 accumulation, about d·2⁻²³·R²). So a precision may
pick a different positive (negative) only where another candidate's squared distance is
within twice that of the hardest one; that candidate is then as hard up to that gap. Exact
ties between coincident candidates (identical scores) still go to the lowest index.

Non-finite input: a NaN loss and slice losses, and an all-NaN gradient (not refused:
checking would synchronise; muldml.losses refuses it where check_finite is on).

Determinism: the centre, per-slice sums (forward) and row gradients (backward) are
accumulated with fp32 atomics in a run-dependent order: results agree to rounding, not
bit for bit. The mining merge (atomic max/min of keys) does not depend on the order; the
mined indices can differ between runs only where two candidates' scores
are within rounding of the centre (summed atomically) of each other. Within a launch, programs
write disjoint memory or add atomically (tests/kernels: the race check).

Memory beyond inputs and gradient: the mining copy (N·B·d values in the mining precision,
freed when the forward returns) and O(B·N) (norms, indices, three distances per slice and
anchor, two mining keys per slice and anchor) plus N·d for the centre. No fp32 copy of
half-precision input is made; its gradient is accumulated in an fp32 (B, N·d) buffer and
then cast to the input's dtype (one more (B, N·d) temporary and one more launch).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from muldml.kernels.triplet.outputs import TripletLossOutput
from muldml.kernels.triplet.naive import NORMALIZE_EPS

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Mining precision → (mining copy dtype, tl.dot input_precision for fp32 operands).
PRECISIONS = {"tf32": (torch.float32, "tf32"), "tf32x3": (torch.float32, "tf32x3"), "bf16": (torch.bfloat16, "tf32")}
ROW_PAD = 128  # the mining copy has rows padded to this (largest tile) and zero-filled


@triton.jit
def _load_rows(X, rows, cols, row_mask, col_mask, stride_row, stride_col):
    """Load X[rows, cols] as an fp32 (len(rows), len(cols)) tile, zero outside the masks."""
    ptrs = X + rows.to(tl.int64)[:, None] * stride_row + cols.to(tl.int64)[None, :] * stride_col
    return tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _load_candidates(X, idx, cols, ok, dim_ok, stride_row, stride_col, inv, B,
                     MEM, mem_rows, mem_cols, mem_stride_row, mem_stride_col, HAS_MEMORY: tl.constexpr):
    """Rows of candidates `idx` in the distance space: batch rows (idx < B) from X scaled by
    `inv`; with a cross-batch memory, rows idx ≥ B from MEM at (mem_rows, mem_cols)."""
    x = _load_rows(X, idx, cols, ok & (idx < B), dim_ok, stride_row, stride_col) * inv[:, None]
    if HAS_MEMORY:
        x += _load_rows(MEM, mem_rows, mem_cols, ok & (idx >= B), dim_ok, mem_stride_row, mem_stride_col)
    return x


@triton.jit
def _inverse_norm(norm, EPS, NORMALIZE: tl.constexpr):
    """1 / max(‖x‖, eps) as F.normalize uses it, or 1 when the loss does not normalise."""
    if NORMALIZE:
        return 1.0 / tl.maximum(norm, EPS)
    else:
        return tl.full(norm.shape, 1.0, tl.float32)


@triton.jit
def _round_to_tf32(y):
    """Round fp32 to the nearest tf32 value (10 mantissa bits, ties away from zero), as
    cvt.rna.tf32.f32 does; inf and NaN pass unchanged."""
    bits = y.to(tl.uint32, bitcast=True)
    rounded = ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(y) < float("inf"), rounded, y)


@triton.jit
def _store_mining_copy(Y, out_rows, cols, y, D_PAD, ROUND_TF32: tl.constexpr):
    """Store y (rows × cols, fp32) as the mining copy in Y's dtype and return the stored
    rows' squared norms (fp32): tf32 rounds to nearest (the tensor cores then multiply
    exactly these values), bf16 to nearest even."""
    if ROUND_TF32:
        y = _round_to_tf32(y)
    y = y.to(Y.dtype.element_ty)
    tl.store(Y + out_rows[:, None] + cols[None, :], y, mask=(cols < D_PAD)[None, :])
    y = y.to(tl.float32)
    return tl.sum(y * y, axis=1)


@triton.jit
def _stats_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d), any float dtype, any strides
    NORMS,  # (N, B) fp32 out: ‖x‖ before normalisation
    CENTRE_SUM,  # (N, d) fp32, zeroed; accumulated: Σ_b x̂_b
    BAD,  # (1,) int32, zeroed; accumulated: rows whose squared norm is not finite
    B, D, EPS,
    NORMALIZE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < B
    dims = tl.arange(0, BLOCK_D)
    first_col = slice_id * D
    sq_x = tl.zeros((BLOCK_R,), tl.float32)
    for k in range(0, D, BLOCK_D):
        x = _load_rows(X, rows, first_col + k + dims, row_ok, k + dims < D, stride_row, stride_col)
        sq_x += tl.sum(x * x, axis=1)
    norm = tl.sqrt(sq_x)
    tl.store(NORMS + slice_id * B + rows, norm, mask=row_ok)
    tl.atomic_add(BAD, tl.sum((row_ok & ~(sq_x < float("inf"))).to(tl.int32), axis=0), sem="relaxed")
    inv = _inverse_norm(norm, EPS, NORMALIZE)
    for k in range(0, D, BLOCK_D):
        dim_ok = k + dims < D
        x = _load_rows(X, rows, first_col + k + dims, row_ok, dim_ok, stride_row, stride_col)
        tl.atomic_add(CENTRE_SUM + slice_id * D + k + dims, tl.sum(x * inv[:, None], axis=0), mask=dim_ok,
                      sem="relaxed")


@triton.jit
def _prepare_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d), any float dtype, any strides
    NORMS,  # (N, B) fp32 ‖x‖ from the stats pass
    CENTRE_SUM,  # (N, d) fp32 Σ_b x̂_b from the stats pass: c = CENTRE_SUM / B
    Y,  # (N, B_pad, D_pad) out, mining dtype: y = x̂ − c rounded to the mining precision, zero in the padding
    SQ,  # (N, B_pad) fp32 out: ‖y‖² of the stored (rounded) y, 0 in the padding
    KEY_POS, KEY_NEG,  # (N, B) int64 out: the mining's starting keys, no candidate yet
    B, B_PAD, D, D_PAD, EPS,
    NORMALIZE: tl.constexpr, ROUND_TF32: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < B
    dims = tl.arange(0, BLOCK_D)
    first_col = slice_id * D
    inv = _inverse_norm(tl.load(NORMS + slice_id * B + rows, mask=row_ok, other=1.0), EPS, NORMALIZE)
    sq_y = tl.zeros((BLOCK_R,), tl.float32)
    out_rows = (slice_id * B_PAD + rows).to(tl.int64) * D_PAD
    for k in range(0, D_PAD, BLOCK_D):
        dim_ok = k + dims < D
        x = _load_rows(X, rows, first_col + k + dims, row_ok, dim_ok, stride_row, stride_col)
        centre = tl.load(CENTRE_SUM + slice_id * D + k + dims, mask=dim_ok, other=0.0) / B
        y = tl.where(row_ok[:, None] & dim_ok[None, :], x * inv[:, None] - centre[None, :], 0.0)
        sq_y += _store_mining_copy(Y, out_rows, k + dims, y, D_PAD, ROUND_TF32)
    tl.store(SQ + slice_id * B_PAD + rows, sq_y)
    tl.store(KEY_POS + slice_id * B + rows, tl.full((BLOCK_R,), NO_POSITIVE, tl.int64), mask=row_ok)
    tl.store(KEY_NEG + slice_id * B + rows, tl.full((BLOCK_R,), NO_NEGATIVE, tl.int64), mask=row_ok)


# Mined candidates are kept as int64 keys, so that one atomic max (positives) or min
# (negatives) merges a tile's candidates into an anchor's best, ties to the lowest index:
# high 32 bits the score as an order-preserving int, low 32 bits the index (positives:
# 2³² − 1 − index, so that the lower index is the larger key).
NO_POSITIVE = tl.constexpr(-(2**63))  # below every key: no positive seen
NO_NEGATIVE = tl.constexpr(2**63 - 1)  # above every key: no negative seen


@triton.jit
def _score_key(score, index, LARGEST: tl.constexpr):
    bits = score.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)  # fp32 order as signed int
    if LARGEST:
        return (ordered << 32) | (4294967295 - index.to(tl.int64))
    else:
        return (ordered << 32) | index.to(tl.int64)


@triton.jit
def _offer(KEYS, anchors, anchor_ok, scores, first, LARGEST: tl.constexpr, AXIS: tl.constexpr):
    """Reduce a (rows, cols) score tile along AXIS (candidates) and merge each anchor's best
    into KEYS atomically; candidates are numbered from `first`; ties to the lowest index."""
    if LARGEST:
        best, arg = tl.max(scores, axis=AXIS, return_indices=True, return_indices_tie_break_left=True)
        found = best > float("-inf")
        tl.atomic_max(KEYS + anchors, _score_key(best, first + arg, True), mask=anchor_ok & found, sem="relaxed")
    else:
        best, arg = tl.min(scores, axis=AXIS, return_indices=True, return_indices_tie_break_left=True)
        found = best < float("inf")
        tl.atomic_min(KEYS + anchors, _score_key(best, first + arg, False), mask=anchor_ok & found, sem="relaxed")


@triton.jit
def _tile_products(a_ptrs, b_ptrs, D_PAD, PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_M, BLOCK_N) fp32 products of rows padded with zeros to D_PAD (a multiple of
    BLOCK_K): no masks in the K loop."""
    dot = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(0, D_PAD, BLOCK_K):
        a = tl.load(a_ptrs + k)
        b = tl.load(b_ptrs + k)
        if INTERPRETED:
            # Triton's interpreter multiplies the bit patterns of bf16 operands (upcast:
            # products of bf16 values are exact in fp32), and its tl.dot is numpy's GEMM,
            # which rounds identical rows differently: sum each product the same way
            # instead, as a tensor core does, so that coincident points score the same.
            a = a.to(tl.float32)
            b = b.to(tl.float32)
            dot += tl.sum(a[:, None, :] * b[None, :, :], axis=2)
        else:
            dot = tl.dot(a, tl.trans(b), dot, input_precision=PRECISION)
    return dot


@triton.jit
def _mine_kernel(
    Y,  # (N, B_pad, D_pad) mining copy from the pre-pass
    SQ,  # (N, B_pad) fp32 ‖y‖²
    LABELS, stride_label,  # (B,) int32 or int64, any stride
    KEY_POS, KEY_NEG,  # (N, B) int64, set to NO_POSITIVE / NO_NEGATIVE by the pre-pass; merged
    B, B_PAD, D_PAD,
    PRECISION: tl.constexpr, INTERPRETED: tl.constexpr, SYMMETRIC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # One program per tile (i, j). SYMMETRIC: distances are symmetric, so only tiles with
    # i ≤ j run, each serving the anchors of block i by its rows and, off the diagonal,
    # those of block j by its columns (half the products, a costlier epilogue: the column
    # reduction crosses warps). Otherwise every tile runs and serves its rows only.
    tile = tl.program_id(0)
    slice_id = tl.program_id(1)
    if SYMMETRIC:
        j = ((tl.sqrt(8.0 * tile.to(tl.float32) + 1.0) - 1.0) * 0.5).to(tl.int32)
        j = tl.where(j * (j + 1) // 2 > tile, j - 1, j)  # exact despite the float square root
        j = tl.where((j + 1) * (j + 2) // 2 <= tile, j + 1, j)
        i = tile - j * (j + 1) // 2
    else:
        blocks = tl.cdiv(B, BLOCK_N)
        i = tile // blocks
        j = tile % blocks
    rows = i * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = j * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < B
    ks = tl.arange(0, BLOCK_K)
    slice_base = Y + slice_id.to(tl.int64) * B_PAD * D_PAD
    a_ptrs = slice_base + rows.to(tl.int64)[:, None] * D_PAD + ks[None, :]
    b_ptrs = slice_base + cols.to(tl.int64)[:, None] * D_PAD + ks[None, :]
    # Rows are padded to ROW_PAD and dims to BLOCK_K with zeros: no masks in the K loop.
    dot = _tile_products(a_ptrs, b_ptrs, D_PAD, PRECISION, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_K)

    labels_a = tl.load(LABELS + rows.to(tl.int64) * stride_label, mask=row_ok, other=0)
    labels_b = tl.load(LABELS + cols.to(tl.int64) * stride_label, mask=col_ok, other=0)
    same = labels_a[:, None] == labels_b[None, :]
    is_pos = same & (rows[:, None] != cols[None, :]) & row_ok[:, None] & col_ok[None, :]
    is_neg = ~same & row_ok[:, None] & col_ok[None, :]
    keys = slice_id * B
    # Anchors of block i (rows) score their candidates b by ‖y_b‖² − 2·y_a·y_b …
    sq_b = tl.load(SQ + slice_id * B_PAD + cols)
    score = sq_b[None, :] - 2.0 * dot
    _offer(KEY_POS, keys + rows, row_ok, tl.where(is_pos, score, float("-inf")), j * BLOCK_N, True, 1)
    _offer(KEY_NEG, keys + rows, row_ok, tl.where(is_neg, score, float("inf")), j * BLOCK_N, False, 1)
    # … and anchors of block j (columns) score theirs by ‖y_a‖² − 2·y_a·y_b.
    if SYMMETRIC and i != j:
        sq_a = tl.load(SQ + slice_id * B_PAD + rows)
        score = sq_a[:, None] - 2.0 * dot
        _offer(KEY_POS, keys + cols, col_ok, tl.where(is_pos, score, float("-inf")), i * BLOCK_M, True, 0)
        _offer(KEY_NEG, keys + cols, col_ok, tl.where(is_neg, score, float("inf")), i * BLOCK_M, False, 0)


# Cross-batch memory: the queue's rows are extra columns of the mining, never anchors
# and never differentiated. Its mining copy is centred on the batch's centre c (distances
# are translation-invariant, so any common centre is exact) and rounded like the batch's;
# each program scores one tile (batch anchors × memory rows) by rows only, as the rows
# half of a batch tile, and merges into the same keys: candidates are numbered B + m.


@triton.jit
def _prepare_memory_kernel(
    MEM, stride_row, stride_col,  # memory rows (M, N·d) fp32, as the distances see them
    CENTRE_SUM,  # (N, d) fp32 Σ_b x̂_b of the batch: c = CENTRE_SUM / B
    YM,  # (N, M_pad, D_pad) out, mining dtype: m − c rounded, zero in the padding
    SQM,  # (N, M_pad) fp32 out: ‖m − c‖² of the stored values, 0 in the padding
    M, M_PAD, B, D, D_PAD,
    ROUND_TF32: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < M
    dims = tl.arange(0, BLOCK_D)
    sq_y = tl.zeros((BLOCK_R,), tl.float32)
    out_rows = (slice_id * M_PAD + rows).to(tl.int64) * D_PAD
    for k in range(0, D_PAD, BLOCK_D):
        dim_ok = k + dims < D
        x = _load_rows(MEM, rows, slice_id * D + k + dims, row_ok, dim_ok, stride_row, stride_col)
        centre = tl.load(CENTRE_SUM + slice_id * D + k + dims, mask=dim_ok, other=0.0) / B
        y = tl.where(row_ok[:, None] & dim_ok[None, :], x - centre[None, :], 0.0)
        sq_y += _store_mining_copy(YM, out_rows, k + dims, y, D_PAD, ROUND_TF32)
    tl.store(SQM + slice_id * M_PAD + rows, sq_y)


@triton.jit
def _mine_memory_kernel(
    Y,  # (N, B_pad, D_pad) the batch's mining copy
    YM,  # (N, M_pad, D_pad) the memory's mining copy
    SQM,  # (N, M_pad) fp32 ‖m − c‖²
    LABELS, stride_label, MEM_LABELS, stride_mem_label,  # (B,) and (M,) int32 or int64
    KEY_POS, KEY_NEG,  # (N, B) int64, merged (see _mine_kernel)
    B, B_PAD, M, M_PAD, D_PAD,
    PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Grid: (anchor blocks × memory blocks, slices); anchor blocks vary fastest.
    tile = tl.program_id(0)
    slice_id = tl.program_id(1)
    row_blocks = tl.cdiv(B, BLOCK_M)
    i = tile % row_blocks
    j = tile // row_blocks
    rows = i * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = j * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < M
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = Y + slice_id.to(tl.int64) * B_PAD * D_PAD + rows.to(tl.int64)[:, None] * D_PAD + ks[None, :]
    b_ptrs = YM + slice_id.to(tl.int64) * M_PAD * D_PAD + cols.to(tl.int64)[:, None] * D_PAD + ks[None, :]
    dot = _tile_products(a_ptrs, b_ptrs, D_PAD, PRECISION, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_K)
    labels_a = tl.load(LABELS + rows.to(tl.int64) * stride_label, mask=row_ok, other=0)
    labels_m = tl.load(MEM_LABELS + cols.to(tl.int64) * stride_mem_label, mask=col_ok, other=0)
    same = labels_a[:, None] == labels_m[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    score = tl.load(SQM + slice_id * M_PAD + cols)[None, :] - 2.0 * dot  # as the batch's row scores
    keys = slice_id * B + rows
    _offer(KEY_POS, keys, row_ok, tl.where(same & ok, score, float("-inf")), B + j * BLOCK_N, True, 1)
    _offer(KEY_NEG, keys, row_ok, tl.where(~same & ok, score, float("inf")), B + j * BLOCK_N, False, 1)


# LOOP_TRIPS = 1 always, a runtime int: Triton 3.6 builds this kernel only when the keys
# are decoded inside a loop it cannot unroll ("arith.select" and load-mask layout
# mismatches in make_ttgir otherwise); Triton 3.8 builds either form.
@triton.jit(do_not_specialize=["LOOP_TRIPS"])
def _hinge_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d)
    MEM, mem_stride_row, mem_stride_col,  # memory rows (M, N·d) fp32: candidate B + m is row m (HAS_MEMORY)
    MEM_P, MEM_N,  # (N, B, d) fp32 out (HAS_MEMORY): the memory rows chosen as p*, n*, for the backward
    KEY_POS, KEY_NEG,  # (N, B) int64 from the mining
    NORMS,  # (N, B) fp32 ‖x‖
    MARGINS,  # (N,) fp32 or fp64
    POS, NEG,  # (N, B) int64 out: hardest positive / negative, -1 where no triplet
    DIST,  # (3, N, B) fp32 out: d(a,p*), d(a,n*), d(p*,n*)
    SUMS,  # (N,) fp32 accumulated: Σ hinge terms per slice
    ACTIVE,  # (N,) int32 accumulated: hinge terms > 0 per slice
    COUNT,  # (1,) int32 accumulated: K, anchors with a positive and a negative
    B, D, LOOP_TRIPS, EPS,
    DUAL: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MEMORY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    num_slices = tl.num_programs(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < B
    idx = slice_id * B + rows
    pos_idx = tl.full((BLOCK_R,), -1, tl.int32)
    neg_idx = tl.full((BLOCK_R,), -1, tl.int32)
    for _ in range(0, LOOP_TRIPS):
        key_pos = tl.load(KEY_POS + idx, mask=row_ok, other=NO_POSITIVE)
        key_neg = tl.load(KEY_NEG + idx, mask=row_ok, other=NO_NEGATIVE)
        pos_idx = tl.where(key_pos != NO_POSITIVE, 4294967295 - (key_pos & 4294967295), -1).to(tl.int32)
        neg_idx = tl.where(key_neg != NO_NEGATIVE, key_neg & 4294967295, -1).to(tl.int32)
    valid = row_ok & (pos_idx >= 0) & (neg_idx >= 0)
    p = tl.where(valid, pos_idx, 0)
    n = tl.where(valid, neg_idx, 0)
    inv_a = _inverse_norm(tl.load(NORMS + idx, mask=valid, other=1.0), EPS, NORMALIZE)
    # Memory rows (index ≥ B) are stored as the distances see them: scale 1.
    inv_p = _inverse_norm(tl.load(NORMS + slice_id * B + p, mask=valid & (p < B), other=1.0), EPS, NORMALIZE)
    inv_n = _inverse_norm(tl.load(NORMS + slice_id * B + n, mask=valid & (n < B), other=1.0), EPS, NORMALIZE)

    # Exact fp32 distances of the chosen triplets, from differences of the input rows.
    first_col = slice_id * D
    dims = tl.arange(0, BLOCK_D)
    sq_ap = tl.zeros((BLOCK_R,), tl.float32)
    sq_an = tl.zeros((BLOCK_R,), tl.float32)
    sq_pn = tl.zeros((BLOCK_R,), tl.float32)
    for k in range(0, D, BLOCK_D):
        dim_ok = k + dims < D
        xa = _load_rows(X, rows, first_col + k + dims, valid, dim_ok, stride_row, stride_col) * inv_a[:, None]
        xp = _load_candidates(X, p, first_col + k + dims, valid, dim_ok, stride_row, stride_col, inv_p, B,
                              MEM, p - B, first_col + k + dims, mem_stride_row, mem_stride_col, HAS_MEMORY)
        xn = _load_candidates(X, n, first_col + k + dims, valid, dim_ok, stride_row, stride_col, inv_n, B,
                              MEM, n - B, first_col + k + dims, mem_stride_row, mem_stride_col, HAS_MEMORY)
        if HAS_MEMORY:  # the queue may be overwritten before the backward runs: keep the chosen rows
            out = idx.to(tl.int64)[:, None] * D + (k + dims)[None, :]
            tl.store(MEM_P + out, xp, mask=(valid & (p >= B))[:, None] & dim_ok[None, :])
            tl.store(MEM_N + out, xn, mask=(valid & (n >= B))[:, None] & dim_ok[None, :])
        sq_ap += tl.sum((xa - xp) * (xa - xp), axis=1)
        sq_an += tl.sum((xa - xn) * (xa - xn), axis=1)
        if DUAL:
            sq_pn += tl.sum((xp - xn) * (xp - xn), axis=1)
    d_ap = tl.sqrt(sq_ap)
    d_an = tl.sqrt(sq_an)
    d_pn = tl.sqrt(sq_pn)

    margin = tl.load(MARGINS + slice_id).to(tl.float32)
    hinge_an = tl.where(valid, tl.maximum(d_ap - d_an + margin, 0.0), 0.0)
    total = tl.sum(hinge_an, axis=0)
    active = tl.sum((hinge_an > 0).to(tl.int32), axis=0)
    if DUAL:  # the negative must also be farther from the positive than the anchor is
        hinge_pn = tl.where(valid, tl.maximum(d_ap - d_pn + margin, 0.0), 0.0)
        total += tl.sum(hinge_pn, axis=0)
        active += tl.sum((hinge_pn > 0).to(tl.int32), axis=0)

    tl.store(POS + idx, tl.where(valid, pos_idx, -1).to(tl.int64), mask=row_ok)
    tl.store(NEG + idx, tl.where(valid, neg_idx, -1).to(tl.int64), mask=row_ok)
    tl.store(DIST + idx, d_ap, mask=row_ok)
    tl.store(DIST + num_slices * B + idx, d_an, mask=row_ok)
    tl.store(DIST + 2 * num_slices * B + idx, d_pn, mask=row_ok)
    tl.atomic_add(SUMS + slice_id, total, sem="relaxed")
    tl.atomic_add(ACTIVE + slice_id, active, sem="relaxed")
    if slice_id == 0:
        tl.atomic_add(COUNT, tl.sum(valid.to(tl.int32), axis=0), sem="relaxed")


@triton.jit
def _finish_kernel(
    SUMS, ACTIVE, COUNT, BAD,  # from the stats and hinge kernels (see there)
    WEIGHTS,  # (N,) fp32 or fp64 w_i
    LOSS,  # () fp32 out: λ·Σ_i w_i·loss_i, NaN when an input row is not finite
    SLICE_LOSSES,  # (N,) fp32 out: loss_i = Σ hinge terms / (K · terms per anchor)
    ACTIVE_OUT, COUNT_OUT,  # (N,) and () int64 out: the diagnostics, ready to read
    N, LAM, TERMS,
    BLOCK: tl.constexpr,
):
    i = tl.arange(0, BLOCK)
    ok = i < N
    count = tl.load(COUNT)
    slice_loss = tl.load(SUMS + i, mask=ok, other=0.0) / (tl.maximum(count, 1) * TERMS).to(tl.float32)
    slice_loss = tl.where(tl.load(BAD) > 0, float("nan"), slice_loss)
    weights = tl.load(WEIGHTS + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(LOSS, LAM * tl.sum(tl.where(ok, weights * slice_loss, 0.0), axis=0))
    tl.store(SLICE_LOSSES + i, slice_loss, mask=ok)
    tl.store(ACTIVE_OUT + i, tl.load(ACTIVE + i, mask=ok, other=0).to(tl.int64), mask=ok)
    tl.store(COUNT_OUT, count.to(tl.int64))


@triton.jit
def _backward_kernel(
    X, stride_row, stride_col,  # embeddings (B, N·d)
    GRAD,  # (B, N·d) fp32 contiguous, zero-initialised; accumulated
    POS, NEG, DIST, NORMS, MARGINS,  # saved by the forward (see there)
    WEIGHTS,  # (N,) w_i
    GRAD_OUT,  # () upstream gradient of the scalar loss
    COUNT,  # (1,) int32 K
    BAD,  # (1,) int32: non-finite input rows; then the whole gradient is NaN
    SCALE,  # λ / terms per anchor (1 traditional, 2 dual)
    MEM_P, MEM_N,  # (N, B, d) fp32: the memory rows chosen as p*, n* where those are ≥ B (HAS_MEMORY)
    B, D, EPS,
    DUAL: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MEMORY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    slice_id = tl.program_id(1)
    num_slices = tl.num_programs(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
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
    d_an = tl.load(DIST + num_slices * B + idx, mask=valid, other=0.0)
    d_pn = tl.load(DIST + 2 * num_slices * B + idx, mask=valid, other=0.0)

    poison = tl.load(BAD) > 0
    # dLoss/d(hinge term) for an active term: grad_out · λ · w_i / (K · terms per anchor).
    count = tl.maximum(tl.load(COUNT), 1).to(tl.float32)
    coef = tl.load(GRAD_OUT).to(tl.float32) * SCALE * tl.load(WEIGHTS + slice_id).to(tl.float32) / count
    margin = tl.load(MARGINS + slice_id).to(tl.float32)
    active_an = valid & (d_ap - d_an + margin > 0)
    g_ap = tl.where(active_an, coef, 0.0)
    g_an = tl.where(active_an, -coef, 0.0)
    g_pn = tl.zeros((BLOCK_R,), tl.float32)
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
    norm_p = tl.load(NORMS + slice_id * B + p, mask=valid & (p < B), other=1.0)  # memory rows: scale 1
    norm_n = tl.load(NORMS + slice_id * B + n, mask=valid & (n < B), other=1.0)
    inv_a = _inverse_norm(norm_a, EPS, NORMALIZE)
    inv_p = _inverse_norm(norm_p, EPS, NORMALIZE)
    inv_n = _inverse_norm(norm_n, EPS, NORMALIZE)

    # Through x̂ = x / max(‖x‖, eps): ∂L/∂x = (ĝ − x̂ (x̂·ĝ)) / ‖x‖ above eps, ĝ / eps below.
    # The projections x̂·ĝ need a first pass over the slice.
    proj_a = tl.zeros((BLOCK_R,), tl.float32)
    proj_p = tl.zeros((BLOCK_R,), tl.float32)
    proj_n = tl.zeros((BLOCK_R,), tl.float32)
    if NORMALIZE:
        for k in range(0, D, BLOCK_D):
            dim_ok = k + dims < D
            xa = _load_rows(X, rows, first_col + k + dims, touched, dim_ok, stride_row, stride_col) * inv_a[:, None]
            xp = _load_candidates(X, p, first_col + k + dims, touched, dim_ok, stride_row, stride_col, inv_p, B,
                                  MEM_P, idx, k + dims, D, 1, HAS_MEMORY)
            xn = _load_candidates(X, n, first_col + k + dims, touched, dim_ok, stride_row, stride_col, inv_n, B,
                                  MEM_N, idx, k + dims, D, 1, HAS_MEMORY)
            u_ap = xa - xp
            u_an = xa - xn
            u_pn = xp - xn
            proj_a += tl.sum(xa * (c_ap[:, None] * u_ap + c_an[:, None] * u_an), axis=1)
            proj_p += tl.sum(xp * (c_pn[:, None] * u_pn - c_ap[:, None] * u_ap), axis=1)
            proj_n += tl.sum(xn * (-c_an[:, None] * u_an - c_pn[:, None] * u_pn), axis=1)
        proj_a = tl.where(norm_a > EPS, proj_a, 0.0)
        proj_p = tl.where(norm_p > EPS, proj_p, 0.0)
        proj_n = tl.where(norm_n > EPS, proj_n, 0.0)

    width = (num_slices * D).to(tl.int64)
    for k in range(0, D, BLOCK_D):
        dim_ok = k + dims < D
        cols = first_col + k + dims
        xa = _load_rows(X, rows, cols, touched, dim_ok, stride_row, stride_col) * inv_a[:, None]
        xp = _load_candidates(X, p, cols, touched, dim_ok, stride_row, stride_col, inv_p, B,
                              MEM_P, idx, k + dims, D, 1, HAS_MEMORY)
        xn = _load_candidates(X, n, cols, touched, dim_ok, stride_row, stride_col, inv_n, B,
                              MEM_N, idx, k + dims, D, 1, HAS_MEMORY)
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
        # Non-finite input: every program poisons its own rows of its slice (the whole
        # gradient), so that the step is visibly bad (a GradScaler skips it).
        grad_a = tl.where(poison, float("nan"), grad_a)
        mask_a = (touched | (row_ok & poison))[:, None] & dim_ok[None, :]
        # Relaxed: only the sums matter, not their order against other memory operations.
        tl.atomic_add(GRAD + rows.to(tl.int64)[:, None] * width + cols[None, :], grad_a, mask=mask_a, sem="relaxed")
        # Memory rows (index ≥ B) are constants: no gradient.
        tl.atomic_add(GRAD + p.to(tl.int64)[:, None] * width + cols[None, :], grad_p, mask=mask & (p < B)[:, None],
                      sem="relaxed")
        tl.atomic_add(GRAD + n.to(tl.int64)[:, None] * width + cols[None, :], grad_n, mask=mask & (n < B)[:, None],
                      sem="relaxed")


@dataclass(frozen=True)
class LaunchConfig:
    """Tiles and warps of one kernel launch (block_n and block_k: mining only)."""

    block_m: int
    block_d: int
    num_warps: int
    num_stages: int = 1
    block_n: int = 0
    block_k: int = 0
    symmetric: bool = False


def mining_configs(precision: str) -> list[LaunchConfig]:
    """Mining tiles the launcher may use for `precision`: square tiles (block_n = block_m),
    symmetric (tiles i ≤ j, served by rows and columns) or not, K in 32-wide (tf32) or
    64-wide (bf16) steps, pipelined over num_stages ≥ 2.

    Each of them compiles without spills for sm_80 and sm_90a (tests/kernels/triplet/test_aot.py).
    On a GPU the launcher autotunes among them per batch size (re-running the mining is
    harmless: its atomic max/min merge is idempotent); under the interpreter it takes the
    first, the symmetric one (tf32x3: full tiles only), so that the CPU tests cover its
    column side.
    """
    block_k = 64 if precision == "bf16" else 32
    if precision == "tf32x3":  # three products per step: more live registers (the symmetric
        return [LaunchConfig(64, 0, 4, 2, block_n=64, block_k=block_k)]  # tile spills under 3.6)
    return [LaunchConfig(block, 0, warps, 3, block_n=block, block_k=block_k, symmetric=symmetric)
            for block, warps in ((128, 8), (64, 4)) for symmetric in (True, False)]


# The row kernels below gather rows by index: software pipelining (the JIT's default of 3
# stages) only multiplies their live registers, and spilled in the launch-faithful builds.
def prepare_config(slice_dim: int) -> LaunchConfig:
    """Pre-pass: 32 rows × up to 128 dims per step."""
    return LaunchConfig(block_m=32, block_d=min(128, max(16, triton.next_power_of_2(slice_dim))), num_warps=4)


def hinge_config(slice_dim: int) -> LaunchConfig:
    """Hinge: 32 anchors, 16 dims per step for d ≤ 16 else 64; 8 warps (4 spill on strided input)."""
    return LaunchConfig(block_m=32, block_d=16 if slice_dim <= 16 else 64, num_warps=8)


def backward_config(slice_dim: int) -> LaunchConfig:
    """Backward: 32 anchors, 16 dims per step for d ≤ 16 else 32, 8 warps: 64-dim steps or
    4 warps spill (64 dims under Triton 3.6 on strided or half-precision input)."""
    return LaunchConfig(block_m=32, block_d=16 if slice_dim <= 16 else 32, num_warps=8)


def autotuned_mining(configs: list[LaunchConfig], kernel=_mine_kernel, key=("B", "D_PAD")):
    """`kernel` autotuned over `configs` per `key`; the interpreter cannot benchmark, so there
    the first configuration only. The memory kernel has no symmetric tiles (memory rows are
    never anchors): it takes the full-tile configurations."""
    symmetric = kernel is _mine_kernel
    if not symmetric:
        configs = [c for c in configs if not c.symmetric]
    if INTERPRET:
        configs = configs[:1]
    return triton.autotune(
        configs=[triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "BLOCK_K": c.block_k,
                                **({"SYMMETRIC": c.symmetric} if symmetric else {})},
                               num_warps=c.num_warps, num_stages=c.num_stages)
                 for c in configs],
        key=list(key),
    )(kernel)


MINE = {precision: autotuned_mining(mining_configs(precision)) for precision in PRECISIONS}
MINE_MEMORY = {precision: autotuned_mining(mining_configs(precision), _mine_memory_kernel, ("B", "M", "D_PAD"))
               for precision in PRECISIONS}


def _device_guard(device: torch.device):
    """Launch on the tensors' device, not on the current one (a process may drive several GPUs)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch_forward(x, labels, margins, weights, lam, slice_dim, dual, normalize, precision, memory=None):
    """The forward's launches: one zero-fill, then stats, pre-pass, mining, hinge and finish.
    With a cross-batch memory (rows (M, N·d) fp32 contiguous, labels (M,)): two launches
    more, the memory's pre-pass and its mining (extra columns, anchors from the batch only).

    Returns (loss, slice_losses, diagnostics, saved) where diagnostics is one int64 buffer
    holding pos (N, B), neg (N, B), num_active (N,) and K, and saved what backward needs.
    """
    batch = x.shape[0]
    num_slices = margins.numel()
    device = x.device
    mining_dtype, dot_precision = PRECISIONS[precision]
    block_k = mining_configs(precision)[0].block_k
    d_pad = triton.cdiv(slice_dim, block_k) * block_k
    b_pad = triton.cdiv(batch, ROW_PAD) * ROW_PAD
    f32, i32 = torch.float32, torch.int32

    # One zero-filled int32 workspace for every accumulator (0 bits are 0.0 in fp32 too):
    # centre sums (N·d) | non-finite rows (1) | hinge sums (N) | active terms (N) | K (1).
    work = torch.zeros(num_slices * slice_dim + 2 * num_slices + 2, dtype=i32, device=device)
    centre_sum = work[: num_slices * slice_dim].view(f32)
    rest = work[num_slices * slice_dim :]
    bad, sums, active, count = rest[:1], rest[1 : 1 + num_slices].view(f32), rest[1 + num_slices : -1], rest[-1:]

    norms = torch.empty(num_slices, batch, dtype=f32, device=device)
    mining = torch.empty(num_slices, b_pad, d_pad, dtype=mining_dtype, device=device)
    sq = torch.empty(num_slices, b_pad, dtype=f32, device=device)
    keys = torch.empty(2, num_slices, batch, dtype=torch.int64, device=device)  # set by the pre-pass
    diagnostics = torch.empty(2 * num_slices * batch + num_slices + 1, dtype=torch.int64, device=device)
    pos, neg = diagnostics[: num_slices * batch], diagnostics[num_slices * batch : 2 * num_slices * batch]
    dist = torch.empty(3, num_slices, batch, dtype=f32, device=device)
    losses = torch.empty(num_slices + 1, dtype=f32, device=device)  # slice losses, then the loss

    cfg = prepare_config(slice_dim)
    with _device_guard(device):
        _stats_kernel[(triton.cdiv(batch, cfg.block_m), num_slices)](
            x, x.stride(0), x.stride(1), norms, centre_sum, bad, batch, slice_dim, NORMALIZE_EPS,
            NORMALIZE=normalize, BLOCK_R=cfg.block_m, BLOCK_D=cfg.block_d,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        _prepare_kernel[(b_pad // cfg.block_m, num_slices)](
            x, x.stride(0), x.stride(1), norms, centre_sum, mining, sq, keys[0], keys[1],
            batch, b_pad, slice_dim, d_pad, NORMALIZE_EPS,
            NORMALIZE=normalize, ROUND_TF32=precision == "tf32", BLOCK_R=cfg.block_m, BLOCK_D=cfg.block_d,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        def grid(meta):  # the tiles (i, j) of each slice, i ≤ j only when symmetric
            blocks = triton.cdiv(batch, meta["BLOCK_M"])
            return (blocks * (blocks + 1) // 2 if meta["SYMMETRIC"] else blocks * blocks, num_slices)

        MINE[precision][grid](
            mining, sq, labels, labels.stride(0), keys[0], keys[1],
            batch, b_pad, d_pad, PRECISION=dot_precision, INTERPRETED=INTERPRET,
        )
        mem_rows, chosen = x, (dist, dist)  # placeholder pointers without memory
        if memory is not None:
            _mine_memory(memory, centre_sum, mining, labels, keys, batch, b_pad, slice_dim, d_pad,
                         num_slices, precision)
            mem_rows = memory[0]
            chosen = torch.empty(2, num_slices, batch, slice_dim, dtype=f32, device=device)
        cfg = hinge_config(slice_dim)
        _hinge_kernel[(triton.cdiv(batch, cfg.block_m), num_slices)](
            x, x.stride(0), x.stride(1), mem_rows, mem_rows.stride(0), mem_rows.stride(1), chosen[0], chosen[1],
            keys[0], keys[1], norms,
            margins, pos, neg, dist, sums, active, count, batch, slice_dim, 1, NORMALIZE_EPS,
            DUAL=dual, NORMALIZE=normalize, HAS_MEMORY=memory is not None, BLOCK_R=cfg.block_m, BLOCK_D=cfg.block_d,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        _finish_kernel[(1,)](
            sums, active, count, bad, weights, losses[num_slices:], losses[:num_slices],
            diagnostics[2 * num_slices * batch : -1], diagnostics[-1:], num_slices, lam, 2 if dual else 1,
            BLOCK=max(16, triton.next_power_of_2(num_slices)), num_warps=1,
        )
    # The mining copy and the keys are freed here: not kept for backward.
    saved = (pos.view(num_slices, batch), neg.view(num_slices, batch), dist, norms, count, bad)
    if memory is not None:
        saved += (chosen[0], chosen[1])
    return losses[num_slices], losses[:num_slices], diagnostics, saved


def _mine_memory(memory, centre_sum, mining, labels, keys, batch, b_pad, slice_dim, d_pad, num_slices, precision):
    """The memory's pre-pass and mining: its rows as extra columns merged into `keys`."""
    rows, mem_labels = memory
    size = rows.shape[0]
    m_pad = triton.cdiv(size, ROW_PAD) * ROW_PAD
    mining_dtype, dot_precision = PRECISIONS[precision]
    memory_copy = torch.empty(num_slices, m_pad, d_pad, dtype=mining_dtype, device=rows.device)
    sq = torch.empty(num_slices, m_pad, dtype=torch.float32, device=rows.device)
    cfg = prepare_config(slice_dim)
    _prepare_memory_kernel[(m_pad // cfg.block_m, num_slices)](
        rows, rows.stride(0), rows.stride(1), centre_sum, memory_copy, sq, size, m_pad, batch, slice_dim, d_pad,
        ROUND_TF32=precision == "tf32", BLOCK_R=cfg.block_m, BLOCK_D=cfg.block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )

    def grid(meta):  # every (anchor block, memory block) of each slice
        return (triton.cdiv(batch, meta["BLOCK_M"]) * triton.cdiv(size, meta["BLOCK_N"]), num_slices)

    MINE_MEMORY[precision][grid](
        mining, memory_copy, sq, labels, labels.stride(0), mem_labels, mem_labels.stride(0), keys[0], keys[1],
        batch, b_pad, size, m_pad, d_pad, PRECISION=dot_precision, INTERPRETED=INTERPRET,
    )


class _TripletLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embeddings, labels, margins, weights, lam, slice_dim, dual, normalize, precision,
                memory_rows=None, memory_labels=None):
        memory = None if memory_rows is None else (memory_rows, memory_labels)
        loss, slice_losses, diagnostics, saved = _launch_forward(
            embeddings, labels, margins, weights, lam, slice_dim, dual, normalize, precision, memory)
        ctx.save_for_backward(embeddings, margins, weights, *saved)
        ctx.config = (lam / (2 if dual else 1), slice_dim, dual, normalize)
        ctx.mark_non_differentiable(slice_losses, diagnostics)
        ctx.set_materialize_grads(False)  # no zero gradients made for the diagnostics
        return loss, slice_losses, diagnostics

    @staticmethod
    def backward(ctx, grad_loss, *_):
        # The kernel's gradient is not itself differentiable: a second derivative through
        # it would silently be zero, so asking for one (create_graph=True) is an error.
        if torch.is_grad_enabled():
            raise RuntimeError("the triton backend's loss is differentiable once: create_graph=True is not "
                               "supported (use backend='torch' for higher derivatives)")
        if grad_loss is None:
            return (None,) * 11
        embeddings, margins, weights, pos, neg, dist, norms, count, bad, *chosen = ctx.saved_tensors
        mem_pos, mem_neg = chosen if chosen else (dist, dist)  # placeholder pointers without memory
        scale, slice_dim, dual, normalize = ctx.config
        batch, width = embeddings.shape
        # fp32 accumulation buffer; for half-precision input a (B, N·d) fp32 temporary.
        grad = torch.zeros(batch, width, dtype=torch.float32, device=embeddings.device)
        cfg = backward_config(slice_dim)
        with _device_guard(embeddings.device):
            _backward_kernel[(triton.cdiv(batch, cfg.block_m), margins.numel())](
                embeddings, embeddings.stride(0), embeddings.stride(1), grad,
                pos, neg, dist, norms, margins, weights, grad_loss, count, bad, scale, mem_pos, mem_neg,
                batch, slice_dim, NORMALIZE_EPS,
                DUAL=dual, NORMALIZE=normalize, HAS_MEMORY=bool(chosen), BLOCK_R=cfg.block_m, BLOCK_D=cfg.block_d,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            )
        return grad.to(embeddings.dtype), *(None,) * 10


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
    precision: str = "tf32",
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TripletLossOutput:
    """Fused multi-threshold triplet loss. Same contract as muldml.kernels.triplet.chunked.torch_triplet_loss.

    embeddings: (B, N·d) fp32/fp16/bf16 (fp64 is computed in fp32); labels: (B,) int of
    any stride; margins, weights: (N,) fp32 or fp64 on the embeddings' device. precision:
    mining precision, "tf32", "tf32x3" or "bf16" (see the module notes). Launches run on
    the embeddings' device whatever the current CUDA device. No host synchronisation and
    no host-to-device copy: the call can be captured in a CUDA graph. Forward + backward is
    8 launches for fp32 input (int32/int64 labels); a cast more for half or fp64 input.
    Non-finite input (or a slice whose squared norm overflows fp32) gives a NaN loss and
    slice losses and an all-NaN gradient: it is not refused, since checking would
    synchronise (muldml.losses refuses it where check_finite is on).
    Twice differentiating (create_graph=True) raises.
    memory: cross-batch memory (rows (M, N·d), labels (M,)), mined as extra columns (two
    launches more, no (B, B + M) matrix; the memory's mining copy is N·M·d values in the
    mining precision, freed when the forward returns); the hinge reads the chosen memory
    rows exactly in fp32 and keeps an (N, B, d) copy of those chosen as p* and as n* for
    the backward, so the queue may be overwritten between forward and backward.
    Raises KeyError for an unknown precision (muldml.losses checks it first).
    """
    if labels.dtype not in (torch.int32, torch.int64):
        labels = labels.to(torch.int32)
    # The kernels never see autocast; nothing around them is autocast either: mining is
    # `precision` alone, whatever the caller's autocast state.
    memory_args = ()
    if memory is not None:
        rows, mem_labels = memory
        if mem_labels.dtype not in (torch.int32, torch.int64):
            mem_labels = mem_labels.to(torch.int32)
        memory_args = (rows.detach().float().contiguous(), mem_labels)
    with torch.autocast(embeddings.device.type, enabled=False):
        loss, slice_losses, diagnostics = _TripletLossFunction.apply(
            embeddings, labels, margins, weights, lam, slice_dim, dual, normalize, precision, *memory_args
        )
    num_slices, batch = margins.numel(), embeddings.shape[0]
    pos_neg = diagnostics[: 2 * num_slices * batch].view(2, num_slices, batch)
    return TripletLossOutput(
        loss=loss.to(embeddings.dtype) if embeddings.dtype == torch.float64 else loss,
        slice_losses=slice_losses,
        pos_idx=pos_neg[0],
        neg_idx=pos_neg[1],
        num_active=diagnostics[2 * num_slices * batch : -1],
        num_triplets=diagnostics[-1],
        dual=dual,
    )

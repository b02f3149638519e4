"""Checks shared by the loss tests: a backend against the float64 reference."""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from muldml.losses import multi_threshold_triplet_loss
from muldml.kernels.triplet.naive import NORMALIZE_EPS, reference_triplet_loss


def random_case(
    seed: int, batch: int, num_slices: int, slice_dim: int, num_classes: int, singletons: int = 0,
    dtype: torch.dtype = torch.float32, with_triplet: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian embeddings (B, N·d) and labels with `singletons` classes of one sample.

    with_triplet: the last three rows get labels 0, 0, 1, so that the batch has at least
    one valid anchor (needs B ≥ singletons + 3).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_slices * slice_dim, generator=gen, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    for k in range(min(singletons, batch)):
        labels[k] = num_classes + k
    if with_triplet:
        assert batch >= singletons + 3, "with_triplet needs three rows besides the singletons"
        labels[-3:] = torch.tensor([0, 0, 1])
    return x, labels


def memory_case(seed: int, size: int, num_slices: int, slice_dim: int, num_classes: int,
                normalize: bool, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A cross-batch memory (rows (M, N·d), labels (M,)) as the loss's queue holds it:
    Gaussian rows, normalised per slice when the loss normalises."""
    gen = torch.Generator().manual_seed(seed + 7919)
    rows = torch.randn(size, num_slices, slice_dim, generator=gen, dtype=torch.float64)
    if normalize:
        rows = torch.nn.functional.normalize(rows, dim=2, eps=NORMALIZE_EPS)
    return rows.reshape(size, num_slices * slice_dim).to(dtype), torch.randint(0, num_classes, (size,), generator=gen)


def _candidates(x: torch.Tensor, num_slices: int, slice_dim: int, normalize: bool, memory=None) -> torch.Tensor:
    """(N, B + M, d) float64: the batch's slices (normalised when asked), then the memory's as given."""
    x = x.detach().double().reshape(x.shape[0], num_slices, slice_dim).transpose(0, 1)
    if normalize:
        x = torch.nn.functional.normalize(x, dim=2, eps=NORMALIZE_EPS)
    if memory is not None:
        x = torch.cat([x, memory[0].detach().double().reshape(-1, num_slices, slice_dim).transpose(0, 1)], dim=1)
    return x


def slice_distances(x: torch.Tensor, num_slices: int, slice_dim: int, normalize: bool, memory=None) -> torch.Tensor:
    """(N, B + M, B + M) exact float64 distances of each slice over batch ∪ memory (M = 0 without one)."""
    y = _candidates(x, num_slices, slice_dim, normalize, memory)
    return torch.cdist(y, y, compute_mode="donot_use_mm_for_euclid_dist")


# Unit roundoff of each mining precision (the Triton backend's ``precision``; None: an fp32
# Gram matrix, as the torch backend mines). tf32: 2⁻¹¹ because the pre-pass rounds the
# mining copy to nearest (truncated operands would have 2⁻¹⁰).
UNIT_ROUNDOFF = {"tf32": 2.0**-11, "bf16": 2.0**-8, "tf32x3": 2.0**-21, None: 2.0**-24}


def mining_tolerance(x: torch.Tensor, num_slices: int, slice_dim: int, normalize: bool, precision: str | None,
                     memory=None) -> torch.Tensor:
    """(N, 1) slack on squared distances within which mining may rank two candidates either way.

    Backends mine on the Gram expansion of the slice centred on its batch mean, y = x̂ − c:
    a score ‖y_b‖² − 2·y_a·y_b carries an error of at most about (2u + d·2⁻²⁴)·2·R² (operand
    rounding plus fp32 accumulation over d terms), R the largest ‖y‖ (memory rows, moved by
    the same centre, included); two scores compared: twice that.
    """
    y = _candidates(x, num_slices, slice_dim, normalize, memory)
    y = y - y[:, : x.shape[0]].mean(1, keepdim=True)
    radius_sq = (y * y).sum(2).amax(1, keepdim=True)
    per_score = (2 * UNIT_ROUNDOFF[precision] + slice_dim * 2.0**-24) * 2 * radius_sq
    return 2 * per_score + 1e-12


def min_hinge_gap(dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margins, dual: bool) -> float:
    """Smallest |pre-activation| over all hinge terms: how close the case is to a kink."""
    valid = pos >= 0
    if not valid.any():
        return float("inf")
    p, n = pos.clamp_min(0), neg.clamp_min(0)
    tau = torch.as_tensor(margins, dtype=torch.float64)[:, None]
    anchors = dist[:, : pos.shape[1]]
    d_ap = anchors.gather(2, p[..., None])[..., 0]
    d_an = anchors.gather(2, n[..., None])[..., 0]
    gaps = [(d_ap - d_an + tau)[valid]]
    if dual:
        d_pn = torch.stack([dist[i][p[i], n[i]] for i in range(dist.shape[0])])
        gaps.append((d_ap - d_pn + tau)[valid])
    return float(torch.cat(gaps).abs().min())


def check_against_reference(
    backend: str,
    x: torch.Tensor,
    labels: torch.Tensor,
    margins: list[float],
    slice_dim: int,
    *,
    dual: bool,
    normalize: bool,
    weights: list[float] | None = None,
    lam: float | None = None,
    grad_scale: float = 1.0,
    exact_indices: bool = False,
    loss_rtol: float = 1e-5,
    grad_rtol: float = 1e-4,
    kink_tol: float = 1e-5,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs,
):
    """Assert a backend equals the float64 reference on loss, triplets and gradient.

    The mined triplets must be valid and hardest up to the mining precision's slack on
    squared distances (mining_tolerance; equal indices when `exact_indices`); loss and
    gradient (of grad_scale·loss, i.e. with
    grad_output ≠ 1) are compared with the reference evaluated at the backend's triplets,
    so near-ties that fp32 mining may break either way do not make the test flaky.
    Where a hinge term lies within `kink_tol` of its kink, fp32 and float64 may disagree on
    whether it is active: there only the loss (continuous) is compared, not the gradient.
    ``memory``: a cross-batch memory (rows, labels) for both; candidates are then batch ∪
    memory (memory row m is index B + m), anchors the batch's rows.
    Returns the backend's output.
    """
    num_slices = len(margins)
    x = x.detach().requires_grad_(True)
    device_memory = None if memory is None else tuple(t.to(x.device) for t in memory)
    out = multi_threshold_triplet_loss(
        x, labels, margins, slice_dim, dual=dual, normalize=normalize, weights=weights, lam=lam,
        backend=backend, memory=device_memory, **kwargs,
    )
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    (grad,) = torch.autograd.grad(out.loss * grad_scale, x)
    assert grad.shape == x.shape and grad.dtype == x.dtype and torch.isfinite(grad).all()

    x64 = x.detach().double().requires_grad_(True)
    ref_args = dict(dual=dual, normalize=normalize, lam=lam, memory=memory,
                    weights=None if weights is None else torch.tensor(weights, dtype=torch.float64))
    tau = torch.tensor(margins, dtype=torch.float64)
    mined = reference_triplet_loss(x64, labels, tau, slice_dim, **ref_args)

    # Triplets: same anchors valid, p* a positive and n* a negative, both hardest.
    pos, neg = out.pos_idx.cpu(), out.neg_idx.cpu()
    assert torch.equal(pos < 0, mined.pos_idx < 0) and torch.equal(neg < 0, mined.neg_idx < 0)
    assert int(out.num_triplets) == int(mined.num_triplets)
    if exact_indices:
        assert torch.equal(pos, mined.pos_idx), "hardest positives differ from the reference"
        assert torch.equal(neg, mined.neg_idx), "hardest negatives differ from the reference"
    valid = pos >= 0
    if valid.any():
        lab = labels.cpu() if memory is None else torch.cat([labels.cpu(), memory[1].cpu()])
        a = torch.arange(x.shape[0]).expand_as(pos)[valid]
        assert (lab[pos[valid]] == lab[a]).all() and (pos[valid] != a).all()
        assert (lab[neg[valid]] != lab[a]).all()
        sq = slice_distances(x, num_slices, slice_dim, normalize, memory)[:, : x.shape[0]] ** 2
        tol = mining_tolerance(x, num_slices, slice_dim, normalize,
                               kwargs.get("precision", "tf32") if backend == "triton" else None,
                               memory).expand_as(pos)[valid]
        chosen_p = sq.gather(2, pos.clamp_min(0)[..., None])[..., 0][valid]
        best_p = sq.gather(2, mined.pos_idx.clamp_min(0)[..., None])[..., 0][valid]
        chosen_n = sq.gather(2, neg.clamp_min(0)[..., None])[..., 0][valid]
        best_n = sq.gather(2, mined.neg_idx.clamp_min(0)[..., None])[..., 0][valid]
        assert (chosen_p >= best_p - tol).all(), "a positive that is not the hardest"
        assert (chosen_n <= best_n + tol).all(), "a negative that is not the hardest"

    # Loss and gradient at the backend's triplets.
    ref = reference_triplet_loss(x64, labels, tau, slice_dim, indices=(pos, neg), **ref_args)
    (ref_grad,) = torch.autograd.grad(ref.loss * grad_scale, x64)
    ref_loss = float(ref.loss.detach())
    assert abs(float(out.loss.detach()) - ref_loss) <= loss_rtol * abs(ref_loss) + 1e-7, (float(out.loss.detach()), ref_loss)
    torch.testing.assert_close(out.slice_losses.double().cpu(), ref.slice_losses, rtol=loss_rtol, atol=1e-7)
    dist = slice_distances(x, num_slices, slice_dim, normalize, memory)
    if min_hinge_gap(dist, pos, neg, margins, dual) < kink_tol:
        return out
    assert torch.equal(out.num_active.cpu(), ref.num_active)
    # Rounding floor: each active term adds a unit-direction vector of size |c| (divided by
    # ‖x‖ through the normalisation); where they cancel (‖g_ref‖ ≈ 0) that is what remains.
    terms = 2 if dual else 1
    coef = abs(grad_scale) * (0.5 / num_slices if lam is None else lam) * max(weights or [1.0])
    coef /= max(int(mined.num_triplets), 1) * terms
    if normalize:
        norms = x.detach().double().reshape(x.shape[0], num_slices, slice_dim).norm(dim=2)
        coef /= max(float(norms.min()), 1e-12)
    floor = 1e-5 * coef * (3 * int(ref.num_active.sum())) ** 0.5
    err = (grad.double() - ref_grad).norm()
    assert err <= grad_rtol * ref_grad.norm() + floor, f"gradient error {float(err):.3g} vs |g_ref| {float(ref_grad.norm()):.3g}"
    return out


MARGIN_GRID = [round(0.05 * k, 2) for k in range(1, 21)]


@st.composite
def loss_cases(draw, max_batch=160, max_slices=13, max_dim=300):
    """Random loss inputs that always hold a valid triplet (random_case(with_triplet=True));
    batches without one have their own tests (test_losses.py::test_no_triplets_…)."""
    num_slices = draw(st.integers(1, max_slices))
    singletons = draw(st.integers(0, 3))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=draw(st.integers(singletons + 3, max_batch)),
        num_slices=num_slices,
        slice_dim=draw(st.integers(1, max_dim)),
        num_classes=draw(st.integers(1, 12)),
        singletons=singletons,
        margins=draw(st.lists(st.sampled_from(MARGIN_GRID), min_size=num_slices, max_size=num_slices)),
        dual=draw(st.booleans()),
        normalize=draw(st.booleans()),
        grad_scale=draw(st.sampled_from([1.0, 0.37, -2.5])),
    )


@st.composite
def memory_cases(draw, max_batch=40, max_memory=120, max_slices=5, max_dim=40):
    """A batch (possibly without any triplet of its own) and a memory of up to max_memory rows
    whose classes overlap the batch's, plus classes present only in memory."""
    num_slices = draw(st.integers(1, max_slices))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=draw(st.integers(1, max_batch)),
        memory=draw(st.integers(0, max_memory)),
        num_slices=num_slices,
        slice_dim=draw(st.integers(1, max_dim)),
        num_classes=draw(st.integers(1, 6)),
        memory_classes=draw(st.integers(1, 9)),
        margins=draw(st.lists(st.sampled_from(MARGIN_GRID), min_size=num_slices, max_size=num_slices)),
        dual=draw(st.booleans()),
        normalize=draw(st.booleans()),
        grad_scale=draw(st.sampled_from([1.0, 0.37, -2.5])),
    )


def case_tensors(case, dtype=torch.float32):
    x, labels = random_case(case["seed"], case["batch"], case["num_slices"], case["slice_dim"], case["num_classes"],
                            dtype=dtype)
    memory = memory_case(case["seed"], case["memory"], case["num_slices"], case["slice_dim"], case["memory_classes"],
                         case["normalize"], dtype=dtype)
    return x, labels, memory

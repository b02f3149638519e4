"""The fused Triton kernels against the float64 reference.

Without a GPU they run in Triton's interpreter (tests/conftest.py), which is slow: these
cases are small, yet cross tile boundaries (128 anchors and columns, 32 or 64 dims per
mining step, 32 rows in the pre-pass, hinge and backward). The interpreter computes tl.dot
exactly in fp32, whatever the precision: on a GPU, the checks' mining slack is the one of
the precision asked for (triplet_checks.mining_tolerance).
"""
import pytest
import torch
from hypothesis import given, settings
from test_backend_torch import loss_cases
from triplet_checks import check_against_reference, random_case

from muldml.losses import multi_threshold_triplet_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_device(x, labels):
    return x.to(DEVICE), labels.to(DEVICE)


@settings(max_examples=60)
@given(case=loss_cases(max_batch=150, max_slices=4, max_dim=80))
def test_matches_reference_property(case):
    x, labels = random_case(case["seed"], case["batch"], case["num_slices"], case["slice_dim"],
                            case["num_classes"], case["singletons"])
    check_against_reference("triton", *on_device(x, labels), case["margins"], case["slice_dim"],
                            dual=case["dual"], normalize=case["normalize"], grad_scale=case["grad_scale"])


@pytest.mark.parametrize("batch,num_slices,slice_dim", [(130, 2, 45), (64, 3, 32), (17, 7, 100), (200, 1, 257)])
@pytest.mark.parametrize("dual", [True, False])
def test_exact_indices_on_separated_inputs(batch, num_slices, slice_dim, dual):
    """Exact mining (tf32x3): indices equal the reference's where no two candidates are near-tied."""
    x, labels = random_case(batch * num_slices, batch, num_slices, slice_dim, 5)
    check_against_reference("triton", *on_device(x, labels), [0.15 + 0.1 * i for i in range(num_slices)],
                            slice_dim, dual=dual, normalize=True, grad_scale=0.5, exact_indices=True,
                            precision="tf32x3")


@pytest.mark.parametrize("dtype,grad_rtol", [(torch.float16, 1e-2), (torch.bfloat16, 2e-2)])
def test_half_precision_inputs(dtype, grad_rtol):
    x, labels = random_case(11, 90, 2, 40, 4)
    check_against_reference("triton", *on_device(x.to(dtype), labels), [0.25, 0.55], 40,
                            dual=True, normalize=True, grad_rtol=grad_rtol)


def test_non_contiguous_input():
    x, labels = random_case(12, 70, 3, 20, 4)
    wide = torch.randn(70, 2 * 60).to(DEVICE)
    wide[:, ::2] = x.to(DEVICE)
    strided = wide[:, ::2]  # column stride 2
    assert not strided.is_contiguous()
    check_against_reference("triton", strided, labels.to(DEVICE), [0.2, 0.4, 0.6], 20, dual=True,
                            normalize=True, grad_scale=3.0)
    transposed = x.to(DEVICE).t().contiguous().t()  # row stride 1
    check_against_reference("triton", transposed, labels.to(DEVICE), [0.2, 0.4, 0.6], 20, dual=False,
                            normalize=False)


@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
@pytest.mark.parametrize("normalize", [True, False])
def test_every_mining_precision_keeps_exact_hinge(precision, normalize):
    """Mining precision only ranks candidates (within its slack); the loss is formed from
    exact distances of valid triplets. 300 rows: three column splits of 128 and a ragged tail."""
    x, labels = random_case(13, 300, 2, 48, 5)
    check_against_reference("triton", *on_device(x, labels), [0.3, 0.7], 48, dual=True, normalize=normalize,
                            precision=precision, grad_scale=-1.5)


@pytest.mark.parametrize("splits", [1, 2, 3, 5])
def test_column_splits_merge_to_the_same_triplets(splits, monkeypatch):
    """Splitting the columns over programs (small batches on a large GPU) changes nothing,
    ties included: coincident points in different splits go to the lowest index."""
    from muldml.kernels import triplet

    x, labels = random_case(16, 400, 1, 16, 4)
    x[[10, 200, 390]] = x[5].clone()  # anchor 5's coincident positives and negatives, across splits
    labels[[10, 390]] = int(labels[5])
    labels[200] = int(labels[5]) + 1
    monkeypatch.setattr(triplet, "column_splits", lambda *args, **kwargs: splits)
    out = check_against_reference("triton", *on_device(x, labels), [0.4], 16, dual=True, normalize=True,
                                  exact_indices=True, precision="tf32x3")
    assert int(out.neg_idx[0, 5]) == 200 and int(out.neg_idx[0, 10]) == 200


def test_second_derivative_raises():
    """The kernel's backward is not differentiable: create_graph=True must not give a silent zero."""
    x, labels = random_case(17, 40, 2, 8, 3)
    x = x.to(DEVICE).requires_grad_(True)
    out = multi_threshold_triplet_loss(x, labels.to(DEVICE), [0.2, 0.4], 8, backend="triton")
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(out.loss, x, create_graph=True)


def test_non_finite_input_gives_nan_without_check():
    """With the host-synchronising check off (the GPU default), NaN/Inf make the loss NaN."""
    x, labels = random_case(18, 40, 2, 8, 3)
    for bad in (float("nan"), float("inf")):
        x[3, 5] = bad
        out = multi_threshold_triplet_loss(x.to(DEVICE), labels.to(DEVICE), [0.2, 0.4], 8, backend="triton",
                                           check_finite=False)
        assert torch.isnan(out.loss)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_labels(backend):
    """Labels that are a view with stride 2 (e.g. every other entry of a longer tensor)."""
    x, labels = random_case(14, 70, 2, 24, 5)
    big = torch.stack([labels, torch.randint(100, 200, (70,))], dim=1).reshape(-1)
    strided = big[::2]
    assert strided.stride(0) == 2 and torch.equal(strided, labels)
    check_against_reference(backend, *on_device(x, strided), [0.3, 0.6], 24, dual=True, normalize=True,
                            grad_scale=0.7)


@pytest.mark.parametrize("normalize", [True, False])
def test_row_offsets_beyond_int32(normalize):
    """A view whose row stride × rows passes 2³¹ elements: offsets must be 64-bit.

    The storage is reserved, not touched (only the rows used are written), so the 6 GiB
    of fp16 it spans cost a few pages of memory.
    """
    stride = 1 << 30
    x, labels = random_case(15, 4, 2, 16, 2)
    labels = torch.tensor([0, 1, 0, 1])
    storage = torch.empty(3 * stride + 32, dtype=torch.float16, device=DEVICE)
    wide = storage.as_strided((4, 32), (stride, 1))
    wide.copy_(x.to(torch.float16))
    assert wide.stride(0) * wide.shape[0] >= 2**31
    check_against_reference("triton", wide, labels.to(DEVICE), [0.3, 0.9], 16, dual=True, normalize=normalize,
                            grad_rtol=1e-2)

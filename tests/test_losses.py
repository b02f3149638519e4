"""Public API: margins, the module, dispatch, edge cases on every backend, bad input."""
import pytest
import torch
from triplet_checks import check_against_reference, random_case

from muldml import MultiThresholdTripletLoss, multi_threshold_triplet_loss, threshold_range

BACKENDS = ["reference", "torch", "triton"]


def run(backend, x, labels, margins, slice_dim, **kwargs):
    if backend == "reference":
        x = x.double()
    x = x.detach().requires_grad_(True)
    out = multi_threshold_triplet_loss(x, labels, margins, slice_dim, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, x)
    return out, grad


def test_threshold_range_matches_paper_defaults():
    assert threshold_range() == [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75]
    assert threshold_range(0.45, 0.45, 0.1) == [0.45]
    assert threshold_range(0.1, 0.9, 0.2) == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(ValueError, match="whole number"):
        threshold_range(0.15, 0.75, 0.25)
    with pytest.raises(ValueError, match="tau_min"):
        threshold_range(0.8, 0.2, 0.1)


def test_module_defaults_and_logging_fields():
    loss_fn = MultiThresholdTripletLoss(slice_dim=8)
    assert loss_fn.num_slices == 7 and loss_fn.margins[0] == 0.15
    x, labels = random_case(0, 32, 7, 8, 4)
    loss = loss_fn(x, labels)
    out = loss_fn.last_output
    assert loss is out.loss and out.slice_losses.shape == (7,)
    assert out.pos_idx.shape == (7, 32) and out.neg_idx.shape == (7, 32)
    assert out.num_active.shape == (7,) and 0 < float(out.active_fraction.max()) <= 1
    # λ = 0.5/N and w_i = 1 by default.
    assert float(loss) == pytest.approx(0.5 / 7 * float(out.slice_losses.sum()), rel=1e-6)
    assert "0.15" in repr(loss_fn)


def test_weights_and_lambda_override():
    x, labels = random_case(1, 40, 3, 5, 4)
    base = multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3], 5, backend="torch")
    scaled = multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3], 5, weights=[2, 0, 1], lam=1.0, backend="torch")
    expected = 2 * base.slice_losses[0] + base.slice_losses[2]
    assert float(scaled.loss) == pytest.approx(float(expected), rel=1e-6)


def test_auto_backend_is_torch_on_cpu_tensors():
    x, labels = random_case(2, 24, 2, 6, 3)
    auto = multi_threshold_triplet_loss(x, labels, [0.2, 0.4], backend="auto")
    torch_out = multi_threshold_triplet_loss(x, labels, [0.2, 0.4], backend="torch")
    assert torch.equal(auto.loss, torch_out.loss)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["single_sample", "one_class", "all_singletons"])
def test_no_triplets_gives_zero_loss_and_gradient(backend, case):
    batch = 1 if case == "single_sample" else 12
    labels = {"single_sample": torch.tensor([3]), "one_class": torch.zeros(12, dtype=torch.long),
              "all_singletons": torch.arange(12)}[case]
    x, _ = random_case(4, batch, 2, 20, 2)
    for dual in (True, False):
        out, grad = run(backend, x, labels, [0.3, 0.5], 20, dual=dual)
        assert int(out.num_triplets) == 0 and float(out.loss.detach()) == 0.0
        assert torch.count_nonzero(grad) == 0 and torch.isfinite(grad).all()
        assert (out.pos_idx == -1).all() and (out.neg_idx == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_duplicate_and_zero_embeddings_have_finite_gradients(backend, normalize):
    x, labels = random_case(5, 16, 2, 8, 3)
    x[1] = x[0]
    x[2] = x[0]  # three identical rows: distance 0 between them
    x[3] = 0.0  # a zero row: normalisation clamps its norm at eps
    labels[:3] = labels[0]
    out, grad = run(backend, x, labels, [0.2, 0.6], 8, normalize=normalize)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    same, same_grad = run(backend, torch.ones(6, 16), torch.tensor([0, 0, 0, 1, 1, 1]), [0.2, 0.6], 8,
                          normalize=normalize)
    # All points coincide: every hinge equals τ, yet d = 0 gives no gradient.
    assert float(same.slice_losses[0]) == pytest.approx(0.2) and float(same.slice_losses[1]) == pytest.approx(0.6)
    assert same_grad.shape == (6, 16) and torch.count_nonzero(same_grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lowest_index(backend):
    """Equal distances, within a tile and across the Triton kernel's column tiles (32 wide)."""
    batch = 150
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(batch, 16, generator=gen)
    labels = torch.arange(batch) % 10 + 1
    labels[0] = 0
    # Anchor 0's positives: rows 5, 70 and 140 are the same point, far from it; others near.
    labels[[5, 70, 140, 3]] = 0
    x[0] = torch.ones(16)
    x[3] = torch.ones(16) * 1.01
    x[[5, 70, 140]] = -torch.ones(16)
    # Its nearest negatives: rows 100 and 9 coincide, in different column tiles; row 120 another one.
    x[[9, 100, 120]] = torch.ones(16) * 0.999
    x[120, 0] = 0.5
    out, _ = run(backend, x, labels, [0.3], 16, normalize=False)
    assert int(out.pos_idx[0, 0]) == 5
    assert int(out.neg_idx[0, 0]) == 9


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_backends_agree_on_paper_sized_slices(backend):
    """N = 7 slices of d = 256 (the paper's layer), margins 0.15…0.75, a batch of 96."""
    x, labels = random_case(8, 96, 7, 256, 7)
    exact = {"precision": "tf32x3"} if backend == "triton" else {}  # exact indices need exact mining
    check_against_reference(backend, x, labels, threshold_range(), 256, dual=True, normalize=True,
                            grad_scale=1.3, exact_indices=True, **exact)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_norm_features_keep_their_nearest_negative(backend):
    """Gram-expansion cancellation, unnormalised: in 1-D, 512695, 512700 (class 0) and 512696,
    512804 (class 1), τ = 0.15. Anchor 0's hardest negative is at distance 1, not 109; the
    float64 loss is (4.15 + 1.15 + 1.15 + 4.15 + 107.15 + 0 + 4.15 + 104.15) / 8 · 0.5 = 14.128125."""
    x = torch.tensor([[512695.0], [512700.0], [512696.0], [512804.0]])
    out, _ = run(backend, x, torch.tensor([0, 0, 1, 1]), [0.15], 1, normalize=False)
    assert out.neg_idx.tolist() == [[2, 2, 0, 1]] and out.pos_idx.tolist() == [[1, 0, 3, 2]]
    assert float(out.loss.detach()) == pytest.approx(14.128125, rel=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("normalize", [False, True])
def test_clustered_features_mined_like_float64(backend, normalize):
    """16-d features of norm ~100 spread by 0.02: hardest within the fp32 slack of the centred
    slice (without centring, the Gram expansion's error, ~1e-3 on squared distances ~1e-2, is not)."""
    gen = torch.Generator().manual_seed(19)
    centre = torch.randn(16, generator=gen, dtype=torch.float64)
    x = (100 * centre / centre.norm() + 0.02 * torch.randn(64, 16, generator=gen, dtype=torch.float64)).float()
    labels = torch.randint(0, 4, (64,), generator=gen)
    check_against_reference(backend, x, labels, [0.01], 16, dual=True, normalize=normalize, precision="tf32x3",
                            loss_rtol=1e-4, grad_rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_computes_half_precision_in_float64(dtype):
    """The oracle accepts fp16/bf16 on the CPU (cdist has no half kernel there) and returns
    the float64 value of the rounded input, on the input's device; the torch backend agrees."""
    x, labels = random_case(20, 30, 2, 12, 3)
    half = x.to(dtype)
    got = multi_threshold_triplet_loss(half, labels, [0.3, 0.6], 12, backend="reference")
    exact = multi_threshold_triplet_loss(half.double(), labels, [0.3, 0.6], 12, backend="reference")
    assert got.loss.dtype == torch.float64 and float(got.loss) == float(exact.loss)
    assert got.num_active.device == half.device and got.num_triplets.device == half.device
    fast = multi_threshold_triplet_loss(half, labels, [0.3, 0.6], 12, backend="torch")
    assert float(fast.loss) == pytest.approx(float(got.loss), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reference_outputs_stay_on_the_input_device():
    x, labels = random_case(21, 30, 2, 12, 3)
    out = multi_threshold_triplet_loss(x.cuda().half(), labels.cuda(), [0.3, 0.6], 12, backend="reference")
    assert out.loss.is_cuda and out.num_active.is_cuda and out.num_triplets.is_cuda and out.pos_idx.is_cuda


@pytest.mark.parametrize(
    "make_args,error,message",
    [
        (lambda x, y: (x[:, :-1], y), ValueError, "width 23 != number of margins"),
        (lambda x, y: (x[:0], y[:0]), ValueError, "empty batch"),
        (lambda x, y: (x, y[:-1]), ValueError, "labels must have shape"),
        (lambda x, y: (x, y.float()), TypeError, "integer tensor"),
        (lambda x, y: (x.long(), y), TypeError, "floating point"),
        (lambda x, y: (x[0], y), ValueError, r"shape \(B, N\*d\)"),
        (lambda x, y: (x.numpy(), y), TypeError, "must be a torch.Tensor"),
        (lambda x, y: (torch.where(torch.arange(24) == 5, float("nan"), x), y), ValueError, "NaN or Inf"),
        (lambda x, y: (torch.where(torch.arange(24) == 5, float("inf"), x), y), ValueError, "NaN or Inf"),
    ],
)
def test_bad_input_names_the_problem(make_args, error, message):
    x, labels = random_case(9, 10, 3, 8, 3)
    args = make_args(x, labels)
    with pytest.raises(error, match=message):
        multi_threshold_triplet_loss(*args, [0.1, 0.2, 0.3], 8, backend="torch")


def test_bad_options_name_the_problem():
    x, labels = random_case(10, 10, 3, 8, 3)
    with pytest.raises(ValueError, match="not a multiple of the number of margins"):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="width 24 != number of margins \\(2\\)"):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2], 8)
    with pytest.raises(ValueError, match="2 weights for 3 margins"):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3], weights=[1, 1])
    with pytest.raises(ValueError, match="margins must be finite and >= 0"):
        multi_threshold_triplet_loss(x, labels, [0.1, -0.2, 0.3])
    with pytest.raises(ValueError, match="margins must not be empty"):
        multi_threshold_triplet_loss(x, labels, [])
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3], backend="cuda")
    with pytest.raises(ValueError, match="unknown precision"):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2, 0.3], precision="fp8")
    with pytest.raises(ValueError, match="2 weights for 7 margins"):
        MultiThresholdTripletLoss(weights=[1, 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_equals_functional(dtype):
    loss_fn = MultiThresholdTripletLoss(margins=[0.1, 0.5], slice_dim=6, weights=[1.0, 2.0], lam=0.3, dual=False)
    x, labels = random_case(11, 30, 2, 6, 4, dtype=dtype)
    for _ in range(2):  # the second call reuses the module's margins on this device
        got = loss_fn(x, labels)
        expected = multi_threshold_triplet_loss(x, labels, [0.1, 0.5], 6, weights=[1.0, 2.0], lam=0.3, dual=False)
        assert got.dtype == dtype and torch.equal(got, expected.loss)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_changes_nothing(backend):
    """Training runs the loss inside torch.autocast: mining, loss and gradient must be the
    ones computed without it (CPU bf16 autocast; the fast backends mine in fp32 here)."""
    x, labels = random_case(21, 96, 7, 16, 6)
    plain, plain_grad = run(backend, x, labels, threshold_range(), 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, mixed_grad = run(backend, x, labels, threshold_range(), 16)
    assert torch.equal(mixed.pos_idx, plain.pos_idx) and torch.equal(mixed.neg_idx, plain.neg_idx)
    assert mixed.loss.dtype == plain.loss.dtype
    torch.testing.assert_close(mixed.loss, plain.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(mixed_grad, plain_grad, rtol=1e-5, atol=1e-9)

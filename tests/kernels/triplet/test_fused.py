"""The fused Triton kernels against the float64 reference.

Without a GPU they run in Triton's interpreter (tests/conftest.py), which is slow: these
cases are small, yet cross tile boundaries (128 anchors and columns, 32 or 64 dims per
mining step, 32 rows in the pre-pass, hinge and backward). The interpreter multiplies the
mining copy exactly in fp32; the pre-pass has already rounded it to the mining precision
(tf32, bf16), so the precision axis is seen here too, and the checks' mining slack is the
one of the precision asked for (triplet_checks.mining_tolerance).
"""
import contextlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch.utils._python_dispatch import TorchDispatchMode
from triplet_checks import check_against_reference, loss_cases, random_case

from muldml.kernels.triplet import fused
from muldml.kernels.triplet.naive import reference_triplet_loss
from muldml.losses import MultiThresholdTripletLoss, multi_threshold_triplet_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_device(x, labels):
    return x.to(DEVICE), labels.to(DEVICE)


@settings(max_examples=60)
@given(case=loss_cases(max_batch=150, max_slices=4, max_dim=80))
def test_matches_reference_property(case):
    x, labels = random_case(case["seed"], case["batch"], case["num_slices"], case["slice_dim"],
                            case["num_classes"], case["singletons"], with_triplet=True)
    out = check_against_reference("triton", *on_device(x, labels), case["margins"], case["slice_dim"],
                                  dual=case["dual"], normalize=case["normalize"], grad_scale=case["grad_scale"])
    assert int(out.num_triplets) > 0


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
    exact distances of valid triplets. 300 rows: three blocks of 128 (six tiles), the last ragged."""
    x, labels = random_case(13, 300, 2, 48, 5)
    check_against_reference("triton", *on_device(x, labels), [0.3, 0.7], 48, dual=True, normalize=normalize,
                            precision=precision, grad_scale=-1.5)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [128, 64])
def test_mining_tiles_merge_to_the_same_triplets(block, symmetric, monkeypatch):
    """Tiles merge their candidates into each anchor's best whichever tile offers it (the
    symmetric tiles (i, j), i ≤ j, serve block i's anchors by rows and block j's by
    columns), and ties between coincident points in different tiles go to the lowest index
    (400 rows: 4 or 7 blocks, ragged last block)."""
    config = fused.LaunchConfig(block, 0, 4, 2, block_n=block, block_k=32, symmetric=symmetric)
    monkeypatch.setitem(fused.MINE, "tf32x3", fused.autotuned_mining([config]))
    x, labels = random_case(16, 400, 1, 16, 4)
    x[[10, 200, 390]] = x[5].clone()  # anchor 5's coincident positives and negatives, across tiles
    labels[[10, 390]] = int(labels[5])
    labels[200] = int(labels[5]) + 1
    out = check_against_reference("triton", *on_device(x, labels), [0.4], 16, dual=True, normalize=True,
                                  exact_indices=True, precision="tf32x3")
    # 200 is the only coincident negative of 5, 10 and 390 (offered to 5 and 10 by the rows
    # of tile (0, j), to 390 by the columns of tile (j, last)); for 200 itself, 5, 10 and
    # 390 tie at distance 0, and the lowest, 5, comes from the columns of tile (0, j).
    assert [int(out.neg_idx[0, a]) for a in (5, 10, 390)] == [200, 200, 200]
    assert int(out.neg_idx[0, 200]) == 5


def test_second_derivative_raises():
    """The kernel's backward is not differentiable: create_graph=True must not give a silent zero."""
    x, labels = random_case(17, 40, 2, 8, 3)
    x = x.to(DEVICE).requires_grad_(True)
    out = multi_threshold_triplet_loss(x, labels.to(DEVICE), [0.2, 0.4], 8, backend="triton")
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(out.loss, x, create_graph=True)


def test_non_finite_input_gives_nan_loss_and_gradient():
    """With the host-synchronising check off (the GPU default), one NaN/Inf entry makes the
    loss, the slice losses and every entry of the gradient NaN (a GradScaler then skips
    the step); the next finite call is unaffected."""
    x, labels = random_case(18, 40, 2, 8, 3)
    for bad in (float("nan"), float("inf"), float("-inf")):
        x_bad = x.clone()
        x_bad[3, 5] = bad
        x_bad = x_bad.to(DEVICE).requires_grad_(True)
        out = multi_threshold_triplet_loss(x_bad, labels.to(DEVICE), [0.2, 0.4], 8, backend="triton",
                                           check_finite=False)
        (grad,) = torch.autograd.grad(out.loss, x_bad)
        assert torch.isnan(out.loss) and torch.isnan(out.slice_losses).all()
        assert torch.isnan(grad).all()
    check_against_reference("triton", *on_device(x, labels), [0.2, 0.4], 8, dual=True, normalize=True)


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


def near_tie_case(slice_dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor 0 at the origin, with two negatives: row 2 at distance 1 + 9u, row 3 at
    1 + 12u (u = 2⁻¹⁴), so row 2 is the hardest. Rounded to tf32 (10 mantissa bits, to
    nearest), row 2's coordinate 1 + 9u goes up to 1 + 16u, while row 3 = (0.5, w) with
    w just above a tf32 value goes down to distance 1 + 9.6u: tf32 mining must pick row 3
    (truncating the operands would keep row 2). Rows 4–7 are far away and make the batch
    mean exactly 0, so the centred rows are these very values."""
    u = 2.0**-14
    w = float(torch.tensor(math.sqrt((1 + 12 * u) ** 2 - 0.25), dtype=torch.float32))
    rows = [[0, 0, 0, 0], [0, 0, 0.5, 0], [1 + 9 * u, 0, 0, 0], [0.5, w, 0, 0],
            [0, 0, -0.5, 4], [-1 - 9 * u, 0, 0, 4], [-0.5, -w, 0, -4], [0, 0, 0, -4]]
    x = torch.zeros(8, slice_dim)
    x[:, :4] = torch.tensor(rows, dtype=torch.float64).float()
    return x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_tf32_mining_sees_the_rounding_of_the_tensor_cores():
    """The pre-pass rounds the tf32 mining copy explicitly, so the interpreter (exact
    tl.dot) mines what tensor cores mine: on a crafted near-tie, tf32 picks another
    negative than exact mining, within its slack, and the hinge stays exact at it."""
    x, labels = near_tie_case()
    exact = reference_triplet_loss(x.double(), labels, torch.tensor([0.9], dtype=torch.float64), 16, normalize=False)
    assert int(exact.neg_idx[0, 0]) == 2
    for precision, hardest in (("tf32x3", 2), ("tf32", 3)):
        out = check_against_reference("triton", *on_device(x, labels), [0.9], 16, dual=True, normalize=False,
                                      precision=precision)
        assert int(out.neg_idx[0, 0]) == hardest, precision
    tf32 = multi_threshold_triplet_loss(*on_device(x, labels), [0.9], 16, normalize=False, backend="triton")
    assert float(tf32.loss) != pytest.approx(float(exact.loss), rel=1e-6, abs=0)  # n* = 3, exactly


# ------------------------------------------------------------------ launches and device

FREE_OPS = {"empty", "empty_strided", "view", "_unsafe_view", "slice", "select", "as_strided", "detach", "alias",
            "t", "transpose", "expand", "unsqueeze", "squeeze", "permute", "lift_fresh"}


class LaunchCounter(TorchDispatchMode):
    """Counts device work: torch operators that make or move data (views and allocations
    are free) and Triton launches (the kernels' `kernel[grid](...)`), each once."""

    def __init__(self):
        super().__init__()
        self.launches: list[str] = []
        self.in_kernel = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.in_kernel and name not in FREE_OPS:
            self.launches.append(f"torch:{name}")
        return func(*args, **(kwargs or {}))


class CountedKernel:
    def __init__(self, name, kernel, on_launch):
        self.name, self.kernel, self.on_launch = name, kernel, on_launch

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            return self.on_launch(self.name, lambda: self.kernel[grid](*args, **kwargs))
        return launch


def wrap_kernels(monkeypatch, on_launch):
    for name in ("stats", "prepare", "hinge", "finish", "backward"):
        monkeypatch.setattr(fused, f"_{name}_kernel", CountedKernel(name, getattr(fused, f"_{name}_kernel"), on_launch))
    for precision, kernel in list(fused.MINE.items()):
        monkeypatch.setitem(fused.MINE, precision, CountedKernel("mine", kernel, on_launch))


@pytest.mark.parametrize("api", ["functional", "module"])
def test_at_most_eight_launches_per_forward_and_backward(api, monkeypatch):
    """A warm call at B = 96, N = 7, default settings (fp32 input, no finiteness check as on
    a GPU): at most 8 device launches for forward + backward, and no copy (host to device
    or otherwise) among them."""
    counter = LaunchCounter()

    def on_launch(name, run):
        counter.launches.append(f"triton:{name}")
        counter.in_kernel = True  # the interpreter's own tensor copies are not launches
        try:
            return run()
        finally:
            counter.in_kernel = False

    wrap_kernels(monkeypatch, on_launch)
    x, labels = random_case(19, 96, 7, 32, 6)
    x, labels = on_device(x, labels)
    x.requires_grad_(True)
    margins = [0.15 + 0.1 * i for i in range(7)]
    module = MultiThresholdTripletLoss(margins, slice_dim=32, backend="triton", check_finite=False)

    def loss():
        if api == "module":
            return module(x, labels)
        return multi_threshold_triplet_loss(x, labels, margins, 32, backend="triton", check_finite=False).loss

    seed = torch.ones((), device=x.device)
    torch.autograd.grad(loss(), x, seed)  # cold call: caches margins and weights on the device
    counter.launches.clear()
    with counter:
        value = loss()
        forward = list(counter.launches)
        (grad,) = torch.autograd.grad(value, x, seed)
    backward = counter.launches[len(forward):]
    print(api, "forward:", forward, "backward:", backward)
    assert len(forward) + len(backward) <= 8, (forward, backward)
    assert not any("copy" in op or "_to" in op for op in counter.launches), counter.launches
    assert torch.isfinite(grad).all() and float(value.detach()) > 0


def test_every_launch_runs_under_the_input_device(monkeypatch):
    """Triton launches on the current CUDA device: each launch must sit inside a guard
    for the input's device (checked by code path; the guard itself below)."""
    guarded, launches = [], []

    @contextlib.contextmanager
    def fake_guard(device):
        guarded.append(device)
        yield
        guarded.pop()

    def on_launch(name, run):
        launches.append((name, list(guarded)))
        return run()

    monkeypatch.setattr(fused, "_device_guard", fake_guard)
    wrap_kernels(monkeypatch, on_launch)
    x, labels = on_device(*random_case(20, 40, 2, 16, 3))
    x.requires_grad_(True)
    out = multi_threshold_triplet_loss(x, labels, [0.2, 0.5], 16, backend="triton")
    torch.autograd.grad(out.loss, x)
    assert [name for name, _ in launches] == ["stats", "prepare", "mine", "hinge", "finish", "backward"]
    assert all(devices == [x.device] for _, devices in launches), launches


def test_device_guard_selects_the_input_cuda_device(monkeypatch):
    selected = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: selected.append(device) or contextlib.nullcontext())
    with fused._device_guard(torch.device("cuda", 1)):
        pass
    with fused._device_guard(torch.device("cpu")):
        pass
    assert selected == [torch.device("cuda", 1)]


# ------------------------------------------------------------------ races

@contextlib.contextmanager
def interpreted_programs(order):
    """Run every kernel's programs in `order` ("forward", "reverse" or a seed for a shuffle)
    under Triton's interpreter and log each program's memory accesses."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    saved = {k: getattr(builder, k) for k in ("set_grid_dim", "set_grid_idx", "create_masked_load",
                                              "create_masked_store", "create_atomic_rmw")}
    launches, state = [], {}

    def set_grid_dim(x, y, z):
        total = x * y * z
        perm = np.arange(total)
        if order == "reverse":
            perm = perm[::-1]
        elif order != "forward":
            perm = np.random.default_rng(order).permutation(total)
        state.update(dims=(x, y, z), perm=perm, next=0)
        launches.append([])
        return saved["set_grid_dim"](x, y, z)

    def set_grid_idx(x, y, z):
        k = state["perm"][state["next"]]
        state["next"] += 1
        return saved["set_grid_idx"](*np.unravel_index(k, state["dims"]))

    def log(kind, ptrs, mask):
        addresses = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
        chosen = addresses[np.broadcast_to(mask.data, addresses.shape)]
        launches[-1].append((builder.grid_idx, kind, chosen.astype(np.uint64).ravel()))

    def load(ptrs, mask, *args):
        log("load", ptrs, mask)
        return saved["create_masked_load"](ptrs, mask, *args)

    def store(ptrs, value, mask, *args):
        log("store", ptrs, mask)
        return saved["create_masked_store"](ptrs, value, mask, *args)

    def atomic(op, ptr, val, mask, *args):
        log("atomic", ptr, mask)
        return saved["create_atomic_rmw"](op, ptr, val, mask, *args)

    for name, fn in dict(set_grid_dim=set_grid_dim, set_grid_idx=set_grid_idx, create_masked_load=load,
                         create_masked_store=store, create_atomic_rmw=atomic).items():
        setattr(builder, name, fn)
    try:
        yield launches
    finally:
        for name, fn in saved.items():
            setattr(builder, name, fn)


def racing_addresses(accesses) -> int:
    """Addresses of one launch that two programs touch where one of them writes without an
    atomic, or reads what another adds to atomically."""
    kinds = {"load": 1, "store": 2, "atomic": 4}
    programs = {pid: i for i, pid in enumerate(sorted({pid for pid, _, _ in accesses}))}
    addr = np.concatenate([a for _, _, a in accesses])
    prog = np.concatenate([np.full(a.size, programs[pid]) for pid, _, a in accesses])
    kind = np.concatenate([np.full(a.size, kinds[k]) for _, k, a in accesses])
    pairs = np.unique(np.stack([addr, prog.astype(np.uint64)]), axis=1)
    touched, num_programs = np.unique(pairs[0], return_counts=True)
    shared = touched[num_programs > 1]
    mixed = np.zeros(shared.size, dtype=np.int64)
    index = np.searchsorted(shared, addr)
    index = np.minimum(index, max(shared.size - 1, 0))
    hit = shared.size > 0 and (shared[index] == addr)
    if shared.size:
        np.bitwise_or.at(mixed, index[hit], kind[hit])
    return int(((mixed & kinds["store"]) | ((mixed & kinds["load"]) & ((mixed & kinds["atomic"]) >> 2))).astype(bool).sum())


@pytest.mark.skipif(DEVICE == "cuda", reason="inspects the interpreter's programs")
def test_programs_are_race_free_and_order_independent():
    """The interpreter runs programs one after another, so a race cannot show as a wrong
    result. Instead: in every launch, no address is written by one program and touched by
    another unless all of them add to it atomically; and running the programs in reverse
    or shuffled order gives the same triplets and loss, and the gradient up to the
    rounding of fp32 atomics."""
    x, labels = random_case(22, 150, 2, 24, 4)
    x[7] = x[3]  # a coincident pair: its gradient meets atomics from several programs
    results = {}
    for order in ("forward", "reverse", 1, 2):
        xo = x.clone().requires_grad_(True)
        with interpreted_programs(order) as launches:
            out = multi_threshold_triplet_loss(xo, labels, [0.3, 0.6], 24, backend="triton")
            (grad,) = torch.autograd.grad(out.loss * 1.7, xo)
        assert len(launches) == 6
        for accesses in launches:
            assert racing_addresses(accesses) == 0
        results[order] = (out, grad)
    base, base_grad = results["forward"]
    for order, (out, grad) in results.items():
        assert torch.equal(out.pos_idx, base.pos_idx) and torch.equal(out.neg_idx, base.neg_idx), order
        torch.testing.assert_close(out.loss, base.loss, rtol=1e-6, atol=0)
        torch.testing.assert_close(grad, base_grad, rtol=1e-5, atol=1e-7)


def test_memory_launches_and_no_host_copy(monkeypatch):
    """A warm module call with a full queue (B = 96, Q = 256, N = 7): the batch path's
    launches, two Triton launches more for the memory (its pre-pass and mining; the hinge
    keeps the chosen memory rows for the backward), and the enqueue (normalise, copy into
    the queue, count); no host-to-device copy."""
    counter = LaunchCounter()

    def on_launch(name, run):
        counter.launches.append(f"triton:{name}")
        counter.in_kernel = True
        try:
            return run()
        finally:
            counter.in_kernel = False

    wrap_kernels(monkeypatch, on_launch)
    monkeypatch.setattr(fused, "_prepare_memory_kernel",
                        CountedKernel("prepare_memory", fused._prepare_memory_kernel, on_launch))
    for precision, kernel in list(fused.MINE_MEMORY.items()):
        monkeypatch.setitem(fused.MINE_MEMORY, precision, CountedKernel("mine_memory", kernel, on_launch))
    margins = [0.15 + 0.1 * i for i in range(7)]
    module = MultiThresholdTripletLoss(margins, slice_dim=32, backend="triton", check_finite=False,
                                       memory_size=256).to(DEVICE)
    for seed in range(3):  # fills the queue (and warms the caches)
        module(*on_device(*random_case(seed, 96, 7, 32, 6)))
    x, labels = on_device(*random_case(19, 96, 7, 32, 6))
    x.requires_grad_(True)
    seed = torch.ones((), device=x.device)
    counter.launches.clear()
    with counter:
        value = module(x, labels)
        forward = list(counter.launches)
        (grad,) = torch.autograd.grad(value, x, seed)
    backward = counter.launches[len(forward):]
    print("forward:", forward, "backward:", backward)
    triton_launches = [n for n in forward if n.startswith("triton:")]
    assert triton_launches == ["triton:stats", "triton:prepare", "triton:mine", "triton:prepare_memory",
                               "triton:mine_memory", "triton:hinge", "triton:finish"], triton_launches
    assert len(forward) + len(backward) <= 8 + 2 + 6, (forward, backward)
    assert not any("_to_copy" in op for op in counter.launches), counter.launches
    assert torch.isfinite(grad).all() and float(value.detach()) > 0

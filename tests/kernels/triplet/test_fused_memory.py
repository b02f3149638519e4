"""The fused Triton path with a cross-batch memory against the float64 reference.

Memory rows are extra columns of the mining kernel (never anchors, never differentiated).
Under the interpreter these cases are small but cross tile boundaries: 128 anchors and
memory rows per mining tile, 32 rows per pre-pass step.
"""
import pytest
import torch
from hypothesis import given, settings
from triplet_checks import case_tensors, check_against_reference, memory_case, memory_cases, random_case

from muldml.losses import MultiThresholdTripletLoss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_device(*tensors):
    return tuple(t.to(DEVICE) for t in tensors)


@settings(max_examples=40)
@given(case=memory_cases(max_batch=40, max_memory=150, max_slices=3, max_dim=40))
def test_matches_reference_property(case):
    x, labels, memory = case_tensors(case)
    check_against_reference("triton", *on_device(x, labels), case["margins"], case["slice_dim"], dual=case["dual"],
                            normalize=case["normalize"], grad_scale=case["grad_scale"], memory=on_device(*memory))


@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
def test_every_precision_across_memory_tiles(precision):
    """130 anchors against 300 memory rows: two anchor blocks × three memory blocks."""
    x, labels = random_case(3, 130, 2, 33, 6)
    memory = memory_case(3, 300, 2, 33, 8, normalize=True)
    out = check_against_reference("triton", *on_device(x, labels), [0.2, 0.6], 33, dual=True, normalize=True,
                                  grad_scale=-2.5, memory=on_device(*memory), precision=precision)
    assert (out.pos_idx >= 130 + 256).any() and (out.neg_idx >= 130).any()  # the last memory tile is mined


def test_exact_indices_with_memory():
    x, labels = random_case(4, 50, 2, 20, 4)
    memory = memory_case(4, 140, 2, 20, 6, normalize=True)
    check_against_reference("triton", *on_device(x, labels), [0.3, 0.5], 20, dual=True, normalize=True,
                            memory=on_device(*memory), precision="tf32x3", exact_indices=True)


def test_queue_overwritten_before_backward_keeps_the_gradient():
    """The module enqueues the batch after its forward, possibly over the rows it mined; the
    backward uses its own copy of the chosen memory rows, so its gradient is the reference's."""
    x0, labels0 = random_case(0, 12, 2, 16, 3)
    x, labels = random_case(1, 12, 2, 16, 3)
    grads = {}
    for backend in ("triton", "reference"):
        loss = MultiThresholdTripletLoss(margins=[0.3, 0.6], slice_dim=16, memory_size=12, backend=backend).to(DEVICE)
        loss(*on_device(x0, labels0))
        xx = x.clone().to(DEVICE).requires_grad_(True)
        value = loss(xx, labels.to(DEVICE))  # mines the memory, then overwrites all of it
        assert int(loss.last_output.pos_idx.max()) >= 12 or int(loss.last_output.neg_idx.max()) >= 12
        value.backward()
        grads[backend] = xx.grad.double().cpu()
    torch.testing.assert_close(grads["triton"], grads["reference"], rtol=1e-4, atol=1e-7)

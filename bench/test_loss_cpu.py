"""CPU benchmarks of the loss, forward + backward, N = 7 slices of d = 256.

Run: .venv/bin/python -m pytest bench/test_loss_cpu.py --benchmark-group-by=param:batch
Targets (not asserted): the torch backend ≥ 3× faster than the pytorch-metric-learning
loop at B = 512 and 2048, and within 1.5× of the bare Gram matrices at B = 2048.
"""
import pytest
import torch

import peers
from muldml.losses import multi_threshold_triplet_loss, threshold_range

MARGINS = threshold_range()
SLICE_DIM = 256
ROUNDS = {96: 30, 512: 20, 2048: 3}


def make_inputs(batch):
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, len(MARGINS) * SLICE_DIM, generator=gen).requires_grad_(True)
    labels = torch.randint(0, 7, (batch,), generator=gen)
    return x, labels


def ours(backend, dual):
    return lambda x, y: multi_threshold_triplet_loss(x, y, MARGINS, SLICE_DIM, dual=dual, backend=backend).loss


METHODS = {
    "muldml-torch": ours("torch", False),
    "muldml-torch-dual": ours("torch", True),
    "reference": ours("reference", False),
    "pml-loop": lambda x, y: peers.pml_loop(x, y, MARGINS, SLICE_DIM),
    "vectorised": lambda x, y: peers.vectorised(x, y, torch.tensor(MARGINS), SLICE_DIM),
    "torch-compile": lambda x, y: peers.compiled()(x, y, torch.tensor(MARGINS), SLICE_DIM),
    "gram-floor": lambda x, y: peers.gram_floor(x, y, torch.tensor(MARGINS), SLICE_DIM),
}


@pytest.mark.parametrize("batch", sorted(ROUNDS))
@pytest.mark.parametrize("method", list(METHODS))
def test_forward_backward(benchmark, method, batch):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    x, labels = make_inputs(batch)
    fn = METHODS[method]

    def step():
        x.grad = None
        fn(x, labels).backward()

    benchmark.group = f"B={batch}"
    benchmark.extra_info.update(batch=batch, slices=len(MARGINS), slice_dim=SLICE_DIM, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=ROUNDS[batch], warmup_rounds=3 if batch < 2048 else 1)

"""The oracle itself: a hand-computed case and pytorch-metric-learning as an outside check."""
import math

import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, reducers

from muldml.kernels.triplet.naive import reference_triplet_loss

# Four points in the plane, classes {0, 1} and {2, 3}, margin 0.5, no normalisation.
POINTS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 1])


def test_hand_computed_traditional_and_dual():
    # Anchors 0 and 1 are satisfied; anchor 2: p*=3 (√13), n*=0 (2); anchor 3: p*=2, n*=1 (2).
    s13, s5 = math.sqrt(13), math.sqrt(5)
    trad = reference_triplet_loss(POINTS, LABELS, torch.tensor([0.5]), 2, dual=False, normalize=False, lam=1.0)
    assert trad.pos_idx.tolist() == [[1, 0, 3, 2]] and trad.neg_idx.tolist() == [[2, 3, 0, 1]]
    assert float(trad.loss) == pytest.approx(2 * (s13 - 2 + 0.5) / 4, rel=1e-12)
    assert trad.num_active.tolist() == [2]
    # Dual adds [d(p*,a) − d(p*,n*) + τ]_+: for anchor 2, d(3,0) = 3; for anchor 3, d(2,1) = √5.
    dual = reference_triplet_loss(POINTS, LABELS, torch.tensor([0.5]), 2, dual=True, normalize=False, lam=1.0)
    expected = (2 * (s13 - 2 + 0.5) + (s13 - 3 + 0.5) + (s13 - s5 + 0.5)) / 8
    assert float(dual.loss) == pytest.approx(expected, rel=1e-12)
    assert dual.num_active.tolist() == [4]


def test_lambda_and_weights_combine_slices():
    x = torch.cat([POINTS, 2 * POINTS], dim=1)
    margins = torch.tensor([0.5, 0.1])
    out = reference_triplet_loss(x, LABELS, margins, 2, dual=True, normalize=False,
                                 weights=torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert float(out.loss) == pytest.approx(0.5 / 2 * float(out.slice_losses[0] + 3 * out.slice_losses[1]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.05, 0.3, 0.75])
def test_matches_pytorch_metric_learning_batch_hard(seed, margin):
    """Traditional loss with one slice = PML TripletMarginLoss + BatchHardMiner (mean over triplets)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 16, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (48,), generator=gen)
    labels[0] = 99  # a singleton: no positive, not a triplet
    distance = distances.LpDistance(normalize_embeddings=True, p=2, power=1)
    pml_loss = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer())
    miner = miners.BatchHardMiner(distance=distance)

    x_pml = x.clone().requires_grad_(True)
    expected = pml_loss(x_pml, labels, miner(x_pml, labels))
    (expected_grad,) = torch.autograd.grad(expected, x_pml)
    x_ref = x.clone().requires_grad_(True)
    ours = reference_triplet_loss(x_ref, labels, torch.tensor([margin]), 16, dual=False, normalize=True, lam=1.0)
    (grad,) = torch.autograd.grad(ours.loss, x_ref)
    assert float(ours.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-7, abs=1e-12)  # PML computes distances its own way
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-10)

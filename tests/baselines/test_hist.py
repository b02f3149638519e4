"""HIST loss: a hand-computed case, the float64 loop reference, gradients, and input checks."""
import math

import pytest
import torch

from muldml.baselines.hist import HISTLoss, hist_reference


def _hand_case() -> tuple[HISTLoss, torch.Tensor, torch.Tensor]:
    """x1 = μ1 = e1, x2 = μ2 = e2, σ² = 1; HGNN weights the identity, no bias.

    d = [[0, 2], [2, 0]]; with α = ln 2 / 2 the off-class incidence is e^{-2α} = 1/2, so
    H = [[1, .5], [.5, 1]], D_v = D_e = 1.5 and G = H Hᵀ / 2.25 = [[1.25, 1], [1, 1.25]] / 2.25.
    Scores Z = G·G·I = [[2.5625, 2.5], [2.5, 2.5625]] / 5.0625.
    """
    loss = HISTLoss(num_classes=2, embed_dim=2, tau=1.0, alpha=math.log(2) / 2, lambda_s=1.0, hidden=2, lam=1.0)
    loss = loss.double()
    loss.set_parameters(means=torch.eye(2), log_vars=torch.zeros(2, 2), w1=torch.eye(2), b1=torch.zeros(2),
                        w2=torch.eye(2), b2=torch.zeros(2))
    return loss, torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])


def test_hand_computed_value():
    loss, x, y = _hand_case()
    dist_loss = math.log(1 + math.exp(-2.0))  # −log softmax([0, −2])[0], both samples
    margin = (2.5625 - 2.5) / 5.0625
    tuplet_loss = math.log(1 + math.exp(-margin))
    expected = dist_loss + tuplet_loss
    assert expected == pytest.approx(0.126928 + 0.686993, abs=1e-6)
    assert loss(x, y).item() == pytest.approx(expected, abs=1e-12)
    assert hist_reference(loss, x, y) == pytest.approx(expected, abs=1e-12)
    d_term, s_term = loss.last_terms
    assert float(d_term) == pytest.approx(dist_loss, abs=1e-12)
    assert float(s_term) == pytest.approx(tuplet_loss, abs=1e-12)


def test_scales_lambda_and_lambda_s():
    loss, x, y = _hand_case()
    base_d, base_s = math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-(0.0625 / 5.0625)))
    loss.lam, loss.lambda_s = 0.5, 3.0
    assert loss(x, y).item() == pytest.approx(0.5 * (base_d + 3.0 * base_s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    torch.manual_seed(seed)
    loss = HISTLoss(num_classes=5, embed_dim=6, tau=4.0, alpha=0.9, lambda_s=0.7, hidden=8, lam=0.5).double()
    loss.set_parameters(log_vars=torch.empty(5, 6).uniform_(-1.0, 7.0))  # both ends of the clamp to [0, 6]
    x = torch.randn(9, 6, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 3, 3, 3, 1, 4, 0])  # class 2 absent: not a hyperedge
    assert loss(x, y).item() == pytest.approx(hist_reference(loss, x, y), rel=1e-10, abs=1e-12)


def test_gradients_match_finite_differences():
    torch.manual_seed(3)
    loss = HISTLoss(num_classes=3, embed_dim=4, tau=2.0, alpha=0.9, hidden=5).double()
    loss.set_parameters(log_vars=torch.empty(3, 4).uniform_(0.5, 2.0))  # inside the clamp: differentiable there
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))
    params = list(loss.parameters())
    grads = torch.autograd.grad(loss(x, y), params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_float32_close_to_reference():
    torch.manual_seed(4)
    loss = HISTLoss(num_classes=7, embed_dim=16, hidden=32)
    x, y = torch.randn(12, 16), torch.randint(0, 7, (12,))
    assert loss(x, y).item() == pytest.approx(hist_reference(loss, x, y), rel=1e-4)


def test_bad_inputs():
    loss = HISTLoss(num_classes=3, embed_dim=4, hidden=4)
    with pytest.raises(ValueError, match="embeddings"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        HISTLoss(num_classes=3, embed_dim=4, tau=0.0)


def test_learning_rate_scales_move_effective_values_faster():
    """One Adam step of rate lr moves the class means by about DIST_LR_SCALE·lr and the HGNN
    weights by about HGNN_LR_SCALE·lr (Adam's first step is lr·sign(gradient))."""
    from muldml.baselines.hist import DIST_LR_SCALE, HGNN_LR_SCALE

    torch.manual_seed(5)
    loss = HISTLoss(num_classes=3, embed_dim=4, hidden=5)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    before_means, before_w1 = loss.means.detach().clone(), loss.hgnn_weights()[0].detach().clone()
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-6)
    loss(x, y).backward()
    optimizer.step()
    means_step = (loss.means.detach() - before_means).abs().max().item()
    w1_step = (loss.hgnn_weights()[0].detach() - before_w1).abs().max().item()
    assert means_step == pytest.approx(DIST_LR_SCALE * 1e-6, rel=1e-2)
    assert w1_step == pytest.approx(HGNN_LR_SCALE * 1e-6, rel=1e-2)


def test_autocast_does_not_lower_the_precision():
    torch.manual_seed(6)
    loss = HISTLoss(num_classes=4, embed_dim=8, hidden=8)
    x, y = torch.randn(10, 8), torch.randint(0, 4, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(x.bfloat16(), y)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(hist_reference(loss, x.bfloat16().float(), y), rel=1e-5)

"""Circle loss baseline: pytorch-metric-learning's CircleLoss with the recorded m and γ,
against a hand-computed value (Sun et al., Eq. 6 with α_p = [1 + m − s_p]_+, α_n = [s_n + m]_+,
Δ_p = 1 − m, Δ_n = m; the library averages the anchors whose loss is not zero)."""
import math

import pytest
import torch

from muldml.baselines import CircleMetricLoss
from muldml.errors import UserError


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hand_computed_value():
    # Cosine similarities: s(0, 1) = 0 (positives), s(0, 2) = 1, s(1, 2) = 0 (negatives).
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])  # norms do not matter: cosine similarity
    y = torch.tensor([0, 0, 1])
    m, gamma = 0.25, 1.0
    anchor0 = _softplus(gamma * 1.25 * 0.75 + gamma * 1.25 * 0.75)  # positive term + negative term
    anchor1 = _softplus(gamma * 1.25 * 0.75 + gamma * 0.25 * (0 - 0.25))
    expected = (anchor0 + anchor1) / 2  # anchor 2 has no positive
    assert float(CircleMetricLoss(m, gamma, lam=1.0)(x, y)) == pytest.approx(expected, rel=1e-6)
    assert float(CircleMetricLoss(m, gamma, lam=0.5)(x, y)) == pytest.approx(expected / 2, rel=1e-6)


def test_defaults_recorded_and_checked():
    loss = CircleMetricLoss()
    assert (loss.m, loss.gamma) == (0.4, 80.0)
    assert "m=0.4, gamma=80" in repr(loss)
    with pytest.raises(UserError, match="gamma"):
        CircleMetricLoss(gamma=0)

import pytest
import torch

from muldml.diversity import linear_cka, slice_cka


def test_linear_cka_is_invariant_to_rotation_and_scale_and_low_for_independent_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, torch.randn(200, 8, generator=gen, dtype=torch.float64)) < 0.15
    assert linear_cka(x, x[:, :4]) == pytest.approx(linear_cka(x[:, :4], x))  # symmetric
    # A value computed by hand: x = (−1, 0, 1) and y = x²: centred y is orthogonal to x.
    assert linear_cka(torch.tensor([[-1.0], [0.0], [1.0]]), torch.tensor([[1.0], [0.0], [1.0]])) == 0.0
    assert linear_cka(x, torch.ones(200, 2)) == 0.0  # constant: no signal


def test_slice_cka_matrix():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(100, 4, generator=gen)
    b = torch.randn(100, 4, generator=gen)
    embedding = torch.cat([a, 2 * a, b], dim=1)  # slices 1 and 2: the same up to scale
    cka = slice_cka(embedding, 3)
    assert cka.shape == (3, 3) and torch.equal(cka, cka.T)
    assert torch.allclose(cka.diagonal(), torch.ones(3, dtype=torch.float64))
    assert cka[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert cka[0, 2] < 0.3 and cka[1, 2] < 0.3


def test_bad_input():
    with pytest.raises(ValueError, match="multiple of 3 slices"):
        slice_cka(torch.zeros(4, 8), 3)
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(torch.zeros(1, 2), torch.zeros(1, 2))

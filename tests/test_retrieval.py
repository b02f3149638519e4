"""Retrieval metrics per slice and merged: values on embeddings whose answer is known."""
import pytest
import torch

from muldml.retrieval import retrieval_metrics


def _clustered(num_classes: int = 3, per_class: int = 8, dim: int = 4, spread: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1) * 5
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_separated_slice_is_perfect_and_noise_slice_is_not():
    separated, labels = _clustered()
    noise = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(1))
    result = retrieval_metrics(torch.cat([separated, noise], dim=1), labels, num_slices=2)
    assert result["slices"][0] == pytest.approx({"precision_at_1": 1.0, "mean_average_precision_at_r": 1.0,
                                                 "NMI": 1.0})
    assert result["slices"][1]["precision_at_1"] < 0.8
    assert result["slices"][1]["mean_average_precision_at_r"] < 0.8
    # The merged embedding weighs both slices equally: between the two.
    assert result["slices"][1]["mean_average_precision_at_r"] <= result["merged"]["mean_average_precision_at_r"] <= 1.0


def test_precision_at_1_is_leave_one_out():
    # Two classes on a line: every point's nearest other point is of its own class except
    # the two at the boundary (index 1 and 2), so precision@1 = 4/6 exactly.
    x = torch.tensor([[0.0], [1.0], [1.4], [2.8], [3.0], [-0.5]])
    x = torch.cat([x, torch.ones_like(x)], dim=1)  # keep points off the origin (distance is on normalised rows)
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    normed = torch.nn.functional.normalize(x, dim=1)
    nearest = torch.cdist(normed, normed).fill_diagonal_(float("inf")).argmin(1)
    expected = (labels[nearest] == labels).float().mean().item()
    got = retrieval_metrics(x, labels, num_slices=1)["slices"][0]["precision_at_1"]
    assert got == pytest.approx(expected)
    assert 0 < got < 1


def test_bad_input_is_refused():
    x, labels = _clustered()
    with pytest.raises(ValueError, match="slices"):
        retrieval_metrics(x, labels, num_slices=3)
    with pytest.raises(ValueError, match="two classes"):
        retrieval_metrics(x, torch.zeros_like(labels), num_slices=1)
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(x, labels[:-1], num_slices=1)

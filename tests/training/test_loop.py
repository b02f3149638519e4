import pytest
import torch

from muldml.losses import MultiThresholdTripletLoss
from muldml.training.loop import Meter


def test_meter_weights_slice_losses_by_triplet_count():
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=4)
    meter = Meter(num_slices=2)
    gen = torch.Generator().manual_seed(0)
    # A batch of one class has no negative: K = 0, loss 0. It must not halve the mean.
    same = torch.zeros(6, dtype=torch.long)
    loss(torch.randn(6, 8, generator=gen), same)
    assert int(loss.last_output.num_triplets) == 0
    meter.add(torch.zeros(6, 3), same, torch.tensor(1.0), loss.last_output)
    a_labels, b_labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    loss(torch.randn(4, 8, generator=gen), a_labels)
    a = loss.last_output
    meter.add(torch.zeros(4, 3), a_labels, torch.tensor(1.0), a)
    loss(torch.randn(8, 8, generator=gen), b_labels)
    b = loss.last_output
    meter.add(torch.zeros(8, 3), b_labels, torch.tensor(1.0), b)
    row = meter.row("val")
    for i in range(2):
        expected = (a.slice_losses[i] * 4 + b.slice_losses[i] * 8) / 12  # weights K = 4 and 8
        assert row[f"val_triplet_{i}"] == pytest.approx(float(expected), rel=1e-6)
        assert row[f"val_active_{i}"] == pytest.approx(float(a.num_active[i] + b.num_active[i]) / (2 * 12))

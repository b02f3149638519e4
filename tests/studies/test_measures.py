"""Figure measurements: incomplete judgements (Fig. 6), inter-class distances (Fig. 3) and
neuron maps (Figs. 7–8) against hand-computed values."""
import numpy as np
import pytest
import torch

from muldml.config import preset_config
from muldml.studies.measures import incomplete_judgements, interclass_histograms, neuron_maps

# Unit vectors (one 2-d slice); labels 0, 0, 1, 1 and a lone 2 (no positive: not an anchor).
POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, -1.0], [-0.8, 0.6]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 1, 2])


def _cfg(num_slices: int = 1, dual: bool = True):
    cfg = preset_config("mul-dml-same" if num_slices > 1 else "s-dual-triplet", num_slices=num_slices, slice_dim=2,
                        tau_star=0.3, dual=dual)
    return cfg


def test_incomplete_judgements_by_hand():
    # anchor 0: p* = 1 (d √2), n* = 2 (d 0.894); d(p*, n*) = 0.632 < √2 → incomplete
    # anchor 1: p* = 0 (d √2), n* = 2 (d 0.632); d(p*, n*) = 0.894 < √2 → incomplete
    # anchor 2: p* = 3 (d 1.897), n* = 1 (d 0.632); d(p*, n*) = 2 > 1.897 → complete
    # anchor 3: p* = 2 (d 1.897), n* = 0 (d √2); d(p*, n*) = 0.894 < 1.897 → incomplete
    assert incomplete_judgements(POINTS, LABELS, _cfg()) == (3, 4)
    assert incomplete_judgements(POINTS, LABELS, _cfg(dual=False)) == (3, 4)  # mining is the same


def test_incomplete_judgements_per_slice_after_normalisation():
    # Slice 2 is slice 1 scaled by 5: the same unit vectors, so the same count again.
    two = torch.cat([POINTS, 5 * POINTS], dim=1)
    assert incomplete_judgements(two, LABELS, _cfg(num_slices=2)) == (6, 8)
    # A batch where every triplet is complete (computed like the one above).
    tight = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
    assert incomplete_judgements(tight, torch.tensor([0, 0, 1, 1]), _cfg()) == (0, 4)


def test_no_triplet_loss_counts_nothing():
    assert incomplete_judgements(POINTS, LABELS, preset_config("cnn", slice_dim=2)) == (0, 0)


def test_interclass_histogram_by_hand():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    counts = interclass_histograms(points, torch.tensor([0, 0, 1]), num_slices=1, bins=40)
    assert len(counts) == 1 and sum(counts[0]) == 2  # pairs (0, 2) and (1, 2); (0, 1) is intra-class
    assert counts[0][39] == 1  # d(0, 2) = 2: the last bin holds its upper edge
    assert counts[0][28] == 1  # d(1, 2) = √2 = 1.414 → bin ⌊1.414 / 0.05⌋


def test_neuron_maps_sample_evenly_spaced_dimensions():
    torch.manual_seed(0)
    embeddings = torch.randn(3, 2 * 128)
    maps = neuron_maps(embeddings, num_slices=2)
    assert maps.shape == (3, 2, 8, 8)
    dims = np.linspace(0, 127, 64).round().astype(int)
    assert dims[0] == 0 and dims[-1] == 127
    second = torch.nn.functional.normalize(embeddings[1, 128:], dim=0).numpy()
    np.testing.assert_allclose(maps[1, 1].ravel(), second[dims], rtol=1e-6)
    with pytest.raises(RuntimeError):
        neuron_maps(torch.randn(2, 10), num_slices=3)

from collections import Counter

import pytest
import torch

from muldml.data.samplers import PKSampler
from muldml.errors import UserError


def test_pk_batches_are_full_and_hold_positives():
    # 7 classes, batch 96, K = 4: the batch holds 96 images (P = 24 slots), not 7·4 = 28.
    labels = [c for c in range(7) for _ in range(140)] + [0]
    sampler = PKSampler(labels, batch_size=96, k=4, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(labels) // 96 == 10
    for batch in batches:
        assert len(batch) == 96
        counts = Counter(labels[i] for i in batch)
        assert all(n % 4 == 0 for n in counts.values()) and len(counts) >= 2


def test_pk_every_image_once_per_epoch_in_expectation():
    labels = [0] * 60 + [1] * 20 + [2] * 10 + [3] * 6  # imbalanced, 96 images
    sampler = PKSampler(labels, batch_size=24, k=3, generator=torch.Generator().manual_seed(1))
    epochs = 400
    seen = Counter(i for _ in range(epochs) for batch in sampler for i in batch)
    per_image = torch.tensor([seen[i] / epochs for i in range(len(labels))])
    assert per_image.mean().item() == pytest.approx(1.0)
    # Per class, the mean rate is 1 (to sampling noise), large and small classes alike.
    for c, members in ((0, range(60)), (1, range(60, 80)), (2, range(80, 90)), (3, range(90, 96))):
        assert per_image[list(members)].mean().item() == pytest.approx(1.0, abs=0.08), c


def test_pk_impossible_batches_are_refused():
    with pytest.raises(UserError, match="not a multiple"):
        PKSampler([0, 1] * 10, batch_size=10, k=4, generator=torch.Generator())
    with pytest.raises(UserError, match="at least 2 classes"):
        PKSampler([0] * 10, batch_size=8, k=4, generator=torch.Generator())
    with pytest.raises(UserError, match="fewer than 2 classes"):
        PKSampler([0, 1] * 10, batch_size=4, k=4, generator=torch.Generator())

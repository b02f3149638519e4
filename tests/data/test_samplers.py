import torch

from muldml.data.samplers import PKSampler


def test_pk_sampler_batches_hold_positives():
    labels = [0] * 10 + [1] * 3 + [2] * 7 + [3] * 1
    sampler = PKSampler(labels, batch_size=8, k=4, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(labels) // 8
    for batch in batches:
        assert len(batch) == 8
        classes = [labels[i] for i in batch]
        assert all(classes.count(c) == 4 for c in set(classes))

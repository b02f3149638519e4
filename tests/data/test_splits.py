import random

from muldml.data.folder import Sample
from muldml.data.splits import subject_holdout, subject_kfold


def samples(num_subjects=23, seed=0):
    rng = random.Random(seed)
    out = []
    for s in range(num_subjects):
        for _ in range(rng.randint(2, 9)):
            out.append(Sample(path=None, label=rng.randrange(7), subject=f"S{s:03d}"))
    return out


def test_kfold_is_a_partition_disjoint_by_subject():
    data = samples()
    folds = subject_kfold(data, 10, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(len(data)))
    subjects = [{data[i].subject for i in f} for f in folds]
    for a in range(10):
        assert subjects[a], "empty fold"
        for b in range(a + 1, 10):
            assert not subjects[a] & subjects[b]


def test_kfold_is_stratified_as_far_as_groups_allow():
    # One image per (subject, class) for 20 subjects × 7 classes: perfect strata exist.
    data = [Sample(None, c, f"S{s}") for s in range(20) for c in range(7)]
    for fold in subject_kfold(data, 10):
        assert sorted(data[i].label for i in fold) == sorted(list(range(7)) * 2)


def test_kfold_deterministic_by_seed():
    data = samples()
    assert subject_kfold(data, 5, seed=3) == subject_kfold(data, 5, seed=3)


def test_holdout_disjoint():
    data = samples()
    train, val = subject_holdout(data, 0.25, seed=0)
    assert not {data[i].subject for i in train} & {data[i].subject for i in val}
    assert sorted(train + val) == list(range(len(data)))
    assert 0.1 < len(val) / len(data) < 0.45

import random

import pytest

from muldml.data.folder import Sample
from muldml.data.splits import subject_holdout, subject_kfold, without_subject
from muldml.errors import UserError


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


def _no_subjects(n=12):
    # Two images of each of six sources, as prepare's rotations give, and no subject at all.
    return [Sample(path=None, label=i % 3, source=f"src{i // 2}", rotation=5 * (i % 2)) for i in range(n)]


@pytest.mark.parametrize("split", [lambda d, **kw: subject_kfold(d, 3, **kw),
                                   lambda d, **kw: subject_holdout(d, 0.3, **kw)])
def test_samples_without_subject_are_refused_in_one_line(split):
    with pytest.raises(UserError, match="--subject-regex") as raised:
        split(_no_subjects())
    assert "\n" not in str(raised.value) and "12 of 12 images have no subject" in str(raised.value)
    # One subject missing is enough: the rest cannot be trusted to be disjoint.
    partly = samples()[:20] + [Sample(path=None, label=0)]
    with pytest.raises(UserError, match="1 of 21"):
        split(partly)


def test_image_level_split_only_when_asked_keeps_rotations_together():
    data = _no_subjects()
    folds = subject_kfold(data, 3, allow_image_level=True)
    assert sorted(i for f in folds for i in f) == list(range(len(data)))
    sources = [{data[i].source for i in fold} for fold in folds]
    assert sum(map(len, sources)) == len(set().union(*sources)) == 6  # a source's rotations share a fold
    train, val = subject_holdout(data, 0.3, allow_image_level=True)
    assert not {data[i].source for i in train} & {data[i].source for i in val}
    assert without_subject(data) == 12 and without_subject(samples()) == 0

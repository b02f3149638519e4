"""Subject-independent splits: no subject's images on both sides of a split."""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from muldml.data.folder import Sample
from muldml.errors import UserError


def _groups(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Sample indices per subject; without a subject, per source image (its rotations stay
    together), else each sample is a group of its own."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        key = f"subject:{s.subject}" if s.subject is not None else f"source:{s.source or i}"
        groups[key].append(i)
    return dict(groups)


def subject_kfold(samples: Sequence[Sample], folds: int = 10, seed: int = 0) -> list[list[int]]:
    """Split sample indices into `folds` subject-disjoint test folds, class-stratified as far
    as the subjects allow: subjects, largest first, go to the fold where they least increase the
    squared distance of class counts from an equal share."""
    groups = _groups(samples)
    if folds < 2:
        raise UserError(f"need at least 2 folds, got {folds}")
    if len(groups) < folds:
        raise UserError(f"{len(groups)} subjects cannot make {folds} subject-independent folds")
    num_classes = max(s.label for s in samples) + 1
    target = [0.0] * num_classes
    for s in samples:
        target[s.label] += 1 / folds
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: ties keep the seeded order
    counts = [[0] * num_classes for _ in range(folds)]
    assigned: list[list[int]] = [[] for _ in range(folds)]
    for g in order:
        add = [0] * num_classes
        for i in groups[g]:
            add[samples[i].label] += 1

        def cost(f: int) -> tuple[float, int]:
            # Growth of Σ_c (count − target)² if this subject joins fold f.
            growth = sum(add[c] * (2 * (counts[f][c] - target[c]) + add[c]) for c in range(num_classes))
            return growth, len(assigned[f])

        best = min(range(folds), key=cost)
        assigned[best] += groups[g]
        counts[best] = [a + b for a, b in zip(counts[best], add)]
    return [sorted(f) for f in assigned]


def subject_holdout(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, val) sample indices, subject-disjoint, about `val_fraction` of subjects in val."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    subjects = len(_groups(samples))
    if subjects < 2:
        raise UserError("a subject-independent split needs at least 2 subjects")
    folds = min(max(2, round(1 / val_fraction)), subjects)  # few subjects: one of them, at least
    val = set(subject_kfold(samples, folds, seed)[0])
    return [i for i in range(len(samples)) if i not in val], sorted(val)

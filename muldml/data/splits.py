"""Subject-independent splits: no subject's images on both sides of a split.

Every sample needs a subject (from the manifest or a subject regex). Samples without one
are refused (`UserError` naming ``--subject-regex``) unless the caller asks for an
image-level split with ``allow_image_level=True``: each source image (with its offline
rotations) is then a group of its own, so the same person can sit on both sides, and the
caller should say so in its report.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from muldml.data.folder import Sample
from muldml.errors import UserError


NO_SUBJECT_HINT = ("give --subject-regex (e.g. '^(S\\d+)_') to read subjects from file names, or --image-level-split "
                   "to split by image knowingly (the same people may then be on both sides)")


def without_subject(samples: Sequence[Sample]) -> int:
    """How many samples carry no subject."""
    return sum(s.subject is None for s in samples)


def _groups(samples: Sequence[Sample], allow_image_level: bool) -> dict[str, list[int]]:
    """Sample indices per subject. A sample without a subject is refused unless
    ``allow_image_level``; then it is grouped with its source image's rotations (or alone)."""
    missing = without_subject(samples)
    if missing and not allow_image_level:
        raise UserError(f"{missing} of {len(samples)} images have no subject, so a subject-independent split is "
                        f"impossible: {NO_SUBJECT_HINT}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        key = f"subject:{s.subject}" if s.subject is not None else f"source:{s.source or i}"
        groups[key].append(i)
    return dict(groups)


def subject_kfold(samples: Sequence[Sample], folds: int = 10, seed: int = 0,
                  allow_image_level: bool = False) -> list[list[int]]:
    """Split sample indices into `folds` subject-disjoint test folds, class-stratified as far
    as the subjects allow: subjects, largest first, go to the fold where they least increase the
    squared distance of class counts from an equal share.

    Raises UserError when samples lack a subject (unless ``allow_image_level``: see the
    module doc), for fewer than 2 folds, or for fewer subjects than folds.
    """
    groups = _groups(samples, allow_image_level)
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


def subject_holdout(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0,
                    allow_image_level: bool = False) -> tuple[list[int], list[int]]:
    """(train, val) sample indices, subject-disjoint, about `val_fraction` of subjects in val.

    Raises UserError as `subject_kfold` does, for a fraction outside (0, 1) or fewer than
    2 subjects.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    subjects = len(_groups(samples, allow_image_level))
    if subjects < 2:
        raise UserError("a subject-independent split needs at least 2 subjects")
    folds = min(max(2, round(1 / val_fraction)), subjects)  # few subjects: one of them, at least
    val = set(subject_kfold(samples, folds, seed, allow_image_level)[0])
    return [i for i in range(len(samples)) if i not in val], sorted(val)

"""The one split policy: every split of train, cv, pretrain, demo and study is made here.

k-fold subject-independent cross-validation or the official split, each fold with a
validation set drawn from outside its test images; and the train/validation hold-out of
`muldml train` and `pretrain`, which is the validation part of the same policy. The same
data and seed give the same folds and hold-outs in every command (the seed is the run's
--seed); every run records its split (split.json) so that `evaluate` scores its held-out part.

A fold's test images are used only for its final accuracy. Curves and every choice (an
epoch, τ*, a hyper-parameter) use the fold's validation images: held-out training subjects
in cross-validation and in splits without a separate validation set, or the official
validation split when the data also has a test split. """
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from muldml.data.folder import Sample, originals
from muldml.data.splits import subject_holdout, subject_kfold, without_subject
from muldml.errors import UserError

FOLD_SEED = 0  # default fold seed (Config.seed's default); studies use their first seed for every repetition


def image_level_note(samples: Sequence[Sample], image_level: bool) -> str | None:
    """The sentence reports carry when images without a subject were split image by image."""
    missing = without_subject(samples)
    if not (image_level and missing):
        return None
    return (f"Image-level split (--image-level-split): {missing} of {len(samples)} images have no subject, so the "
            "same people may appear on both sides of the split; accuracy may be optimistic.")


@dataclass
class Fold:
    """One train → test partition. val: validation images drawn from outside `test`."""

    name: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


@dataclass
class Protocol:
    kind: str  # "cv" or "split"
    folds: list[Fold]
    description: str


def _subset(samples: Sequence[Sample], idx: Sequence[int]) -> list[Sample]:
    return [samples[i] for i in idx]


def make_protocol(samples: Sequence[Sample], folds: int | None, use_split: bool | None,
                  val_fraction: float, image_level: bool = False, default_folds: int = 10,
                  seed: int = FOLD_SEED) -> Protocol:
    """k-fold subject-independent CV where the data has no official split (or `folds` is
    given; default_folds otherwise), else train → test on the official split (test = the
    "test" split, or "val" when there is none). Validation always comes from outside the test
    images.

    image_level: allow images without a subject to be split one source image at a time
    (muldml.data.splits); the description then says so. seed: draws the folds and each
    fold's validation subjects. Raises UserError otherwise."""
    note = image_level_note(samples, image_level)
    note = f". {note.rstrip('.')}" if note else ""
    splits = {s.split for s in samples}
    has_split = "train" in splits and bool(splits & {"val", "test"})
    if use_split and not has_split:
        raise UserError("--split needs data with an official split (manifest.csv with split train and val/test)")
    if folds is not None and use_split:
        raise UserError("give either --folds or --split, not both")
    if has_split and folds is None:
        train = [s for s in samples if s.split == "train"]
        test_name = "test" if "test" in splits else "val"
        test = originals([s for s in samples if s.split == test_name])
        if test_name == "test" and "val" in splits:
            val = originals([s for s in samples if s.split == "val"])
            how = "the official validation split"
        else:
            train, val = holdout(train, val_fraction, seed, image_level)
            how = (f"{val_fraction:.0%} of the training subjects, held out (the dataset has no validation split of its "
                   f"own, so the models train on the other {1 - val_fraction:.0%} of its training images)")
        return Protocol("split", [Fold("split", train, val, test)],
                        f"official split: train on 'train', report accuracy on '{test_name}' "
                        f"({len(test)} images); curves and choices on {how} ({len(val)} images){note}")
    k = default_folds if folds is None else folds
    result = []
    for i, test_idx in enumerate(subject_kfold(samples, k, seed, allow_image_level=image_level), start=1):
        held = set(test_idx)
        pool = [s for j, s in enumerate(samples) if j not in held]
        train, val = holdout(pool, val_fraction, seed + i, image_level)
        result.append(Fold(f"fold-{i:02d}", train, val, originals(_subset(samples, test_idx))))
    return Protocol("cv", result,
                    f"{k}-fold subject-independent cross-validation; in each fold, curves and choices use "
                    f"{val_fraction:.0%} of its training subjects, held out (never its test fold){note}")


def holdout(samples: Sequence[Sample], val_fraction: float, seed: int,
            image_level: bool = False) -> tuple[list[Sample], list[Sample]]:
    """(train, val): a subject-independent hold-out of about `val_fraction` of the subjects;
    validation keeps originals only (no offline rotations). UserError as subject_holdout."""
    train_idx, val_idx = subject_holdout(samples, val_fraction, seed, allow_image_level=image_level)
    return _subset(samples, train_idx), originals(_subset(samples, val_idx))


def train_val_split(samples: Sequence[Sample], val_fraction: float, seed: int,
                    image_level: bool = False) -> tuple[list[Sample], list[Sample], str]:
    """(train, val, description) for `muldml train`, `pretrain` and the demo: the official
    split's train and val images when the manifest has them (test images are left for
    `muldml evaluate --split test`), else a subject-independent hold-out (`holdout`)."""
    splits = {s.split for s in samples}
    if "train" in splits and splits & {"val", "test"}:
        train = [s for s in samples if s.split == "train"]
        val = originals([s for s in samples if s.split == "val"])
        how = "the official validation split" if val else "none (the official split has no val images)"
        return train, val, f"official split: train on 'train'; validation on {how}"
    train, val = holdout(samples, val_fraction, seed, image_level)
    return train, val, (f"subject-independent hold-out: {val_fraction:.0%} of the subjects for validation "
                        f"(seed {seed})")

"""Study runner: honest protocols (test images never used for validation), run ids shared
between studies, and where τ* comes from."""
from pathlib import Path

import pytest

from muldml import io as atomic
from muldml.data.folder import Sample
from muldml.errors import UserError
from muldml.protocol import make_protocol
from muldml.studies.definitions import STUDIES
from muldml.studies.runner import (RESULT, StudyContext, check_study_folder, resolve_tau_star,
                                   run_dir, run_id)


def _samples(subjects: int = 10, split=None, rotations=(0, 5)) -> list[Sample]:
    return [Sample(Path(f"s{s}_c{c}_r{r}.png"), c, f"S{s:02d}", split(s) if split else None, f"s{s}_c{c}", r)
            for s in range(subjects) for c in range(3) for r in rotations]


def _subjects(samples) -> set[str]:
    return {s.subject for s in samples}


def test_cv_folds_keep_test_subjects_out_of_training_and_validation():
    samples = _samples(10)
    protocol = make_protocol(samples, folds=5, use_split=None, val_fraction=0.25)
    assert protocol.kind == "cv" and [f.name for f in protocol.folds] == [f"fold-0{i}" for i in range(1, 6)]
    tested = set()
    for fold in protocol.folds:
        assert fold.test and fold.val and fold.train
        assert not _subjects(fold.test) & (_subjects(fold.train) | _subjects(fold.val))
        assert not _subjects(fold.val) & _subjects(fold.train)
        assert all(s.rotation == 0 for s in fold.test + fold.val)  # rotated copies only train
        assert len(fold.train) + len(fold.val) * 2 + len(fold.test) * 2 == len(samples)
        tested |= _subjects(fold.test)
    assert tested == _subjects(samples)  # every subject tested once


def test_split_with_val_and_test_validates_on_val():
    samples = _samples(9, split=lambda s: "train" if s < 5 else "val" if s < 7 else "test")
    (fold,) = make_protocol(samples, folds=None, use_split=None, val_fraction=0.2, default_folds=2).folds
    assert _subjects(fold.test) == {"S07", "S08"} and _subjects(fold.val) == {"S05", "S06"}
    assert _subjects(fold.train) == {f"S0{i}" for i in range(5)}


def test_split_without_val_holds_out_training_subjects():
    samples = _samples(8, split=lambda s: "train" if s < 6 else "val")  # SFEW: train → val
    (fold,) = make_protocol(samples, folds=None, use_split=None, val_fraction=0.2).folds
    assert _subjects(fold.test) == {"S06", "S07"}  # the only evaluation split is what is reported
    assert fold.val and not _subjects(fold.val) & (_subjects(fold.train) | _subjects(fold.test))


def test_protocol_errors():
    with pytest.raises(UserError, match="--split"):
        make_protocol(_samples(4), folds=None, use_split=True, val_fraction=0.2)


def test_run_ids_are_shared_between_studies():
    ctx = _context(Path("/nowhere"))
    table1 = {c.label: c for c in STUDIES["table1"].cells}
    table3 = {c.label: c for c in STUDIES["table3"].cells}
    table2 = {c.label: c for c in STUDIES["table2"].cells}
    assert run_id(ctx.config(table1["δτ = 0.1 (N = 7), d = 256"], None, 0), ctx.base) == "mul-dml"
    assert run_id(ctx.config(table3["Mul-DML"], None, 0), ctx.base) == "mul-dml"
    assert run_id(ctx.config(table1["δτ = 0.05 (N = 13), d = 64"], None, 0), ctx.base) == \
        "mul-dml,slice_dim=64,tau_step=0.05"
    dual = run_id(ctx.config(table3["S-Dual-Triplet (τ*)"], 0.45, 0), ctx.base)
    assert dual == run_id(ctx.config(table2["τ = 0.45"], None, 0), ctx.base) == "s-dual-triplet,tau_star=0.45"
    assert run_id(ctx.config(table3["S-Trad-Triplet (τ*)"], 0.45, 0), ctx.base) != dual


def _context(out: Path, tau_star=None) -> StudyContext:
    protocol = make_protocol(_samples(6), folds=2, use_split=None, val_fraction=0.5)
    return StudyContext(out=out, classes=["a", "b", "c"], protocol=protocol, seeds=[0], base={"epochs": 1},
                        tau_star=tau_star)


def _fake_table2(ctx: StudyContext, fold, val_accuracy: dict[float, float]) -> None:
    for cell in STUDIES["table2"].cells:
        tau = dict(cell.overrides)["tau_star"]
        if tau in val_accuracy:
            folder = run_dir(ctx, ctx.config(cell, None, 0), fold, 0)
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_json(folder / RESULT,
                              {"val_accuracy": val_accuracy[tau], "accuracy": 0.0})


def test_tau_star_nested_given_or_configured(tmp_path):
    ctx = _context(tmp_path)
    first, second = ctx.protocol.folds
    taus = [dict(c.overrides)["tau_star"] for c in STUDIES["table2"].cells]
    assert resolve_tau_star(ctx, first, 0) == (0.45, "from the configuration (not chosen on this data)")
    _fake_table2(ctx, first, {t: 0.5 for t in taus} | {0.35: 0.9, 0.65: 0.9})  # tie → the smaller τ
    value, source = resolve_tau_star(ctx, first, 0)
    assert value == 0.35 and "nested" in source
    _fake_table2(ctx, second, {t: 0.5 for t in taus[:-1]})  # one run missing: no choice yet
    assert resolve_tau_star(ctx, second, 0)[1].startswith("from the configuration")
    assert resolve_tau_star(_context(tmp_path, tau_star=0.25), first, 0) == (0.25, "given (--tau-star)")


def test_study_folder_refuses_other_settings(tmp_path):
    check_study_folder(tmp_path / "new" / "study", {"common_settings": {"epochs": 1}})  # created
    assert (tmp_path / "new" / "study" / "study.json").is_file()
    check_study_folder(tmp_path, {"common_settings": {"epochs": 1}, "folds": ["fold-01"]})
    check_study_folder(tmp_path, {"common_settings": {"epochs": 1}, "folds": ["fold-01"]})  # same: fine
    with pytest.raises(UserError, match="common_settings"):
        check_study_folder(tmp_path, {"common_settings": {"epochs": 2}, "folds": ["fold-01"]})


def test_images_without_subjects_need_the_explicit_flag():
    samples = [Sample(Path(f"i{i}_c{c}.png"), c, None, "train" if i < 6 else "val", f"i{i}_c{c}") for i in range(8)
               for c in range(3)]
    with pytest.raises(UserError, match="image-level-split"):
        make_protocol(samples, folds=None, use_split=None, val_fraction=0.25)
    protocol = make_protocol(samples, folds=None, use_split=None, val_fraction=0.25, image_level=True)
    (fold,) = protocol.folds
    assert "Image-level split" in protocol.description
    assert not {s.path for s in fold.val} & {s.path for s in fold.train}
    assert {s.split for s in fold.test} == {"val"}


def test_best_val_epoch_is_the_earliest_best_validation_accuracy():
    from muldml.studies.runner import best_val_epoch

    history = [{"epoch": 1, "val_acc": 0.3}, {"epoch": 2, "val_acc": 0.6}, {"epoch": 3, "val_acc": 0.6},
               {"epoch": 4, "val_acc": 0.5}]
    assert best_val_epoch(history) == 2
    assert best_val_epoch([{"epoch": 1, "train_acc": 0.5}]) is None

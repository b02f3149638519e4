"""The baselines' settings are chosen per fold on validation subjects, as τ* is: every grid
point trains, the best validation accuracy wins, explicit settings are not searched, and the
study report records the choice and its source."""
import json

import pytest

from muldml.baselines import selection
from muldml.baselines.selection import choose, grid_points


def test_grid_points_skip_fixed_fields():
    full = grid_points("circle")
    assert len(full) == 8 and full[0] == {"circle_m": 0.4, "circle_gamma": 80.0, "lam": 0.05}  # defaults first
    assert grid_points("circle", fixed={"lam", "circle_m"}) == [{"circle_gamma": 80.0}, {"circle_gamma": 32.0}]
    assert grid_points("circle", fixed={"lam", "circle_m", "circle_gamma"}) == []
    assert len(grid_points("hist")) == 8 and grid_points("triplet") == []


def test_choose_takes_the_best_validation_accuracy_and_the_earlier_of_ties():
    points = [{"lam": 0.5}, {"lam": 0.05}, {"lam": 0.01}]
    assert choose(points, [0.2, 0.6, 0.6]) == 1
    assert choose(points, [None, 0.1, 0.0]) == 1
    with pytest.raises(ValueError):
        choose(points, [0.1])


def test_study_chooses_circle_settings_on_validation(tmp_path, monkeypatch):
    from muldml.config import Runtime
    from muldml.data.folder import scan_folder
    from muldml.data.synthetic import write_demo_dataset
    from muldml.protocol import make_protocol
    from muldml.studies.definitions import Cell, Study
    from muldml.studies.report import write_study_report
    from muldml.studies.runner import StudyContext, read_result, resolve_baseline, run_dir, run_study

    monkeypatch.setitem(selection.GRIDS, "circle", {"lam": (0.5, 0.05)})
    monkeypatch.setattr("muldml.evaluate.write_report", lambda *args, **kwargs: None)  # plots: not under test
    data = write_demo_dataset(tmp_path / "faces", num_subjects=6, images_per_expression=1, size=24, seed=0,
                              progress=False)
    samples, classes = scan_folder(data)
    base = {"epochs": 1, "image_size": 24, "batch_size": 16, "lr": 1e-3, "val_fraction": 0.4}
    study = Study("baselines", "Baselines", "Tables V–VI", (Cell("Circle loss", "circle"),), "")

    def context(out, **extra):
        protocol = make_protocol(samples, 2, False, 0.4, False)
        return StudyContext(out=out, classes=classes, protocol=protocol, seeds=[0], base=base | extra,
                            runtime=Runtime(num_workers=0), progress=False)

    ctx = context(tmp_path / "study")
    results = run_study(ctx, study)
    for fold, result in zip(ctx.protocol.folds, results["Circle loss"]):
        grid = [read_result(run_dir(ctx, ctx.config(Cell("", "circle", (("lam", lam),)), None, 0), fold, 0))
                for lam in (0.5, 0.05)]
        best = max(grid, key=lambda r: (r["val_accuracy"], r["config"]["lam"] == 0.5))  # ties: the first point
        assert result["run"] == best["run"] and result["best_val_epoch"] == 1
    write_study_report(ctx, study, results, tmp_path / "study" / "baselines")
    summary = json.loads((tmp_path / "study" / "baselines" / "results.json").read_text())
    assert [c["chosen"]["lam"] for c in summary["baseline_choice"]] == [r["config"]["lam"] for r in results["Circle loss"]]
    assert all("validation subjects" in c["source"] for c in summary["baseline_choice"])
    report = (tmp_path / "study" / "baselines" / "report.md").read_text()
    assert "loss_terms.png" in report and (tmp_path / "study" / "baselines" / "loss_terms.png").stat().st_size > 0

    # A setting given explicitly is not searched (and nothing is trained to resolve it).
    fixed = context(tmp_path / "fixed", lam=0.2)
    assert resolve_baseline(fixed, study, study.cells[0], fixed.protocol.folds[0], 0) == (
        {}, "given (command line or configuration)")
    assert resolve_baseline(fixed, study, Cell("Mul-DML", "mul-dml"), fixed.protocol.folds[0], 0) == ({}, "")
    assert not (tmp_path / "fixed" / "runs").exists()

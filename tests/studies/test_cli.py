"""`muldml study`: help lists every study; bad input is one line and exit 2; `all --quick` on
the demo faces writes every report with the obtained and the paper's values, shares runs
between studies and resumes without retraining."""
import json
import time
from pathlib import Path

import pytest

from muldml.cli import main
from muldml.studies import NAMES, STUDIES
from muldml.studies.paper import paper_value


def test_help_lists_every_study(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in NAMES:
        assert f"  {name} " in text


@pytest.mark.parametrize("extra,message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--folds", "1"], "--folds must be >= 2"),
    (["--lr", "-1"], "lr must be in"),
    (["--split"], "--split needs data with an official split"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, message):
    assert main(["study", "table3", "--demo", "--quick", "--quiet", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_all_quick_on_demo_faces(tmp_path):
    out = tmp_path / "studies"
    start = time.monotonic()
    assert main(["study", "all", "--demo", "--quick", "--quiet", "--out", str(out), "--dataset", "ck+"]) == 0
    print(f"study all --quick: {time.monotonic() - start:.0f} s")
    for name, study in STUDIES.items():
        report = (out / name / "report.md").read_text()
        results = json.loads((out / name / "results.json").read_text())
        assert results["kind"] == "cv" and results["folds"] == ["fold-01", "fold-02"]
        assert len(results["rows"]) == len(study.cells)
        for row in results["rows"]:
            assert row["n"] == 2 and 0 <= row["mean"] <= 100  # two folds × one seed, obtained
            assert row["paper"] == paper_value(name, "ck+", row["label"])  # None: "not available"
            assert row["label"] in report
        assert "Quick mode" in report
        for row in results["rows"]:  # the paper's column: its value, or "not available"
            assert ("not available" if row["paper"] is None else f"{row['paper']:.2f}") in report
        assert f"muldml study all --demo --out {out}" in report
        if study.figure:
            assert (out / name / f"{study.figure}.png").is_file()
        else:
            assert "| accuracy (%) |" in report or (study.grid and "| d = 512 |" in report)
    table2 = json.loads((out / "table2" / "results.json").read_text())
    chosen = {(c["fold"], c["tau_star"]) for c in table2["tau_star"]["chosen"]}
    assert table2["tau_star"]["paper"] == 0.45 and "(Table II)" in (out / "table2" / "report.md").read_text()
    # table3 took each fold's nested τ*, so its S-Dual-Triplet runs are table2's runs.
    table3 = json.loads((out / "table3" / "results.json").read_text())
    assert {(t["fold"], t["tau_star"]) for t in table3["tau_star"]} == chosen
    assert all("nested" in t["source"] for t in table3["tau_star"])
    dual = next(r for r in table3["rows"] if r["preset"] == "s-dual-triplet")
    assert set(dual["runs"]) <= {f"runs/s-dual-triplet,tau_star={t:g}" for _, t in chosen}
    # Every (cell, fold) was trained once: one result per run folder, none twice.
    results = sorted(out.glob("runs/*/seed-0/fold-0*/result.json"))
    assert len({p.parent for p in results}) == len(results)
    fig6 = json.loads((out / "fig6" / "results.json").read_text())
    assert all(v is not None for curves in fig6["curves"].values() for run in curves["train_incomplete"] for v in run)

    # Resuming: nothing is retrained, the reports are rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(["study", "table3", "--demo", "--quick", "--quiet", "--out", str(out), "--dataset", "ck+"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == stamps


def test_common_settings_layers(tmp_path):
    from muldml.cli import build_parser
    from muldml.studies.cli import common_settings

    def settings(*extra):
        return common_settings(build_parser().parse_args(["study", "table3", "--out", str(tmp_path), *extra]))

    paper = ["--config", str(Path(__file__).resolve().parents[2] / "configs" / "paper-ckplus.yaml")]
    assert settings("--data", "x", *paper)["crop"] == 224 and settings("--data", "x", *paper)["lr"] == 5e-6
    quick = settings("--demo", "--quick", *paper)  # the paper's 224 crop would not fit 24-px images
    assert quick["image_size"] == 24 and "crop" not in quick and quick["epochs"] == 1 and quick["tau_star"] == 0.45
    assert settings("--data", "x", *paper, "--image-size", "48", "--crop", "40")["crop"] == 40
    assert settings("--demo", "--quick", "--epochs", "3")["epochs"] == 3  # the command line comes last


def test_unwritable_study_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["study", "table3", "--demo", "--quick", "--quiet", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0]


def test_a_cell_trained_with_other_runtime_options_is_not_reused(tmp_path, capsys):
    """A study cell's folder records the runtime options that change learning: rerunning with
    --grad-cache refuses in one line instead of mixing runs trained differently."""
    args = ["study", "fig9", "--demo", "--quick", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--grad-cache", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grad_cache None → 4" in err[0] and "--overwrite" in err[0]


def test_study_report_gives_each_model_the_mean_merged_retrieval_of_its_runs(tmp_path):
    out = tmp_path / "studies"
    assert main(["study", "fig9", "--demo", "--quick", "--quiet", "--out", str(out)]) == 0
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/seed-0/fold-0*/result.json"))]
    assert len(runs) == 2 and all(0 <= r["retrieval"]["precision_at_1"] <= 1 for r in runs)
    (row,) = json.loads((out / "fig9" / "results.json").read_text())["rows"]
    assert row["precision_at_1_mean"] == pytest.approx(100 * sum(r["retrieval"]["precision_at_1"] for r in runs) / 2)
    assert row["map_at_r_mean"] == pytest.approx(100 * sum(r["retrieval"]["map_at_r"] for r in runs) / 2)
    report = (out / "fig9" / "report.md").read_text()
    assert "| model | Precision@1 (%) | MAP@R (%) | runs |" in report
    assert f"| Mul-DML | {row['precision_at_1_mean']:.2f} | {row['map_at_r_mean']:.2f} | 2 of 2 |" in report


@pytest.mark.parametrize("where", ["data is out", "demo"])
def test_a_rerun_never_reads_the_study_folder_as_data(tmp_path, capsys, where):
    """The second run scans the same images as the first, though the first wrote run folders,
    plots and reports where the data is read from."""
    from muldml.data.synthetic import write_demo_dataset

    faces = tmp_path / "faces"
    if where == "demo":
        args = ["--demo", "--out", str(faces)]
    else:
        write_demo_dataset(faces, num_subjects=8, images_per_expression=1, size=24, seed=0, progress=False)
        for listing in ("manifest.csv", "demo.json"):  # a plain <class>/<image> folder: every image found is read
            (faces / listing).unlink()
        args = ["--data", str(faces), "--out", str(faces), "--subject-regex", r"^(S\d+)_"]
    counts = []
    for _ in range(2):
        assert main(["study", "fig9", "--quick", "--quiet", *args]) == 0
        counts.append(next(line for line in capsys.readouterr().out.splitlines() if " classes;" in line))
    assert counts[0].startswith("56 images, 7 classes;") and counts[1] == counts[0]

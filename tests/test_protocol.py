"""One split policy: train, cv, study and the demo draw their splits from muldml.protocol,
so the same data and seed give the same folds and hold-outs in every command."""
import json

from fixtures import make_image_folder

from muldml.cli import main
from muldml.data.folder import scan_folder
from muldml.protocol import holdout, make_protocol, train_val_split

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--lr", "0.001", "--slice-dim", "8",
         "--tau-min", "0.25", "--tau-max", "0.45", "--quiet", "--num-workers", "0", "--subject-regex", r"^(S\d+)_"]


def subjects(path):
    return json.loads(path.read_text())


def test_same_data_and_seed_give_the_same_folds_in_train_cv_and_study(tmp_path, monkeypatch, capsys):
    data = make_image_folder(tmp_path / "faces", subjects=6, per_subject=1)
    # cv --seed 1: its folds, recorded in each fold's split.json.
    assert main(["cv", "--data", str(data), "--folds", "2", "--seed", "1", "--out", str(tmp_path / "cv"), *SMALL]) == 0
    cv_tests = [set(subjects(tmp_path / "cv" / f / "split.json")["test"]["subjects"]) for f in ("fold-01", "fold-02")]
    assert cv_tests[0] and not cv_tests[0] & cv_tests[1]
    # study --seed 1 (training skipped: only its protocol is looked at).
    import muldml.studies.runner as runner

    seen = {}

    def capture(ctx, study):
        seen["folds"] = [{s.subject for s in fold.test} for fold in ctx.protocol.folds]
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_study", capture)
    try:
        main(["study", "table3", "--data", str(data), "--folds", "2", "--seed", "1", "--out", str(tmp_path / "st"),
              "--subject-regex", r"^(S\d+)_", "--quiet"])
    except SystemExit:
        pass
    assert seen["folds"] == cv_tests
    # train --seed 1 with a hold-out of half the subjects: its validation subjects are cv's first test fold.
    assert main(["train", "--data", str(data), "--val-fraction", "0.5", "--seed", "1", "--out", str(tmp_path / "t"),
                 *SMALL]) == 0
    assert set(subjects(tmp_path / "t" / "split.json")["val"]["subjects"]) == cv_tests[0]


def test_the_policy_functions_agree(tmp_path):
    data = make_image_folder(tmp_path / "faces", subjects=10, per_subject=1)
    samples, _ = scan_folder(data, subject_regex=r"^(S\d+)_")
    for seed in (0, 3):
        folds = make_protocol(samples, 5, use_split=False, val_fraction=0.2, seed=seed).folds
        train, val = holdout(samples, 0.2, seed)
        assert {s.subject for s in val} == {s.subject for s in folds[0].test}
        assert train_val_split(samples, 0.2, seed)[:2] == (train, val)

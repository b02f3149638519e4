import json

from fixtures import make_image_folder

from muldml.cli import main

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--lr", "0.001", "--slice-dim", "8",
         "--tau-min", "0.25", "--tau-max", "0.45", "--quiet", "--num-workers", "0"]


def with_rotations(root):
    """Add a manifest that lists, beside each image, a 'rotated' copy (rotation 5)."""
    rows = ["path,label,subject,split,source,rotation"]
    for f in sorted(root.rglob("*.png")):
        rel = f.relative_to(root).as_posix()
        subject = f.name.split("_")[0]
        rows.append(f"{rel},{f.parent.name},{subject},,{rel},0")
        rows.append(f"{rel},{f.parent.name},{subject},,{rel},5")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_cv_end_to_end_and_resume(tmp_path, capsys):
    data = with_rotations(make_image_folder(tmp_path / "faces", subjects=6, per_subject=1))
    out = tmp_path / "cv"
    assert main(["cv", "--data", str(data), "--preset", "mul-dml", "--folds", "3", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "cv.json").read_text())
    assert len(summary["fold_accuracies"]) == 3
    # Every original is tested exactly once; rotated copies never are.
    assert sum(map(sum, summary["confusion"])) == 18
    assert abs(summary["accuracy_mean"] - sum(summary["fold_accuracies"]) / 3) < 1e-12
    assert (out / "confusion.png").is_file() and "3-fold" in (out / "report.md").read_text()
    for k in (1, 2, 3):
        assert (out / f"fold-{k:02d}" / "report.md").is_file()
    assert "accuracy" in capsys.readouterr().out
    # A rerun resumes: finished folds are not trained again.
    mtime = (out / "fold-01" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["cv", "--data", str(data), "--preset", "mul-dml", "--folds", "3", "--out", str(out), *SMALL]) == 0
    assert (out / "fold-01" / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_cv_needs_enough_subjects(tmp_path, capsys):
    data = make_image_folder(tmp_path / "faces", subjects=2, per_subject=1)
    assert main(["cv", "--data", str(data), "--folds", "10", "--out", str(tmp_path / "cv"),
                 "--subject-regex", r"^(S\d+)_", *SMALL]) == 2
    assert "2 subjects cannot make 10 subject-independent folds" in capsys.readouterr().err


def test_fold_curves_use_held_out_training_subjects_not_the_test_fold(tmp_path, monkeypatch):
    import muldml.cv

    seen = []
    real_fit = muldml.cv.fit

    def recording_fit(cfg, train, val, out, *args, **kwargs):
        seen.append((train, val))
        return real_fit(cfg, train, val, out, *args, **kwargs)

    monkeypatch.setattr(muldml.cv, "fit", recording_fit)
    data = make_image_folder(tmp_path / "faces", subjects=6, per_subject=1)
    out = tmp_path / "cv"
    assert main(["cv", "--data", str(data), "--folds", "3", "--out", str(out), "--subject-regex", r"^(S\d+)_",
                 *SMALL]) == 0
    tested = [json.loads((out / f"fold-{k:02d}" / "metrics.json").read_text()) for k in (1, 2, 3)]
    assert len(seen) == 3
    all_subjects = set()
    for (train, val), metrics in zip(seen, tested):
        train_subjects, val_subjects = {s.subject for s in train}, {s.subject for s in val}
        assert val and not train_subjects & val_subjects
        all_subjects |= train_subjects | val_subjects
        # The test fold is what remains: its images are neither trained on nor validated on.
        tested_images = sum(map(sum, metrics["confusion"]))
        assert tested_images == 18 - len(train) - len(val)
    assert len(all_subjects) == 6


def test_cv_never_reuses_folds_of_other_settings(tmp_path, capsys):
    data = make_image_folder(tmp_path / "faces", subjects=4, per_subject=1)
    out = tmp_path / "cv"
    args = ["cv", "--data", str(data), "--folds", "2", "--out", str(out), "--subject-regex", r"^(S\d+)_", *SMALL]
    assert main([*args, "--preset", "cnn"]) == 0
    capsys.readouterr()
    # Another preset into the same folder: refused in one line naming the difference.
    assert main([*args, "--preset", "s-dual-triplet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preset 'cnn' → 's-dual-triplet'" in err[0] and "--overwrite" in err[0]
    # Another seed gives other folds: other training images, named too.
    assert main([*args, "--preset", "cnn", "--seed", "1"]) == 2
    assert "seed 0 → 1" in capsys.readouterr().err
    # --overwrite retrains every fold with the requested settings.
    assert main([*args, "--preset", "s-dual-triplet", "--overwrite"]) == 0
    for fold in ("fold-01", "fold-02"):
        result = json.loads((out / fold / "result.json").read_text())
        assert result["settings"]["preset"] == "s-dual-triplet" and result["epochs"] == 1

import json

import pytest
import torch
from fixtures import make_image_folder

from muldml.cli import main

SMALL = ["--epochs", "2", "--batch-size", "8", "--image-size", "32", "--lr", "0.001", "--slice-dim", "8",
         "--tau-min", "0.25", "--tau-max", "0.45", "--quiet", "--num-workers", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli") / "faces", subjects=4, per_subject=2)


def test_train_then_evaluate(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "mul-dml", "--data", str(data), "--out", str(run),
                 "--subject-regex", r"^(S\d+)_", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "margins [0.25, 0.35, 0.45]" in out and "validation accuracy" in out
    for name in ("checkpoint.pt", "history.csv", "report.md", "confusion.png", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    # result.json is the last file the run writes.
    files = [p for p in run.iterdir() if p.is_file()]
    assert max(files, key=lambda p: p.stat().st_mtime_ns).name == "result.json"
    # The run recorded its split: evaluate scores the held-out subjects, never the training images silently.
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]["subjects"]) == 3 and len(split["val"]["subjects"]) == 1
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--quiet"]) == 0
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["num_samples"] == 6 and metrics["classes"] == ["anger", "happiness", "surprise"]
    assert "did not train on (18 training images" in capsys.readouterr().out
    # Every image, asked for explicitly: a warning names the overlap, in the console and the report.
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--split", "all", "--quiet"]) == 0
    assert "18 of the 24 scored images trained this run" in capsys.readouterr().err
    assert "18 of the 24 scored images trained this run" in (run / "evaluation" / "report.md").read_text()
    assert json.loads((run / "result.json").read_text())["settings"]["preset"] == "mul-dml"


def test_evaluate_defaults_to_the_test_split_of_a_manifest(tmp_path, capsys):
    root = make_image_folder(tmp_path / "faces", subjects=6, per_subject=1)
    rows = ["path,label,subject,split,status"]
    for f in sorted(root.rglob("*.png")):
        subject = int(f.name[1:4])
        part = "train" if subject < 4 else "val" if subject == 4 else "test"
        # An empty status cell means ok: these rows are read, not dropped.
        rows.append(f"{f.relative_to(root).as_posix()},{f.parent.name},S{subject},{part},{'ok' if subject else ''}")
    rows.append("missing.png,anger,S9,train,skipped")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(run), *SMALL]) == 0
    assert "1 of 19 row(s) left out (1 with status 'skipped')" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "on 3 images, split 'test' of the manifest" in out
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]["images"]) == 12 and len(split["val"]["images"]) == 3
    assert len(split["test"]["images"]) == 3


def test_config_file_then_command_line_overrides(data, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"preset": "mul-dml-same", "tau_star": 0.65, "epochs": 5}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.json"), "--data", str(data), "--out", str(run),
                 "--subject-regex", r"^(S\d+)_", *SMALL, "--epochs", "1"]) == 0
    cfg = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert cfg["preset"] == "mul-dml-same" and cfg["tau_star"] == 0.65 and cfg["epochs"] == 1


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["demo"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "usage: muldml" in capsys.readouterr().out


def test_bad_input_one_line_and_exit_2(data, tmp_path, capsys):
    cases = [
        (["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], "data folder not found"),
        (["train", "--data", str(data), "--out", str(tmp_path / "r"), "--tau-step", "0.25"], "whole number"),
        (["evaluate", "--checkpoint", str(tmp_path / "r"), "--data", str(data)], "checkpoint not found"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], "no images found"))
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    cases.append((["evaluate", "--checkpoint", str(tmp_path / "trunc"), "--data", str(data)], "unreadable"))
    # Settings outside their range or choices: one line from the one validation.
    run = ["train", "--data", str(data), "--out", str(tmp_path / "r")]
    cases += [
        ([*run, "--tau-star", "-0.1"], "tau_star must be in [0, ∞)"),
        ([*run, "--backend", "nope"], "backend must be one of auto, torch, triton, reference"),
        ([*run, "--dropout", "1.5"], "dropout must be in [0, 1)"),
        ([*run, "--pk-samples", "0"], "pk_samples must be in [2, ∞)"),
        ([*run, "--sampler", "pk", "--batch-size", "10"], "batch_size = P·pk_samples"),
        ([*run, "--num-workers", "-1"], "num_workers must be in [0, ∞)"),
        ([*run, "--device", "tpu7"], "device"),
        ([*run, "--amp", "fp16", "--device", "cpu", "--subject-regex", r"^(S\d+)_"], "--amp fp16 needs a CUDA device"),
        ([*run, "--amp", "fp8"], "amp must be one of auto, bf16, fp16, off"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("muldml: error:") and message in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "nope", "--data", str(data), "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def with_split(root, splits):
    """A manifest giving each subject an official split (S000 → splits[0], …)."""
    rows = ["path,label,subject,split"]
    for f in sorted(root.rglob("*.png")):
        subject = int(f.name[1:4])
        rows.append(f"{f.relative_to(root).as_posix()},{f.parent.name},S{subject},{splits[subject]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_official_split_validates_on_val_only_and_test_is_evaluated_apart(tmp_path, capsys):
    data = with_split(make_image_folder(tmp_path / "faces", subjects=4, per_subject=1),
                      ["train", "train", "val", "test"])
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    assert "6 training / 3 validation images" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["num_samples"] == 3  # val only, not val ∪ test
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--split", "test", "--quiet",
                 "--out", str(tmp_path / "test")]) == 0
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["num_samples"] == 3


def test_train_refuses_an_existing_run_unless_resume_or_overwrite(data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--subject-regex", r"^(S\d+)_", *SMALL, "--epochs", "1"]
    assert main(argv) == 0
    before = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and len(err.splitlines()) == 1
    assert (run / "checkpoint.pt").read_bytes() == before
    assert main([*argv, "--overwrite", "--seed", "5"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["seed"] == 5


def test_images_without_subject_need_an_explicit_image_level_split(data, tmp_path, capsys):
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), *SMALL, "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--subject-regex" in err and "--image-level-split" in err and len(err.splitlines()) == 1
    assert main([*argv, "--image-level-split"]) == 0
    assert "Image-level split" in capsys.readouterr().out
    assert "Image-level split" in (tmp_path / "run" / "report.md").read_text()


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """Any command whose output cannot be written says so in one line (here prepare and
    evaluate, which write into --out / OUT without a check of their own)."""
    from PIL import Image

    (tmp_path / "src" / "anger").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "src" / "anger" / "S001_a.png")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["prepare", str(tmp_path / "src"), str(blocker / "out"), "--dataset", "folder", "--no-detect",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0]


def test_evaluate_never_reads_its_own_output_folder(tmp_path, capsys):
    """evaluate --out inside --data, twice: the second run must not take the first run's
    report images for a class folder."""
    from inference_fixtures import tiny_checkpoint

    faces = make_image_folder(tmp_path / "faces", subjects=2, per_subject=1)
    run = tiny_checkpoint(tmp_path / "run")
    command = ["evaluate", "--checkpoint", str(run), "--data", str(faces), "--out", str(faces / "eval"), "--split", "all",
               "--num-workers", "0", "--device", "cpu", "--quiet"]
    for _ in range(2):
        assert main(command) == 0, capsys.readouterr().err
        assert "on 6 images" in capsys.readouterr().out
    assert any(p.suffix == ".png" for p in (faces / "eval").iterdir())


def test_resume_reads_its_settings_from_the_run(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--subject-regex", r"^(S\d+)_", *SMALL,
                 "--epochs", "1", "--grad-cache", "4", "--scheduler", "cosine"]) == 0
    capsys.readouterr()
    # `--resume` alone continues with the recorded data, settings and runtime options; a
    # changed setting is named with its old and new values.
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"resume {run}: epochs 1 → 2" in out and "epoch 2/2" in out
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["scheduler"] == "cosine" and state["fingerprint"]["grad_cache"] == 4
    # A setting that changes what is learnt is refused, with both values.
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5"]) == 2
    assert "lr 0.001 → 0.5" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_quiet_prints_one_line_per_epoch_and_help_names_choices_and_defaults(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "q"), "--subject-regex", r"^(S\d+)_",
                 *SMALL, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "mul-dml epoch 1/2: train ce" in out and "mul-dml epoch 2/2: train ce" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one of tf32, tf32x3, bf16 (default tf32)" in text and "one of constant, cosine (default constant)" in text
    assert "--sync-bn" in text and "(default 5e-06)" in text


def test_training_without_init_warns_about_fine_tuning_defaults(data, tmp_path, capsys):
    args = ["train", "--data", str(data), "--subject-regex", r"^(S\d+)_", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--slice-dim", "8", "--tau-min", "0.25", "--tau-max", "0.45", "--quiet",
            "--num-workers", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert out.count("no --init, so this trains from scratch with the paper's fine-tuning settings") == 1
    assert main([*args, "--out", str(tmp_path / "b"), "--lr", "0.001"]) == 0
    assert "no --init" not in capsys.readouterr().out


def test_train_with_cross_batch_memory_on_demo_faces(tmp_path, capsys):
    """--xbm-size / --xbm-start-epoch and the same keys in a config file; the queue is saved."""
    from muldml.data.synthetic import write_demo_dataset

    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    (tmp_path / "c.json").write_text(json.dumps({"xbm_size": 16, "xbm_start_epoch": 1}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.json"), "--data", str(data), "--out", str(run), *SMALL,
                 "--xbm-size", "20"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["config"]["xbm_size"] == 20 and state["config"]["xbm_start_epoch"] == 1
    assert state["loss"]["memory_embeddings"].shape == (20, 3 * 8) and int(state["loss"]["memory_seen"]) >= 20
    capsys.readouterr()
    for argv, message in [(["--xbm-size", "-1"], "xbm_size must be in [0,"),
                          (["--xbm-size", "8", "--preset", "cnn"], "xbm_size needs the triplet loss")]:
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("muldml: error:") and message in err and len(err.splitlines()) == 1, err

import csv

import pytest
import torch
from fixtures import make_image_folder

from muldml.config import Runtime, preset_config
from muldml.data.augment import eval_transform
from muldml.data.folder import FaceDataset, scan_folder
from muldml.data.splits import subject_holdout
from muldml.errors import UserError
from muldml.training.run import THROUGHPUT_COLUMNS
from muldml.training import CHECKPOINT, HISTORY, build_triplet_loss, fit, load_checkpoint, model_from_checkpoint

SMALL = dict(tau_min=0.15, tau_max=0.35, tau_step=0.1, slice_dim=8, batch_size=8, epochs=3, image_size=32,
             lr=1e-3, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "faces", subjects=4, per_subject=2)
    samples, classes = scan_folder(root, subject_regex=r"^(S\d+)_")
    train_idx, val_idx = subject_holdout(samples, 0.25, seed=0)
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx], classes


def train(cfg, train_s, val_s, out, **kw):
    return fit(cfg, train_s, val_s, out, Runtime(device="cpu", num_workers=0), **kw)


def learning(history):
    """History without the columns that measure the machine (speed, memory)."""
    return [{k: v for k, v in row.items() if k not in THROUGHPUT_COLUMNS} for row in history]


def config(preset="mul-dml", **kw):
    cfg = preset_config(preset, **(SMALL | kw))
    cfg.classes = ["anger", "happiness", "surprise"]
    return cfg


def test_history_logs_every_slice_and_checkpoint_is_complete(dataset, tmp_path):
    train_s, val_s, _ = dataset
    state = train(config(), train_s, val_s, tmp_path, progress=False)
    assert state["epoch"] == 3
    rows = list(csv.DictReader(open(tmp_path / HISTORY)))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for split in ("train", "val"):
        for i in range(3):
            assert 0 <= float(rows[-1][f"{split}_active_{i}"]) <= 1
    for i in range(3):  # the first epoch starts from random weights: margins are violated
        assert float(rows[0][f"train_triplet_{i}"]) > 0 and float(rows[0][f"train_active_{i}"]) > 0
        assert 0 <= float(rows[-1][f"{split}_acc"]) <= 1
    # The logged validation triplet losses are those of the saved model on the val images.
    model, cfg = model_from_checkpoint(state)
    images, labels = next(iter(torch.utils.data.DataLoader(
        FaceDataset(val_s, eval_transform(cfg.image_size)), batch_size=len(val_s))))
    loss = build_triplet_loss(cfg)
    with torch.no_grad():
        loss(model.eval()(images).embedding, labels)
    for i, expected in enumerate(loss.last_output.slice_losses.tolist()):
        assert float(rows[-1][f"val_triplet_{i}"]) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    saved = load_checkpoint(tmp_path)
    assert {"model", "optimizer", "schedule", "rng", "epoch", "config", "history"} <= set(saved)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_interruption_gives_identical_weights(dataset, tmp_path, monkeypatch):
    train_s, val_s, _ = dataset
    whole = train(config(scheduler="cosine"), train_s, val_s, tmp_path / "whole", progress=False)
    first = train(config(scheduler="cosine"), train_s, val_s, tmp_path / "cut", progress=False, stop_after=1)
    assert first["epoch"] == 1
    # Resumed with loader workers: each image is augmented from its own seed, so workers draw the same.
    second = fit(config(scheduler="cosine"), train_s, val_s, tmp_path / "cut", Runtime(device="cpu", num_workers=2),
                 resume=True, progress=False, stop_after=2)
    assert second["epoch"] == 2
    # An elastic restart (torchrun starts the command again, without --resume) resumes too.
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    resumed = train(config(scheduler="cosine"), train_s, val_s, tmp_path / "cut", progress=False)
    assert resumed["epoch"] == 3
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert learning(whole["history"]) == learning(resumed["history"])


def test_fp16_needs_cuda():
    from muldml.training.run import precision_for

    with pytest.raises(UserError, match="--amp fp16 needs a CUDA device"):
        precision_for("fp16", torch.device("cpu"))
    assert precision_for("auto", torch.device("cpu")).dtype is None
    assert precision_for("auto", torch.device("cuda")).dtype == torch.bfloat16


def test_softmax_only_and_multitask_presets_train(dataset, tmp_path):
    train_s, val_s, _ = dataset
    cnn = train(config("cnn", epochs=1), train_s, val_s, tmp_path / "cnn", progress=False)
    assert "train_triplet_0" not in cnn["history"][0] and "val_acc" in cnn["history"][0]
    # Multitask logits (N, B, C) through gradient caching, with NHWC images.
    multi = fit(config("mul-dml-multask-same", epochs=1, num_slices=2), train_s, val_s, tmp_path / "m",
                Runtime(device="cpu", num_workers=0, grad_cache=3, channels_last=True), progress=False)
    assert "train_triplet_1" in multi["history"][0] and "train_triplet_2" not in multi["history"][0]


def test_bad_runs_name_the_problem(dataset, tmp_path):
    train_s, val_s, _ = dataset
    no_surprise = [s for s in train_s if s.label != 2]
    with pytest.raises(UserError, match="no training samples: surprise"):
        train(config(), no_surprise, val_s, tmp_path / "a", progress=False)
    train(config(epochs=1), train_s, val_s, tmp_path / "b", progress=False)
    with pytest.raises(UserError, match="other settings \\(preset 'mul-dml' → 'cnn'"):
        train(config("cnn", epochs=1), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(UserError, match="other settings \\(lr 0.001 → 0.5\\); use --overwrite"):
        train(config(lr=0.5), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    # Runtime options that change what is learnt are part of the run's settings too.
    with pytest.raises(UserError, match="grad_cache None → 4"):
        fit(config(), train_s, val_s, tmp_path / "b", Runtime(device="cpu", num_workers=0, grad_cache=4), resume=True,
            progress=False)
    with pytest.raises(UserError, match="mining_precision 'tf32' → 'bf16'"):
        train(config(mining_precision="bf16"), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    data = (tmp_path / "b" / CHECKPOINT).read_bytes()
    (tmp_path / "b" / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable"):
        train(config(), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        train(config(), train_s, val_s, blocker / "run", progress=False)


def test_existing_run_folder_is_not_overwritten(dataset, tmp_path):
    train_s, val_s, _ = dataset
    first = train(config(epochs=1), train_s, val_s, tmp_path, progress=False)
    with pytest.raises(UserError, match="already holds a run.*--resume.*--overwrite"):
        train(config(epochs=1), train_s, val_s, tmp_path, progress=False)
    with pytest.raises(UserError, match="other settings \\(seed 3 → 4\\)"):
        train(config(epochs=1, seed=4), train_s, val_s, tmp_path, progress=False)
    assert torch.equal(load_checkpoint(tmp_path)["model"]["embedding.weight"], first["model"]["embedding.weight"])
    replaced = train(config(epochs=1, seed=4), train_s, val_s, tmp_path, overwrite=True, progress=False)
    assert load_checkpoint(tmp_path)["config"]["seed"] == 4 and replaced["epoch"] == 1


def test_resume_with_more_epochs_keeps_the_cosine_schedule_falling(dataset, tmp_path):
    train_s, val_s, _ = dataset
    train(config(epochs=2, scheduler="cosine"), train_s, [], tmp_path, progress=False)
    state = train(config(epochs=4, scheduler="cosine"), train_s, [], tmp_path, resume=True, progress=False)
    lrs = [row["lr"] for row in state["history"]]
    # Epochs 1-2 as planned for 2 epochs; then from the last rate down towards 0 at epoch 4.
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    # Shortening re-plans as well: 4 → 3 epochs after 2 ends at a rate below the last one.
    train(config(epochs=4, scheduler="cosine"), train_s, [], tmp_path / "s", stop_after=2, progress=False)
    short = train(config(epochs=3, scheduler="cosine"), train_s, [], tmp_path / "s", resume=True, progress=False)
    lrs = [row["lr"] for row in short["history"]]
    assert len(lrs) == 3 and all(b <= a for a, b in zip(lrs, lrs[1:]))



def test_one_class_is_refused(dataset, tmp_path):
    train_s, val_s, _ = dataset
    cfg = config()
    cfg.classes = ["anger"]
    only = [s for s in train_s if s.label == 0]
    with pytest.raises(UserError, match="1 class\\(es\\) \\(anger\\): triplets and classification need at least two"):
        train(cfg, only, [s for s in val_s if s.label == 0], tmp_path, progress=False)


def test_run_folder_records_settings_and_split(dataset, tmp_path):
    import json

    train_s, val_s, _ = dataset
    fit(config(epochs=1), train_s, val_s, tmp_path, Runtime(device="cpu", num_workers=0, grad_cache=4), progress=False,
        split_policy="hold-out")
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["grad_cache"] == 4 and settings["amp"] == "off" and settings["world_size"] == "any"
    assert settings["batchnorm_statistics"] == "global batch"
    assert settings["global_batch"] == 8 and settings["mining_precision"] == "tf32"
    assert settings["training_images"].startswith(f"{len(train_s)} images")
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["policy"] == "hold-out" and len(split["train"]["images"]) == len(train_s)
    assert set(split["val"]["subjects"]) == {s.subject for s in val_s}


def test_resume_is_exact_with_the_default_loader_workers(dataset, tmp_path):
    """Default Runtime: min(8, CPUs) persistent workers (2 here, as in CI)."""
    train_s, val_s, _ = dataset
    runtime = Runtime(device="cpu")
    assert runtime.workers >= 2
    whole = fit(config(epochs=2), train_s, val_s, tmp_path / "whole", runtime, progress=False)
    fit(config(epochs=2), train_s, val_s, tmp_path / "cut", runtime, progress=False, stop_after=1)
    resumed = fit(config(epochs=2), train_s, val_s, tmp_path / "cut", runtime, resume=True, progress=False)
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_fp16_grad_scaler_resumes_exactly(dataset, tmp_path, monkeypatch):
    """The GradScaler's scale and growth tracker are in the checkpoint. fp16 autocast runs on
    the CPU here (the command line refuses it there; CUDA is where users run it)."""
    from muldml.training import run
    from muldml.training.loop import Precision

    # growth_interval 1: the scale doubles every finite step and halves on overflow, so it moves every step.
    monkeypatch.setattr(run, "precision_for", lambda amp, device: Precision(
        torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)))
    train_s, val_s, _ = dataset
    whole = train(config(epochs=2), train_s, val_s, tmp_path / "whole", progress=False)
    train(config(epochs=2), train_s, val_s, tmp_path / "cut", progress=False, stop_after=1)
    resumed = train(config(epochs=2), train_s, val_s, tmp_path / "cut", resume=True, progress=False)
    assert whole["scaler"]["scale"] == resumed["scaler"]["scale"] != 2.0**10
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_the_trainer_passes_the_mining_precision_to_the_loss():
    for precision in ("tf32", "tf32x3", "bf16"):
        assert build_triplet_loss(config(mining_precision=precision)).precision == precision
    with pytest.raises(UserError, match="mining_precision must be one of tf32, tf32x3, bf16; got 'fp8'"):
        config(mining_precision="fp8")


def test_cross_batch_memory_warms_up_then_mines_and_resumes_exactly(dataset, tmp_path):
    """xbm_start_epoch = 1: the first epoch trains as without memory (the queue fills), later
    ones mine the queue; the queue is in the checkpoint, so an interrupted run resumes to
    the same weights."""
    train_s, val_s, _ = dataset
    xbm = dict(xbm_size=12, xbm_start_epoch=1)
    plain = train(config(epochs=2), train_s, val_s, tmp_path / "plain", progress=False)
    whole = train(config(**xbm), train_s, val_s, tmp_path / "whole", progress=False)
    assert learning(plain["history"])[0] == learning(whole["history"])[0]  # warm-up: memory not mined
    assert learning(plain["history"])[1] != learning(whole["history"])[1]  # then it is
    queue = whole["loss"]  # 3 epochs of full batches of 8 (the last, partial one is dropped)
    assert int(queue["memory_seen"]) == 3 * (len(train_s) // 8) * 8 and queue["memory_embeddings"].shape == (12, 3 * 8)
    train(config(**xbm), train_s, val_s, tmp_path / "cut", progress=False, stop_after=1)
    resumed = train(config(**xbm), train_s, val_s, tmp_path / "cut", progress=False, resume=True)
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    for name, tensor in queue.items():
        assert torch.equal(tensor, resumed["loss"][name]), name
    with pytest.raises(UserError, match="xbm_size needs the triplet loss"):
        config("cnn", xbm_size=8)

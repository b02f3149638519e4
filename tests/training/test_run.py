import csv

import pytest
import torch
from fixtures import make_image_folder

from muldml.config import preset_config
from muldml.data.folder import scan_folder
from muldml.data.splits import subject_holdout
from muldml.errors import UserError
from muldml.config import Runtime
from muldml.training import CHECKPOINT, HISTORY, fit, load_checkpoint

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
            assert float(rows[0][f"{split}_triplet_{i}"]) >= 0
        assert 0 <= float(rows[-1][f"{split}_acc"]) <= 1
    saved = load_checkpoint(tmp_path)
    assert {"model", "optimizer", "schedule", "rng", "epoch", "config", "history"} <= set(saved)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_interruption_gives_identical_weights(dataset, tmp_path):
    train_s, val_s, _ = dataset
    whole = train(config(), train_s, val_s, tmp_path / "whole", progress=False)
    first = train(config(), train_s, val_s, tmp_path / "cut", progress=False, stop_after=1)
    assert first["epoch"] == 1
    resumed = train(config(), train_s, val_s, tmp_path / "cut", resume=True, progress=False)
    assert resumed["epoch"] == 3
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert whole["history"] == resumed["history"]


def test_softmax_only_and_multitask_presets_train(dataset, tmp_path):
    train_s, val_s, _ = dataset
    cnn = train(config("cnn", epochs=1), train_s, val_s, tmp_path / "cnn", progress=False)
    assert "train_triplet_0" not in cnn["history"][0] and "val_acc" in cnn["history"][0]
    multi = train(config("mul-dml-multask-same", epochs=1, num_slices=2), train_s, val_s, tmp_path / "m", progress=False)
    assert "train_triplet_1" in multi["history"][0] and "train_triplet_2" not in multi["history"][0]


def test_bad_runs_name_the_problem(dataset, tmp_path):
    train_s, val_s, _ = dataset
    no_surprise = [s for s in train_s if s.label != 2]
    with pytest.raises(UserError, match="no training samples: surprise"):
        train(config(), no_surprise, val_s, tmp_path / "a", progress=False)
    train(config(epochs=1), train_s, val_s, tmp_path / "b", progress=False)
    with pytest.raises(UserError, match="trained with preset 'mul-dml', not 'cnn'"):
        train(config("cnn", epochs=1), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(UserError, match="settings differ"):
        train(config(lr=0.5), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    data = (tmp_path / "b" / CHECKPOINT).read_bytes()
    (tmp_path / "b" / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable"):
        train(config(), train_s, val_s, tmp_path / "b", resume=True, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        train(config(), train_s, val_s, blocker / "run", progress=False)

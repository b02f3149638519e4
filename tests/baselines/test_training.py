"""The baseline presets train through the one fit(): their loss's own parameters (HIST) are
optimised, saved in the checkpoint and restored on resume."""
import pytest
import torch

from muldml.config import Runtime, preset_config
from muldml.data.folder import scan_folder
from muldml.data.synthetic import write_demo_dataset
from muldml.errors import UserError
from muldml.training import fit, load_checkpoint

SETTINGS = dict(epochs=2, image_size=24, batch_size=16, lr=1e-3)
IN_PROCESS = Runtime(num_workers=0)  # the exact-resume guarantee is checked in one process


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    data = write_demo_dataset(tmp_path_factory.mktemp("faces"), num_subjects=3, images_per_expression=1, size=24,
                              seed=0, progress=False)
    samples, classes = scan_folder(data)
    return samples, classes


def _cfg(preset, classes, **extra):
    cfg = preset_config(preset, **SETTINGS, **extra)
    cfg.classes = list(classes)
    return cfg


def test_hist_parameters_train_and_resume_exactly(faces, tmp_path):
    samples, classes = faces
    cfg = _cfg("hist", classes)
    whole = fit(cfg, samples, [], tmp_path / "whole", IN_PROCESS, progress=False)
    fit(cfg, samples, [], tmp_path / "halves", IN_PROCESS, progress=False, stop_after=1)
    first = load_checkpoint(tmp_path / "halves")
    halves = fit(cfg, samples, [], tmp_path / "halves", IN_PROCESS, resume=True, progress=False)
    assert set(whole["loss"]) == {"raw_means", "raw_log_vars", "raw_w1", "raw_b1", "raw_w2", "raw_b2"}
    for key, value in whole["loss"].items():
        assert not torch.equal(value, first["loss"][key]) or key == "raw_log_vars"  # they move
        torch.testing.assert_close(halves["loss"][key], value, rtol=0, atol=0)
    for key, value in whole["model"].items():
        torch.testing.assert_close(halves["model"][key], value, rtol=0, atol=0)


def test_circle_trains_without_loss_state(faces, tmp_path):
    samples, classes = faces
    state = fit(_cfg("circle", classes), samples, [], tmp_path / "circle", IN_PROCESS, progress=False)
    assert "loss" not in state and state["config"]["metric_loss"] == "circle"
    assert state["config"]["circle_m"] == 0.4 and state["config"]["circle_gamma"] == 80.0


def test_a_baseline_loss_excludes_margins():
    with pytest.raises(UserError, match="margin_mode must be none"):
        preset_config("hist", margin_mode="star")
    with pytest.raises(UserError, match="metric_loss"):
        preset_config("mul-dml", metric_loss="arcface")

import random

import numpy as np
import pytest
import torch
from fixtures import make_image_folder

from muldml.cli import main
from muldml.errors import UserError
from muldml.training import load_checkpoint
from muldml.training.checkpoint import lr_factor, rng_state, set_rng_state

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--lr", "0.001", "--slice-dim", "8",
         "--tau-min", "0.25", "--tau-max", "0.45", "--quiet", "--num-workers", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    data = make_image_folder(root / "faces", subjects=4, per_subject=2)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), "--subject-regex", r"^(S\d+)_",
                 "--device", "cpu", *SMALL]) == 0
    return data, root / "run"


def test_checkpoint_loads_with_weights_only_and_holds_no_device(run):
    _, out = run
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["format"] == 2 and state["epoch"] == 1
    assert "device" not in state["config"] and "num_workers" not in state["config"]


def test_init_from_a_run_checkpoint(run, tmp_path, capsys):
    data, out = run
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "next"), "--init", str(out / "checkpoint.pt"),
                 "--subject-regex", r"^(S\d+)_", "--device", "cpu", *SMALL]) == 0
    assert "init " in capsys.readouterr().out


def test_evaluate_takes_the_device_from_the_command(run, tmp_path, capsys):
    data, out = run
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "report.md").is_file()
    if not torch.cuda.is_available():
        assert main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--device", "cuda",
                     "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err.strip()
        assert "CUDA is not available" in err and len(err.splitlines()) == 1


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": {}, "config": {}, "epoch": 1, "rng": np.random.get_state()}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="pickled objects"):
        load_checkpoint(tmp_path)
    torch.save({"model": {}, "config": {}, "epoch": 1, "format": 99}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="newer"):
        load_checkpoint(tmp_path)


def test_rng_state_round_trip_through_a_safe_load(tmp_path):
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    torch.save(rng_state(generator), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random(), torch.rand(2, generator=generator))
    torch.rand(9), np.random.rand(9), random.random(), torch.rand(9, generator=generator)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), generator)
    got = (torch.rand(3), np.random.standard_normal(3), random.random(), torch.rand(2, generator=generator))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_cosine_matches_torch_for_a_fresh_run():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    for epoch in range(5):
        assert lr_factor({"start": 0, "factor": 1.0, "epochs": 5}, epoch, "cosine") == pytest.approx(
            optimizer.param_groups[0]["lr"], abs=1e-12)
        optimizer.step()
        torch_schedule.step()

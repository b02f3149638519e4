"""The settings fingerprint of a run folder: what makes two runs the same run."""
import pytest

from muldml.config import Runtime, preset_config
from muldml.errors import UserError
from muldml.training import runfolder
from muldml.data.folder import Sample


def fingerprint(runtime=Runtime(), world=1, device="cpu", samples=(Sample("a/x.png", 0), Sample("b/y.png", 1))):
    cfg = preset_config("mul-dml", slice_dim=8)
    cfg.classes = ["a", "b"]
    return runfolder.fingerprint(cfg, runtime, device, samples, world)


def test_runtime_options_that_change_learning_are_recorded():
    base = fingerprint()
    # BatchNorm per process: the number of processes changes the gradients.
    assert runfolder.differences(base, fingerprint(world=2)) == [
        "batchnorm_statistics 'global batch' → 'per process'", "world_size 'any' → 2"]
    # --sync-bn: global statistics, K processes equal one.
    assert runfolder.differences(base, fingerprint(Runtime(sync_bn=True), world=2)) == []
    assert runfolder.differences(base, fingerprint(Runtime(grad_cache=4))) == ["grad_cache None → 4"]
    assert runfolder.differences(base, fingerprint(Runtime(amp="bf16"))) == ["amp 'off' → 'bf16'"]
    assert runfolder.differences(base, fingerprint(Runtime(amp="auto"), device="cuda")) == ["amp 'off' → 'bf16'"]
    # Speed-only options are not part of it.
    assert runfolder.differences(base, fingerprint(Runtime(num_workers=3, channels_last=True, compile=True))) == []
    other = fingerprint(samples=(Sample("a/x.png", 0),))
    assert [d.split(" ")[0] for d in runfolder.differences(base, other)] == ["training_images"]


def test_check_folder_refuses_or_clears(tmp_path):
    base = fingerprint()
    runfolder.write_settings(tmp_path, base)
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    assert runfolder.check_folder(tmp_path, base, overwrite=False)
    changed = fingerprint(Runtime(grad_cache=2))
    with pytest.raises(UserError, match=r"other settings \(grad_cache None → 2\); use --overwrite"):
        runfolder.check_folder(tmp_path, changed, overwrite=False)
    assert not runfolder.check_folder(tmp_path, changed, overwrite=True)
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "notes.txt").is_file()

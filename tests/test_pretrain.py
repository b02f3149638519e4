import torch
from fixtures import make_image_folder

from muldml.cli import main
from muldml.model import MulDMLNet, load_init


def test_pretrain_writes_a_backbone_that_init_accepts(tmp_path, capsys):
    data = make_image_folder(tmp_path / "big", subjects=4, per_subject=2)
    out = tmp_path / "pre"
    assert main(["pretrain", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                 "--image-size", "32", "--subject-regex", r"^(S\d+)_", "--quiet", "--num-workers", "0"]) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["config"]["preset"] == "cnn" and saved["config"]["lr"] == 1e-3
    assert "backbone for --init" in capsys.readouterr().out
    # The backbone (torchvision layout) initialises a Mul-DML network with other classes.
    net = MulDMLNet(num_classes=7, num_slices=7, slice_dim=16)
    missing, unexpected = load_init(net, out / "backbone.pt")
    assert unexpected == [] and all(not k.startswith("backbone.") for k in missing)
    assert torch.equal(net.backbone.layer4[1].conv2.weight, saved["model"]["backbone.layer4.1.conv2.weight"])
    # And --init on the command line trains from it.
    run = tmp_path / "run"
    assert main(["train", "--preset", "mul-dml", "--data", str(data), "--out", str(run), "--init", str(out / "backbone.pt"),
                 "--subject-regex", r"^(S\d+)_", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--slice-dim", "8", "--quiet"]) == 0
    assert "missing key(s)" in capsys.readouterr().out


def test_cv_folds_start_from_init(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", subjects=4, per_subject=1)
    torch.save(MulDMLNet(num_classes=3, num_slices=1, slice_dim=8).backbone.state_dict(), tmp_path / "b.pt")
    assert main(["cv", "--data", str(data), "--folds", "2", "--out", str(tmp_path / "cv"), "--init", str(tmp_path / "b.pt"),
                 "--subject-regex", r"^(S\d+)_", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                 "--slice-dim", "8", "--quiet"]) == 0
    assert capsys.readouterr().out.count(f"init {tmp_path / 'b.pt'}") == 2  # once per fold


def test_pretrain_layers_defaults_preset_file_command_line(tmp_path):
    """defaults < preset < pretrain's own lr < --config file < command line; YAML's 1e-4
    (a string to PyYAML) is read as a number."""
    data = make_image_folder(tmp_path / "d", subjects=4, per_subject=1)
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nweight_decay: 1e-5\nepochs: 1\n")
    args = ["pretrain", "--data", str(data), "--config", str(tmp_path / "c.yaml"), "--batch-size", "8",
            "--image-size", "32", "--subject-regex", r"^(S\d+)_", "--quiet", "--num-workers", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cfg = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["config"]
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 1e-5 and cfg["epochs"] == 1
    assert main([*args, "--out", str(tmp_path / "b"), "--lr", "0.01"]) == 0
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["config"]["lr"] == 0.01

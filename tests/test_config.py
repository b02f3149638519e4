import json

import pytest

from muldml.config import PRESETS, preset_config, read_config_file
from muldml.errors import UserError

EXPECTED = {  # preset: (slices, slice dim, margins with τ* = 0.45, dual, multitask)
    "cnn": (1, 256, [], True, False),
    "s-trad-triplet": (1, 256, [0.45], False, False),
    "s-dual-triplet": (1, 256, [0.45], True, False),
    "s-dml": (1, 1792, [0.45], True, False),
    "mul-dml-same": (7, 256, [0.45] * 7, True, False),
    "mul-dml": (7, 256, [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75], True, False),
    "cnn-multask": (7, 256, [], True, True),
    "mul-dml-multask-same": (7, 256, [0.45] * 7, True, True),
    "mul-dml-multask": (7, 256, [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75], True, True),
    "circle": (1, 256, [], True, False),  # the baselines: no triplet margins, their own metric loss
    "hist": (1, 256, [], True, False),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_the_papers_variants(name):
    cfg = preset_config(name)
    assert (cfg.num_slices, cfg.slice_dim, cfg.margins, cfg.dual, cfg.multitask) == EXPECTED[name]
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.dropout, cfg.classifier_input) == (96, 5e-6, 70, 0.5, "raw")


def test_table_one_ranges_and_tau_star_are_expressible():
    cfg = preset_config("mul-dml", tau_min=0.05, tau_max=0.95, tau_step=0.15, slice_dim=128)
    assert cfg.num_slices == 7 and cfg.margins[0] == 0.05 and cfg.margins[-1] == 0.95 and cfg.slice_dim == 128
    assert preset_config("mul-dml", tau_min=0.35, tau_max=0.55, tau_step=0.1).num_slices == 3
    assert preset_config("mul-dml-same", tau_star=0.65).margins == [0.65] * 7


def test_bad_settings_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="unknown preset 'mul-dm'"):
        preset_config("mul-dm")
    with pytest.raises(UserError, match="whole number"):
        preset_config("mul-dml", tau_step=0.25)
    with pytest.raises(UserError, match="unknown config key"):
        preset_config("cnn", learning_rate=1)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config_file(tmp_path / "bad.json")


def test_config_files_json_and_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.001\ntau-star: 0.65\n")
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 3}))
    assert read_config_file(tmp_path / "c.yaml") == {"lr": 0.001, "tau_star": 0.65}
    assert preset_config("mul-dml-same", **read_config_file(tmp_path / "c.yaml")).margins == [0.65] * 7
    assert read_config_file(tmp_path / "c.json") == {"epochs": 3}


@pytest.mark.parametrize("setting, value, message", [
    ("tau_star", -0.1, "tau_star must be in [0, ∞)"),
    ("backend", "cuda-fast", "backend must be one of"),
    ("dropout", 1.5, "dropout must be in [0, 1)"),
    ("pk_samples", 0, "pk_samples must be in [2, ∞)"),
    ("lr", "fast", "lr must be a number"),
    ("dual", "yes", "dual must be true or false"),
    ("epochs", 2.5, "epochs must be an integer"),
    ("classifier_input", "both", "classifier_input must be one of raw, normalized"),
    ("val_fraction", 1.0, "val_fraction must be in (0, 1)"),
    ("crop", 300, "crop (300) must not exceed image_size"),
])
def test_every_setting_is_validated_in_one_place(setting, value, message):
    with pytest.raises(UserError) as info:
        preset_config("mul-dml", **{setting: value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_runtime_settings_are_validated():
    from muldml.config import Runtime

    with pytest.raises(UserError, match="num_workers must be in"):
        Runtime(num_workers=-2).validate()
    with pytest.raises(UserError, match="device must be"):
        Runtime(device="gpu0").validate()
    assert Runtime(num_workers=None).workers >= 1


def test_defaults_are_the_papers_protocol():
    """muldml train's defaults: 236-px faces cropped to 224, Adam at 5e-6, batch 96, 70 epochs,
    dropout 0.5, margins 0.15…0.75 by 0.1 (the paper's Sec. IV); the demo and --quick state theirs."""
    from muldml.data.augment import crop_size

    cfg = preset_config("mul-dml")
    assert (cfg.image_size, crop_size(cfg.image_size)) == (236, 224)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.dropout) == (5e-6, 96, 70, 0.5)
    assert cfg.margins == pytest.approx([0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75])

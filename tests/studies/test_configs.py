"""configs/: every file loads and validates with every preset; the paper-protocol files hold
the paper's protocol and the dataset's τ* (Table II)."""
from pathlib import Path

import pytest

from muldml.config import PAPER_TAU_STAR, PRESETS, preset_config, read_config_file, split_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = {"paper-ckplus.yaml": "ck+", "paper-mmi.yaml": "mmi", "paper-sfew.yaml": "sfew", "paper-rafdb.yaml": "raf-db"}


def test_the_expected_files_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert set(PAPER) | {"fer2013-48px.yaml", "ckplus-48px.yaml"} <= names


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_validates_with_every_preset(path):
    settings, runtime = split_settings(read_config_file(path))
    assert settings and not runtime  # what is learnt only: devices are given by each command
    for preset in PRESETS:
        cfg = preset_config(preset, **settings)
        assert cfg.image_size == settings["image_size"] and cfg.lr == settings["lr"]


@pytest.mark.parametrize("name,dataset", sorted(PAPER.items()))
def test_paper_protocol(name, dataset):
    cfg = preset_config("mul-dml", **read_config_file(CONFIGS / name))
    assert (cfg.image_size, cfg.crop, cfg.batch_size, cfg.lr, cfg.epochs, cfg.dropout) == (236, 224, 96, 5e-6, 70, 0.5)
    assert cfg.margins == pytest.approx([0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75])
    assert cfg.tau_star == PAPER_TAU_STAR[dataset]
    assert cfg.scheduler == "constant"


@pytest.mark.parametrize("name", ["fer2013-48px.yaml", "ckplus-48px.yaml"])
def test_small_image_configs(name):
    cfg = preset_config("mul-dml", **read_config_file(CONFIGS / name))
    assert cfg.image_size == 48 and cfg.crop < 48 and cfg.lr > 5e-6  # from scratch: a larger rate

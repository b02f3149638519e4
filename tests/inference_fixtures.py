"""Tiny trained-looking models for the inference, predict and export tests (no downloads)."""
from __future__ import annotations

from pathlib import Path

import torch

from muldml.config import preset_config
from muldml.training import build_model
from muldml.training.checkpoint import save_checkpoint

CLASSES = ["anger", "happiness", "surprise"]
TINY = dict(tau_min=0.15, tau_max=0.35, tau_step=0.1, tau_star=0.45, slice_dim=8, image_size=32)


def tiny_checkpoint(out: Path, preset: str = "mul-dml", seed: int = 0, sharp: float = 50.0, **settings) -> Path:
    """A run folder holding a checkpoint of a randomly initialised 3-class model (3 slices × 8
    on 32-px images). The classifier is scaled by `sharp`, so that its predictions differ
    between images (an untrained classifier's logits barely vary)."""
    cfg = preset_config(preset, **(TINY | settings))
    cfg.classes = list(CLASSES)
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("classifier"):
                p.mul_(sharp)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1, "history": []})
    return out

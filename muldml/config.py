"""Run configuration and the paper's variants as named presets.

Every variant the paper compares (Tables II–IV, VII) is a handful of settings on one
network and one loss, never a separate code path:

    preset                 slices × d   margins        triplet   classifier
    cnn                    1 × 256      —              —         one softmax
    s-trad-triplet         1 × 256      τ*             Eq. 2     one softmax
    s-dual-triplet         1 × 256      τ*             Eq. 10    one softmax
    s-dml                  1 × 1792     τ*             Eq. 10    one softmax (whole 7×256 layer)
    mul-dml-same           7 × 256      τ* on all      Eq. 10    one softmax
    mul-dml                N × 256      τ_min…τ_max    Eq. 10    one softmax
    cnn-multask            7 × 256      —              —         one per slice, majority vote
    mul-dml-multask-same   7 × 256      τ* on all      Eq. 10    one per slice
    mul-dml-multask        N × 256      τ_min…τ_max    Eq. 10    one per slice

τ* is the dataset's best single threshold (paper Table II: CK+ 0.45, MMI 0.45,
SFEW 0.75, RAF-DB 0.65); N = (τ_max − τ_min)/δτ + 1 (0.15…0.75 by 0.1: N = 7).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muldml.errors import UserError
from muldml.losses import threshold_range

PAPER_TAU_STAR = {"ck+": 0.45, "mmi": 0.45, "sfew": 0.75, "raf-db": 0.65}

PRESETS: dict[str, dict[str, Any]] = {
    "cnn": dict(num_slices=1, slice_dim=256, margin_mode="none"),
    "s-trad-triplet": dict(num_slices=1, slice_dim=256, margin_mode="star", dual=False),
    "s-dual-triplet": dict(num_slices=1, slice_dim=256, margin_mode="star"),
    "s-dml": dict(num_slices=1, slice_dim=7 * 256, margin_mode="star"),
    "mul-dml-same": dict(num_slices=7, slice_dim=256, margin_mode="star"),
    "mul-dml": dict(slice_dim=256, margin_mode="range"),
    "cnn-multask": dict(num_slices=7, slice_dim=256, margin_mode="none", multitask=True),
    "mul-dml-multask-same": dict(num_slices=7, slice_dim=256, margin_mode="star", multitask=True),
    "mul-dml-multask": dict(slice_dim=256, margin_mode="range", multitask=True),
}
MARGIN_MODES = ("none", "star", "range")


@dataclass
class Config:
    """Everything a training run depends on; saved in every checkpoint."""

    preset: str = "mul-dml"
    # Network
    num_slices: int = 7
    slice_dim: int = 256
    classifier_input: str = "raw"
    multitask: bool = False
    dropout: float = 0.5
    init: str | None = None  # backbone or model state_dict to start from
    # Loss
    margin_mode: str = "range"  # none: softmax only; star: τ* on every slice; range: τ_min…τ_max
    tau_star: float = 0.45
    tau_min: float = 0.15
    tau_max: float = 0.75
    tau_step: float = 0.1
    dual: bool = True
    lam: float | None = None  # λ; None: 0.5/N
    backend: str = "auto"
    # Optimisation (paper: Adam, batch 96, lr 5e-6 for a pre-trained backbone, 70 epochs)
    epochs: int = 70
    batch_size: int = 96
    lr: float = 5e-6
    weight_decay: float = 0.0
    scheduler: str = "constant"  # constant (paper) | cosine
    sampler: str = "random"  # random | pk: P classes × K images per batch (positives guaranteed)
    pk_samples: int = 4
    seed: int = 0
    # Data
    image_size: int = 64  # images are resized to image_size², then cropped
    crop: int | None = None  # default: image_size·224/236
    val_fraction: float = 0.2  # subject-independent hold-out when no split is given
    classes: list[str] = field(default_factory=list)  # filled from the data
    device: str = "auto"
    num_workers: int = 0

    @property
    def margins(self) -> list[float]:
        """τ_i per slice ([] when the preset trains softmax only)."""
        if self.margin_mode == "none":
            return []
        if self.margin_mode == "star":
            return [self.tau_star] * self.num_slices
        return threshold_range(self.tau_min, self.tau_max, self.tau_step)

    def validate(self) -> "Config":
        if self.margin_mode not in MARGIN_MODES:
            raise UserError(f"margin_mode must be one of {MARGIN_MODES}, got {self.margin_mode!r}")
        if self.margin_mode == "range":
            try:
                self.num_slices = len(self.margins)
            except ValueError as e:
                raise UserError(str(e)) from None
        for name in ("num_slices", "slice_dim", "epochs", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.scheduler not in ("constant", "cosine"):
            raise UserError(f"scheduler must be 'constant' or 'cosine', got {self.scheduler!r}")
        if self.sampler not in ("random", "pk"):
            raise UserError(f"sampler must be 'random' or 'pk', got {self.sampler!r}")
        if self.classifier_input not in ("raw", "normalized"):
            raise UserError(f"classifier_input must be 'raw' or 'normalized', got {self.classifier_input!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)


def preset_config(name: str, **overrides: Any) -> Config:
    """The named preset with `overrides` on top (None values are ignored), validated."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values = {"preset": name, **PRESETS[name]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(values).validate()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file (keys as in Config)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as e:
        raise UserError(f"config file {path} is not valid {path.suffix[1:].upper() or 'JSON'}: {e}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of settings")
    return {k.replace("-", "_"): v for k, v in values.items()}

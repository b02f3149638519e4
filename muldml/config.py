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
    circle                 1 × 256      —              Circle loss (Sun et al.; m, γ)   one softmax
    hist                   1 × 256      —              HIST loss (Lim et al.; τ, α, λ_s) one softmax

circle and hist are the baselines of Tables V–VI: the S-Dual-Triplet network with another
metric loss in place of the triplet loss (``metric_loss``), see muldml.baselines.

τ* is the dataset's best single threshold (paper Table II: CK+ 0.45, MMI 0.45,
SFEW 0.75, RAF-DB 0.65); N = (τ_max − τ_min)/δτ + 1 (0.15…0.75 by 0.1: N = 7).

Two kinds of settings: ``Config`` is what a run learns (saved in its checkpoint);
``Runtime`` is where and how fast it runs (device, workers, precision, …), given anew by
every command and never read back from a checkpoint. ``validate`` checks both, in one
place, against the choices defined once in ``CHOICES``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muldml.errors import UserError
from muldml.losses import BACKENDS, PRECISIONS, threshold_range
from muldml.model import CLASSIFIER_INPUTS

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
    "circle": dict(num_slices=1, slice_dim=256, margin_mode="none", metric_loss="circle"),
    "hist": dict(num_slices=1, slice_dim=256, margin_mode="none", metric_loss="hist"),
}
MARGIN_MODES = ("none", "star", "range")
METRIC_LOSSES = ("triplet", "circle", "hist")
SCHEDULERS = ("constant", "cosine")
SAMPLERS = ("random", "pk")
AMP_MODES = ("auto", "bf16", "fp16", "off")

# The one list of allowed values per setting with a fixed set of choices.
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "margin_mode": MARGIN_MODES,
    "metric_loss": METRIC_LOSSES,
    "classifier_input": CLASSIFIER_INPUTS,
    "backend": BACKENDS,
    "scheduler": SCHEDULERS,
    "sampler": SAMPLERS,
    "amp": AMP_MODES,
    "mining_precision": PRECISIONS,
}


@dataclass
class Config:
    """Everything a training run learns from; saved in every checkpoint."""

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
    lam: float | None = None  # λ; None: 0.5/N (a baseline's metric loss: 0.05, muldml.baselines)
    backend: str = "auto"
    # Precision of the dot products that choose the hardest positive and negative (the Triton
    # backend's tensor cores: tf32, tf32x3 ≈ fp32, bf16). The chosen triplets' distances are
    # recomputed in fp32 either way; the torch and reference backends mine in fp32 on the CPU.
    mining_precision: str = "tf32"
    # Cross-batch memory (XBM, Wang et al. 2020): anchors also mine the last xbm_size rows seen
    xbm_size: int = field(default=0, metadata={"help": "cross-batch memory: rows kept from earlier batches as "
                                                        "extra positives and negatives (0: none)"})
    xbm_start_epoch: int = field(default=0, metadata={"help": "epochs trained before the memory is used (it fills "
                                                               "meanwhile)"})
    # Baselines (Tables V–VI): another metric loss in place of the triplet loss
    metric_loss: str = "triplet"  # triplet (Eq. 2 / 10) | circle | hist
    circle_m: float = 0.4  # Circle loss relaxation margin m
    circle_gamma: float = 80.0  # Circle loss scale γ
    hist_tau: float = 32.0  # HIST: scale τ of the distribution loss's softmax
    hist_alpha: float = 0.9  # HIST: hardness α of the hypergraph's incidences
    hist_lambda_s: float = 1.0  # HIST: weight λ_s of the semantic tuplet loss
    hist_hidden: int = 512  # HIST: hidden width of its hypergraph network
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
    image_size: int = 236  # images are resized to image_size², then cropped (paper: 236 → 224)
    crop: int | None = None  # default: image_size·224/236
    val_fraction: float = 0.2  # subject-independent hold-out when no split is given
    classes: list[str] = field(default_factory=list)  # filled from the data
    # Cosine classifier (classifier_input cosine): logits s·cos(w_c, normalised slices)
    cosine_scale: float = 16.0  # s, fixed or (learn_cosine_scale) its starting value
    learn_cosine_scale: bool = True

    @property
    def margins(self) -> list[float]:
        """τ_i per slice ([] when the preset trains softmax only)."""
        if self.margin_mode == "none":
            return []
        if self.margin_mode == "star":
            return [self.tau_star] * self.num_slices
        return threshold_range(self.tau_min, self.tau_max, self.tau_step)

    def validate(self) -> "Config":
        """Check every field (raises UserError naming the first bad one); fills num_slices
        from the margin range. Returns self."""
        validate(self)
        if self.margin_mode == "range":
            try:
                self.num_slices = len(self.margins)
            except ValueError as e:
                raise UserError(str(e)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        return _from_dict(cls, values)


def default_workers() -> int:
    """DataLoader workers when not given: min(8, CPUs available to this process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus)


@dataclass
class Runtime:
    """Where and how a run executes, given anew by every command. Some of it changes what is
    learnt (amp, grad_cache, sync_bn, and the number of processes, through BatchNorm): the
    run folder's settings fingerprint records those (muldml.training.runfolder), and a
    resumption that changes one is refused. device, num_workers, channels_last and compile
    change only speed."""

    device: str = field(default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu, cuda, cuda:N"})
    num_workers: int | None = field(default=None, metadata={"help": "DataLoader worker processes (default min(8, CPUs))"})
    amp: str = field(default="auto", metadata={"help": "mixed precision: auto (bf16 on CUDA, off on the CPU), bf16, "
                                                        "fp16 (CUDA, with a GradScaler) or off"})
    channels_last: bool = field(default=False, metadata={"help": "NHWC images and weights (faster convolutions on GPUs)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the backbone"})
    grad_cache: int | None = field(default=None, metadata={"help": "gradient caching: embed the batch in chunks of this "
                                                                    "many images, so large batches fit in memory; "
                                                                    "BatchNorm then normalises each chunk by its own "
                                                                    "statistics (see the README)"})
    sync_bn: bool = field(default=False, metadata={"help": "under torchrun, BatchNorm statistics over the global batch "
                                                           "(torch's SyncBatchNorm on CUDA), so K processes train as "
                                                           "one process on the whole batch"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Runtime":
        return _from_dict(cls, values).validate()

    def validate(self) -> "Runtime":
        validate(self)
        return self

    @property
    def workers(self) -> int:
        return default_workers() if self.num_workers is None else self.num_workers


def _from_dict(cls, values: dict[str, Any]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown config key(s): {', '.join(unknown)}")
    return cls(**{k: _number(v, str(fields[k].type)) for k, v in values.items()})


def _number(value: Any, kind: str) -> Any:
    """A numeric string as a number for a numeric field: YAML 1.1 (PyYAML) reads ``1e-3``
    without a decimal point as the string "1e-3"; users write it that way. Anything else is
    returned unchanged for ``validate`` to judge."""
    if not isinstance(value, str):
        return value
    try:
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("int"):
            number = float(value)
            return int(number) if number.is_integer() else value
    except ValueError:
        pass
    return value


# Numeric bounds: (lowest, highest, whether the lowest is allowed, whether the highest is).
_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "num_slices": (1, math.inf, True, False),
    "slice_dim": (1, math.inf, True, False),
    "dropout": (0, 1, True, False),
    "tau_star": (0, math.inf, True, False),
    "tau_min": (0, math.inf, True, False),
    "tau_max": (0, math.inf, True, False),
    "tau_step": (0, math.inf, False, False),
    "lam": (0, math.inf, True, False),
    "epochs": (1, math.inf, True, False),
    "batch_size": (1, math.inf, True, False),
    "lr": (0, math.inf, False, False),
    "weight_decay": (0, math.inf, True, False),
    "pk_samples": (2, math.inf, True, False),
    "seed": (0, 2**63 - 1, True, True),
    "image_size": (1, math.inf, True, False),
    "crop": (1, math.inf, True, False),
    "val_fraction": (0, 1, False, False),
    "circle_m": (0, 1, True, True),
    "circle_gamma": (0, math.inf, False, False),
    "hist_tau": (0, math.inf, False, False),
    "hist_alpha": (0, math.inf, True, False),
    "hist_lambda_s": (0, math.inf, True, False),
    "hist_hidden": (1, math.inf, True, False),
    "cosine_scale": (0, math.inf, False, False),
    "xbm_size": (0, 2**31 - 1, True, False),
    "xbm_start_epoch": (0, math.inf, True, False),
    "num_workers": (0, math.inf, True, False),
    "grad_cache": (2, math.inf, True, False),  # a chunk of one image breaks BatchNorm in train mode
}
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def validate(settings: Config | Runtime) -> None:
    """The one check of every setting: type, choices (CHOICES) and range (_BOUNDS).

    Raises UserError with one line naming the setting, the value and what is allowed.
    """
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        kind = str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type):
            continue
        if kind == "list[str]":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"{f.name} must be a list of names, got {value!r}")
            continue
        allowed = _TYPES.get(kind)
        if allowed and (not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool))):
            raise UserError(f"{f.name} must be {'a number' if kind == 'float' else 'an integer' if kind == 'int' else 'true or false' if kind == 'bool' else 'text'}, got {value!r}")
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise UserError(f"{f.name} must be one of {', '.join(CHOICES[f.name])}; got {value!r}")
        if f.name in _BOUNDS:
            low, high, low_ok, high_ok = _BOUNDS[f.name]
            if not math.isfinite(value) or value < low or value > high or (value == low and not low_ok) or (value == high and not high_ok):
                interval = f"{'[' if low_ok else '('}{low:g}, {'∞)' if high == math.inf else f'{high:g}' + (']' if high_ok else ')')}"
                raise UserError(f"{f.name} must be in {interval}, got {value!r}")
    if isinstance(settings, Runtime) and settings.device != "auto":
        import torch

        try:
            torch.device(settings.device)
        except RuntimeError:
            raise UserError(f"device must be auto, cpu, cuda or cuda:N; got {settings.device!r}") from None
    if isinstance(settings, Config):
        if settings.metric_loss != "triplet" and settings.margin_mode != "none":
            raise UserError(f"metric_loss {settings.metric_loss} replaces the triplet loss: margin_mode must be none, "
                            f"got {settings.margin_mode!r}")
        if settings.xbm_size and (settings.metric_loss != "triplet" or settings.margin_mode == "none"):
            raise UserError(f"xbm_size needs the triplet loss (preset {settings.preset} trains "
                            f"{settings.metric_loss if settings.metric_loss != 'triplet' else 'softmax only'})")
        if settings.tau_max < settings.tau_min:
            raise UserError(f"tau_max ({settings.tau_max}) must be >= tau_min ({settings.tau_min})")
        if settings.sampler == "pk" and (settings.batch_size % settings.pk_samples or settings.batch_size < 2 * settings.pk_samples):
            raise UserError(f"sampler pk needs batch_size = P·pk_samples with P >= 2; got batch_size {settings.batch_size}, "
                            f"pk_samples {settings.pk_samples}")
        if settings.crop is not None and settings.crop > settings.image_size:
            raise UserError(f"crop ({settings.crop}) must not exceed image_size ({settings.image_size})")


def preset_config(name: str, **overrides: Any) -> Config:
    """The named preset with `overrides` on top (None values are ignored), validated."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values = {"preset": name, **PRESETS[name]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(values).validate()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file (keys as in Config or Runtime)."""
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
    types = {f.name: str(f.type) for cls in (Config, Runtime) for f in dataclasses.fields(cls)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    return {k: _number(v, types[k]) if k in types else v for k, v in values.items()}


def split_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a mapping of settings into (Config fields and unknown keys, Runtime fields)."""
    runtime_keys = {f.name for f in dataclasses.fields(Runtime)}
    return ({k: v for k, v in values.items() if k not in runtime_keys},
            {k: v for k, v in values.items() if k in runtime_keys})


# ---------------------------------------------------------------------------------------------
# Command-line options and the layering of settings: defaults < preset (and a command's own
# defaults) < --config file < command line. Every command that takes settings uses these.

# Settings that are not command-line options (filled from the data or the preset choice).
_NOT_OPTIONS = {"preset", "classes"}
_PARSERS = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}


def _add_field_options(group, fields) -> None:
    import argparse

    for f in fields:
        if f.name in _NOT_OPTIONS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f.metadata.get("help", "")
        if f.name in CHOICES and not text:  # a help text names its choices itself
            text = "one of " + ", ".join(CHOICES[f.name])
        text += f" (default {default})" if default is not None else ""
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text.strip() or None)
        else:
            group.add_argument(flag, type=_PARSERS[f.type], default=None, metavar=f.name.split("_")[-1].upper(),
                               help=text.strip() or None)


def add_config_options(parser) -> None:
    """One --option per Config field; unset options stay None so lower layers show through."""
    _add_field_options(parser.add_argument_group("settings (override the preset and --config)"),
                       dataclasses.fields(Config))


def add_runtime_options(parser) -> None:
    """One --option per Runtime field (device, workers, precision, …)."""
    _add_field_options(parser.add_argument_group("runtime (given by every command; amp, grad-cache and sync-bn "
                                                 "are recorded in the run's settings)"),
                       dataclasses.fields(Runtime))


def add_run_options(parser, out_help: str, resume: bool) -> None:
    """Options shared by the commands that train: data, output, config file, settings."""
    parser.add_argument("--data", required=not resume, help="dataset folder (<class>/<image> or manifest.csv)"
                        + ("; with --resume, default: the run's" if resume else ""))
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--config", help="JSON or YAML file of settings (above the preset, below the command line)")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the run folder's checkpoint, with its recorded data and settings "
                                 "(options given change them: --epochs, --backend; others are refused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace runs in the folder that were made with other settings (default: refuse)")
    parser.add_argument("--subject-regex", help=r"regex whose first group is the subject id in file names, e.g. '^(S\d+)_'")
    parser.add_argument("--image-level-split", action="store_true",
                        help="allow splitting images without a subject id image by image (the same people may "
                             "then be on both sides; the report says so)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch instead)")
    add_config_options(parser)
    add_runtime_options(parser)


def _file_settings(args) -> tuple[dict, dict]:
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    return split_settings(values)


def command_line_settings(args, cls=None) -> dict[str, Any]:
    """The Config (or `cls`) fields given on the command line (unset options are None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls or Config)
            if f.name not in _NOT_OPTIONS and getattr(args, f.name, None) is not None}


def config_from_args(args, preset: str | None, command_defaults: dict[str, Any] | None = None,
                     base: dict[str, Any] | None = None) -> Config:
    """The run's Config: defaults < preset (the argument, else the file's, else base's, else
    mul-dml) < command_defaults (a command's own choices, e.g. pretrain's lr) < base (a resumed
    run's recorded settings) < --config < command line."""
    values, _ = _file_settings(args)
    preset = values.pop("preset", None) if preset is None else preset
    preset = preset or (base or {}).get("preset") or "mul-dml"
    base = {k: v for k, v in (base or {}).items() if k != "preset"}
    return preset_config(preset, **((command_defaults or {}) | base | values | command_line_settings(args)))


def runtime_from_args(args, base: dict[str, Any] | None = None) -> Runtime:
    """The Runtime: defaults < base (a resumed run's recorded options) < --config < command line."""
    _, values = _file_settings(args)
    return Runtime.from_dict((base or {}) | values | command_line_settings(args, Runtime))

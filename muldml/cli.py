"""The `muldml` command.

    muldml train --preset mul-dml --data DIR --out runs/X [--config FILE] [--resume] [--<setting> VALUE …]
    muldml evaluate --checkpoint runs/X --data DIR [--out DIR]
    muldml demo [--out runs/demo]

Settings come from the preset, then a JSON/YAML --config file, then the command line.
Problems with the input print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from muldml.config import PRESETS, Config, preset_config, read_config_file
from muldml.errors import UserError

# Settings that are not command-line options (filled from the data or the preset choice).
_NOT_OPTIONS = {"preset", "classes"}
_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One --option per Config field; unset options stay None so lower layers show through."""
    group = parser.add_argument_group("settings (override the preset and --config)")
    for f in dataclasses.fields(Config):
        if f.name in _NOT_OPTIONS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"(default {default})")
        else:
            group.add_argument(flag, type=_TYPES[f.type], default=None, metavar=f.name.split("_")[-1].upper(),
                               help=f"(default {default})")


def config_from_args(args: argparse.Namespace, preset: str) -> Config:
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    preset = values.pop("preset", None) if preset is None else preset
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
           if f.name not in _NOT_OPTIONS and getattr(args, f.name, None) is not None}
    return preset_config(preset or "mul-dml", **(values | cli))


def load_samples(data: str, subject_regex: str | None, classes: Sequence[str] | None = None):
    from muldml.data.folder import scan_folder

    return scan_folder(data, classes, subject_regex)


def split_train_val(samples, cfg: Config):
    """Official split from the manifest when present, else a subject-independent hold-out."""
    from muldml.data.splits import subject_holdout

    splits = {s.split for s in samples}
    if "train" in splits and splits & {"val", "test"}:
        train = [s for s in samples if s.split == "train"]
        val = [s for s in samples if s.split in ("val", "test")]
        return train, val
    train_idx, val_idx = subject_holdout(samples, cfg.val_fraction, cfg.seed)
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def cmd_train(args: argparse.Namespace) -> int:
    from muldml.evaluate import compute_metrics, predict, write_report
    from muldml.train import model_from_checkpoint, resolve_device, train

    cfg = config_from_args(args, args.preset)
    samples, classes = load_samples(args.data, args.subject_regex)
    cfg.classes = classes
    train_samples, val_samples = split_train_val(samples, cfg)
    print(f"{cfg.preset}: {len(train_samples)} training / {len(val_samples)} validation images, "
          f"{len(classes)} classes, margins {cfg.margins or 'none (softmax only)'}")
    state = train(cfg, train_samples, val_samples, args.out, resume=args.resume, progress=not args.quiet)
    if val_samples:
        model, cfg = model_from_checkpoint(state)
        preds = predict(model, val_samples, cfg, resolve_device(cfg.device))
        metrics = compute_metrics([s.label for s in val_samples], preds, classes)
        report = write_report(args.out, cfg, metrics, state["history"], f"{cfg.preset} on {args.data}")
        print(f"{cfg.preset}: validation accuracy {100 * metrics['accuracy']:.2f}%  ({report})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from muldml.evaluate import compute_metrics, predict, write_report
    from muldml.train import load_checkpoint, model_from_checkpoint, resolve_device

    state = load_checkpoint(args.checkpoint)
    model, cfg = model_from_checkpoint(state)
    samples, _ = load_samples(args.data, args.subject_regex, cfg.classes)
    if args.split:
        samples = [s for s in samples if s.split == args.split]
        if not samples:
            raise UserError(f"no images of split {args.split!r} in {args.data}")
    preds = predict(model, samples, cfg, resolve_device(cfg.device), progress=not args.quiet)
    metrics = compute_metrics([s.label for s in samples], preds, cfg.classes)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "evaluation"
    report = write_report(out, cfg, metrics, None, f"{cfg.preset} on {args.data}")
    print(f"{cfg.preset}: accuracy {100 * metrics['accuracy']:.2f}% on {len(samples)} images  ({report})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from muldml.demo import run_demo

    run_demo(args.out, epochs=args.epochs, subjects=args.subjects, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muldml", description="Multi-threshold deep metric learning for facial expression recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a preset on an image folder")
    train.add_argument("--preset", choices=list(PRESETS), default=None, help="paper variant (default mul-dml)")
    train.add_argument("--data", required=True, help="dataset folder (<class>/<image> or manifest.csv)")
    train.add_argument("--out", required=True, help="run folder: checkpoint, history, report")
    train.add_argument("--config", help="JSON or YAML file of settings")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    train.add_argument("--subject-regex", help=r"regex whose first group is the subject id in file names, e.g. '^(S\d+)_'")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(train)
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on an image folder")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", help="only images of this split in the manifest (e.g. test)")
    evaluate.add_argument("--out", help="report folder parent (default: the run folder)")
    evaluate.add_argument("--subject-regex")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(run=cmd_evaluate)

    demo = sub.add_parser("demo", help="built-in demo: generated faces, cnn vs mul-dml, side by side")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo's)")
    demo.add_argument("--subjects", type=int, default=None, help="identities to generate (default: the demo's)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        print(f"muldml: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muldml: interrupted (checkpoints written so far are intact; --resume continues)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

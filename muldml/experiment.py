"""What `muldml train` and `muldml pretrain` do once their options are parsed: settings
(resumed from the run folder with --resume), the split from muldml.protocol, fit(), the
validation report and result.json, written last."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from muldml.config import Config, config_from_args, runtime_from_args
from muldml.errors import UserError


def load_samples(data: str, subject_regex: str | None, classes: Sequence[str] | None = None,
                 out: str | Path | None = None):
    """The samples of folder ``data``; ``out``, the command's output folder, is never read as data."""
    from muldml.data.files import leaving_out
    from muldml.data.folder import scan_folder

    with leaving_out(out):
        return scan_folder(data, classes, subject_regex)


def describe_metric_loss(cfg: Config) -> str:
    """What the run adds to softmax, in a few words for the console."""
    if cfg.metric_loss != "triplet":
        return f"metric loss {cfg.metric_loss}"
    return f"margins {cfg.margins}" if cfg.margins else "softmax only"


def train_command(args: argparse.Namespace, command_defaults: dict | None = None) -> int:
    """`muldml train` (and pretrain, with its own defaults); returns the exit status."""
    from muldml.evaluate import evaluate
    from muldml.protocol import image_level_note, train_val_split
    from muldml.training import fit
    from muldml.training.distributed import launch_rank
    from muldml.training.runfolder import RESUMABLE_CHANGES, resumable, write_result

    recorded = resumable(Path(args.out)) if args.resume else None
    saved, saved_runtime, source = recorded or ({}, {}, {})
    cfg = config_from_args(args, args.preset, command_defaults, base=saved or None)
    runtime = runtime_from_args(args, base=saved_runtime)
    args.data = args.data or source.get("data")
    if not args.data:
        raise UserError(f"--data is required ({args.out} holds no run to resume)" if args.resume else "--data is required")
    args.subject_regex = args.subject_regex or source.get("subject_regex")
    args.image_level_split = args.image_level_split or bool(source.get("image_level_split"))
    changed = [f"{k} {saved[k]!r} → {v!r}" for k, v in cfg.to_dict().items() if k in RESUMABLE_CHANGES
               and k in saved and saved[k] != v]  # other changes are refused by fit, with their values
    if changed and launch_rank() == 0:
        print(f"resume {args.out}: {'; '.join(changed)}")
    samples, classes = load_samples(args.data, args.subject_regex, out=args.out)
    cfg.classes = classes
    train_samples, val_samples, policy = train_val_split(samples, cfg.val_fraction, cfg.seed, args.image_level_split)
    test_samples = [s for s in samples if s.split == "test"]
    note = image_level_note(samples, args.image_level_split)
    main_process = launch_rank() == 0  # under torchrun, rank 0 speaks and reports
    if main_process:
        print(f"{cfg.preset}: {len(train_samples)} training / {len(val_samples)} validation images, "
              f"{len(classes)} classes, {describe_metric_loss(cfg)}; {policy}")
        if note:
            print(note)
        if not cfg.init and cfg.lr == Config.lr and not saved:
            print(f"note: no --init, so this trains from scratch with the paper's fine-tuning settings (lr {cfg.lr:g}, "
                  f"{cfg.image_size}-px images), which learn slowly from scratch; see configs/ckplus-48px.yaml or "
                  "pass --lr")
    state = fit(cfg, train_samples, val_samples, args.out, runtime, resume=args.resume, overwrite=args.overwrite,
                progress=not args.quiet, test_samples=test_samples, split_policy=policy,
                data_source={"data": str(Path(args.data).resolve()), "subject_regex": args.subject_regex,
                             "image_level_split": args.image_level_split})
    if not main_process:
        return 0
    result = {"command": "train", "epochs": state["epoch"], "num_train": len(train_samples),
              "num_val": len(val_samples)}
    if val_samples:
        evaluation = evaluate(state, val_samples, args.out, device=runtime.device,
                              title=f"{cfg.preset} on {args.data}", note=note)
        result["val_metrics"] = evaluation.metrics
        print(f"{cfg.preset}: validation accuracy {100 * evaluation.metrics['accuracy']:.2f}%  ({evaluation.report})")
    write_result(Path(args.out), result)
    return 0


# pretrain trains softmax only from scratch: its own defaults sit above the preset's and
# below --config and the command line.
PRETRAIN_DEFAULTS = {"lr": 1e-3}


def pretrain_command(args: argparse.Namespace) -> int:
    """`muldml pretrain`: softmax-only training, then backbone.pt for --init."""
    from muldml import io as atomic
    from muldml.training import load_checkpoint, model_from_checkpoint
    from muldml.training.distributed import launch_rank
    from muldml.training.runfolder import read_result, write_result

    args.preset = "cnn"  # softmax only
    train_command(args, PRETRAIN_DEFAULTS)
    if launch_rank() != 0:
        return 0
    model, _ = model_from_checkpoint(load_checkpoint(args.out))
    path = atomic.save_torch(Path(args.out) / "backbone.pt", model.backbone.state_dict())
    result = read_result(Path(args.out)) or {}
    write_result(Path(args.out), {**result, "backbone": str(path)})  # result.json stays the last file written
    print(f"backbone for --init: {path}")
    return 0

"""The `muldml` command.

    muldml train --preset mul-dml --data DIR --out runs/X [--config FILE] [--resume] [--<setting> VALUE …]
    muldml evaluate --checkpoint runs/X --data DIR [--split test] [--out DIR] [--device D]
    muldml demo [--out runs/demo]
    muldml prepare SRC OUT --dataset NAME [--size 236] [--no-detect]
    muldml cv --data DIR --preset mul-dml --folds 10 --out runs/cv
    muldml pretrain --data DIR --out runs/pre
    muldml study NAME --data DIR --out runs/S [--folds K | --split] [--seeds S] [--quick] [--config FILE]
    muldml predict PHOTO|FOLDER|GLOB … --checkpoint runs/X [--out DIR] [--format jsonl|csv] [--annotate]
    muldml export --checkpoint runs/X --format onnx|torchscript --out FILE [--embedding]

    torchrun --nproc-per-node K -m muldml train …   (K processes, DDP; --batch-size is the global batch)

Settings come from the preset, then a JSON/YAML --config file, then the command line.
Runtime options (--device, --num-workers, --amp, --channels-last, --compile, --grad-cache)
say where and how fast a run executes; they are never saved with it.
Problems with the input print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from muldml.config import (PRESETS, Config, add_config_options, add_run_options, add_runtime_options,  # noqa: F401
                           config_from_args, runtime_from_args)
from muldml.errors import UserError

def load_samples(data: str, subject_regex: str | None, classes: Sequence[str] | None = None):
    from muldml.data.folder import scan_folder

    return scan_folder(data, classes, subject_regex)


def describe_metric_loss(cfg: Config) -> str:
    """What the run adds to softmax, in a few words for the console."""
    if cfg.metric_loss != "triplet":
        return f"metric loss {cfg.metric_loss}"
    return f"margins {cfg.margins}" if cfg.margins else "softmax only"


def cmd_train(args: argparse.Namespace, command_defaults: dict | None = None) -> int:
    from muldml.evaluate import evaluate
    from muldml.protocol import image_level_note, train_val_split
    from muldml.training import fit
    from muldml.training.distributed import launch_rank
    from muldml.training.runfolder import write_result

    from muldml.training.runfolder import RESUMABLE_CHANGES, resumable

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
    samples, classes = load_samples(args.data, args.subject_regex)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from muldml.evaluate import evaluate_command

    evaluate_command(args.checkpoint, args.data, args.split, args.out, args.subject_regex, runtime_from_args(args),
                     progress=not args.quiet)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from muldml.data.sources import load_source
    from muldml.prepare import PAPER_ROTATIONS, prepare

    options = {"subject_regex": args.subject_regex, "ferplus": args.ferplus, "classes": args.affectnet_classes,
               "include_neutral": args.include_neutral or None, "aligned": False if args.raf_original else None}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        source = load_source(args.dataset, args.src, **options)
    except TypeError as e:
        raise UserError(f"an option given does not apply to dataset {args.dataset!r} ({e})") from None
    rotations = PAPER_ROTATIONS if args.rotations is None else tuple(int(a) for a in args.rotations.split(",") if a)
    summary = prepare(source, args.out, size=args.size, detect=not args.no_detect, rotations=rotations,
                      device=args.device, progress=not args.quiet)
    print(f"prepared {args.dataset} from {args.src} into {args.out}:")
    print("\n".join(summary.lines()))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from muldml.cv import cross_validate

    cfg = config_from_args(args, args.preset)
    runtime = runtime_from_args(args)
    samples, classes = load_samples(args.data, args.subject_regex)
    cfg.classes = classes
    summary = cross_validate(cfg, samples, args.out, folds=args.folds, progress=not args.quiet, runtime=runtime,
                             image_level=args.image_level_split, overwrite=args.overwrite)
    if not summary:  # a process other than rank 0 under torchrun
        return 0
    print(f"{cfg.preset}: {args.folds}-fold accuracy {100 * summary['accuracy_mean']:.2f} ± "
          f"{100 * summary['accuracy_std']:.2f}%  ({Path(args.out) / 'report.md'})")
    return 0


# pretrain trains softmax only from scratch: its own defaults sit above the preset's and
# below --config and the command line.
PRETRAIN_DEFAULTS = {"lr": 1e-3}


def cmd_pretrain(args: argparse.Namespace) -> int:
    from muldml import io as atomic
    from muldml.training import load_checkpoint, model_from_checkpoint
    from muldml.training.distributed import launch_rank
    from muldml.training.runfolder import read_result, write_result

    args.preset = "cnn"  # softmax only
    cmd_train(args, PRETRAIN_DEFAULTS)
    if launch_rank() != 0:
        return 0
    model, _ = model_from_checkpoint(load_checkpoint(args.out))
    path = atomic.save_torch(Path(args.out) / "backbone.pt", model.backbone.state_dict())
    result = read_result(Path(args.out)) or {}
    write_result(Path(args.out), {**result, "backbone": str(path)})  # result.json stays the last file written
    print(f"backbone for --init: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from muldml.demo import run_demo

    run_demo(args.out, epochs=args.epochs, subjects=args.subjects, progress=not args.quiet,
             runtime=runtime_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muldml", description="Multi-threshold deep metric learning for facial expression recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a preset on an image folder")
    train.add_argument("--preset", choices=list(PRESETS), default=None, help="paper variant (default mul-dml)")
    add_run_options(train, "run folder: checkpoint, history, report", resume=True)
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on an image folder")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", help="which images to score: a manifest split (train, val, test), 'held-out' "
                          "(images the run did not train on, from its split.json) or 'all' (default: test when the "
                          "data has a test split, else val, else held-out; training images only when asked)")
    evaluate.add_argument("--out", help="report folder parent (default: the run folder)")
    evaluate.add_argument("--subject-regex")
    evaluate.add_argument("--quiet", action="store_true")
    add_runtime_options(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    prepare = sub.add_parser("prepare", help="detect, align and crop faces of a dataset as distributed")
    prepare.add_argument("src", help="the dataset's folder as distributed")
    prepare.add_argument("out", help="output folder: <label>/<image>.png and manifest.csv")
    prepare.add_argument("--dataset", required=True,
                         help="ck+, ck+-folders, mmi, sfew, raf-db, fer2013, ferplus, affectnet, jaffe, folder")
    prepare.add_argument("--size", type=int, default=236, help="output side in pixels (paper: 236)")
    prepare.add_argument("--no-detect", action="store_true", help="images are aligned faces already: no MTCNN")
    prepare.add_argument("--rotations", default=None, help="offline rotations of training images, degrees (default -10,-5,0,5,10; '0' for none)")
    prepare.add_argument("--device", default="cpu", help="MTCNN device (cpu, cuda)")
    prepare.add_argument("--subject-regex", help="folder: regex whose first group is the subject id")
    prepare.add_argument("--ferplus", help="fer2013: FERPlus fer2013new.csv for majority-vote labels")
    prepare.add_argument("--affectnet-classes", type=int, choices=(7, 8), help="affectnet: 7 basic or 8 with contempt")
    prepare.add_argument("--include-neutral", action="store_true", help="ck+: add each sequence's first frame as neutral")
    prepare.add_argument("--raf-original", action="store_true", help="raf-db: the original, not the aligned images")
    prepare.add_argument("--quiet", action="store_true")
    prepare.set_defaults(run=cmd_prepare)

    cv = sub.add_parser("cv", help="k-fold subject-independent cross-validation of a preset")
    cv.add_argument("--preset", choices=list(PRESETS), default=None)
    cv.add_argument("--folds", type=int, default=10)
    add_run_options(cv, "study folder: fold-XX runs, cv.json, report.md", resume=False)
    cv.set_defaults(run=cmd_cv)

    pretrain = sub.add_parser("pretrain", help="softmax pre-training on a large set; writes backbone.pt for --init")
    add_run_options(pretrain, "run folder: checkpoint, history, backbone.pt", resume=True)
    pretrain.set_defaults(run=cmd_pretrain)

    demo = sub.add_parser("demo", help="built-in demo: generated faces, cnn vs mul-dml, side by side")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo's)")
    demo.add_argument("--subjects", type=int, default=None, help="identities to generate (default: the demo's)")
    demo.add_argument("--quiet", action="store_true")
    add_runtime_options(demo)
    demo.set_defaults(run=cmd_demo)

    from muldml import export, predict

    predict.add_parser(sub)
    export.add_parser(sub)
    from muldml.studies.cli import add_study_parser

    add_study_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        print(f"muldml: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written, a full disk: the file system's word, one line
        where = f": {e.filename}" if e.filename else ""
        print(f"muldml: error: {e.strerror or e.__class__.__name__}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muldml: interrupted (checkpoints written so far are intact; --resume continues)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

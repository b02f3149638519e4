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

This module parses and dispatches; the commands live in their modules (experiment, cv,
evaluate, demo, prepare, studies). Settings layer as defaults < preset < --config file <
command line (muldml.config). Runtime options (--device, --num-workers, --amp,
--channels-last, --compile, --grad-cache, --sync-bn) say where and how a run executes; those
that change what is learnt are recorded in the run folder's settings (muldml.training.runfolder).
Problems with the input print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import muldml
from muldml.config import (PRESETS, Config, add_config_options, add_run_options, add_runtime_options,  # noqa: F401
                           config_from_args, runtime_from_args)
from muldml.errors import UserError


def cmd_train(args: argparse.Namespace) -> int:
    from muldml.experiment import train_command

    return train_command(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from muldml.evaluate import evaluate_command

    evaluate_command(args.checkpoint, args.data, args.split, args.out, args.subject_regex, runtime_from_args(args),
                     progress=not args.quiet, tta=args.tta)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from muldml.data.files import leaving_out
    from muldml.data.sources import load_source
    from muldml.prepare import PAPER_ROTATIONS, prepare

    options = {"subject_regex": args.subject_regex, "ferplus": args.ferplus, "classes": args.affectnet_classes,
               "include_neutral": args.include_neutral or None, "aligned": False if args.raf_original else None}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        with leaving_out(args.out):  # never read back what an earlier run wrote
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
    from muldml.experiment import load_samples

    cfg = config_from_args(args, args.preset)
    runtime = runtime_from_args(args)
    samples, classes = load_samples(args.data, args.subject_regex, out=args.out)
    cfg.classes = classes
    summary = cross_validate(cfg, samples, args.out, folds=args.folds, progress=not args.quiet, runtime=runtime,
                             image_level=args.image_level_split, overwrite=args.overwrite)
    if not summary:  # a process other than rank 0 under torchrun
        return 0
    print(f"{cfg.preset}: {args.folds}-fold accuracy {100 * summary['accuracy_mean']:.2f} ± "
          f"{100 * summary['accuracy_std']:.2f}%  ({Path(args.out) / 'report.md'})")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from muldml.experiment import pretrain_command

    return pretrain_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from muldml.demo import run_demo

    run_demo(args.out, epochs=args.epochs, subjects=args.subjects, progress=not args.quiet, overwrite=args.overwrite,
             runtime=runtime_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muldml", description="Multi-threshold deep metric learning for facial expression recognition.")
    parser.add_argument("--version", action="version", version=f"muldml {muldml.__version__}")
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
    from muldml.inference import TTA_MODES

    evaluate.add_argument("--tta", choices=TTA_MODES, default="none",
                          help="test-time augmentation: none (centre crop), flip (and its mirror) or ten-crop "
                               "(corners, centre and their mirrors), class probabilities averaged (default none)")
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
    demo.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch instead)")
    demo.add_argument("--overwrite", action="store_true",
                      help="retrain runs in the folder that were made with other settings (default: refuse)")
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

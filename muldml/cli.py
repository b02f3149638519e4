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

import muldml
from muldml.config import PRESETS, Config, Runtime, preset_config, read_config_file, split_settings
from muldml.errors import UserError

# Settings that are not command-line options (filled from the data or the preset choice).
_NOT_OPTIONS = {"preset", "classes"}
_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}


def _add_field_options(group, fields) -> None:
    for f in fields:
        if f.name in _NOT_OPTIONS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{f.metadata['help']} " if "help" in f.metadata else ""
        if text and default is None:
            text, default = text.strip(), None
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{text}(default {default})" if default is not None or not text else text)
        else:
            group.add_argument(flag, type=_TYPES[f.type], default=None, metavar=f.name.split("_")[-1].upper(),
                               help=f"{text}(default {default})" if default is not None or not text else text)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One --option per Config field; unset options stay None so lower layers show through."""
    _add_field_options(parser.add_argument_group("settings (override the preset and --config)"),
                       dataclasses.fields(Config))


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """One --option per Runtime field (device, workers, …): never saved in a checkpoint."""
    _add_field_options(parser.add_argument_group("runtime (where and how fast; not saved with the run)"),
                       dataclasses.fields(Runtime))


def add_run_options(parser: argparse.ArgumentParser, out_help: str, resume: bool) -> None:
    """Options shared by the commands that train: data, output, config file, settings."""
    parser.add_argument("--data", required=True, help="dataset folder (<class>/<image> or manifest.csv)")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--config", help="JSON or YAML file of settings")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
        parser.add_argument("--overwrite", action="store_true", help="replace a run already in the folder")
    parser.add_argument("--subject-regex", help=r"regex whose first group is the subject id in file names, e.g. '^(S\d+)_'")
    parser.add_argument("--image-level-split", action="store_true",
                        help="allow splitting images without a subject id image by image (the same people may "
                             "then be on both sides; the report says so)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(parser)
    add_runtime_options(parser)


def _file_settings(args: argparse.Namespace) -> tuple[dict, dict]:
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    return split_settings(values)


def config_from_args(args: argparse.Namespace, preset: str | None) -> Config:
    values, _ = _file_settings(args)
    preset = values.pop("preset", None) if preset is None else preset
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
           if f.name not in _NOT_OPTIONS and getattr(args, f.name, None) is not None}
    return preset_config(preset or "mul-dml", **(values | cli))


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    _, values = _file_settings(args)
    cli = {f.name: getattr(args, f.name) for f in dataclasses.fields(Runtime) if getattr(args, f.name, None) is not None}
    return Runtime.from_dict(values | cli)


def load_samples(data: str, subject_regex: str | None, classes: Sequence[str] | None = None, out: str | None = None):
    """The samples of folder ``data``; ``out``, the command's output folder, is never read as data."""
    from muldml.data.files import leaving_out
    from muldml.data.folder import scan_folder

    with leaving_out(out):
        return scan_folder(data, classes, subject_regex)


def split_train_val(samples, cfg: Config, image_level: bool = False):
    """Official split from the manifest when present (validation: its val images only; the
    test images are kept for `evaluate --split test`), else a subject-independent hold-out."""
    from muldml.data.folder import originals
    from muldml.data.splits import subject_holdout

    splits = {s.split for s in samples}
    if "train" in splits and splits & {"val", "test"}:
        train = [s for s in samples if s.split == "train"]
        val = [s for s in samples if s.split == "val"]
        if not val:
            print("official split without val images: no validation during training; "
                  "report the test images with `muldml evaluate --split test`")
        return train, originals(val)
    train_idx, val_idx = subject_holdout(samples, cfg.val_fraction, cfg.seed, allow_image_level=image_level)
    return [samples[i] for i in train_idx], originals([samples[i] for i in val_idx])


def describe_metric_loss(cfg: Config) -> str:
    """What the run adds to softmax, in a few words for the console."""
    if cfg.metric_loss != "triplet":
        return f"metric loss {cfg.metric_loss}"
    return f"margins {cfg.margins}" if cfg.margins else "softmax only"


def cmd_train(args: argparse.Namespace) -> int:
    from muldml.evaluate import evaluate
    from muldml.protocol import image_level_note
    from muldml.training import fit
    from muldml.training.distributed import launch_rank

    cfg = config_from_args(args, args.preset)
    runtime = runtime_from_args(args)
    samples, classes = load_samples(args.data, args.subject_regex, out=args.out)
    cfg.classes = classes
    train_samples, val_samples = split_train_val(samples, cfg, args.image_level_split)
    note = image_level_note(samples, args.image_level_split)
    main_process = launch_rank() == 0  # under torchrun, rank 0 speaks and reports
    if main_process:
        print(f"{cfg.preset}: {len(train_samples)} training / {len(val_samples)} validation images, "
              f"{len(classes)} classes, {describe_metric_loss(cfg)}")
        if note:
            print(note)
    state = fit(cfg, train_samples, val_samples, args.out, runtime, resume=args.resume, overwrite=args.overwrite,
                progress=not args.quiet)
    if val_samples and main_process:
        result = evaluate(state, val_samples, args.out, device=runtime.device, title=f"{cfg.preset} on {args.data}",
                          note=note)
        print(f"{cfg.preset}: validation accuracy {100 * result.metrics['accuracy']:.2f}%  ({result.report})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from muldml.data.folder import originals
    from muldml.evaluate import evaluate
    from muldml.training import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    runtime = runtime_from_args(args)
    samples, _ = load_samples(args.data, args.subject_regex, state["config"]["classes"], args.out)
    samples = originals(samples)
    if args.split:
        samples = [s for s in samples if s.split == args.split]
        if not samples:
            raise UserError(f"no images of split {args.split!r} in {args.data}")
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "evaluation"
    result = evaluate(state, samples, out, device=runtime.device, history=[], num_workers=runtime.workers,
                      title=f"{state['config']['preset']} on {args.data}", progress=not args.quiet, tta=args.tta)
    print(f"{result.config.preset}: accuracy {100 * result.metrics['accuracy']:.2f}% on {len(samples)} images, "
          f"test-time augmentation {args.tta}  ({result.report})")
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

    cfg = config_from_args(args, args.preset)
    runtime = runtime_from_args(args)
    samples, classes = load_samples(args.data, args.subject_regex, out=args.out)
    cfg.classes = classes
    summary = cross_validate(cfg, samples, args.out, folds=args.folds, progress=not args.quiet, runtime=runtime,
                             image_level=args.image_level_split)
    if not summary:  # a process other than rank 0 under torchrun
        return 0
    print(f"{cfg.preset}: {args.folds}-fold accuracy {100 * summary['accuracy_mean']:.2f} ± "
          f"{100 * summary['accuracy_std']:.2f}%  ({Path(args.out) / 'report.md'})")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from muldml import io as atomic
    from muldml.training import load_checkpoint, model_from_checkpoint

    args.preset = "cnn"  # softmax only
    if args.lr is None:
        args.lr = 1e-3  # from scratch, unlike the paper's fine-tuning rate
    from muldml.training.distributed import launch_rank

    cmd_train(args)
    if launch_rank() != 0:
        return 0
    model, _ = model_from_checkpoint(load_checkpoint(args.out))
    path = atomic.save_torch(Path(args.out) / "backbone.pt", model.backbone.state_dict())
    print(f"backbone for --init: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from muldml.demo import run_demo

    run_demo(args.out, epochs=args.epochs, subjects=args.subjects, progress=not args.quiet,
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
    evaluate.add_argument("--split", help="only images of this split in the manifest (e.g. test)")
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

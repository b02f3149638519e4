"""`muldml study NAME`: the paper's tables and figures as commands.

    muldml study NAME (--data DIR | --demo) --out DIR [--folds K | --split] [--seeds S] [--quick]
                 [--config FILE] [--init PATH] [--tau-star T] [--dataset ck+|mmi|sfew|raf-db]

Settings: the preset of each cell, then --config, then --quick's, then the command line;
each cell's own settings (its threshold, slice dimension, …) win over all of them.
--tau-star T gives τ* to the one-threshold cells (table3, table4, table7, baselines);
without it they take table2's nested choice when table2 ran in the same folder, else the
configuration's tau_star.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

from muldml.studies.definitions import ALL, NAMES, STUDIES

# --quick: small enough for CI on two CPU cores, about a minute per study on the demo faces.
# Validation takes 40% of a fold's training subjects so that it holds at least two of them
# (triplets need two images of a class).
QUICK_SETTINGS: dict[str, Any] = {"epochs": 1, "image_size": 24, "batch_size": 32, "lr": 1e-3, "val_fraction": 0.4}
QUICK_FOLDS = 2
QUICK_DEMO = {"num_subjects": 8, "images_per_expression": 1, "size": 24}
# --demo: muldml demo's faces and schedule (muldml.demo.DEMO_FACES, DEMO_SETTINGS' lr, image
# size and epochs; imported when used, so that the command line starts without the trainer).
DEMO_KEYS = ("lr", "image_size", "epochs")


def add_study_parser(sub) -> argparse.ArgumentParser:
    """Register `study` on the `muldml` subcommands."""
    from muldml.config import add_config_options, add_runtime_options

    lines = [f"  {name:10s} {study.source}: {study.title}" for name, study in STUDIES.items()]
    lines.append(f"  {ALL:10s} every study above, each shared run trained once")
    parser = sub.add_parser("study", help="reproduce a table or figure of the paper (table1 … fig9, all)",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="Reproduce a table or figure of the paper.\n\nNAME:\n" + "\n".join(lines))
    parser.add_argument("name", choices=NAMES, metavar="NAME", help=", ".join(NAMES))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset folder (<class>/<image> or manifest.csv from `muldml prepare`)")
    source.add_argument("--demo", action="store_true",
                        help="the built-in generated demo faces, written to OUT/data and read from there "
                             "(the study's run and report folders are never read as data)")
    parser.add_argument("--out", required=True, help="study folder: runs/, one folder per study, report.md")
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--folds", type=int, help="k-fold subject-independent cross-validation "
                          "(default 10 without an official split, 2 with --quick)")
    protocol.add_argument("--split", action="store_true", help="train → test on the official split")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repetitions of every cell: seeds --seed … --seed+S-1 (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny runs that check the pipeline end to end in minutes on a CPU: "
                             f"{QUICK_SETTINGS['image_size']}-px images, {QUICK_SETTINGS['epochs']} epoch, batch "
                             f"{QUICK_SETTINGS['batch_size']}, lr {QUICK_SETTINGS['lr']:g}, {QUICK_FOLDS} folds; "
                             "their numbers say nothing about the method")
    parser.add_argument("--dataset", choices=("ck+", "mmi", "sfew", "raf-db"),
                        help="which dataset the data is, for the paper's published values")
    parser.add_argument("--config", help="JSON or YAML file of settings, e.g. configs/paper-ckplus.yaml")
    parser.add_argument("--subject-regex", help=r"regex whose first group is the subject id in file names")
    parser.add_argument("--image-level-split", action="store_true",
                        help="data without subjects (RAF-DB, SFEW): split image by image, stated in the reports")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="retrain runs in the folder that were made with other settings (default: refuse)")
    add_config_options(parser)
    add_runtime_options(parser)
    parser.set_defaults(run=cmd_study)
    return parser


def _command(args: argparse.Namespace) -> str:
    """The command line equivalent to `args` (what the report quotes)."""
    words = ["muldml", "study", args.name]
    for key, value in vars(args).items():
        if key in ("name", "run", "command") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every cell shares: --config, then --demo's, then --quick's, then the
    command line's. A layer that sets image_size without a crop drops the crop of the layers
    below (the default crop, image_size·224/236, follows the new size). Validated (UserError)."""
    from muldml.config import Config, preset_config, read_config_file, split_settings
    from muldml.demo import DEMO_SETTINGS

    demo = {k: DEMO_SETTINGS[k] for k in DEMO_KEYS} if args.demo else {}

    file_values, _ = split_settings(read_config_file(args.config)) if args.config else ({}, {})
    file_values.pop("preset", None)  # each cell names its own preset
    command_line = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                    if f.name not in ("preset", "classes") and getattr(args, f.name, None) is not None}
    base: dict[str, Any] = {}
    for layer in (file_values, demo, QUICK_SETTINGS if args.quick else {}, command_line):
        if "image_size" in layer and "crop" not in layer:
            base.pop("crop", None)
        base |= layer
    preset_config("mul-dml", **base)  # one line for a bad setting, before any work
    return base


def cmd_study(args: argparse.Namespace) -> int:
    from muldml.config import preset_config, runtime_from_args
    from muldml.data.files import leaving_out
    from muldml.data.folder import scan_folder
    from muldml.errors import UserError
    from muldml.studies.runner import StudyContext, check_study_folder, make_protocol, run_study, study_outputs
    from muldml.studies.report import write_index, write_study_report
    from muldml.studies.definitions import studies_for

    out = Path(args.out)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.folds is not None and args.folds < 2:
        raise UserError(f"--folds must be >= 2, got {args.folds}")
    base = common_settings(args)
    runtime = runtime_from_args(args)
    if args.quick and args.num_workers is None:
        runtime.num_workers = 0  # worker start-up would dominate such small runs

    if args.demo:
        from muldml.data.synthetic import write_demo_dataset
        from muldml.demo import DEMO_FACES
        from muldml.training import check_writable

        check_writable(out)  # the demo faces are written into it first: the study's input, beside its outputs
        data = write_demo_dataset(out / "data", seed=0, progress=not args.quiet, **(QUICK_DEMO if args.quick else DEMO_FACES))
    else:
        data = Path(args.data)
    with leaving_out(*study_outputs(out, data)):  # a rerun never reads its own runs and reports as images
        samples, classes = scan_folder(data, None, args.subject_regex)
    first_seed = preset_config("mul-dml", **base).seed
    # The folds are those of `muldml cv --seed S` and the hold-out of `muldml train --seed S` (one policy,
    # muldml.protocol), drawn with the first seed and kept for every repetition.
    protocol = make_protocol(samples, args.folds, args.split, preset_config("mul-dml", **base).val_fraction,
                             args.image_level_split, default_folds=QUICK_FOLDS if args.quick else 10, seed=first_seed)
    check_study_folder(out, {"data": str(Path(data).resolve()), "protocol": protocol.description,
                             "folds": [f.name for f in protocol.folds], "common_settings": base, "classes": classes})
    ctx = StudyContext(out=out, classes=classes, protocol=protocol, seeds=[first_seed + i for i in range(args.seeds)], base=base,
                       runtime=runtime, tau_star=args.tau_star, dataset=args.dataset, quick=args.quick,
                       progress=not args.quiet, command=_command(args), keep_checkpoints=not args.quick,
                       overwrite=args.overwrite)
    print(f"{len(samples)} images, {len(classes)} classes; {protocol.description}")
    for study in studies_for(args.name):
        print(f"== {study.name}: {study.source}, {study.title}")
        results = run_study(ctx, study)
        report = write_study_report(ctx, study, results, out / study.name)
        print(f"{study.name}: {report}")
    index = write_index(ctx, {name: out / name / "report.md" for name in STUDIES if (out / name / "report.md").is_file()})
    print(f"studies: {index}")
    return 0

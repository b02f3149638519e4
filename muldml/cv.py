"""k-fold subject-independent cross-validation (the paper's protocol for CK+, MMI, JAFFE).

Each fold's test images are one fold of subjects (originals only; their rotations never
train); the other folds train (with their offline rotations), except a held-out
`val_fraction` of their subjects whose images give the fold's validation curves: the test
fold is used only for its final accuracy (folds from muldml.protocol, shared with
`muldml study`). Every fold is a run folder of its own (fold-01 …), so an interrupted
study resumes fold by fold, and a fold counts as done only when its result.json records the
settings asked for (muldml.training.runfolder): a folder made with other settings is refused
in one line, or replaced with ``overwrite``. The summary holds mean ± std accuracy over folds and the
confusion matrix summed over folds, with its plot.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from muldml import io as atomic
from muldml.config import Config, Runtime
from muldml.data.folder import Sample
from muldml.evaluate import confusion_table, evaluate, metrics_from_confusion
from muldml.plots import plot_confusion
from muldml.protocol import image_level_note, make_protocol
from muldml.report import Report
from muldml.training import fit, resolve_device
from muldml.training import runfolder
from muldml.training.distributed import launch_rank


def cross_validate(cfg: Config, samples: Sequence[Sample], out: str | Path, folds: int = 10,
                   progress: bool = True, runtime: Runtime | None = None, image_level: bool = False,
                   overwrite: bool = False) -> dict:
    """Train and evaluate every fold into out/fold-XX; write out/cv.json and out/report.md.

    Folds come from muldml.protocol with the run's seed (cfg.seed). image_level: allow folds
    by image for samples without a subject (see subject_kfold); the report then says so.
    overwrite: retrain folds made with other settings instead of refusing. Raises UserError
    when the samples cannot make the folds or a fold folder holds a run of other settings.
    """
    out = Path(out)
    runtime = runtime or Runtime()
    protocol = make_protocol(samples, folds, use_split=False, val_fraction=cfg.val_fraction,
                             image_level=image_level, seed=cfg.seed)
    note = image_level_note(samples, image_level)
    per_fold = []
    device_type = resolve_device(runtime.device).type
    for k, fold in enumerate(protocol.folds, start=1):
        fold_dir = out / fold.name
        requested = runfolder.fingerprint(cfg, runtime, device_type, fold.train)
        runfolder.check_folder(fold_dir, requested, overwrite, main=launch_rank() == 0)
        done = runfolder.read_result(fold_dir, requested)
        if done is not None:  # result.json is written last: the fold finished with these settings
            per_fold.append(done["metrics"])
            continue
        state = fit(cfg, fold.train, fold.val, fold_dir, runtime, resume=True, overwrite=overwrite, progress=progress,
                    test_samples=fold.test, split_policy=f"{protocol.description}; {fold.name}")
        if launch_rank() != 0:
            continue  # under torchrun, rank 0 evaluates and reports
        metrics = evaluate(state, fold.test, fold_dir, device=runtime.device,
                           title=f"{cfg.preset}, fold {k} of {folds}", note=note).metrics
        runfolder.write_result(fold_dir, {"fold": fold.name, "epochs": state["epoch"], "metrics": metrics})
        per_fold.append(metrics)
        print(f"fold {k}/{folds}: accuracy {100 * metrics['accuracy']:.2f}% on {len(fold.test)} images")

    if launch_rank() != 0:
        return {}
    accuracies = np.array([m["accuracy"] for m in per_fold])
    confusion = np.sum([np.array(m["confusion"]) for m in per_fold], axis=0)
    summary = {
        "preset": cfg.preset, "folds": folds,
        "accuracy_mean": float(accuracies.mean()), "accuracy_std": float(accuracies.std(ddof=1)) if folds > 1 else 0.0,
        "fold_accuracies": accuracies.tolist(), "confusion": confusion.tolist(), "classes": list(cfg.classes),
        "overall": metrics_from_confusion(confusion, cfg.classes),
    }
    atomic.write_json(out / "cv.json", summary)
    plot_confusion(confusion, cfg.classes, out / "confusion.png",
                   f"{cfg.preset}, {folds}-fold: {100 * summary['accuracy_mean']:.1f} ± {100 * summary['accuracy_std']:.1f}%")
    report = Report(f"{cfg.preset}: {folds}-fold {'image-level' if note else 'subject-independent'} cross-validation")
    if note:
        report.paragraph(f"**{note}**")
    report.paragraph(f"Protocol: {protocol.description}.")
    overall = summary["overall"]
    majority = overall["majority_baseline"]
    report.paragraph(f"Accuracy {100 * summary['accuracy_mean']:.2f} ± {100 * summary['accuracy_std']:.2f}% "
                     f"(mean ± std over folds); majority-class baseline of the test images {100 * majority:.2f}%"
                     f"{' — **the model is at or below it**' if summary['accuracy_mean'] <= majority else ''}. "
                     f"Over all folds' test images: macro-F1 {100 * overall['macro_f1']:.2f}%, balanced accuracy "
                     f"{100 * overall['balanced_accuracy']:.2f}%.")
    report.table(["fold", "accuracy", "majority baseline", "macro-F1"],
                 [[k, f"{100 * m['accuracy']:.2f}%", f"{100 * m['majority_baseline']:.2f}%",
                   f"{100 * m['macro_f1']:.2f}%"] for k, m in enumerate(per_fold, start=1)])
    report.paragraph("Confusion matrix summed over folds, images (row %):")
    report.table(*confusion_table(overall))
    report.image("confusion", "confusion.png")
    report.settings(cfg.to_dict()).write(out / "report.md")
    return summary

"""Evaluation, the one path from a trained model to its report:
checkpoint (or model) → predict → metrics → report. ``evaluate_command`` is `muldml
evaluate`: it chooses which images to score (never a run's training images unless asked).

``evaluate`` serves every caller (train, evaluate, cv, demo, studies). ``write_report``
leaves in its folder: metrics.json, confusion.csv (counts), confusion.png (row-normalised,
as the paper's Fig. 9), curves.png (loss and accuracy per epoch, when a history is given),
slice_cka.png (linear CKA between the slices, for two slices or more) and report.md holding
the config, numbers and plots. The metrics include embedding retrieval (Precision@1, MAP@R,
NMI per slice and merged) on the embeddings of the evaluated images.
"""
from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.config import Config
from muldml.data.folder import FaceDataset, Sample, originals, scan_folder
from muldml.errors import UserError
from muldml.model import MulDMLNet
from muldml.plots import plot_confusion, plot_curves
from muldml.regime import regime_section
from muldml.report import Report


@dataclass
class Evaluation:
    """What `evaluate` returns: metrics (see compute_metrics), (num_samples,) predicted
    classes, the model's config and the report written (None when no folder was given)."""

    metrics: dict[str, Any]
    predictions: np.ndarray
    config: Config
    report: Path | None


def evaluate(checkpoint: str | Path | dict[str, Any] | tuple[MulDMLNet, Config], samples: Sequence[Sample],
             out: str | Path | None = None, *, device: str | torch.device = "auto", title: str | None = None,
             history: Sequence[dict] | None = None, note: str | None = None, num_workers: int = 0,
             progress: bool = False, tta: str = "none") -> Evaluation:
    """Evaluate a checkpoint (file, run folder, loaded state) or a (model, config) pair on
    `samples` (centre crop), and write a report into `out` when given.

    tta: test-time augmentation, one of `muldml.inference.TTA_MODES` ("none": the centre
    crop; "flip", "ten-crop": class probabilities averaged over views); metrics["tta"] and
    the report say which.

    device: where to run ("auto", "cpu", "cuda:N"); nothing device-specific comes from the
    checkpoint. history: curves for the report; default the checkpoint's training history.
    note: a caveat printed in bold at the top of the report (e.g. an image-level split).
    Raises UserError for unreadable checkpoints or unavailable devices.
    """
    from muldml.training import load_checkpoint, model_from_checkpoint, resolve_device

    if isinstance(checkpoint, tuple):
        model, cfg = checkpoint
    else:
        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        model, cfg = model_from_checkpoint(state)
        history = state.get("history") if history is None else history
    device = device if isinstance(device, torch.device) else resolve_device(device)
    predictions, embeddings = predict_and_embed(model, samples, cfg, device, progress=progress,
                                                num_workers=num_workers, tta=tta)
    labels = [s.label for s in samples]
    metrics = compute_metrics(labels, predictions, cfg.classes)
    metrics["tta"] = tta
    metrics["retrieval"] = embedding_metrics(embeddings, torch.as_tensor(labels, dtype=torch.long), cfg)
    report = write_report(out, cfg, metrics, history, title, note) if out is not None else None
    return Evaluation(metrics, predictions, cfg, report)


def predict(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
            progress: bool = False, num_workers: int = 0, tta: str = "none") -> np.ndarray:
    """(num_samples,) predicted class per sample, from the centre crop or, with test-time
    augmentation, from class probabilities averaged over its views (`muldml.inference.classify_views`)."""
    return predict_and_embed(model, samples, cfg, device, progress, num_workers, tta)[0]


@torch.no_grad()
def predict_and_embed(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
                      progress: bool = False, num_workers: int = 0,
                      tta: str = "none") -> tuple[np.ndarray, torch.Tensor]:
    """`predict`, and the (num_samples, N·d) float32 embedding (before normalisation, on the
    CPU) of each sample from the same forward pass: with test-time augmentation, the mean over
    its views."""
    from muldml.inference import TTA_VIEWS, check_tta, classify_views, tta_transform

    views = TTA_VIEWS[check_tta(tta)]
    # Batches of images whose views together make about one configured batch.
    loader = torch.utils.data.DataLoader(FaceDataset(samples, tta_transform(cfg.image_size, cfg.crop, tta)),
                                         batch_size=max(1, cfg.batch_size // views), num_workers=num_workers)
    model.eval().to(device)
    preds, embeddings = [], []
    for images, _ in tqdm(loader, disable=not progress, desc="evaluate"):
        _, predicted, embedding = classify_views(model, images.to(device))
        preds.append(predicted.cpu())
        embeddings.append(embedding.cpu())
    if not preds:
        return np.zeros(0, dtype=np.int64), torch.zeros(0, cfg.num_slices * cfg.slice_dim)
    return torch.cat(preds).numpy(), torch.cat(embeddings)


def embedding_metrics(embeddings: torch.Tensor, labels: torch.Tensor, cfg: Config) -> dict[str, Any]:
    """What the embedding of the evaluated images learnt, for metrics.json's "retrieval" block.

    embeddings: (n, N·d) before normalisation; labels: (n,) class indices. Returns
    {"num_images", "margins": τ_i per slice ([] for softmax-only presets), "slices",
    "merged" (Precision@1, MAP@R, NMI in [0, 1], `muldml.retrieval.retrieval_metrics`),
    "slice_cka": (N, N) linear CKA between the slices (`muldml.diversity`; None for one
    slice)}, or {"num_images", "skipped": why} when the images cannot measure it.
    """
    from muldml.diversity import slice_cka
    from muldml.retrieval import retrieval_metrics, unusable

    reason = unusable(labels)
    if reason:
        return {"num_images": len(labels), "skipped": reason}
    scores = retrieval_metrics(embeddings, labels, cfg.num_slices)
    cka = slice_cka(embeddings, cfg.num_slices).tolist() if cfg.num_slices > 1 else None
    return {"num_images": len(labels), "margins": list(cfg.margins), **scores, "slice_cka": cka}


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, the majority-class baseline, macro-F1 and balanced accuracy, per-class
    precision / recall / F1 / support (scikit-learn) and confusion counts (rows: true class).

    A class absent from y_true has recall and F1 None and is left out of balanced accuracy
    and macro-F1 (scikit-learn's macro averages over the classes present in y_true here).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    labels = list(range(k))
    confusion = confusion_matrix(y_true, y_pred, labels=labels) if len(y_true) else np.zeros((k, k), dtype=np.int64)
    support = confusion.sum(1)
    present = [i for i in labels if support[i]]
    precision, recall, f1, _ = (precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
                                if len(y_true) else (np.zeros(k),) * 4)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0) \
        if present else (0.0, 0.0, 0.0, None)

    def per_class(values, absent_none=True):
        return {c: (None if absent_none and not support[i] else float(values[i])) for i, c in enumerate(classes)}

    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "num_samples": int(len(y_true)),
        "majority_baseline": float(support.max() / len(y_true)) if len(y_true) else 0.0,
        "macro_f1": float(macro[2]),
        "balanced_accuracy": float(macro[1]),  # mean recall over the classes present
        "per_class_recall": per_class(recall),
        "per_class_precision": per_class(precision, absent_none=False),
        "per_class_f1": per_class(f1),
        "per_class_support": {c: int(support[i]) for i, c in enumerate(classes)},
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


def metrics_from_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> dict:
    """compute_metrics of the predictions a confusion matrix (rows: true class) counts."""
    y_true, y_pred = [], []
    for t, row in enumerate(confusion):
        for p, n in enumerate(row):
            y_true += [t] * int(n)
            y_pred += [p] * int(n)
    return compute_metrics(y_true, y_pred, classes)


def confusion_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the confusion matrix as 'count (row %)' per cell: with few images per
    class, percentages alone mislead."""
    header = ["true \\ predicted", *metrics["classes"], "images"]
    rows = []
    for name, row in zip(metrics["classes"], metrics["confusion"]):
        total = sum(row)
        rows.append([name, *(f"{n} ({100 * n / total:.0f}%)" if total else "0" for n in row), str(total)])
    return header, rows


def _confusion_csv(metrics: dict) -> str:
    buffer = io.StringIO()
    buffer.write("true\\predicted," + ",".join(metrics["classes"]) + "\n")
    for name, row in zip(metrics["classes"], metrics["confusion"]):
        buffer.write(name + "," + ",".join(map(str, row)) + "\n")
    return buffer.getvalue()


def write_report(out: str | Path, cfg: Config, metrics: dict, history: Sequence[dict] | None = None,
                 title: str | None = None, note: str | None = None) -> Path:
    """Write metrics, confusion matrix, plots and report.md into `out`; returns report.md.

    The embedding section (retrieval table, slice_cka.png) shows metrics["retrieval"] when
    present (see `embedding_metrics`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "metrics.json", metrics)
    atomic.write_text(out / "confusion.csv", _confusion_csv(metrics))
    plot_confusion(np.array(metrics["confusion"]), metrics["classes"], out / "confusion.png",
                   f"{cfg.preset}: accuracy {100 * metrics['accuracy']:.1f}%")
    report = Report(title or f"{cfg.preset} evaluation")
    if note:
        report.paragraph(f"**{note}**")
    majority = metrics["majority_baseline"]
    flag = " — **at or below the majority-class baseline: the model has learnt nothing usable**" \
        if metrics["accuracy"] <= majority else ""
    report.paragraph(f"Accuracy: **{100 * metrics['accuracy']:.2f}%** on {metrics['num_samples']} images "
                     f"(majority-class baseline {100 * majority:.2f}%{flag}). Macro-F1 {100 * metrics['macro_f1']:.2f}%, "
                     f"balanced accuracy {100 * metrics['balanced_accuracy']:.2f}% (scikit-learn).")
    report.paragraph(f"Test-time augmentation: {metrics.get('tta', 'none')}.")

    def pct(value):
        return "—" if value is None else f"{100 * value:.1f}%"

    report.table(["class", "images", "precision", "recall", "F1"],
                 [[c, metrics["per_class_support"][c], pct(metrics["per_class_precision"][c]),
                   pct(metrics["per_class_recall"][c]), pct(metrics["per_class_f1"][c])] for c in metrics["classes"]])
    report.paragraph("Confusion matrix, images (row %):")
    report.table(*confusion_table(metrics))
    report.image("confusion matrix", "confusion.png")
    if "retrieval" in metrics:
        _embedding_section(report, metrics["retrieval"], out, metrics.get("tta", "none"))
    if history:
        plot_curves(history, out / "curves.png", cfg.preset)
        report.image("training curves", "curves.png")
        regime_section(report, history, out)
    return report.settings(cfg.to_dict()).write(out / "report.md")


def _embedding_section(report: Report, retrieval: dict, out: Path, tta: str = "none") -> None:
    """The retrieval table (per slice with its τ_i, and merged) and the slices' CKA heat map."""
    from muldml.plots import plot_slice_similarity

    report.heading("Embedding retrieval")
    if "skipped" in retrieval:
        report.paragraph(f"Not measured: {retrieval['skipped']}.")
        return
    report.paragraph(f"Each of the {retrieval['num_images']} evaluated images queries all the others by Euclidean "
                     "distance between L2-normalised embeddings (pytorch-metric-learning's AccuracyCalculator): "
                     "Precision@1, MAP@R, and NMI of a k-means clustering (k = classes) against the labels"
                     + (", of its one embedding." if len(retrieval["slices"]) == 1 else
                        ". Per slice, and merged (the normalised slices concatenated, each weighing the same).")
                     + ("" if tta == "none" else f" With test-time augmentation ({tta}), an image's embedding is "
                        "the mean over its views.")
                     + ("" if retrieval["margins"] else " This model trains no margin (softmax only)."))

    def row(name, margin, scores):
        return [name, margin, *(f"{100 * scores[k]:.1f}%" for k in ("precision_at_1", "mean_average_precision_at_r",
                                                                    "NMI"))]

    margins = [f"{m:g}" for m in retrieval["margins"]] or ["—"] * len(retrieval["slices"])
    if len(retrieval["slices"]) == 1:  # the merged embedding is the slice
        rows = [row("embedding (one slice)", margins[0], retrieval["merged"])]
    else:
        rows = [row(str(i + 1), m, s) for i, (m, s) in enumerate(zip(margins, retrieval["slices"]))]
        rows.append(row("merged", "—", retrieval["merged"]))
    report.table(["slice", "margin τ", "Precision@1", "MAP@R", "NMI"], rows)
    cka = retrieval.get("slice_cka")
    if cka:
        plot_slice_similarity(np.array(cka), out / "slice_cka.png")
        report.paragraph("Linear CKA between the slices' embeddings of the evaluated images (1: the same representation "
                         "up to rotation and scale; Mul-DML expects distinct slices, well below 1):")
        report.table(["slice", *(str(j + 1) for j in range(len(cka)))],
                     [[str(i + 1), *(f"{v:.2f}" for v in values)] for i, values in enumerate(cka)])
        report.image("slice similarity (linear CKA)", "slice_cka.png")


def evaluate_command(checkpoint: str | Path, data: str | Path, split: str | None, out: str | Path | None,
                     subject_regex: str | None, runtime, progress: bool = False, tta: str = "none") -> Evaluation:
    """`muldml evaluate`: score a run on the part of `data` that `split` names, never on its
    training images unless asked (split 'train' or 'all', with a warning naming how many
    scored images trained the run).

    split: a manifest split; 'held-out' (images outside the run's recorded training images,
    split.json); 'all'; None: test when the data has a test split, else val, else held-out.
    tta: test-time augmentation (`muldml.inference.TTA_MODES`). The output folder is never read as data.
    Raises UserError for an empty selection, or 'held-out' for a run that recorded no split.
    """
    from muldml.data.files import leaving_out
    from muldml.training import load_checkpoint
    from muldml.training.runfolder import read_split

    state = load_checkpoint(checkpoint)
    checkpoint = Path(checkpoint)
    run = checkpoint if checkpoint.is_dir() else checkpoint.parent
    report_dir = Path(out) if out else run / "evaluation"
    with leaving_out(report_dir):
        samples, _ = scan_folder(data, state["config"]["classes"], subject_regex)
    samples = originals(samples)
    recorded = read_split(run)
    trained = set(recorded["train"]["images"]) if recorded and "train" in recorded else set()
    splits = {s.split for s in samples if s.split}
    if split is None:
        split = "test" if "test" in splits else "val" if "val" in splits else "held-out"
    if split == "all":
        chosen, what = list(samples), "every image (--split all)"
    elif split == "held-out":
        if recorded is None:
            raise UserError(f"{run} records no split (split.json), so its training images are unknown: give "
                            "--split all to score every image knowingly, or a manifest split")
        chosen = [s for s in samples if str(Path(s.path).resolve()) not in trained]
        what = (f"the images the run did not train on ({len(samples) - len(chosen)} training images of {data} "
                "left out)")
    else:
        chosen = [s for s in samples if s.split == split]
        what = f"split {split!r} of the manifest"
    if not chosen:
        raise UserError(f"no images to score in {data} for --split {split}")
    overlap = sum(str(Path(s.path).resolve()) in trained for s in chosen)
    note = None
    if overlap:
        note = (f"Warning: {overlap} of the {len(chosen)} scored images trained this run, so this is not a held-out "
                "accuracy.")
        print(f"muldml: warning: {note[9:]}", file=sys.stderr)
    result = evaluate(state, chosen, report_dir, device=runtime.device, history=[], num_workers=runtime.workers,
                      title=f"{state['config']['preset']} on {data}: {what}", progress=progress, note=note, tta=tta)
    print(f"{result.config.preset}: accuracy {100 * result.metrics['accuracy']:.2f}% on {len(chosen)} images, "
          f"{what}, test-time augmentation {tta}  ({result.report})")
    return result

"""Evaluation, the one path from a trained model to its report:
checkpoint (or model) → predict → metrics → report.

``evaluate`` serves every caller (train, evaluate, cv, demo, studies). ``write_report``
leaves in its folder: metrics.json, confusion.csv (counts), confusion.png (row-normalised,
as the paper's Fig. 9), curves.png (loss and accuracy per epoch, when a history is given)
and report.md holding the config, numbers and plots.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.config import Config
from muldml.data.folder import FaceDataset, Sample
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
    predictions = predict(model, samples, cfg, device, progress=progress, num_workers=num_workers, tta=tta)
    metrics = compute_metrics([s.label for s in samples], predictions, cfg.classes)
    metrics["tta"] = tta
    similarity = None
    if out is not None and cfg.num_slices > 1 and len(samples) > 1:
        from muldml.diversity import slice_cka
        from muldml.studies.measures import embed

        similarity = slice_cka(embed(model, samples, cfg, device)[0], cfg.num_slices).numpy()
        metrics["slice_cka"] = similarity.tolist()
    report = write_report(out, cfg, metrics, history, title, note, similarity) if out is not None else None
    return Evaluation(metrics, predictions, cfg, report)


@torch.no_grad()
def predict(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
            progress: bool = False, num_workers: int = 0, tta: str = "none") -> np.ndarray:
    """(num_samples,) predicted class per sample, from the centre crop or, with test-time
    augmentation, from class probabilities averaged over its views (`muldml.inference.classify_views`)."""
    from muldml.inference import TTA_VIEWS, check_tta, classify_views, tta_transform

    views = TTA_VIEWS[check_tta(tta)]
    # Batches of images whose views together make about one configured batch.
    loader = torch.utils.data.DataLoader(FaceDataset(samples, tta_transform(cfg.image_size, cfg.crop, tta)),
                                         batch_size=max(1, cfg.batch_size // views), num_workers=num_workers)
    model.eval().to(device)
    preds = [classify_views(model, images.to(device))[1].cpu()
             for images, _ in tqdm(loader, disable=not progress, desc="evaluate")]
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, per-class recall (None for a class absent from y_true) and confusion counts."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    support = confusion.sum(1)
    recall = {c: (float(confusion[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "num_samples": int(len(y_true)),
        "per_class_recall": recall,
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


def _confusion_csv(metrics: dict) -> str:
    buffer = io.StringIO()
    buffer.write("true\\predicted," + ",".join(metrics["classes"]) + "\n")
    for name, row in zip(metrics["classes"], metrics["confusion"]):
        buffer.write(name + "," + ",".join(map(str, row)) + "\n")
    return buffer.getvalue()


def write_report(out: str | Path, cfg: Config, metrics: dict, history: Sequence[dict] | None = None,
                 title: str | None = None, note: str | None = None, slice_similarity=None) -> Path:
    """Write metrics, confusion matrix, plots and report.md into `out`; returns report.md.

    slice_similarity: (N, N) linear CKA between the slices (muldml.diversity), for the
    threshold-regime section."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "metrics.json", metrics)
    atomic.write_text(out / "confusion.csv", _confusion_csv(metrics))
    plot_confusion(np.array(metrics["confusion"]), metrics["classes"], out / "confusion.png",
                   f"{cfg.preset}: accuracy {100 * metrics['accuracy']:.1f}%")
    report = Report(title or f"{cfg.preset} evaluation")
    if note:
        report.paragraph(f"**{note}**")
    report.paragraph(f"Accuracy: **{100 * metrics['accuracy']:.2f}%** on {metrics['num_samples']} images.")
    report.paragraph(f"Test-time augmentation: {metrics.get('tta', 'none')}.")
    report.table(["class", "recall"], [[c, "—" if r is None else f"{100 * r:.1f}%"]
                                       for c, r in metrics["per_class_recall"].items()])
    report.image("confusion matrix", "confusion.png")
    if history:
        plot_curves(history, out / "curves.png", cfg.preset)
        report.image("training curves", "curves.png")
        regime_section(report, history, out, slice_similarity)
    return report.settings(cfg.to_dict()).write(out / "report.md")

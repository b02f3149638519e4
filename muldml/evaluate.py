"""Evaluation: accuracy, per-class recall, confusion matrix, plots and a report.

``write_report`` leaves in its folder: metrics.json, confusion.csv (counts),
confusion.png (row-normalised, as the paper's Fig. 9), curves.png (loss and accuracy per
epoch, when a history is given) and report.md holding the config, numbers and plots.
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from muldml import io as atomic
from muldml.config import Config
from muldml.data.augment import eval_transform
from muldml.data.folder import FaceDataset, Sample
from muldml.model import MulDMLNet, vote
from muldml.plots import plot_confusion, plot_curves


@torch.no_grad()
def predict(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
            progress: bool = False) -> np.ndarray:
    """(num_samples,) predicted class per sample, from the centre crop."""
    loader = torch.utils.data.DataLoader(FaceDataset(samples, eval_transform(cfg.image_size, cfg.crop)),
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    model.eval().to(device)
    preds = [vote(model(images.to(device)).logits).cpu() for images, _ in tqdm(loader, disable=not progress, desc="evaluate")]
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
                 title: str | None = None) -> Path:
    """Write metrics, confusion matrix, plots and report.md into `out`; returns report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"{cfg.preset} evaluation"
    atomic.write_json(out / "metrics.json", metrics)
    atomic.write_text(out / "confusion.csv", _confusion_csv(metrics))
    plot_confusion(np.array(metrics["confusion"]), metrics["classes"], out / "confusion.png",
                   f"{cfg.preset}: accuracy {100 * metrics['accuracy']:.1f}%")
    lines = [f"# {title}", "", f"Accuracy: **{100 * metrics['accuracy']:.2f}%** on {metrics['num_samples']} images.", ""]
    lines += ["| class | recall |", "|---|---|"]
    lines += [f"| {c} | {'—' if r is None else f'{100 * r:.1f}%'} |" for c, r in metrics["per_class_recall"].items()]
    lines += ["", "![confusion matrix](confusion.png)", ""]
    if history:
        plot_curves(history, out / "curves.png", cfg.preset)
        lines += ["![training curves](curves.png)", ""]
    lines += ["## Configuration", "", "```json", json.dumps(cfg.to_dict(), indent=1), "```", ""]
    return atomic.write_text(out / "report.md", "\n".join(lines))

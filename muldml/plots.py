"""Figures: confusion matrix (row-normalised, like the paper's Fig. 9) and training curves."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from muldml.io import save_figure  # noqa: E402


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, cells: % of that class)."""
    rows = confusion.sum(1, keepdims=True)
    percent = 100 * confusion / np.maximum(rows, 1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(classes), 0.8 + 0.7 * len(classes)))
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{percent[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if percent[i, j] > 60 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (% of true class)")
    path = save_figure(path, fig)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss (cross-entropy, mean triplet, the weighted metric term and its parts) and accuracy per
    epoch, train and val."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("val", "--")):
        if f"{split}_ce" in history[0]:
            left.plot(epochs, [r[f"{split}_ce"] for r in history], style, label=f"{split} cross-entropy")
            right.plot(epochs, [100 * r[f"{split}_acc"] for r in history], style, label=split)
        slices = sorted(k for k in history[0] if k.startswith(f"{split}_triplet_"))
        if slices:
            mean = [np.mean([r[k] for k in slices]) for r in history]
            left.plot(epochs, mean, style, label=f"{split} triplet (mean of {len(slices)} slices)")
        if f"{split}_metric" in history[0]:
            share = 100 * history[-1][f"{split}_metric_share"]
            left.plot(epochs, [r[f"{split}_metric"] for r in history], style,
                      label=f"{split} metric loss, weighted (last: {share:.0f}% of total)")
        for part in ("distribution", "tuplet"):
            if f"{split}_metric_{part}" in history[0]:
                left.plot(epochs, [r[f"{split}_metric_{part}"] for r in history], style, alpha=0.6,
                          label=f"{split} metric: {part} (unweighted)")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (%)")
    right.legend(fontsize=8)
    fig.suptitle(title)
    path = save_figure(path, fig)
    plt.close(fig)
    return path


def plot_regime(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Per epoch: each slice's active fraction and mean hinge margin d(a,n*) − d(a,p*)
    (training batches), and the metric loss's share of the gradient norm at the embedding."""
    from muldml.regime import slice_columns

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, name, ylabel in ((axes[0], "active", "active hinge terms (%)"),
                             (axes[1], "margin", "mean d(a,n*) − d(a,p*)")):
        for i, key in enumerate(slice_columns(history, name)):
            scale = 100 if name == "active" else 1
            # An epoch may not measure margins (e.g. once the cross-batch memory is mined): a gap.
            ax.plot(epochs, [scale * r.get(key, float("nan")) for r in history], label=f"slice {i + 1}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(fontsize=7)
    if "train_grad_metric_share" in history[0]:
        axes[2].plot(epochs, [100 * r["train_grad_metric_share"] for r in history], label="metric loss")
        axes[2].plot(epochs, [100 * (1 - r["train_grad_metric_share"]) for r in history], label="cross-entropy")
        axes[2].legend(fontsize=7)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("share of gradient norm at the embedding (%)")
    fig.suptitle(title)
    path = save_figure(path, fig)
    plt.close(fig)
    return path


def plot_slice_similarity(similarity: np.ndarray, path: str | Path, title: str = "") -> Path:
    """(N, N) similarity between slices (e.g. linear CKA, in [0, 1]) as an annotated heat map."""
    similarity = np.asarray(similarity, dtype=float)
    n = len(similarity)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * n, 1.2 + 0.6 * n))
    image = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if similarity[i, j] > 0.6 else "white")
    ticks = [str(i + 1) for i in range(n)]
    ax.set_xticks(range(n), ticks)
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("slice")
    ax.set_ylabel("slice")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title or "linear CKA between slices")
    path = save_figure(path, fig)
    plt.close(fig)
    return path


def plot_loss_terms(curves: dict[str, dict[str, Sequence[float]]], path: str | Path, title: str = "") -> Path:
    """Per model (label → {"ce": per-epoch values, "metric": …}): training cross-entropy
    (solid) and weighted metric loss (dashed), one colour per model, log scale."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (label, terms) in enumerate(curves.items()):
        colour = f"C{k % 10}"
        for term, style in (("ce", "-"), ("metric", "--")):
            values = terms.get(term)
            if values is not None and len(values):
                ax.plot(range(1, len(values) + 1), values, style, color=colour, marker="o", markersize=3,
                        label=f"{label}: {'cross-entropy' if term == 'ce' else 'metric loss (weighted)'}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over runs)")
    ax.legend(fontsize=7)
    ax.set_title(title)
    path = save_figure(path, fig)
    plt.close(fig)
    return path

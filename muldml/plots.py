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
    """Loss (cross-entropy, mean triplet) and accuracy per epoch, train and val."""
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

"""The studies' plots: accuracy per cell beside the paper's value, and the paper's Figs. 3,
6, 7–8 and 9 redrawn from the runs. Every function writes one PNG atomically and returns it."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from muldml.io import save_figure  # noqa: E402
from muldml.plots import plot_confusion  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = save_figure(path, fig)
    plt.close(fig)
    return path


def plot_accuracy(labels: Sequence[str], means: Sequence[float], stds: Sequence[float],
                  paper: Sequence[float | None], path: str | Path, title: str) -> Path:
    """Bars: obtained accuracy (%) mean ± std per cell; a black mark where the paper has a value."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.8))
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=stds, capsize=3, color="#6a9fd4", label="obtained (mean ± std)")
    marks = [(i, p) for i, p in enumerate(paper) if p is not None]
    if marks:
        ax.scatter([i for i, _ in marks], [p for _, p in marks], marker="_", s=400, color="black", zorder=3,
                   label="paper")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_interclass(taus: Sequence[float], histograms: Sequence[Sequence[int]], path: str | Path, title: str) -> Path:
    """Fig. 3: density of inter-class distances (unit-norm embeddings, range [0, 2]) per τ."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(taus)))
    for tau, counts, colour in zip(taus, histograms, colours):
        counts = np.asarray(counts, dtype=float)
        edges = np.linspace(0, 2, len(counts) + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        density = counts / max(counts.sum() * (edges[1] - edges[0]), 1e-12)
        ax.plot(centres, density, color=colour, label=f"τ = {tau:g}")
    ax.set_xlabel("distance between images of different classes")
    ax.set_ylabel("density")
    ax.set_xlim(0, 2)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def read_history(run_folder: str | Path) -> list[dict[str, float]]:
    """history.csv of a run folder as rows of floats ([] when absent)."""
    path = Path(run_folder) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _mean_curve(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Mean over runs of per-epoch values (runs may differ in length: the common prefix)."""
    length = min(len(r) for r in rows)
    return np.mean([r[:length] for r in rows], axis=0)


def plot_training(curves: dict[tuple[str, float], dict[str, list[list[float]]]], path: str | Path, title: str) -> Path:
    """Fig. 6. curves[(kind, τ)] = {"train_loss", "val_loss", "train_incomplete", "val_incomplete":
    per-run lists of per-epoch values}; one column per τ, loss on top, incomplete rate below."""
    taus = sorted({tau for _, tau in curves})
    fig, axes = plt.subplots(2, len(taus), figsize=(4 * len(taus), 6.4), squeeze=False)
    styles = {"traditional": "#d1495b", "dual": "#00798c"}
    for column, tau in enumerate(taus):
        top, bottom = axes[0, column], axes[1, column]
        for kind, colour in styles.items():
            series = curves.get((kind, tau), {})
            for key, style, ax in (("train_loss", "-", top), ("val_loss", "--", top),
                                   ("train_incomplete", "-", bottom), ("val_incomplete", "--", bottom)):
                runs = [r for r in series.get(key, []) if r and not any(v is None for v in r)]
                if runs:
                    y = _mean_curve(runs)
                    ax.plot(np.arange(1, len(y) + 1), 100 * y if "incomplete" in key else y, style, color=colour,
                            marker="o", markersize=3, label=f"{kind}, {key.split('_')[0]}")
        top.set_title(f"τ = {tau:g}", fontsize=10)
        top.set_ylabel("triplet loss")
        bottom.set_ylabel("incomplete judgements (%)")
        bottom.set_xlabel("epoch")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_neuron_maps(maps: np.ndarray, images: Sequence[np.ndarray], row_labels: Sequence[str],
                     path: str | Path, title: str) -> Path:
    """Figs. 7–8: one row per image (its thumbnail, then an 8×8 map per slice)."""
    rows, slices = maps.shape[:2]
    fig, axes = plt.subplots(rows, slices + 1, figsize=(1.1 * (slices + 1), 1.2 * rows + 0.6), squeeze=False)
    limit = float(np.abs(maps).max()) or 1.0
    for r in range(rows):
        axes[r, 0].imshow(images[r], cmap="gray" if images[r].ndim == 2 else None)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
        for s in range(slices):
            axes[r, s + 1].imshow(maps[r, s], cmap="coolwarm", vmin=-limit, vmax=limit)
            if r == 0:
                axes[r, s + 1].set_title(f"slice {s + 1}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_summed_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Fig. 9: the confusion matrix summed over folds and seeds, rows normalised."""
    return plot_confusion(np.asarray(confusion), classes, path, title)

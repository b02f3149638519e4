"""Whether the thresholds differentiate the slices: the per-epoch diagnostics of a run's
regime, the warning when they do not, and the report section that shows them.

Why it matters. Batch-hard mining picks p* and n* by distance alone, and while a hinge
[d(a,p*) − d(a,n*) + τ_i]_+ is active its gradient does not depend on τ_i. So if every
slice's hinges stay active, the N slices receive the same gradients whatever their margins,
and Mul-DML trains the same model as Mul-DML-Same. Thresholds change what is learnt only
where the hinges of small margins go inactive while those of large margins stay active.

Logged per epoch by the training loop (history.csv):
- ``{split}_active_{i}``: fraction of slice i's hinge terms that are > 0;
- ``{split}_margin_{i}``: mean over the epoch's triplets of d(a,n*) − d(a,p*) in slice i
  (normalised slices when the loss normalises; the hinge is inactive where it exceeds τ_i);
- ``train_grad_ce``, ``train_grad_metric``, ``train_grad_metric_share``: see loop.Meter.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from muldml.kernels.triplet.outputs import TripletLossOutput

UNDIFFERENTIATED = "thresholds do not differentiate the slices in this run"
ALL_ACTIVE = 0.99  # a slice whose active fraction is at least this is "all active"
MOST_OF_TRAINING = 0.5  # warn when more than this share of the epochs has every slice all active


@torch.no_grad()
def hinge_margins(embedding: torch.Tensor, output: TripletLossOutput, slice_dim: int,
                  normalize: bool = True) -> torch.Tensor | None:
    """(N,) per-slice sum over the batch's triplets of d(a,n*) − d(a,p*), in float64.

    embedding: (B, N·d) the rows the loss mined over; output: that loss call's result
    (its pos_idx/neg_idx, -1 where an anchor is no triplet). Divide by
    ``output.num_triplets`` for the mean. Returns None when the indices refer to rows that
    are not in `embedding`: the loss mined over a batch gathered from other processes, or
    chose rows of its cross-batch memory (index ≥ B), which the queue may since have replaced.
    """
    num_slices, batch = output.pos_idx.shape
    if embedding.shape[0] != batch or bool((output.pos_idx >= batch).any() | (output.neg_idx >= batch).any()):
        return None
    x = embedding.detach().double().view(batch, num_slices, slice_dim).transpose(0, 1)  # (N, B, d)
    if normalize:
        x = F.normalize(x, dim=2)
    valid = output.pos_idx >= 0  # (N, B)
    pos, neg = output.pos_idx.clamp_min(0), output.neg_idx.clamp_min(0)
    rows = torch.arange(num_slices, device=x.device)[:, None]
    d_pos = (x - x[rows, pos]).norm(dim=2)
    d_neg = (x - x[rows, neg]).norm(dim=2)
    return ((d_neg - d_pos) * valid).sum(1)


def slice_columns(history: Sequence[dict], name: str, split: str = "train") -> list[str]:
    """History columns ``{split}_{name}_{i}`` in slice order."""
    prefix = f"{split}_{name}_"
    return sorted((k for k in history[0] if k.startswith(prefix) and k[len(prefix):].isdigit()),
                  key=lambda k: int(k[len(prefix):])) if history else []


def undifferentiated(history: Sequence[dict]) -> bool:
    """True when a run trains ≥ 2 slices and every slice stayed ≥ 99% active (training hinge
    terms) in more than half of its epochs: the thresholds then shape no slice differently."""
    columns = slice_columns(history, "active")
    if len(columns) < 2:
        return False
    saturated = sum(all(row[k] >= ALL_ACTIVE for k in columns) for row in history)
    return saturated > MOST_OF_TRAINING * len(history)


def regime_section(report, history: Sequence[dict], out: str | Path) -> None:
    """Add the run's regime to `report`: the warning when it applies, the last epoch's per-slice
    active fraction and mean hinge margin, the gradient share of each loss term and the curves
    (out/regime.png). The slices' similarity is in the evaluation's embedding section."""
    from muldml.plots import plot_regime

    out = Path(out)
    actives, margins = slice_columns(history, "active"), slice_columns(history, "margin")
    if not history or not (actives or "train_grad_metric_share" in history[-1]):
        return
    report.heading("Threshold regime")
    if undifferentiated(history):
        report.paragraph(f"**Warning: {UNDIFFERENTIATED}** (every slice's hinges were ≥ {100 * ALL_ACTIVE:g}% "
                         "active in most epochs, so each slice got the same gradient whatever its margin).")
    last = history[-1]
    if actives:
        rows = [[i + 1, f"{100 * last[a]:.1f}%", f"{last[m]:.3f}" if m in last else "—"]
                for i, (a, m) in enumerate(zip(actives, margins or [""] * len(actives)))]
        report.paragraph("Last epoch, training batches: per slice, the share of hinge terms that are active and the "
                         "mean hinge margin d(a,n*) − d(a,p*) (a hinge is inactive where it exceeds the slice's τ).")
        report.table(["slice", "active", "mean d(a,n*) − d(a,p*)"], rows)
    if last.get("train_grad_metric_share") is not None:
        report.paragraph(f"Gradient at the embedding, last epoch (mean norm over training batches): cross-entropy "
                         f"{last['train_grad_ce']:.3g}, metric loss {last['train_grad_metric']:.3g}; the metric "
                         f"loss's share {100 * last['train_grad_metric_share']:.1f}%.")
    plot_regime(history, out / "regime.png")
    report.image("threshold regime", "regime.png")

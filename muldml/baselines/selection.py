"""The baselines' hyper-parameters, chosen on validation as table2 chooses τ*.

One small grid per baseline, defined here and nowhere else. In every fold (and seed) each
grid point is trained on the fold's training subjects and scored on its validation subjects
(held-out training subjects, never the fold's test images); the point with the highest
validation accuracy is the baseline's setting in that fold (ties: the earlier point of
``grid_points``' order, which starts from the defaults). A setting given explicitly
(command line or --config) is fixed: its dimension of the grid is not searched.

Why these values. Circle: m and γ are Sun et al.'s settings for fine-grained retrieval
(0.4, 80) and for face recognition's m (0.25) with a smaller scale γ = 32; the weight λ
spans the baselines' default 0.05 and the triplet loss's 0.5/N = 0.5 (N = 1). With γ = 80
and λ = 0.5 the Circle term's gradient at the embedding is about 7× the cross-entropy's at
initialisation and the network does not learn the demo faces (README, "Baselines");
λ = 0.05 brings it below the cross-entropy's. HIST: τ and α are the authors' release defaults (32, 0.9) and a
softer scale (16) and harder incidence (2.0); λ_s is fixed at the release's 1; the weight
λ as for Circle.
"""
from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any

# Per metric loss: Config field → the values tried (the default first).
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "circle": {"circle_m": (0.4, 0.25), "circle_gamma": (80.0, 32.0), "lam": (0.05, 0.5)},
    "hist": {"hist_tau": (32.0, 16.0), "hist_alpha": (0.9, 2.0), "hist_lambda_s": (1.0,), "lam": (0.05, 0.5)},
}
SOURCE = "chosen in this fold on validation subjects (grid in muldml/baselines/selection.py)"


def grid_points(metric_loss: str, fixed: Collection[str] = ()) -> list[dict[str, Any]]:
    """The settings to try for `metric_loss` (circle, hist), every combination of its grid
    without the fields in `fixed`; [] when it has no grid or every field is fixed."""
    grid = {k: v for k, v in GRIDS.get(metric_loss, {}).items() if k not in fixed}
    if not grid:
        return []
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def choose(points: Sequence[dict[str, Any]], val_accuracies: Sequence[float | None]) -> int:
    """Index of the point with the highest validation accuracy (None counts as 0; ties: the
    earlier point). Raises ValueError for empty or mismatched inputs."""
    if not points or len(points) != len(val_accuracies):
        raise ValueError(f"need one validation accuracy per point, got {len(val_accuracies)} for {len(points)}")
    return min(range(len(points)), key=lambda i: (-(val_accuracies[i] or 0.0), i))

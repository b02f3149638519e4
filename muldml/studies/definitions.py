"""The paper's tables and figures as data: each study is a list of cells, each cell a preset
plus the settings that differ from it. Nothing here trains; runner.py does.

A cell marked ``uses_tau_star`` takes the study's τ* (from table2's nested choice, from
``--tau-star`` or from the configuration; see runner.resolve_tau_star) as its ``tau_star``.
Two cells of different studies that resolve to the same settings are the same run, so
``all`` trains each once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from muldml.losses import threshold_range

TABLE1_STEPS = (0.2, 0.1, 0.05)
TABLE1_DIMS = (512, 256, 128, 64)
TABLE2_TAUS = tuple(threshold_range(0.15, 0.75, 0.1))  # 0.15, 0.25, …, 0.75
FIG6_TAUS = (0.2, 0.4, 0.8)
XBM_SIZE = 1024  # about one CK+ training fold (10-fold: ~880 images): every image is a candidate


@dataclass(frozen=True)
class Cell:
    """One row (or grid cell) of a study: ``preset`` with ``overrides`` on top.

    row/column: where the result goes in the study's table (column None: a plain list).
    """

    row: str
    preset: str
    overrides: tuple[tuple[str, Any], ...] = ()
    uses_tau_star: bool = False
    column: str | None = None

    @property
    def label(self) -> str:
        return self.row if self.column is None else f"{self.row}, {self.column}"

    def settings(self, tau_star: float | None = None) -> dict[str, Any]:
        """The cell's own settings; τ* added when the cell takes it."""
        values = dict(self.overrides)
        if self.uses_tau_star:
            if tau_star is None:
                raise ValueError(f"cell {self.label!r} needs a τ*")
            values["tau_star"] = tau_star
        return values


@dataclass(frozen=True)
class Study:
    """A table or figure of the paper: its cells and what is drawn from their runs.

    figure: the figure drawn from the runs (fig3, fig6, fig7, fig9), None for a table.
    selects_tau_star: the study chooses τ* per fold on validation data (table2).
    """

    name: str
    title: str
    source: str
    cells: tuple[Cell, ...]
    description: str
    figure: str | None = None
    selects_tau_star: bool = False
    grid: bool = False
    keep_models: bool = False  # the figure reads the trained weights back


def _tau(t: float) -> str:
    return f"τ = {t:g}"


def _table1() -> tuple[Cell, ...]:
    cells = []
    for step in TABLE1_STEPS:
        n = len(threshold_range(0.15, 0.75, step))
        for dim in TABLE1_DIMS:
            cells.append(Cell(f"δτ = {step:g} (N = {n})", "mul-dml", (("tau_step", step), ("slice_dim", dim)),
                              column=f"d = {dim}"))
    return tuple(cells)


_STAR = dict(uses_tau_star=True)
_TABLE2 = tuple(Cell(_tau(t), "s-dual-triplet", (("tau_star", t),)) for t in TABLE2_TAUS)

STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("table1", "Threshold interval δτ × slice dimension d", "Table I", _table1(),
          "Mul-DML over [0.15, 0.75] with δτ ∈ {0.2, 0.1, 0.05} (N = 4, 7, 13 slices) and slice "
          "dimension d ∈ {512, 256, 128, 64}.", grid=True),
    Study("table2", "Single threshold τ (S-Dual-Triplet)", "Table II", _TABLE2,
          "S-Dual-Triplet (one 256-d slice, dual triplet loss) at each τ in 0.15…0.75. τ* is chosen in "
          "each fold by validation accuracy on held-out training subjects, never on the fold's test images.",
          selects_tau_star=True),
    Study("table3", "Traditional vs dual triplet loss vs Mul-DML", "Table III", (
        Cell("S-Trad-Triplet (τ*)", "s-trad-triplet", **_STAR),
        Cell("S-Dual-Triplet (τ*)", "s-dual-triplet", **_STAR),
        Cell("Mul-DML", "mul-dml")),
          "One slice with the traditional (Eq. 2) or the dual (Eq. 10) triplet loss at τ*, against Mul-DML."),
    Study("table4", "Embedding layouts", "Table IV", (
        Cell("S-DML (τ*)", "s-dml", **_STAR),
        Cell("Mul-DML-Same (τ*)", "mul-dml-same", **_STAR),
        Cell("Mul-DML", "mul-dml")),
          "One loss on the whole 7×256 layer, seven slices at one threshold τ*, and seven slices at "
          "seven thresholds."),
    Study("table7", "Single vs per-slice classifiers", "Table VII", (
        Cell("CNN", "cnn"),
        Cell("S-Dual-Triplet (τ*)", "s-dual-triplet", **_STAR),
        Cell("Mul-DML", "mul-dml"),
        Cell("CNN-Multask", "cnn-multask"),
        Cell("Mul-DML-Multask-Same (τ*)", "mul-dml-multask-same", **_STAR),
        Cell("Mul-DML-Multask", "mul-dml-multask")),
          "Softmax only, one slice and Mul-DML, each with one classifier, against a classifier per slice "
          "with a majority vote."),
    Study("baselines", "External metric-learning baselines", "Tables V–VI", (
        Cell("CNN", "cnn"),
        Cell("S-Dual-Triplet (τ*)", "s-dual-triplet", **_STAR),
        Cell("Circle loss", "circle"),
        Cell("HIST loss", "hist"),
        Cell("Mul-DML", "mul-dml")),
          "Circle loss (Sun et al., CVPR 2020) and HIST loss (Lim et al., CVPR 2022) on the S-Dual-Triplet "
          "network (one 256-d slice, softmax plus λ·loss), against softmax only, S-Dual-Triplet and Mul-DML."),
    Study("xbm", "Mul-DML with and without cross-batch memory", "XBM (Wang et al., CVPR 2020)", (
        Cell("Mul-DML", "mul-dml"),
        Cell(f"Mul-DML + XBM (Q = {XBM_SIZE})", "mul-dml", (("xbm_size", XBM_SIZE),))),
          f"Mul-DML with and without a cross-batch memory of the last {XBM_SIZE} training embeddings, whose rows "
          "join each batch's candidates for the hardest positive and negative of every slice, on the same folds "
          "and seeds. The memory is mined from epoch xbm_start_epoch + 1 (a common setting: --xbm-start-epoch "
          "or the config file; default 0, from the start)."),
    Study("fig3", "Inter-class distances per threshold", "Fig. 3", _TABLE2,
          "Distribution of the distances between validation images of different classes in the embedding "
          "learnt by S-Dual-Triplet at each τ.", figure="fig3"),
    Study("fig6", "Traditional vs dual triplet loss during training", "Fig. 6",
          tuple(Cell(f"{kind}, {_tau(t)}", preset, (("tau_star", t),))
                for t in FIG6_TAUS for kind, preset in (("traditional", "s-trad-triplet"), ("dual", "s-dual-triplet"))),
          "Triplet loss per epoch on training and validation images, and the rate of incomplete judgements "
          "(mined triplets with d(p*, n*) < d(a, p*)), for the traditional and the dual loss at τ ∈ {0.2, 0.4, 0.8}.",
          figure="fig6"),
    Study("fig7", "Per-slice neuron maps", "Figs. 7–8", (Cell("Mul-DML", "mul-dml"),),
          "64 evenly spaced dimensions of each slice of Mul-DML's embedding shown as 8×8 maps, for one "
          "expression across subjects and one subject across expressions (test images of the first fold).",
          figure="fig7", keep_models=True),
    Study("fig9", "Confusion matrix of Mul-DML", "Fig. 9", (Cell("Mul-DML", "mul-dml"),),
          "The confusion matrix of Mul-DML summed over folds (and seeds), rows normalised.", figure="fig9"),
)}

ALL = "all"
NAMES = (*STUDIES, ALL)


def studies_for(name: str) -> list[Study]:
    """The studies `name` runs: one, or every study for ``all`` (table2 first: it chooses τ*)."""
    if name == ALL:
        return list(STUDIES.values())
    return [STUDIES[name]]

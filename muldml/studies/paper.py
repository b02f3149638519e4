"""The paper's published values, as data, for the reports to print beside the obtained ones.

Yang et al., "Multi-threshold Deep Metric Learning for Facial Expression Recognition", IEEE
2024 (arXiv 2406.16434): accuracies in %, each the paper's mean over its runs (10 runs on CK+
and MMI; SFEW on its validation set; RAF-DB on its test set). Keys: study → dataset → the
study cell's label (muldml.studies.definitions). A cell without a published value is reported
as "not available" (never estimated).

- τ* per dataset (Table II's best single threshold): CK+ 0.45, MMI 0.45, SFEW 0.75,
  RAF-DB 0.65 (``muldml.config.PAPER_TAU_STAR``).
- The paper prints CNN on RAF-DB as 84.94 in Table VI and 86.63 in Table VII; each study
  shows the value of the table it reproduces.
"""
from __future__ import annotations

from muldml.config import PAPER_TAU_STAR

# The datasets the paper reports, by the names `muldml prepare --dataset` uses.
PAPER_DATASETS = ("ck+", "mmi", "sfew", "raf-db")
_COLUMNS = PAPER_DATASETS


def _by_dataset(rows: dict[str, tuple[float, float, float, float]]) -> dict[str, dict[str, float]]:
    """{row: (CK+, MMI, SFEW, RAF-DB)} → {dataset: {row: value}}."""
    return {d: {row: values[i] for row, values in rows.items()} for i, d in enumerate(_COLUMNS)}


# Table I (SFEW only): mean over runs (the paper's ± std are not used by the reports).
_TABLE1 = {("0.2", "4"): (57.49, 57.65, 57.26, 55.81), ("0.1", "7"): (59.17, 60.09, 57.72, 55.96),
           ("0.05", "13"): (56.96, 57.65, 57.19, 58.10)}  # d = 512, 256, 128, 64
_TABLE2 = {0.15: (94.91, 73.36, 56.88, 85.36), 0.25: (94.42, 71.00, 56.42, 85.40), 0.35: (93.84, 73.97, 54.36, 85.36),
           0.45: (96.51, 74.33, 56.88, 85.20), 0.55: (94.61, 72.36, 56.65, 84.84), 0.65: (96.11, 72.91, 56.42, 85.63),
           0.75: (94.03, 73.78, 57.34, 85.16)}
_MUL_DML = (98.49, 81.57, 60.09, 87.58)
_S_DUAL = (96.51, 74.33, 57.34, 85.63)

# study → dataset → row label → accuracy (%) published in the paper.
PAPER_ACCURACY: dict[str, dict[str, dict[str, float]]] = {
    "table1": {"sfew": {f"δτ = {step} (N = {n}), d = {dim}": value for (step, n), values in _TABLE1.items()
                        for dim, value in zip((512, 256, 128, 64), values)}},
    "table2": _by_dataset({f"τ = {t:g}": v for t, v in _TABLE2.items()}),
    "table3": _by_dataset({"S-Trad-Triplet (τ*)": (94.20, 74.25, 56.65, 85.49), "S-Dual-Triplet (τ*)": _S_DUAL,
                           "Mul-DML": _MUL_DML}),
    "table4": _by_dataset({"S-DML (τ*)": (96.86, 74.66, 57.44, 85.43), "Mul-DML-Same (τ*)": (96.67, 75.63, 57.34, 86.28),
                           "Mul-DML": _MUL_DML}),
    "baselines": _by_dataset({"CNN": (93.99, 71.25, 54.58, 84.94), "S-Dual-Triplet (τ*)": _S_DUAL,
                              "Circle loss": (96.54, 76.42, 57.11, 86.02), "HIST loss": (97.48, 79.13, 58.30, 87.22),
                              "Mul-DML": _MUL_DML}),
    "table7": _by_dataset({"CNN": (93.99, 71.25, 54.58, 86.63), "S-Dual-Triplet (τ*)": _S_DUAL, "Mul-DML": _MUL_DML,
                           "CNN-Multask": (95.42, 74.19, 58.02, 87.09),
                           "Mul-DML-Multask-Same (τ*)": (96.76, 75.91, 58.48, 87.14),
                           "Mul-DML-Multask": (96.59, 76.16, 58.49, 87.22)}),
}
PAPER_ACCURACY["fig3"] = PAPER_ACCURACY["table2"]  # the same S-Dual-Triplet runs

# The comparisons each study's claim rests on: (method, its reference), by cell label.
CLAIMED_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "table3": (("S-Dual-Triplet (τ*)", "S-Trad-Triplet (τ*)"), ("Mul-DML", "S-Dual-Triplet (τ*)")),
    "table4": (("Mul-DML-Same (τ*)", "S-DML (τ*)"), ("Mul-DML", "Mul-DML-Same (τ*)")),
    "baselines": (("Mul-DML", "CNN"), ("Mul-DML", "S-Dual-Triplet (τ*)"), ("Mul-DML", "Circle loss"),
                  ("Mul-DML", "HIST loss")),
    "table7": (("Mul-DML", "CNN"), ("CNN-Multask", "CNN"), ("Mul-DML", "Mul-DML-Multask")),
}

NOT_AVAILABLE = "not available"


def paper_tau_star(dataset: str | None) -> float | None:
    """The paper's τ* (Table II) for `dataset`, None when the paper has none."""
    return PAPER_TAU_STAR.get(dataset) if dataset else None


def paper_value(study: str, dataset: str | None, row: str) -> float | None:
    """The published accuracy (%) of `row` in `study`'s table for `dataset`, or None."""
    if not dataset:
        return None
    return PAPER_ACCURACY.get(study, {}).get(dataset, {}).get(row)

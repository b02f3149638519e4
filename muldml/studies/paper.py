"""The paper's published values, as data, for the reports to print beside the obtained ones.

Only values read from a source are listed; a study cell without one is reported as "not
available" (never estimated). Keys: study → dataset → row label → value.

- τ* per dataset (Table II's best single threshold): CK+ 0.45, MMI 0.45, SFEW 0.75,
  RAF-DB 0.65 (``muldml.config.PAPER_TAU_STAR``).
- The accuracies of Tables I–VII could not be read from a source available when these
  data were written, so none is listed: every accuracy's paper column reads "not available".
  Add a value here, with its table, once it has been checked against the paper.
"""
from __future__ import annotations

from muldml.config import PAPER_TAU_STAR

# The datasets the paper reports, by the names `muldml prepare --dataset` uses.
PAPER_DATASETS = ("ck+", "mmi", "sfew", "raf-db")

# study → dataset → row label → accuracy (%) published in the paper.
PAPER_ACCURACY: dict[str, dict[str, dict[str, float]]] = {}

NOT_AVAILABLE = "not available"


def paper_tau_star(dataset: str | None) -> float | None:
    """The paper's τ* (Table II) for `dataset`, None when the paper has none."""
    return PAPER_TAU_STAR.get(dataset) if dataset else None


def paper_value(study: str, dataset: str | None, row: str) -> float | None:
    """The published accuracy (%) of `row` in `study`'s table for `dataset`, or None."""
    if not dataset:
        return None
    return PAPER_ACCURACY.get(study, {}).get(dataset, {}).get(row)

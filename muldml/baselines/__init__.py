"""The paper's external baselines (Tables V–VI): Circle loss and HIST loss, each trained on
the S-Dual-Triplet network in place of its triplet loss, weighted by λ beside the softmax loss.

Their default weight is λ = 0.05, not the triplet loss's 0.5/N: at λ = 0.5 either loss's
gradient at the embedding outweighs the cross-entropy's (Circle with γ = 80: about 7× at
initialisation) and the network trains far slower than softmax alone (README, "Baselines").
"""
from muldml.baselines.circle import CIRCLE_DEFAULTS, CircleMetricLoss
from muldml.baselines.hist import HIST_DEFAULTS, HISTLoss, hist_reference

BASELINE_WEIGHT = 0.05  # λ of a baseline's metric loss when none is given


def baseline_weight(lam: float | None) -> float:
    """λ of a baseline's metric loss: the given one, else BASELINE_WEIGHT."""
    return BASELINE_WEIGHT if lam is None else float(lam)


__all__ = ["BASELINE_WEIGHT", "CIRCLE_DEFAULTS", "CircleMetricLoss", "HIST_DEFAULTS", "HISTLoss", "baseline_weight",
           "hist_reference"]

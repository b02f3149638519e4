"""The paper's external baselines (Tables V–VI): Circle loss and HIST loss, each trained on
the S-Dual-Triplet network in place of its triplet loss."""
from muldml.baselines.circle import CIRCLE_DEFAULTS, CircleMetricLoss
from muldml.baselines.hist import HIST_DEFAULTS, HISTLoss, hist_reference

__all__ = ["CIRCLE_DEFAULTS", "CircleMetricLoss", "HIST_DEFAULTS", "HISTLoss", "hist_reference"]

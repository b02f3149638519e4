"""muldml: multi-threshold deep metric learning for facial expression recognition."""
from muldml.inference import load_model
from muldml.losses import MultiThresholdTripletLoss, multi_threshold_triplet_loss, threshold_range
from muldml.outputs import TripletLossOutput

__all__ = ["MultiThresholdTripletLoss", "TripletLossOutput", "load_model", "multi_threshold_triplet_loss",
           "threshold_range"]
__version__ = "0.1.0"

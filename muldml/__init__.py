"""muldml: multi-threshold deep metric learning for facial expression recognition.

``import muldml`` loads the loss alone (torch, no trainer, torchvision, tqdm or PIL);
``muldml.load_model`` imports the inference stack when first used.
"""
from muldml.losses import MultiThresholdTripletLoss, multi_threshold_triplet_loss, threshold_range
from muldml.kernels.triplet.outputs import TripletLossOutput

__all__ = ["MultiThresholdTripletLoss", "TripletLossOutput", "load_model", "multi_threshold_triplet_loss",
           "threshold_range"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load_model":  # lazily: the inference stack needs torchvision and PIL
        from muldml.inference import load_model

        return load_model
    raise AttributeError(f"module 'muldml' has no attribute {name!r}")

"""Training: one ``fit()`` (run.py) over an epoch step (loop.py), the network and loss a
Config describes (build.py), the run-folder contract (runfolder.py), checkpoints with exact
resume (checkpoint.py) and multi-process helpers (distributed.py)."""
from muldml.training.build import build_model, build_triplet_loss
from muldml.training.checkpoint import CHECKPOINT, HISTORY, load_checkpoint, model_from_checkpoint
from muldml.training.distributed import resolve_device
from muldml.training.run import check_writable, fit

__all__ = ["CHECKPOINT", "HISTORY", "build_model", "build_triplet_loss", "check_writable", "fit", "load_checkpoint",
           "model_from_checkpoint", "resolve_device"]

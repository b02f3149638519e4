"""Circle loss (Sun et al., CVPR 2020), a baseline of the paper's Tables V–VI, trained on the
S-Dual-Triplet network (one 256-d slice, softmax plus λ·loss).

The loss itself is pytorch-metric-learning's ``CircleLoss`` (cosine similarity of the
L2-normalised embeddings over every positive and negative pair in the batch, averaged over
the anchors whose loss is not zero: the library's default reducer), with its relaxation
margin m and scale γ recorded in the run's config. Defaults m = 0.4, γ = 80: the
library's, and the setting Sun et al. give for fine-grained image retrieval.
"""
from __future__ import annotations

import torch
from torch import nn

from muldml.errors import UserError

CIRCLE_DEFAULTS = {"m": 0.4, "gamma": 80.0}


class CircleMetricLoss(nn.Module):
    """λ·CircleLoss(m, γ). forward(embeddings (B, D), labels (B,)) → scalar.

    Raises UserError when pytorch-metric-learning is not installed.
    """

    def __init__(self, m: float = 0.4, gamma: float = 80.0, lam: float = 1.0) -> None:
        super().__init__()
        try:
            from pytorch_metric_learning.losses import CircleLoss
        except ImportError:
            raise UserError("the circle baseline needs pytorch-metric-learning "
                            "(pip install pytorch-metric-learning)") from None
        if not (0 <= m <= 1 and gamma > 0 and lam >= 0):
            raise UserError(f"circle loss needs 0 <= m <= 1, gamma > 0, lam >= 0; got m={m}, gamma={gamma}, lam={lam}")
        self.m, self.gamma, self.lam = float(m), float(gamma), float(lam)
        self.loss = CircleLoss(m=self.m, gamma=self.gamma)
        # The training loop logs per-slice triplet diagnostics from these; a baseline has none.
        self.num_slices = 0
        self.last_output = None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):  # similarities in fp32 under autocast
            return self.lam * self.loss(embeddings.float(), labels)

    def extra_repr(self) -> str:
        return f"m={self.m:g}, gamma={self.gamma:g}, lam={self.lam:g}"

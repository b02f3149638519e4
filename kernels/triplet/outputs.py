"""The result every loss backend returns."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TripletLossOutput:
    """Loss value plus the diagnostics researchers log.

    Shapes: N = number of slices (thresholds), B = batch size.
    Only ``loss`` carries gradient; every other field is detached.
    """

    loss: torch.Tensor  #: scalar, λ·Σ_i w_i·loss_i
    slice_losses: torch.Tensor  #: (N,) loss_i of Eq. 2 / Eq. 10, before λ and w_i
    pos_idx: torch.Tensor  #: (N, B) int64 hardest positive p* per anchor; -1 where the anchor is no triplet
    neg_idx: torch.Tensor  #: (N, B) int64 hardest negative n* per anchor; -1 where the anchor is no triplet
    num_active: torch.Tensor  #: (N,) int64 count of hinge terms > 0
    num_triplets: torch.Tensor  #: scalar int64 K, anchors with a positive and a negative in the batch
    dual: bool  #: whether each anchor contributes two hinge terms (Eq. 10) or one (Eq. 2)

    @property
    def active_fraction(self) -> torch.Tensor:
        """(N,) fraction of hinge terms that are > 0 (0 when K = 0)."""
        terms = self.num_triplets * (2 if self.dual else 1)
        return self.num_active.double() / terms.clamp_min(1).double()

"""How different the slices' representations are: linear CKA between slices.

Linear centred kernel alignment (Kornblith et al., "Similarity of neural network
representations revisited", ICML 2019) between two representations X (n, d1) and Y (n, d2)
of the same n images, columns centred:

    CKA(X, Y) = ||Yᵀ X||²_F / (||Xᵀ X||_F · ||Yᵀ Y||_F)  ∈ [0, 1]

It is 1 when Y is X up to an orthogonal map and a scale, and does not depend on which
of the d dimensions is which, so two slices that learnt the same representation in
different coordinates still score 1. Mul-DML's claim that each threshold learns a distinct
representation predicts off-diagonal values well below 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of x (n, d1) and y (n, d2), rows the same n samples; computed in float64.

    Returns 0.0 when either representation is constant over the samples. Raises ValueError
    when the row counts differ or n < 2.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need (n, d1) and (n, d2) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 samples, got {x.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denominator == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)


def slice_cka(embedding: torch.Tensor, num_slices: int, normalize: bool = True) -> torch.Tensor:
    """(N, N) linear CKA between every pair of the embedding's slices.

    embedding: (n, N·d) of n images (the network's embedding before normalisation);
    normalize: L2-normalise each slice first, as the triplet losses see it. Symmetric, with
    1 on the diagonal (for a non-constant slice). Raises ValueError when the width is not
    a multiple of num_slices.
    """
    n, width = embedding.shape
    if num_slices < 1 or width % num_slices:
        raise ValueError(f"embedding width {width} is not a multiple of {num_slices} slices")
    slices = embedding.detach().double().view(n, num_slices, width // num_slices)
    if normalize:
        slices = F.normalize(slices, dim=2)
    result = torch.eye(num_slices, dtype=torch.float64)
    for i in range(num_slices):
        for j in range(i + 1, num_slices):
            result[i, j] = result[j, i] = linear_cka(slices[:, i], slices[:, j])
    return result

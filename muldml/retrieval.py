"""Embedding-retrieval metrics: what each slice learnt, measured as a metric space.

Each slice i of the embedding is L2-normalised and judged on its own, and so is the merged
embedding (the N normalised slices concatenated, then normalised: every slice weighs the
same). Every image of the evaluated split is a query against all the others (leave-one-out),
with Euclidean distance, as the slices are trained (Eq. 2 of the paper).

The metrics come from pytorch-metric-learning's AccuracyCalculator:
- Precision@1 (= Recall@1): the share of queries whose nearest neighbour has their label;
- MAP@R (Musgrave et al., 2020): mean average precision over the R nearest neighbours, R the
  number of other images of the query's class;
- NMI: normalised mutual information between the labels and a k-means clustering (k = number
  of classes; scikit-learn's KMeans, seeded).
Queries whose class has no other image in the split are left out by the calculator.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

METRICS = ("precision_at_1", "mean_average_precision_at_r", "NMI")


def _kmeans(x: torch.Tensor, num_clusters: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=num_clusters, n_init=10, random_state=0).fit_predict(x.cpu().numpy())


def _scores(x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calculator = AccuracyCalculator(include=METRICS, device=torch.device("cpu"),
                                    knn_func=CustomKNN(LpDistance(normalize_embeddings=True)),
                                    kmeans_func=_kmeans)
    scores = calculator.get_accuracy(x, labels, ref_includes_query=True)
    return {name: float(scores[name]) for name in METRICS}


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, num_slices: int) -> dict[str, Any]:
    """Precision@1, MAP@R and NMI per slice and for the merged embedding.

    embeddings: (B, N·d) raw embedding (before normalisation), N = num_slices.
    labels: (B,) integer class labels.
    Returns {"slices": [{metric: value} for each slice], "merged": {metric: value}}, values
    in [0, 1]. Raises ValueError when the shapes disagree or fewer than two classes are present
    (neighbours and clusters need two classes to mean anything).
    """
    if embeddings.dim() != 2 or embeddings.shape[1] % num_slices:
        raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} do not split into {num_slices} slices")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {embeddings.shape[0]} embeddings")
    if labels.unique().numel() < 2:
        raise ValueError("retrieval metrics need at least two classes in the evaluated images")
    x = embeddings.detach().float().cpu()
    labels = labels.detach().cpu()
    slices = torch.nn.functional.normalize(x.view(x.shape[0], num_slices, -1), dim=2)
    merged = slices.reshape(x.shape[0], -1)  # each slice unit-norm: equal weight; LpDistance renormalises
    return {"slices": [_scores(slices[:, i], labels) for i in range(num_slices)],
            "merged": _scores(merged, labels)}

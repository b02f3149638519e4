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
Queries whose class has no other image in the split are left out by the calculator; the
metrics need at least two classes with two images or more (`unusable` says why not).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

METRICS = ("precision_at_1", "mean_average_precision_at_r", "NMI")


MIN_PER_CLASS = 2  # a query needs another image of its class to be retrieved


def unusable(labels: torch.Tensor) -> str | None:
    """Why retrieval metrics mean nothing for these (B,) labels, or None when they do: at least
    two classes need two images or more (a nearest neighbour of the query's class, and a
    wrong class to confuse it with)."""
    counts = torch.bincount(labels.detach().cpu().long()) if labels.numel() else torch.zeros(0, dtype=torch.long)
    usable = int((counts >= MIN_PER_CLASS).sum())
    if usable < 2:
        return (f"retrieval metrics need at least two classes with {MIN_PER_CLASS} or more images each; the "
                f"{labels.numel()} evaluated image(s) have {usable}")
    return None


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
    in [0, 1]. With one slice the merged embedding is that slice (scored once). Raises
    ValueError when the shapes disagree or the labels are `unusable`.
    """
    if embeddings.dim() != 2 or embeddings.shape[1] % num_slices:
        raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} do not split into {num_slices} slices")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {embeddings.shape[0]} embeddings")
    reason = unusable(labels)
    if reason:
        raise ValueError(reason)
    x = embeddings.detach().float().cpu()
    labels = labels.detach().cpu()
    slices = torch.nn.functional.normalize(x.view(x.shape[0], num_slices, -1), dim=2)
    merged = slices.reshape(x.shape[0], -1)  # each slice unit-norm: equal weight; LpDistance renormalises
    per_slice = [_scores(slices[:, i], labels) for i in range(num_slices)]
    return {"slices": per_slice, "merged": dict(per_slice[0]) if num_slices == 1 else _scores(merged, labels)}

"""What the figures measure on a trained model: embeddings, inter-class distances (Fig. 3),
the rate of incomplete judgements (Fig. 6) and per-slice neuron maps (Figs. 7–8)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from muldml.config import Config
from muldml.data.augment import eval_transform
from muldml.data.folder import FaceDataset, Sample
from muldml.losses import multi_threshold_triplet_loss
from muldml.model import MulDMLNet

DISTANCE_BINS = 40  # over [0, 2]: the range of distances between unit vectors


@torch.no_grad()
def embed(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
          order: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (n, N·d) before normalisation, labels (n,)) of `samples` from the centre crop,
    in eval mode, on the CPU. ``order`` shuffles the samples first (then batches are random)."""
    data = FaceDataset(samples, eval_transform(cfg.image_size, cfg.crop))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=order is not None, generator=order)
    model.eval().to(device)
    chunks, labels = [], []
    for images, y in loader:
        chunks.append(model(images.to(device)).embedding.float().cpu())
        labels.append(y)
    if not chunks:
        return torch.zeros(0, cfg.num_slices * cfg.slice_dim), torch.zeros(0, dtype=torch.long)
    return torch.cat(chunks), torch.cat(labels)


def interclass_histograms(embeddings: torch.Tensor, labels: torch.Tensor, num_slices: int,
                          bins: int = DISTANCE_BINS) -> list[list[int]]:
    """Per slice, the histogram (``bins`` counts over [0, 2]) of Euclidean distances between
    the L2-normalised slice vectors of every pair of samples of different classes (Fig. 3)."""
    n = len(labels)
    pairs = (labels[:, None] != labels[None, :]) & torch.ones(n, n, dtype=torch.bool).triu(1)
    out = []
    for s in embeddings.view(n, num_slices, -1).unbind(1):
        u = F.normalize(s.double(), dim=1)
        d = torch.cdist(u, u)[pairs]
        out.append(torch.histc(d, bins=bins, min=0.0, max=2.0).long().tolist())
    return out


def incomplete_judgements(embeddings: torch.Tensor, labels: torch.Tensor, cfg: Config) -> tuple[int, int]:
    """(incomplete, triplets) over the slices of one batch: batch-hard mining as training does
    (p* hardest positive, n* hardest negative per anchor and slice), a triplet being
    incomplete when the negative is nearer the positive than the anchor is, d(p*, n*) < d(a, p*)."""
    if not cfg.margins:
        return 0, 0
    mined = multi_threshold_triplet_loss(embeddings.double(), labels, cfg.margins, cfg.slice_dim,
                                         dual=cfg.dual, backend="torch")
    units = F.normalize(embeddings.double().view(len(labels), len(cfg.margins), -1), dim=2)
    incomplete = triplets = 0
    for i in range(len(cfg.margins)):
        anchors = torch.nonzero(mined.pos_idx[i] >= 0).flatten()
        p, n = mined.pos_idx[i, anchors], mined.neg_idx[i, anchors]
        u = units[:, i]
        d_ap = (u[anchors] - u[p]).norm(dim=1)
        d_pn = (u[p] - u[n]).norm(dim=1)
        incomplete += int((d_pn < d_ap).sum())
        triplets += len(anchors)
    return incomplete, triplets


def incomplete_rate(model: MulDMLNet, samples: Sequence[Sample], cfg: Config, device: torch.device,
                    seed: int = 0) -> float | None:
    """Fraction of mined triplets that are incomplete judgements over `samples` cut into
    random batches of cfg.batch_size (a fixed order per seed), in eval mode. None without
    a triplet loss or without any triplet."""
    if not cfg.margins or not samples:
        return None
    embeddings, labels = embed(model, samples, cfg, device, order=torch.Generator().manual_seed(seed))
    incomplete = triplets = 0
    for start in range(0, len(labels), cfg.batch_size):
        a, b = incomplete_judgements(embeddings[start:start + cfg.batch_size], labels[start:start + cfg.batch_size], cfg)
        incomplete, triplets = incomplete + a, triplets + b
    return incomplete / triplets if triplets else None


def neuron_maps(embeddings: torch.Tensor, num_slices: int, side: int = 8) -> np.ndarray:
    """(n, N, side, side): side² evenly spaced dimensions of each L2-normalised slice, as a
    side × side grid per slice (Figs. 7–8)."""
    n = embeddings.shape[0]
    slices = F.normalize(embeddings.view(n, num_slices, -1).float(), dim=2)
    dims = np.linspace(0, slices.shape[2] - 1, side * side).round().astype(int)
    return slices[:, :, dims].reshape(n, num_slices, side, side).numpy()

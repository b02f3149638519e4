"""The network and the metric loss a Config describes (used by training, checkpoints, the
studies and the benchmarks)."""
from __future__ import annotations

import torch

from muldml.config import Config
from muldml.losses import MultiThresholdTripletLoss
from muldml.model import MulDMLNet


def build_model(cfg: Config) -> MulDMLNet:
    """The network `cfg` describes, on the CPU, freshly initialised."""
    return MulDMLNet(len(cfg.classes), cfg.num_slices, cfg.slice_dim, cfg.classifier_input,
                     cfg.multitask, cfg.dropout, cfg.cosine_scale, cfg.learn_cosine_scale)


def build_triplet_loss(cfg: Config, all_gather: bool | None = None, memory: bool = True) -> torch.nn.Module | None:
    """The metric loss `cfg` trains beside the softmax: the multi-threshold triplet loss, a
    baseline's (metric_loss circle or hist, Tables V–VI), or None for softmax-only presets.
    all_gather: mine over all processes' rows (default: when running distributed).
    memory: with the cross-batch memory of cfg.xbm_size rows (False: the validation loss)."""
    if cfg.metric_loss == "circle":
        from muldml.baselines import CircleMetricLoss, baseline_weight

        return CircleMetricLoss(cfg.circle_m, cfg.circle_gamma, lam=baseline_weight(cfg.lam))
    if cfg.metric_loss == "hist":
        from muldml.baselines import HISTLoss, baseline_weight

        return HISTLoss(len(cfg.classes), cfg.num_slices * cfg.slice_dim, cfg.hist_tau, cfg.hist_alpha,
                        cfg.hist_lambda_s, cfg.hist_hidden, lam=baseline_weight(cfg.lam))
    if not cfg.margins:
        return None
    return MultiThresholdTripletLoss(margins=cfg.margins, slice_dim=cfg.slice_dim, dual=cfg.dual,
                                     lam=cfg.lam, backend=cfg.backend, precision=cfg.mining_precision,
                                     all_gather=all_gather, memory_size=cfg.xbm_size if memory else 0)

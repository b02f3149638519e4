"""The Mul-DML network: ResNet-18 → dropout → embedding layer cut into N slices → classifier.

    image (B, C, H, W) → ResNet-18 pooled feature g(x) (B, 512) → dropout
      → embedding E = g(x)·M, M = [M_1 … M_N] (B, N·d); slice i = E[:, i·d:(i+1)·d]
      → the loss L2-normalises each slice for its triplet term
      → dropout → classifier (B, C) on E ("raw", default) or on the normalised slices
        ("normalized"), or a cosine classifier on the normalised slices ("cosine": logits
        s·cos(w_c, f), NormFace / CosFace without margin, scale s fixed or learnt);
        multitask: one classifier per slice (N, B, C), majority vote.

Why "raw" by default: with unit-norm slices the logits' scale is capped (at most the
classifier's weight norm times √N), so the network can underfit; "normalized" stays
available for studies. No committed result compares the two yet.
"cosine" makes the cross-entropy and the triplet losses act on the same unit-norm features
while the scale s, not the features' norm, sets how peaked the softmax can be (Wang et al.,
NormFace, 2017).

Grayscale input (1 channel) is replicated to three channels, so RGB-pretrained backbones
apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from muldml.errors import UserError

FEATURE_DIM = 512  # ResNet-18's pooled feature
CLASSIFIER_INPUTS = ("raw", "normalized", "cosine")


class CosineClassifier(nn.Module):
    """logits = s·cos(w_c, x) for every class c: x (B, D) → (B, C).

    scale: s (NormFace, CosFace); learn_scale: s is a parameter (kept positive as exp of
    its log) rather than a constant.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0, learn_scale: bool = True) -> None:
        super().__init__()
        if not scale > 0:
            raise UserError(f"cosine classifier scale must be > 0, got {scale}")
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

    def extra_repr(self) -> str:
        return (f"in_features={self.weight.shape[1]}, classes={self.weight.shape[0]}, scale={float(self.scale):.3g}, "
                f"learnt={isinstance(self.log_scale, nn.Parameter)}")


@dataclass
class NetOutput:
    """embedding: (B, N·d) before normalisation; logits: (B, C), or (N, B, C) when multitask."""

    embedding: torch.Tensor
    logits: torch.Tensor


class MulDMLNet(nn.Module):
    """ResNet-18 with an N-slice embedding layer and a (per-slice) softmax classifier."""

    def __init__(
        self,
        num_classes: int,
        num_slices: int = 7,
        slice_dim: int = 256,
        classifier_input: str = "raw",
        multitask: bool = False,
        dropout: float = 0.5,
        cosine_scale: float = 16.0,
        learn_cosine_scale: bool = True,
    ) -> None:
        """cosine_scale, learn_cosine_scale: the scale s of the "cosine" classifier (its start
        when learnt); ignored by the other classifier inputs."""
        super().__init__()
        if classifier_input not in CLASSIFIER_INPUTS:
            raise UserError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        self.num_slices, self.slice_dim = num_slices, slice_dim
        self.classifier_input, self.multitask = classifier_input, multitask
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.embedding_dropout = nn.Dropout(dropout)
        self.embedding = nn.Linear(FEATURE_DIM, num_slices * slice_dim)
        self.classifier_dropout = nn.Dropout(dropout)
        def head(width: int) -> nn.Module:
            if classifier_input == "cosine":
                return CosineClassifier(width, num_classes, cosine_scale, learn_cosine_scale)
            return nn.Linear(width, num_classes)

        if multitask:
            self.classifiers = nn.ModuleList(head(slice_dim) for _ in range(num_slices))
        else:
            self.classifier = head(num_slices * slice_dim)

    @property
    def normalizes_slices(self) -> bool:
        """Whether the classifier reads the L2-normalised slices."""
        return self.classifier_input in ("normalized", "cosine")

    def slices(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, N·d) → (B, N, d) view of the slices."""
        return embedding.view(embedding.shape[0], self.num_slices, self.slice_dim)

    def forward(self, images: torch.Tensor) -> NetOutput:
        """images: (B, 1 or 3, H, W), normalised pixels."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        embedding = self.embedding(self.embedding_dropout(self.backbone(images)))
        features = self.slices(embedding)
        if self.normalizes_slices:
            features = F.normalize(features, dim=2)
        features = self.classifier_dropout(features)
        if self.multitask:
            logits = torch.stack([head(features[:, i]) for i, head in enumerate(self.classifiers)])
        else:
            logits = self.classifier(features.flatten(1))
        return NetOutput(embedding, logits)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) predicted classes; multitask: majority vote, ties broken by summed probabilities."""
        return vote(self(images).logits)

    def split_embedding(self) -> list[nn.Linear]:
        """The embedding layer as the paper draws it: N separate maps M_i (h → d)."""
        layers = []
        for i in range(self.num_slices):
            layer = nn.Linear(FEATURE_DIM, self.slice_dim)
            rows = slice(i * self.slice_dim, (i + 1) * self.slice_dim)
            layer.weight.data.copy_(self.embedding.weight.data[rows])
            layer.bias.data.copy_(self.embedding.bias.data[rows])
            layers.append(layer)
        return layers


def vote(logits: torch.Tensor) -> torch.Tensor:
    """Class per sample from (B, C) logits, or from (N, B, C) per-slice logits by majority
    vote over slices with ties broken by the summed probabilities."""
    if logits.dim() == 2:
        return logits.argmax(1)
    num_classes = logits.shape[-1]
    votes = F.one_hot(logits.argmax(-1), num_classes).sum(0).float()  # (B, C)
    probability = logits.softmax(-1).sum(0)  # (B, C), each < N: breaks ties only
    return (votes * (logits.shape[0] + 1) + probability).argmax(1)


def load_init(model: MulDMLNet, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a torchvision ResNet-18 state_dict (into the backbone) or a muldml one (whole
    model; layers whose shapes differ, e.g. another class count, are skipped).

    Returns (missing, unexpected) keys for the caller to report.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--init file not found: {path}") from None
    except Exception as e:  # truncated, not a torch file, pickled objects …
        raise UserError(f"cannot load --init {path}: {e.__class__.__name__}: {e}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a muldml training checkpoint
    if not isinstance(state, dict):
        raise UserError(f"--init {path} holds no state_dict")
    if not any(k.startswith("backbone.") for k in state):  # torchvision layout
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = model.load_state_dict(usable, strict=False)
    unexpected = sorted(set(state) - set(usable))
    if not any(k.startswith("backbone.") for k in usable):
        raise UserError(f"--init {path} shares no backbone weights with ResNet-18")
    return sorted(result.missing_keys), unexpected

"""HIST loss: hypergraph-induced semantic tuplet loss (Lim et al., CVPR 2022), a baseline of
the paper's Tables V–VI, trained on the S-Dual-Triplet network (one 256-d slice, softmax
plus λ·loss).

For a batch of B embeddings x_i (L2-normalised) with labels y_i and C classes:

1. Class distributions. Each class c has a learnt mean μ_c (L2-normalised) and a diagonal
   variance σ²_c = exp(clamp(v_c, 0, 6)) from a learnt log-variance v_c. The squared
   Mahalanobis distance is  d(i, c) = Σ_f (x_if − μ_cf)² / σ²_cf.
2. Distribution loss (a proxy softmax over the classes, scale τ):
   L_D = −1/B · Σ_i log softmax_c(−τ·d(i, c))[y_i].
3. Semantic hypergraph. Every class present in the batch is a hyperedge; the incidence of
   sample i in hyperedge c is H_ic = 1 when y_i = c, else exp(−α·d(i, c)) (a sample joins
   another class's tuplet with a strength that decays with its distance: α is the hardness).
4. HGNN (Feng et al., AAAI 2019) with unit hyperedge weights: G = D_v^{-1/2} H D_e^{-1} Hᵀ D_v^{-1/2}
   (D_v, D_e the node and hyperedge degrees); two layers Z = G·φ(G·X·Θ1 + …)·Θ2 with φ a leaky
   ReLU (slope 0.1) give class scores (B, C) for every sample.
5. Semantic tuplet loss L_S = cross-entropy(Z, y).  HIST = L_D + λ_s·L_S.

Hyper-parameters (defaults from the authors' release): τ = 32, α = 0.9, λ_s = 1, HGNN hidden
width 512. That release trains the class distributions at 1000× and the HGNN at 10× the
network's learning rate (1e-1 and 1e-3 beside 1e-4). Here one optimiser serves everything, so
the same ratios come from the parametrisation instead: the distributions are stored divided by
DIST_LR_SCALE and the HGNN weights by HGNN_LR_SCALE, and Adam's steps, which do not depend on
the gradient's scale, then move the effective values that much faster.

Deliberate differences from that release, so that the loss is a pure function of its
parameters and inputs: no batch normalisation inside the HGNN (its value is then the same in
training and evaluation mode), and log-variances start at 0 (σ² = 1: the distance starts as
the plain squared Euclidean one). L_D uses log-softmax, so no sample is dropped for a
probability that underflows to 0.

``hist_reference`` computes the same value with explicit loops in float64: the oracle for tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIST_DEFAULTS = {"tau": 32.0, "alpha": 0.9, "lambda_s": 1.0, "hidden": 512}
LOG_VAR_MAX = 6.0  # σ² ≤ e^6
LEAKY_SLOPE = 0.1
DIST_LR_SCALE = 1000.0  # class means and log-variances: 1000× the learning rate
HGNN_LR_SCALE = 10.0  # HGNN weights: 10× the learning rate


class HISTLoss(nn.Module):
    """The HIST loss as a module with its learnt parameters (class means, log-variances, HGNN).

    num_classes: C; embed_dim: D. forward(embeddings (B, D), labels (B,) int) → scalar
    λ·(L_D + λ_s·L_S); ``last_terms`` keeps the detached (L_D, L_S) of the last call.
    Raises ValueError for labels outside [0, C) or an embedding width other than D.
    """

    def __init__(self, num_classes: int, embed_dim: int, tau: float = 32.0, alpha: float = 0.9,
                 lambda_s: float = 1.0, hidden: int = 512, lam: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2 or embed_dim < 1 or hidden < 1:
            raise ValueError(f"HIST needs >= 2 classes and positive widths, got C={num_classes}, D={embed_dim}, hidden={hidden}")
        if not (tau > 0 and alpha >= 0 and lambda_s >= 0 and lam >= 0):
            raise ValueError(f"HIST needs tau > 0 and alpha, lambda_s, lam >= 0; got {tau}, {alpha}, {lambda_s}, {lam}")
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.tau, self.alpha, self.lambda_s, self.lam = float(tau), float(alpha), float(lambda_s), float(lam)
        # Stored parameters are the effective values divided by their learning-rate scale.
        self.raw_means = nn.Parameter(torch.randn(num_classes, embed_dim) / math.sqrt(embed_dim) / DIST_LR_SCALE)
        self.raw_log_vars = nn.Parameter(torch.zeros(num_classes, embed_dim))
        layers = (nn.Linear(embed_dim, hidden), nn.Linear(hidden, num_classes))  # torch's initialisation
        self.raw_w1, self.raw_b1, self.raw_w2, self.raw_b2 = (nn.Parameter(p.detach() / HGNN_LR_SCALE) for layer in layers
                                                              for p in (layer.weight, layer.bias))
        self.last_terms: tuple[torch.Tensor, torch.Tensor] | None = None
        # The training loop logs per-slice triplet diagnostics from these; a baseline has none.
        self.num_slices = 0
        self.last_output = None

    @property
    def means(self) -> torch.Tensor:
        """(C, D) class means (before normalisation)."""
        return self.raw_means * DIST_LR_SCALE

    @property
    def log_vars(self) -> torch.Tensor:
        """(C, D) log-variances (before the clamp to [0, 6])."""
        return self.raw_log_vars * DIST_LR_SCALE

    def hgnn_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Θ1 (hidden, D), b1 (hidden,), Θ2 (C, hidden), b2 (C,)) as F.linear takes them."""
        return tuple(p * HGNN_LR_SCALE for p in (self.raw_w1, self.raw_b1, self.raw_w2, self.raw_b2))

    @torch.no_grad()
    def set_parameters(self, means=None, log_vars=None, w1=None, b1=None, w2=None, b2=None) -> None:
        """Set effective values (tests, or a release's weights); None leaves one unchanged."""
        for raw, value, scale in ((self.raw_means, means, DIST_LR_SCALE), (self.raw_log_vars, log_vars, DIST_LR_SCALE),
                                  (self.raw_w1, w1, HGNN_LR_SCALE), (self.raw_b1, b1, HGNN_LR_SCALE),
                                  (self.raw_w2, w2, HGNN_LR_SCALE), (self.raw_b2, b2, HGNN_LR_SCALE)):
            if value is not None:
                raw.copy_(torch.as_tensor(value, dtype=raw.dtype) / scale)

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C) squared Mahalanobis distances d(i, c) of the normalised embeddings."""
        x = F.normalize(embeddings, dim=1)
        mu = F.normalize(self.means, dim=1).to(x.dtype)
        inv_var = torch.exp(-self.log_vars.clamp(0.0, LOG_VAR_MAX)).to(x.dtype)  # (C, D)
        # Σ_f (x_f − μ_f)²/σ²_f expanded: no (B, C, D) tensor.
        return ((x * x) @ inv_var.T - 2 * x @ (mu * inv_var).T + (mu * mu * inv_var).sum(1)).clamp_min(0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # In fp32 (fp64 for fp64 input) even under autocast: the expanded Mahalanobis distance
        # cancels, and τ = 32 magnifies its error.
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._forward(embeddings, labels)

    def _forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (B, {self.embed_dim}), got {tuple(embeddings.shape)}")
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        embeddings = embeddings.to(dtype)
        distance = self.distances(embeddings)
        dist_loss = F.cross_entropy(-self.tau * distance, labels)

        one_hot = F.one_hot(labels, self.num_classes).to(dtype)
        present = one_hot.sum(0) > 0  # hyperedges: the classes in the batch
        member = one_hot[:, present]
        incidence = member + torch.exp(-self.alpha * distance[:, present]) * (1 - member)  # (B, E)
        node_degree, edge_degree = incidence.sum(1), incidence.sum(0)
        scaled = incidence * node_degree.rsqrt()[:, None]
        propagation = (scaled / edge_degree) @ scaled.T  # D_v^-1/2 H D_e^-1 Hᵀ D_v^-1/2, (B, B)
        x = F.normalize(embeddings, dim=1)
        w1, b1, w2, b2 = (p.to(dtype) for p in self.hgnn_weights())
        hidden = F.leaky_relu(propagation @ F.linear(x, w1, b1), LEAKY_SLOPE)
        scores = propagation @ F.linear(hidden, w2, b2)
        tuplet_loss = F.cross_entropy(scores, labels)
        self.last_terms = (dist_loss.detach(), tuplet_loss.detach())
        return self.lam * (dist_loss + self.lambda_s * tuplet_loss)

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, dim={self.embed_dim}, tau={self.tau:g}, alpha={self.alpha:g}, "
                f"lambda_s={self.lambda_s:g}, hidden={self.raw_w1.shape[0]}, lam={self.lam:g}")


def hist_reference(loss: HISTLoss, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """λ·(L_D + λ_s·L_S) of ``loss``'s parameters, by explicit per-sample, per-class loops in
    float64 (slow: tests only). Follows the numbered steps of the module docstring."""
    x = [[float(v) for v in row] for row in embeddings.detach().double()]
    y = [int(v) for v in labels]
    B, C = len(x), loss.num_classes

    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    x = [unit(v) for v in x]
    mu = [unit([float(a) for a in row]) for row in loss.means.detach().double()]
    var = [[math.exp(min(max(float(a), 0.0), LOG_VAR_MAX)) for a in row] for row in loss.log_vars.detach().double()]
    d = [[sum((x[i][f] - mu[c][f]) ** 2 / var[c][f] for f in range(len(x[i]))) for c in range(C)] for i in range(B)]

    def nll(logits, target):
        top = max(logits)
        return -(logits[target] - top - math.log(sum(math.exp(z - top) for z in logits)))

    dist_loss = sum(nll([-loss.tau * d[i][c] for c in range(C)], y[i]) for i in range(B)) / B

    edges = sorted(set(y))
    H = [[1.0 if y[i] == c else math.exp(-loss.alpha * d[i][c]) for c in edges] for i in range(B)]
    dv = [sum(H[i]) for i in range(B)]
    de = [sum(H[i][e] for i in range(B)) for e in range(len(edges))]
    G = [[sum(H[i][e] * H[j][e] / de[e] for e in range(len(edges))) / math.sqrt(dv[i] * dv[j]) for j in range(B)]
         for i in range(B)]

    w1, b1, w2, b2 = (p.detach().double().tolist() for p in loss.hgnn_weights())

    def linear(w, b, rows):
        return [[sum(r[k] * w[o][k] for k in range(len(r))) + b[o] for o in range(len(w))] for r in rows]

    def propagate(rows):
        return [[sum(G[i][j] * rows[j][o] for j in range(B)) for o in range(len(rows[0]))] for i in range(B)]

    hidden = [[v if v > 0 else LEAKY_SLOPE * v for v in row] for row in propagate(linear(w1, b1, x))]
    scores = propagate(linear(w2, b2, hidden))
    tuplet_loss = sum(nll(scores[i], y[i]) for i in range(B)) / B
    return loss.lam * (dist_loss + loss.lambda_s * tuplet_loss)

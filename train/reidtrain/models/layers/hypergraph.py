"""CHI's cross-modal hypergraph (STMI Eqs. 14-16): similarity hyperedges and the hypergraph convolution of
Bai, Zhang and Torr (2021), with learnable hyperedge weights and a residual connection.

Hyperedges (ASSUMED where the paper is silent): one hyperedge per node, centred on it, holding every node whose
cosine similarity to the centre is at least ``tau`` (the centre itself included, its similarity being 1). The
incidence is recomputed for every sample and every layer from that layer's input and carries no gradient
(a threshold).

Convolution (Bai et al., Eq. 15 of STMI with its normalisation)::

    X' = sigma(Dv^-1/2 H W De^-1 H^T Dv^-1/2 X Theta + b),   X_out = X + X'   (Eq. 16)

with H (V, E) the incidence, W = diag(w_e) the learnable hyperedge weights (w_e = softplus(theta_e) > 0 keeps the
degrees positive; starts at 1), Dv = diag(H w) the node degrees, De = diag(1^T H) the hyperedge degrees, Theta a
linear map and b the node-specific bias b_i. Nodes are first averaged into hyperedges (node -> hyperedge), the
hyperedges are then weighted by w_e and summed back into their nodes (hyperedge -> node). sigma is ReLU (ASSUMED).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HypergraphConv", "HypergraphFusion", "incidence_density", "similarity_incidence"]

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1


@torch.no_grad()
def similarity_incidence(nodes: torch.Tensor, tau: float) -> torch.Tensor:
    """Nodes (B, V, D) -> incidence H (B, V, E = V) float: H[b, j, e] = 1 iff cos(x_e, x_j) >= tau."""
    unit = F.normalize(nodes.float(), dim=-1)  # (B, V, D)
    similarity = unit @ unit.transpose(1, 2)  # (B, V, V), symmetric
    incidence = (similarity >= tau).float()
    eye = torch.eye(nodes.shape[1], device=nodes.device, dtype=incidence.dtype)
    return torch.maximum(incidence, eye)  # every node lies in its own hyperedge (guards against rounding)


def incidence_density(incidence: torch.Tensor) -> torch.Tensor:
    """The share of node pairs (i != j) that share a similarity hyperedge, per sample: H (B, V, V) -> (B,).

    1 means every node joins every hyperedge: the convolution then averages all nodes alike (CHI degenerates)."""
    v = incidence.shape[-1]
    off_diagonal = incidence.sum((-2, -1)) - incidence.diagonal(dim1=-2, dim2=-1).sum(-1)  # (B,)
    return off_diagonal / max(v * (v - 1), 1)


class HypergraphConv(nn.Module):
    """One hypergraph convolution with residual (module docstring): nodes (B, V, D) -> (B, V, D)."""

    stats_prefix = "chi"
    """``metrics.jsonl`` names its epoch statistics ``chi_<stat>`` (``chi<i>_<stat>`` with several layers)."""

    def __init__(self, dim: int, num_nodes: int, tau: float = 0.5) -> None:
        super().__init__()
        if not -1.0 <= tau <= 1.0:
            raise ValueError(f"tau is a cosine similarity threshold in [-1, 1], got {tau}")
        self.tau = tau
        self.theta = nn.Linear(dim, dim, bias=False)  # Theta
        self.edge_weight = nn.Parameter(torch.full((num_nodes,), _SOFTPLUS_ONE))  # w_e = softplus(.) , (E,)
        self.node_bias = nn.Parameter(torch.zeros(num_nodes, dim))  # b_i, (V, D)
        # training-time incidence density, summed on the device (no sync per step) until pop_epoch_stats()
        self._density_sum: torch.Tensor | None = None
        self._density_count = 0

    def pop_epoch_stats(self) -> dict[str, float]:
        """``{"density": mean share of node pairs sharing a hyperedge}`` over the training samples seen since the
        last call ({} when none), then reset. The trainer logs it per epoch (``chi_density`` in metrics.jsonl)."""
        if self._density_sum is None or not self._density_count:
            return {}
        mean = float(self._density_sum) / self._density_count
        self._density_sum, self._density_count = None, 0
        return {"density": mean}

    def weights(self) -> torch.Tensor:
        """The hyperedge weights w_e (E,), positive."""
        return F.softplus(self.edge_weight)

    def propagate(self, x: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        """The normalised node -> hyperedge -> node pass, before bias and activation: (B, V, D) -> (B, V, D)."""
        w = self.weights().to(x.dtype)  # (E,)
        h = incidence.to(x.dtype)  # (B, V, E)
        node_degree = (h * w).sum(-1).clamp_min(1e-6)  # (B, V)
        edge_degree = h.sum(-2).clamp_min(1.0)  # (B, E)
        scale = node_degree.rsqrt().unsqueeze(-1)  # (B, V, 1)
        xt = self.theta(x) * scale  # (B, V, D)
        edges = (h.transpose(1, 2) @ xt) / edge_degree.unsqueeze(-1)  # (B, E, D): node -> hyperedge (mean)
        return (h @ (edges * w.view(1, -1, 1))) * scale  # (B, V, D): hyperedge -> node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        incidence = similarity_incidence(x, self.tau)  # (B, V, E)
        if self.training:
            density = incidence_density(incidence).sum()  # () summed over the batch
            self._density_sum = density if self._density_sum is None else self._density_sum + density
            self._density_count += incidence.shape[0]
        out = F.relu(self.propagate(x, incidence) + self.node_bias.to(x.dtype))  # Eq. 15
        return x + out  # Eq. 16


class HypergraphFusion(nn.Module):
    """CHI's hypergraph part: ``num_layers`` hypergraph convolutions over the M (K+1) semantic tokens (Eq. 14 nodes).

    tokens (B, M, K+1, D) -> H' (B, M (K+1), D).
    """

    def __init__(self, dim: int, num_nodes: int, tau: float = 0.5, num_layers: int = 1) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"chi_layers must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(HypergraphConv(dim, num_nodes, tau) for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.flatten(1, 2)  # (B, V, D), Eq. 14
        for layer in self.layers:
            x = layer(x)
        return x

"""DeMo building blocks (Wang et al., AAAI 2025): PIFE (Eq. 2), HDM (Eqs. 3-8), ATMoE (Eqs. 9-15).

Facts taken from the authors' public code where the paper is silent (read for facts only):

- HDM: the seven query tokens start at ``dim ** -0.5 * randn``; each decoupling uses its own
  ``nn.MultiheadAttention`` with ``dim // 64`` heads (8 for CLIP's 512) and attention dropout 0.1.
- ATMoE: the reduction ``phi`` is Linear(7C -> C) + activation + BatchNorm1d (Eq. 10); ``W_q`` and ``W_k`` have no
  bias. The experts work on the per-head chunks: for head h, expert e is Linear(c -> c) + activation + BatchNorm1d(c)
  on the h-th chunk of D_e (c = C / H). This is what the code does and what Table 5's parameter count measures
  (ATMoE adds 2.83 M at C = 512, H = 4; a full C x C expert per decoupled feature, the literal reading of Eq. 14,
  would add 4.2 M). The weighted experts are concatenated expert-major: f = [E_R^1..E_R^H, E_N^1.., ..., E_RNT^H].
- The activation omega is GELU as the paper says (the code uses QuickGELU, CLIP's sigmoid approximation of it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EXPERT_NAMES",
    "EXPERT_SETS",
    "AttentionTriggeredMoE",
    "HierarchicalDecoupling",
    "PatchIntegratedExtractor",
]

# The decoupled features in the paper's order (Eq. 9): unimodal R, N, T; bimodal RN, NT, TR; trimodal RNT. Each
# entry lists the modality indices (0 = RGB, 1 = NIR, 2 = TIR) whose tokens form the key set (Eqs. 3, 5, 7).
EXPERT_SETS: tuple[tuple[int, ...], ...] = ((0,), (1,), (2,), (0, 1), (1, 2), (2, 0), (0, 1, 2))
EXPERT_NAMES: tuple[str, ...] = ("R", "N", "T", "RN", "NT", "TR", "RNT")


class PatchIntegratedExtractor(nn.Module):
    """PIFE for one modality, Eq. 2: f_m = GELU(W_pro(LN([f_cls, AvgPool(F_m)]))), W_pro: 2C -> C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.act = nn.GELU()

    def forward(self, cls_token: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """cls_token (B, C), patches (B, N, C) -> f_m (B, C)."""
        pooled = patches.mean(dim=1)  # (B, C), P(F_m)
        return self.act(self.proj(self.norm(torch.cat([cls_token, pooled], dim=-1))))  # (B, C)


class HierarchicalDecoupling(nn.Module):
    """HDM, Eqs. 3-8: one learnable query per token set, multi-head cross-attention D_s = Phi(Q_s, K_s).

    The key (and value) tokens K_s concatenate [f_m, F_m] of every modality m in the set, in the set's order
    (Eq. 5: K_TR = [f_T, F_T, f_R, F_R]); the query attends to them without positional information.
    """

    def __init__(
        self,
        dim: int,
        heads: int | None = None,
        dropout: float = 0.1,
        token_sets: Sequence[tuple[int, ...]] = EXPERT_SETS,
    ) -> None:
        super().__init__()
        heads = max(1, dim // 64) if heads is None else heads
        if heads < 1 or dim % heads:
            raise ValueError(f"HDM heads must divide the feature size {dim}, got {heads}")
        self.token_sets = tuple(tuple(s) for s in token_sets)
        self.queries = nn.Parameter(dim**-0.5 * torch.randn(len(self.token_sets), dim))  # (n_d, C): Q_s
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) for _ in self.token_sets
        )

    @staticmethod
    def key_tokens(features: torch.Tensor, patches: torch.Tensor, modalities: Sequence[int]) -> torch.Tensor:
        """Eqs. 3, 5, 7: features (B, M, C), patches (B, M, N, C) -> K (B, |set| * (1 + N), C)."""
        parts = [torch.cat([features[:, m].unsqueeze(1), patches[:, m]], dim=1) for m in modalities]
        return torch.cat(parts, dim=1)

    def forward(self, features: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """features (B, 3, C) (PIFE output, or class tokens), patches (B, 3, N, C) -> decoupled D (B, n_d, C)."""
        b = features.shape[0]
        decoupled = []
        for s, (modalities, attention) in enumerate(zip(self.token_sets, self.attention, strict=True)):
            keys = self.key_tokens(features, patches, modalities)  # (B, T_s, C)
            query = self.queries[s].view(1, 1, -1).expand(b, 1, -1)  # (B, 1, C)
            out, _ = attention(query, keys, keys, need_weights=False)  # (B, 1, C), Eqs. 4, 6, 8
            decoupled.append(out.squeeze(1))
        return torch.stack(decoupled, dim=1)  # (B, n_d, C)


class AttentionTriggeredMoE(nn.Module):
    """ATMoE, Eqs. 9-15: attention over the n_d decoupled features gives per-head expert weights.

    D_q = BN(GELU(W_red [D_1..D_nd])) (Eqs. 9-10); Q = W_q D_q, K = W_k D_k (Eq. 11); per head h,
    alpha^h = softmax(Q^h K^h^T / sqrt(c)) over the n_d experts (Eqs. 12-13). The expert outputs
    E_e^h = BN(GELU(W_e^h D_e^h + b_e^h)) on the head chunks (Eq. 14, see the module docstring) are scaled by
    alpha_e^h (Eq. 15) and concatenated into f (B, n_d * C).
    """

    def __init__(self, dim: int, num_experts: int = len(EXPERT_SETS), heads: int = 4) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"ATMoE heads must divide the feature size {dim}, got {heads}")
        self.dim, self.num_experts, self.heads = dim, num_experts, heads
        self.head_dim = dim // heads
        self.reduce = nn.Sequential(nn.Linear(num_experts * dim, dim), nn.GELU(), nn.BatchNorm1d(dim))  # phi
        self.query = nn.Linear(dim, dim, bias=False)  # W_q
        self.key = nn.Linear(dim, dim, bias=False)  # W_k
        c = self.head_dim
        bound = 1.0 / math.sqrt(c)  # nn.Linear's default initialisation, per (expert, head) block
        self.expert_weight = nn.Parameter(torch.empty(num_experts, heads, c, c).uniform_(-bound, bound))  # (out, in)
        self.expert_bias = nn.Parameter(torch.empty(num_experts, heads, c).uniform_(-bound, bound))
        self.expert_norm = nn.BatchNorm1d(num_experts * dim)  # one BatchNorm1d(c) per (expert, head), side by side

    def gates(self, decoupled: torch.Tensor) -> torch.Tensor:
        """Eqs. 9-13: decoupled (B, n_d, C) -> alpha (B, H, n_d), each row a softmax over the experts."""
        b, e, dim = decoupled.shape
        q = self.query(self.reduce(decoupled.reshape(b, e * dim)))  # (B, C), Eqs. 9-11
        k = self.key(decoupled)  # (B, n_d, C), Eq. 11
        q = q.view(b, self.heads, 1, self.head_dim)  # (B, H, 1, c)
        k = k.view(b, e, self.heads, self.head_dim).transpose(1, 2)  # (B, H, n_d, c)
        logits = (q @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(self.head_dim)  # (B, H, n_d)
        return logits.softmax(dim=-1)  # Eq. 13

    def experts(self, decoupled: torch.Tensor) -> torch.Tensor:
        """Eq. 14 per head chunk: decoupled (B, n_d, C) -> E (B, n_d, H, c), before weighting."""
        b, e, _ = decoupled.shape
        chunks = decoupled.view(b, e, self.heads, self.head_dim)  # (B, n_d, H, c)
        out = torch.einsum("behi,ehoi->beho", chunks, self.expert_weight) + self.expert_bias  # (B, n_d, H, c)
        out = self.expert_norm(F.gelu(out).reshape(b, e * self.dim))  # (B, n_d * C)
        return out.view(b, e, self.heads, self.head_dim)

    def forward(self, decoupled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """decoupled (B, n_d, C) -> (f (B, n_d * C), alpha (B, H, n_d))."""
        if decoupled.shape[1:] != (self.num_experts, self.dim):
            raise ValueError(f"expected decoupled features (B, {self.num_experts}, {self.dim}), got {decoupled.shape}")
        alpha = self.gates(decoupled)  # (B, H, n_d)
        weighted = self.experts(decoupled) * alpha.transpose(1, 2).unsqueeze(-1)  # (B, n_d, H, c), Eq. 15
        return weighted.flatten(1), alpha  # (B, n_d * C)

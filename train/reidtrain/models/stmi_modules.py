"""STMI building blocks: SFM (mask-modulated self-attention, Eqs. 2-8), STR (Eqs. 9-13), the cross-attention of
Eq. 18, the alternative fusions of Table 4 (concatenation, MLP, self-attention) and the BNNeck head of Eq. 19.

The hypergraph fusion (CHI, Eqs. 14-16) lives in :mod:`reidtrain.models.layers.hypergraph`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from reidtrain.models.layers.clip import split_qkv

__all__ = [
    "CrossAttention",
    "CrossModalMLP",
    "FeedForward",
    "SFMGates",
    "SelfAttentionFusion",
    "SemanticTokenReallocation",
    "foreground_relation",
    "modulation",
    "perturb_mask",
    "sfm_attention",
    "sfm_block",
]

SFMSharing = Literal["layer", "all", "head"]
SFMLayers = Literal["all", "early", "late"]


# --- SFM: segmentation-guided feature modulation ------------------------------------------------------------------


def foreground_relation(token_mask: torch.Tensor) -> torch.Tensor:
    """Eqs. 2 and 6: patch mask (B, N) bool -> R = m^T m (B, 1 + N, 1 + N) float, the class token foreground."""
    cls = torch.ones(token_mask.shape[0], 1, dtype=torch.bool, device=token_mask.device)
    m = torch.cat([cls, token_mask.bool()], dim=1).float()  # (B, 1 + N), Eq. 2
    return m.unsqueeze(2) * m.unsqueeze(1)  # (B, 1 + N, 1 + N), Eq. 6


def perturb_mask(token_mask: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask perturbation (training only): each background token flips to foreground with probability ``p``;
    foreground tokens never change. (B, N) bool -> (B, N) bool."""
    if p <= 0.0:
        return token_mask
    flip = torch.rand(token_mask.shape, generator=generator, device=token_mask.device) < p  # (B, N)
    return token_mask | flip


def modulation(logits: torch.Tensor, relation: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eqs. 4, 5, 7: S = alpha * R * M_pos - beta * (1 - R) * M_neg for logits A (B, h, T, T).

    ``relation`` R is (B, T, T) (shared by the heads); ``alpha`` and ``beta`` are (h,) or (1,) (per head or shared).
    Row-wise max / min as in the paper: M_pos = rowmax(A) - A, M_neg = A - rowmin(A).
    """
    m_pos = logits.amax(dim=-1, keepdim=True) - logits  # (B, h, T, T), Eq. 4
    m_neg = logits - logits.amin(dim=-1, keepdim=True)  # (B, h, T, T), Eq. 5
    r = relation.unsqueeze(1).to(logits.dtype)  # (B, 1, T, T)
    a = alpha.to(logits.dtype).view(1, -1, 1, 1)  # (1, h or 1, 1, 1)
    b = beta.to(logits.dtype).view(1, -1, 1, 1)
    return a * r * m_pos - b * (1.0 - r) * m_neg  # (B, h, T, T), Eq. 7


def sfm_attention(
    block: Any,  # open_clip ResidualAttentionBlock (its submodules are reached by attribute)
    x: torch.Tensor,
    relation: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eqs. 3 and 8 with the block's own attention weights: normalised tokens x (B, T, width) -> (B, T, width).

    softmax((Q K^T + S) / sqrt(d)) V, then ``out_proj``; d is the per-head dimension (what open_clip divides by).
    Without ``relation`` (or gates) this is the block's plain multi-head attention.
    """
    q, k, v = split_qkv(block, x)  # (B, h, T, d) each
    logits = q @ k.transpose(-2, -1)  # (B, h, T, T), Eq. 3
    if relation is not None and alpha is not None and beta is not None:
        logits = logits + modulation(logits, relation, alpha, beta)
    weights = torch.softmax(logits / math.sqrt(q.shape[-1]), dim=-1)  # (B, h, T, T), Eq. 8
    out = (weights @ v).transpose(1, 2).flatten(2)  # (B, T, width)
    return F.linear(out, block.attn.out_proj.weight, block.attn.out_proj.bias)


def sfm_block(
    block: Any,  # open_clip ResidualAttentionBlock
    x: torch.Tensor,
    relation: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock`` whose self-attention is SFM's: tokens (B, T, width) -> (B, T, width)."""
    x = x + block.ls_1(sfm_attention(block, block.ln_1(x), relation, alpha, beta))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class SFMGates(nn.Module):
    """The learnable alpha, beta of Eq. 7 for every ViT block, in the sharing schemes of Table 5.

    ``sharing``: "layer" (one pair per modulated layer, shared by the heads: the paper's best, Table 5 E), "all" (one
    pair for every modulated layer, Table 5 A) or "head" (a pair per head and layer, Table 5 D). ``layers``: "all",
    "early" (the first half of the blocks, Table 5 B) or "late" (the second half, Table 5 C); the paper does not say
    where it splits, the half is ASSUMED. ``init``: the starting value of alpha and beta (paper silent, ASSUMED 0.1: a
    small modulation that the paper's lr of 3.5e-6 can still adjust; 0 would start as plain CLIP attention but
    barely move at that lr).
    """

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        sharing: SFMSharing = "layer",
        layers: SFMLayers = "all",
        init: float = 0.1,
    ) -> None:
        super().__init__()
        if sharing not in ("layer", "all", "head"):
            raise ValueError(f"sfm_sharing must be 'layer', 'all' or 'head', not {sharing!r}")
        if layers not in ("all", "early", "late"):
            raise ValueError(f"sfm_layers must be 'all', 'early' or 'late', not {layers!r}")
        half = num_layers // 2 if num_layers > 1 else 1
        active = {
            "all": list(range(num_layers)),
            "early": list(range(half)),
            "late": list(range(num_layers - half, num_layers)),
        }[layers]
        self.num_layers, self.sharing = num_layers, sharing
        self.active_layers: tuple[int, ...] = tuple(active)
        sets = 1 if sharing == "all" else len(active)
        width = num_heads if sharing == "head" else 1
        self.alpha = nn.Parameter(torch.full((sets, width), float(init)))  # (sets, h or 1)
        self.beta = nn.Parameter(torch.full((sets, width), float(init)))
        self._slot = {layer: (0 if sharing == "all" else i) for i, layer in enumerate(active)}

    def forward(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(alpha, beta), each (h,) or (1,), for block ``layer``; None when that block is not modulated."""
        slot = self._slot.get(layer)
        if slot is None:
            return None
        return self.alpha[slot], self.beta[slot]


# --- STR: semantic token reallocation ------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """CrossAttn(Q, K, V) of Eqs. 12 and 18 with K = V: multi-head attention, query and context LayerNorm'ed first.

    The pre-norms are ASSUMED (the paper writes CrossAttn only); the residual is added by the caller, as in the
    equations. query (B, Lq, D), context (B, Lk, D) -> (B, Lq, D).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = self.norm_context(context)  # (B, Lk, D)
        return self.attn(self.norm_query(query), context, context, need_weights=False)[0]  # (B, Lq, D)


class FeedForward(nn.Module):
    """FFN of Eq. 13: LayerNorm -> Linear(D, ratio * D) -> GELU -> Linear(ratio * D, D) (pre-norm ASSUMED)."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SemanticTokenReallocation(nn.Module):
    """STR, Eqs. 9-13: per modality K learnable queries plus the shared text feature T as the last query attend over
    that modality's patch tokens; Z = CrossAttn(Q', F, F) + Q', F~ = FFN(Z) + Z.

    The queries are modality-specific (Eq. 10); the cross-attention and the FFN are shared by the modalities
    (ASSUMED: the paper only calls the queries modality-specific). Queries start from trunc_normal(std 0.02).
    """

    def __init__(self, dim: int, num_queries: int = 4, num_modalities: int = 3, num_heads: int = 8) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        self.queries = nn.Parameter(torch.zeros(num_modalities, num_queries, dim))  # (M, K, D), Eq. 10
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.cross = CrossAttention(dim, num_heads)
        self.ffn = FeedForward(dim)

    def forward(self, patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """patches (B, M, N, D) (Eq. 9), text T (B, D) -> semantic tokens F~ (B, M, K + 1, D)."""
        b, m, _, d = patches.shape
        queries = self.queries.unsqueeze(0).expand(b, -1, -1, -1)  # (B, M, K, D)
        t = text.view(b, 1, 1, d).expand(b, m, 1, d)  # (B, M, 1, D)
        q = torch.cat([queries, t.to(queries.dtype)], dim=2).flatten(0, 1)  # (B * M, K + 1, D), Eq. 11
        z = self.cross(q, patches.flatten(0, 1)) + q  # (B * M, K + 1, D), Eq. 12
        out = self.ffn(z) + z  # (B * M, K + 1, D), Eq. 13
        return out.view(b, m, -1, d)


# --- Table 4: the fusions that replace CHI -------------------------------------------------------------------------


class CrossModalMLP(nn.Module):
    """Table 4 B: an MLP fusing the modalities slot by slot: the M tokens of query slot k are concatenated (M * D),
    passed through LayerNorm -> Linear -> GELU -> Linear (hidden M * D) and added back (residual). The paper only says
    "an MLP to fuse features across modalities"; this slot-wise form is ASSUMED. (B, M, K+1, D) -> (B, M (K+1), D)."""

    def __init__(self, dim: int, num_modalities: int = 3) -> None:
        super().__init__()
        width = num_modalities * dim
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, m, k, d = tokens.shape
        slots = tokens.transpose(1, 2).reshape(b, k, m * d)  # (B, K+1, M * D)
        slots = slots + self.net(slots)
        return slots.view(b, k, m, d).transpose(1, 2).reshape(b, m * k, d)  # (B, M (K+1), D)


class SelfAttentionFusion(nn.Module):
    """Table 4 C: multi-head self-attention over all M (K+1) semantic tokens, pre-LayerNorm, residual, ``num_layers``
    times. (B, M, K+1, D) -> (B, M (K+1), D)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int = 1) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.attns = nn.ModuleList(nn.MultiheadAttention(dim, num_heads, batch_first=True) for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.flatten(1, 2)  # (B, M (K+1), D)
        for norm, attn in zip(self.norms, self.attns, strict=True):
            y = norm(x)
            x = x + attn(y, y, y, need_weights=False)[0]
        return x


# --- heads -------------------------------------------------------------------------------------------------------

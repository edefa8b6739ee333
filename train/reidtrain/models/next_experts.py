"""NEXT's experts (section 3): TMSE semantic experts (Eq. 1-7), CSSE structure experts (Eq. 8-9), MMFA (Eq. 11).

Shapes: B samples, M = 3 modalities, N patch tokens per modality, D the projected CLIP width (the text space).

ASSUMED where the paper is silent (the authors' code is not public; their repository holds captions only):
- FC(delta(FC(.))) of Eq. 2 uses a hidden width D and ReLU for delta.
- The Modulation network of Eq. 6 (Fig. 3(c), not described in the text) is a per-token MLP on the pair
  (alpha, beta): Linear(2, h) -> ReLU -> Linear(h, 1), h = ``modulation_hidden``; one per expert.
- Eq. 3's mask is made differentiable with a straight-through estimator: the forward value is the hard mask
  1[gamma > sigma], the gradient that of sigmoid((gamma - sigma) / temperature).
- Structure experts have the semantic experts' form (Eq. 1); Eq. 8's router pools the tokens by their mean
  (mean and FC commute, so this equals the mean of per-token logits) before the softmax.
- MMFA follows Eq. 11 literally (no residual connections): FFN(LN(CA(q, K=V=expert tokens))), the three class tokens
  as three query tokens, one attention + LN + FFN per expert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import nn

__all__ = [
    "SAMPLING_STRATEGIES",
    "ExpertAggregation",
    "Modulation",
    "ResidualMLPExpert",
    "SamplingRoute",
    "SemanticExpert",
    "StructureExperts",
    "check_choice",
    "cosine_relevance",
    "heads_for",
    "mean_per_modality",
    "straight_through_mask",
    "top_k_mask",
]

Sampling = Literal["dynamic_sigma", "fixed_sigma", "top_k", "all_token"]
SAMPLING_STRATEGIES: tuple[str, ...] = ("dynamic_sigma", "fixed_sigma", "top_k", "all_token")


class ResidualMLPExpert(nn.Module):
    """One expert, Eq. 1: ``E(F) = Dropout(MLP(LN(F))) + F`` on tokens (..., D)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(self.norm(x))) + x


def _score_net(dim: int, hidden: int) -> nn.Sequential:
    """FC(delta(FC(.))) -> one scalar per input vector (Eq. 2)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class SamplingRoute(nn.Module):
    """A sampling route R_m, Eq. 2: token scores ``alpha_m`` (B, N) and, if dynamic, a threshold ``sigma_m`` (B,)."""

    def __init__(self, dim: int, dynamic_threshold: bool = True) -> None:
        super().__init__()
        self.token_score = _score_net(dim, dim)
        self.threshold = _score_net(dim, dim) if dynamic_threshold else None

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """cls (B, D), tokens (B, N, D) -> alpha (B, N), sigma (B,) or None."""
        alpha = self.token_score(tokens).squeeze(-1)  # (B, N)
        sigma = None if self.threshold is None else self.threshold(cls).squeeze(-1)  # (B,)
        return alpha, sigma


class Modulation(nn.Module):
    """Eq. 6: ``gamma = Modulation(alpha, beta) + alpha``, Modulation a per-token MLP on (alpha, beta)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """alpha, beta (B, N) -> gamma (B, N)."""
        pair = torch.stack([alpha, beta], dim=-1)  # (B, N, 2)
        return self.net(pair).squeeze(-1) + alpha


def cosine_relevance(text: torch.Tensor, tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 5: beta (B, N), the cosine between the text feature (B, D) and each patch token (B, N, D)."""
    return nn.functional.cosine_similarity(text.unsqueeze(1).to(tokens.dtype), tokens, dim=-1, eps=eps)


def straight_through_mask(scores: torch.Tensor, threshold: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. 3 with the scores ``gamma`` (B, N) and a threshold (B,) or scalar: forward exactly ``1[gamma > sigma]``,
    backward the gradient of ``sigmoid((gamma - sigma) / temperature)`` (straight-through)."""
    if threshold.dim() == 1:
        threshold = threshold.unsqueeze(-1)  # (B, 1)
    soft = torch.sigmoid((scores - threshold) / temperature)  # (B, N)
    hard = (scores > threshold).to(scores.dtype)  # (B, N)
    return hard + (soft - soft.detach())  # the bracket is exactly 0 in the forward pass


def top_k_mask(scores: torch.Tensor, ratio: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Table 8 row B: keep the ceil(ratio * N) highest ``gamma`` per row (straight-through like Eq. 3).

    The threshold is the midpoint between the k-th and (k+1)-th score, detached; with ties at the boundary the
    hard mask may keep more than k tokens.
    """
    n = scores.shape[-1]
    k = min(n, max(1, math.ceil(ratio * n)))
    if k == n:
        return torch.ones_like(scores)
    top = scores.detach().topk(k + 1, dim=-1).values  # (B, k + 1), descending
    threshold = 0.5 * (top[:, k - 1] + top[:, k])  # (B,)
    return straight_through_mask(scores, threshold, temperature)


class SemanticExpert(nn.Module):
    """One TMSE expert ``E_t^(i)`` with its sampling routes (Eq. 1-7) over the M modalities.

    ``shared_route=False`` (the paper's best, Table 4 row D) gives every modality its own route R_m; ``True`` one
    route for all. ``sampling`` picks Table 8's strategy: "dynamic_sigma" (ours), "fixed_sigma" (sigma =
    ``fixed_sigma``), "top_k" (the top ``top_k_ratio`` tokens), "all_token" (no sampling: the mask is all ones).
    ``text_modulation=False`` drops Eq. 5-6 (gamma = alpha).
    """

    def __init__(
        self,
        dim: int,
        num_modalities: int = 3,
        shared_route: bool = False,
        sampling: Sampling = "dynamic_sigma",
        text_modulation: bool = True,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        modulation_hidden: int = 16,
        fixed_sigma: float = 0.0,
        top_k_ratio: float = 0.5,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if sampling not in SAMPLING_STRATEGIES:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of {SAMPLING_STRATEGIES}")
        self.num_modalities = num_modalities
        self.sampling = sampling
        self.fixed_sigma, self.top_k_ratio, self.temperature = fixed_sigma, top_k_ratio, temperature
        self.expert = ResidualMLPExpert(dim, mlp_ratio, dropout)
        routed = sampling != "all_token"
        self.text_modulation = text_modulation and routed
        num_routes = 0 if not routed else 1 if shared_route else num_modalities
        self.routes = nn.ModuleList(
            SamplingRoute(dim, dynamic_threshold=sampling == "dynamic_sigma") for _ in range(num_routes)
        )
        self.modulation = Modulation(modulation_hidden) if self.text_modulation else None

    def route(self, m: int) -> SamplingRoute:
        return cast(SamplingRoute, self.routes[m if len(self.routes) > 1 else 0])

    def sampling_mask(self, cls: torch.Tensor, tokens: torch.Tensor, text: torch.Tensor | None, m: int) -> torch.Tensor:
        """Modality ``m``: cls (B, D), tokens (B, N, D), text (B, D) -> the sampling mask hat M_m (B, N) (Eq. 2-6)."""
        if self.sampling == "all_token":
            return torch.ones(tokens.shape[:2], device=tokens.device, dtype=tokens.dtype)
        alpha, sigma = self.route(m)(cls, tokens)  # (B, N), (B,) or None
        gamma = alpha
        if self.modulation is not None:
            if text is None:
                raise ValueError("text modulation needs the text features")
            gamma = self.modulation(alpha, cosine_relevance(text, tokens))  # (B, N), Eq. 5-6
        if self.sampling == "top_k":
            return top_k_mask(gamma, self.top_k_ratio, self.temperature)
        if sigma is None:  # "fixed_sigma"
            sigma = torch.full(gamma.shape[:1], self.fixed_sigma, device=gamma.device, dtype=gamma.dtype)
        return straight_through_mask(gamma, sigma, self.temperature)

    def forward(
        self, cls: torch.Tensor, tokens: torch.Tensor, text: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cls (B, M, D), tokens (B, M, N, D), text (B, M, D) or None -> hat F_I (B, M * N, D), masks (B, M, N).

        Eq. 7: the expert's tokens ``E_t(F_m)`` times the mask ``hat M_m``, the modalities concatenated.
        """
        b, m, n, d = tokens.shape
        expert_tokens = self.expert(tokens)  # (B, M, N, D)
        masks = torch.stack(
            [self.sampling_mask(cls[:, i], tokens[:, i], None if text is None else text[:, i], i) for i in range(m)],
            dim=1,
        )  # (B, M, N)
        sampled = expert_tokens * masks.unsqueeze(-1)  # (B, M, N, D)
        return sampled.reshape(b, m * n, d), masks


class StructureExperts(nn.Module):
    """CSSE, Eq. 8-9: ``tilde F_I = sum_i omega_i E_c^(i)(F_I^tok)`` with soft routing weights omega.

    ``shared_route=True`` (the paper's best, Table 4 rows C-D): one router over the concatenated tokens of all
    modalities, omega (B, N_C). ``False``: one router per modality from its own tokens, omega (B, M, N_C), each
    modality's tokens mixed with its own weights.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int = 3,
        num_modalities: int = 3,
        shared_route: bool = True,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError("CSSE needs at least one structure expert")
        self.experts = nn.ModuleList(ResidualMLPExpert(dim, mlp_ratio, dropout) for _ in range(num_experts))
        self.shared_route = shared_route
        self.routers = nn.ModuleList(nn.Linear(dim, num_experts) for _ in range(1 if shared_route else num_modalities))

    def routing_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, M, N, D) -> omega: (B, N_C) shared, (B, M, N_C) per modality (Eq. 8)."""
        if self.shared_route:
            return self.routers[0](tokens.mean(dim=(1, 2))).softmax(-1)  # (B, N_C)
        pooled = tokens.mean(dim=2)  # (B, M, D)
        return torch.stack([router(pooled[:, i]) for i, router in enumerate(self.routers)], dim=1).softmax(-1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, M, N, D) -> tilde F_I (B, M * N, D), omega (Eq. 9)."""
        b, m, n, d = tokens.shape
        omega = self.routing_weights(tokens)
        outputs = torch.stack([expert(tokens) for expert in self.experts], dim=-1)  # (B, M, N, D, N_C)
        weights = omega.view(b, 1, 1, 1, -1) if self.shared_route else omega.view(b, m, 1, 1, -1)
        return (outputs * weights).sum(-1).reshape(b, m * n, d), omega


class ExpertAggregation(nn.Module):
    """MMFA for one expert, Eq. 11: ``FFN(LN(CA(f_I^cls, F_I^exp(i))))`` -> (B, M * D).

    The query is the M modality class tokens (B, M, D); keys and values the expert's tokens (B, T, D).
    """

    def __init__(self, dim: int, num_heads: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(query, tokens, tokens, need_weights=False)  # (B, M, D)
        return self.ffn(self.norm(attended)).flatten(1)  # (B, M * D)


def mean_per_modality(tokens: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """Without MMFA: an expert's tokens (B, M * N, D) -> their mean per modality, concatenated (B, M * D)."""
    b, t, d = tokens.shape
    return tokens.view(b, num_modalities, t // num_modalities, d).mean(2).flatten(1)


def heads_for(dim: int, head_dim: int = 64) -> int:
    """Attention heads for width ``dim``: dim / 64 (8 for CLIP ViT-B/16's 512), at least 1, dividing ``dim``."""
    heads = max(1, dim // head_dim)
    while dim % heads:
        heads -= 1
    return heads


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, not {value!r}")

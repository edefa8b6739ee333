"""DMPT building blocks (Lin et al.): modality prompts from text words (Sec. 3.3), deep semantic prompts, the
PromptIBind interaction layer (Eqs. 11-15) and the two model-specific losses (Eqs. 5-6, center MAE of Eq. 17).

The authors' code is not public; where the paper is silent the choices are marked ASSUMED here and in
:mod:`reidtrain.models.dmpt`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODALITY_PHRASES",
    "BindCrossAttention",
    "ModalityPromptProjector",
    "ModalitySelfAttention",
    "PromptInverseBindLayer",
    "center_mae_loss",
    "modality_text_contrastive_loss",
    "modality_text_prompts",
]

# Sec. 3.3: the modal attribute words ("a visible/near-infrared/thermal-infrared photo"), in modality order.
MODALITY_PHRASES: tuple[str, str, str] = ("a visible photo", "a near-infrared photo", "a thermal-infrared photo")


def modality_text_prompts(object_word: str = "person") -> list[str]:
    """Sec. 3.2: "a visible/near-infrared/thermal-infrared photo of a person/vehicle." (one per modality)."""
    if not object_word.strip():
        raise ValueError("object_word must be a word such as 'person' or 'vehicle'")
    return [f"{phrase} of a {object_word.strip()}." for phrase in MODALITY_PHRASES]


class ModalityPromptProjector(nn.Module):
    """The mapping network P (Sec. 3.3): one linear layer per ViT layer (M = 1 token: "P as a linear layer").

    Input: the modality words' embedding w_m (3, d_t); output: M_p^l = P^l(w_m) reshaped to (M, d_v) for every
    layer l, i.e. (L, 3, M, d_v). ASSUMED: a separate linear map per layer (MaPLe's layer-wise couplers, which the
    paper follows), producing M tokens at once (Linear d_t -> M * d_v) for the prompt-length ablation (Table 5).
    """

    def __init__(self, text_width: int, width: int, layers: int, length: int = 1) -> None:
        super().__init__()
        if length < 1 or layers < 1:
            raise ValueError("need at least one layer and one modality prompt token")
        self.width, self.length = width, length
        self.layers = nn.ModuleList(nn.Linear(text_width, length * width) for _ in range(layers))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """words (3, d_t) -> modality prompts (L, 3, M, d_v)."""
        return torch.stack([p(words).view(words.shape[0], self.length, self.width) for p in self.layers])


class BindCrossAttention(nn.Module):
    """External interaction, Eqs. 11-14: the bind prompt and the B-to-M cross-attention.

    S_bind = mean_m W°_m(S_m) (Eq. 11); S~_bind = S_bind W_b, S~_m = S_m W_m (Eq. 13);
    S_b2m = S_m + softmax(S~_m S~_bind^T / sqrt(d_v)) S~_bind (Eq. 14): each modality's semantic prompts query the
    bind prompt, which is both key and value. ASSUMED: the mapping matrices are bias-free linear maps; W°_m and W_m
    are per modality, W_b is shared (the paper indexes the first two by m only).
    """

    def __init__(self, width: int, num_modalities: int = 3) -> None:
        super().__init__()
        self.width = width
        self.to_bind = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(num_modalities))  # W°_m
        self.query = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(num_modalities))  # W_m
        self.key = nn.Linear(width, width, bias=False)  # W_b

    def bind(self, semantic: torch.Tensor) -> torch.Tensor:
        """Eq. 11: semantic prompts (B, 3, S, d) -> S_bind (B, S, d)."""
        return torch.stack([w(semantic[:, m]) for m, w in enumerate(self.to_bind)], dim=1).mean(dim=1)

    def forward(self, semantic: torch.Tensor) -> torch.Tensor:
        """semantic prompts S^_m (B, 3, S, d) -> coupled S_b2m (B, 3, S, d)."""
        bind = self.key(self.bind(semantic))  # (B, S, d): S~_bind
        coupled = []
        for m, w in enumerate(self.query):
            q = w(semantic[:, m])  # (B, S, d): S~_m
            attention = (q @ bind.transpose(1, 2) / math.sqrt(self.width)).softmax(dim=-1)  # (B, S, S)
            coupled.append(semantic[:, m] + attention @ bind)  # (B, S, d), Eq. 14
        return torch.stack(coupled, dim=1)


class ModalitySelfAttention(nn.Module):
    """Internal interaction SA_m (Eq. 15): pre-norm multi-head self-attention with a residual, x + MHSA(LN(x)).

    ASSUMED: attention only (the paper names a multi-head self-attention layer, no MLP), randomly initialised.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, d) -> (B, T, d)."""
        x = self.norm(tokens)
        return tokens + self.attention(x, x, x, need_weights=False)[0]


class PromptInverseBindLayer(nn.Module):
    """One interaction layer F_m (Eq. 16): external B-to-M coupling of the semantic prompts, then SA_m per modality
    over [c, M_p, S_b2m, E] (Eq. 15)."""

    def __init__(self, width: int, heads: int, num_modalities: int = 3) -> None:
        super().__init__()
        self.external = BindCrossAttention(width, num_modalities)
        self.internal = nn.ModuleList(ModalitySelfAttention(width, heads) for _ in range(num_modalities))

    def forward(self, tokens: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """tokens (B, 3, T, d) with the semantic prompts at [start, start + length) -> (B, 3, T, d)."""
        coupled = self.external(tokens[:, :, start : start + length])  # (B, 3, S, d)
        tokens = torch.cat([tokens[:, :, :start], coupled, tokens[:, :, start + length :]], dim=2)
        return torch.stack([sa(tokens[:, m]) for m, sa in enumerate(self.internal)], dim=1)


def modality_text_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Eqs. 5-6: L_con = sum_m mean_b -log softmax_i(s <z_bm, t_i>)[m], cosine similarities scaled by s = 1/tau.

    image_features (B, M, D) (z_m per modality), text_features (M, D) (t_m, one fixed prompt per modality).
    ASSUMED reading of Eq. 5: it is written as a ratio to maximise, with a denominator over identities; with one
    fixed text prompt per modality that denominator is a constant, so the contrast runs over the M modality prompts
    instead (each z_m must be nearer its own modality's text than the others'), as the negative log.
    """
    b, m, _ = image_features.shape
    if text_features.shape[0] != m:
        raise ValueError(f"expected {m} text features, got {text_features.shape[0]}")
    z = F.normalize(image_features.float(), dim=-1)  # (B, M, D)
    t = F.normalize(text_features.float(), dim=-1)  # (M, D)
    logits = logit_scale * (z @ t.t())  # (B, M, M): [b, modality, text]
    targets = torch.arange(m, device=z.device).expand(b, m)  # (B, M)
    per_modality = F.cross_entropy(logits.reshape(b * m, m), targets.reshape(-1), reduction="none").view(b, m)
    return per_modality.mean(dim=0).sum()  # Eq. 6: sum over modalities


def center_mae_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Center MAE loss of Eq. 17: the L1 distance between each sample and its identity's batch center, per modality.

    features (B, M, D), labels (B,) -> sum_m mean_b mean_d |f_bm - c_{y_b, m}|, c_{y, m} the mean of modality m's
    features of identity y in the batch (gradients flow through the centers). ASSUMED: batch centers (the paper
    says it "calculates sample class centers"), the mean absolute error over dimensions, summed over modalities
    as Eq. 6.
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"features ({features.shape[0]}) and labels ({labels.shape[0]}) differ in batch size")
    _, inverse = labels.unique(return_inverse=True)  # (B,) identity index 0..K-1
    onehot = F.one_hot(inverse).to(features.dtype)  # (B, K)
    counts = onehot.sum(dim=0)  # (K,)
    centers = torch.einsum("bk,bmd->kmd", onehot, features) / counts.view(-1, 1, 1)  # (K, M, D)
    return (features - centers[inverse]).abs().mean(dim=(0, 2)).sum()

"""STMI: Segmentation-guided Token Modulation with cross-modal hypergraph Interaction (the STMI paper, Eqs. 1-20).

One CLIP ViT shared by RGB, NIR and TIR, whose every self-attention is SFM's mask-modulated attention (Eqs. 2-8);
STR (Eqs. 9-13) turns each modality's patch tokens into K + 1 semantic tokens with K learnable queries plus the CLIP
text feature T of the fused triplet caption; CHI (Eqs. 14-16) fuses the 3 (K + 1) tokens on a similarity hypergraph;
the three class tokens G then attend over the fused tokens, U = CrossAttn(G, H', H') + G (Eqs. 17-18).

Supervision (Eqs. 19-20): L = Lg(G) + Lg(U) + Lg(T), each label-smoothed CE + triplet; ``forward`` returns the three
pre-BN features (triplet) and the three heads' logits (CE), each head with its own BNNeck + classifier. Retrieval:
the features of G and U before their BNNecks, concatenated (B, 6D), by default (``retrieval``, ``test_feature``).

Ablations (``model_options``): ``use_str=False`` (Table 3 B: SFM only, no STR / CHI / U / text; with ``sfm=False``
too it is the baseline, Table 3 A), ``fusion="concat"`` (Table 3 C = Table 4 A: CHI removed, the concatenated
semantic tokens H of Eq. 14 go straight into Eq. 18), ``fusion`` "mlp" / "self_attention" (Table 4 B, C),
``sfm_sharing`` "all" / "head" and ``sfm_layers`` "early" / "late" (Table 5 A-D), ``sfm=False`` (STR + CHI without
SFM; no table row, the mask-guidance check).

ASSUMED where the paper is silent (see also the building blocks): alpha = beta = 0.1 at init; mask perturbation
p = 0.1 (Fig. 5 shows "a small amount" is best, without the value in the text), drawn once per triplet and shared
by its three modalities and all layers; a row without any foreground patch (no mask) counts as all foreground; tau =
0.5, one CHI layer; the text encoder is trained ("all learnable parameters", Implementation Details); SIE camera
embedding and BNNeck as the baseline (DeMo/IDEA code lineage).

The file reads top to bottom: the building blocks (SFM, Eqs. 2-8; STR, Eqs. 9-13; the cross-attention of Eq. 18;
the alternative fusions of Table 4), then the model. The hypergraph fusion (CHI, Eqs. 14-16) lives in
:mod:`reidtrain.models.layers.hypergraph`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from reidtrain.data.text import eot_positions, tokenize_captions
from reidtrain.models.layers.clip import ClipTextEncoder, ClipVisualEncoder, build_clip, split_qkv
from reidtrain.models.layers.heads import (
    MODALITIES,
    BNNeck,
    TestFeature,
    check_test_feature,
    retrieval_feature,
    zero_missing_modalities,
)
from reidtrain.models.layers.hypergraph import HypergraphFusion
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.registry import register_model

__all__ = [
    "STMI",
    "CrossAttention",
    "CrossModalMLP",
    "FeedForward",
    "SFMGates",
    "SelfAttentionFusion",
    "SemanticTokenReallocation",
    "build_fusion",
    "foreground_relation",
    "modulated_scores",
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


def modulated_scores(
    scores: torch.Tensor, foreground: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """A + S of Eqs. 3-7 in one pass over the score matrix A (B, h, T, T), in A's dtype (bf16 under autocast).

    R is binary (Eq. 6), so Eq. 7 splits by R: where R = 1, A + S = A + alpha (rowmax(A) - A); where R = 0,
    A + S = A + beta (rowmin(A) - A). Row max and min come from one ``aminmax`` reduction; each branch is a ``lerp``
    towards a (B, h, T, 1) column, so autograd keeps A and the small columns only, where :func:`modulation` (the
    paper's form, kept as the reference) builds and keeps M_pos, M_neg and their products (tested equal).
    ``foreground`` is R as bool, (B, T, T) or (B, 1, T, T); ``alpha``, ``beta`` are (h,) or (1,). S is
    homogeneous in A, so A may already carry the softmax scale.
    """
    low, high = torch.aminmax(scores, dim=-1, keepdim=True)  # (B, h, T, 1) each, Eqs. 4-5
    r = foreground if foreground.dim() == 4 else foreground.unsqueeze(1)  # (B, 1, T, T)
    a = alpha.to(scores.dtype).view(1, -1, 1, 1)  # (1, h or 1, 1, 1)
    b = beta.to(scores.dtype).view(1, -1, 1, 1)
    return torch.where(r, torch.lerp(scores, high, a), torch.lerp(scores, low, b))  # (B, h, T, T), Eq. 7 + A


def sfm_attention(
    block: Any,  # open_clip ResidualAttentionBlock (its submodules are reached by attribute)
    x: torch.Tensor,
    relation: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eqs. 3 and 8 with the block's own attention weights: normalised tokens x (B, T, width) -> (B, T, width).

    softmax((Q K^T + S) / sqrt(d)) V, then ``out_proj``; d is the per-head dimension (what open_clip divides by).
    Q is scaled before the product (S is homogeneous in the scores, :func:`modulated_scores`) and the softmax stays
    in the scores' dtype (bf16 under autocast, as flash attention keeps its probabilities), so the (B, h, T, T)
    matrices are never widened to fp32. Without ``relation`` (or gates) this is the block's plain multi-head
    attention through ``scaled_dot_product_attention``. ``relation`` R (B, T, T) may be bool or 0/1 float.
    """
    q, k, v = split_qkv(block, x)  # (B, h, T, d) each
    if relation is None or alpha is None or beta is None:
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d)
    else:
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, h, T, T), Eq. 3 / sqrt(d)
        foreground = relation if relation.dtype == torch.bool else relation > 0.5
        scores = modulated_scores(scores, foreground, alpha, beta)  # Eqs. 4-7
        out = torch.softmax(scores, dim=-1, dtype=scores.dtype) @ v  # (B, h, T, d), Eq. 8
    out = out.transpose(1, 2).flatten(2)  # (B, T, width)
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


Fusion = Literal["hypergraph", "concat", "mlp", "self_attention"]
HEAD_NAMES = ("global", "fused", "text")  # G, U, T (Eq. 20)


def build_fusion(
    fusion: Fusion, dim: int, modalities: int, num_queries: int, heads: int, tau: float, layers: int
) -> nn.Module:
    """The H -> H' fusion: semantic tokens (B, M, K+1, D) -> (B, M (K+1), D); CHI or a Table 4 replacement."""
    if fusion == "hypergraph":
        return HypergraphFusion(dim, modalities * (num_queries + 1), tau, layers)
    if fusion == "concat":
        return nn.Flatten(1, 2)  # H' = H, the concatenated tokens of Eq. 14
    if fusion == "mlp":
        return CrossModalMLP(dim, modalities)
    if fusion == "self_attention":
        return SelfAttentionFusion(dim, heads, layers)
    raise ValueError(f"fusion must be hypergraph, concat, mlp or self_attention, not {fusion!r}")


@register_model("stmi")
class STMI(nn.Module):
    """STMI (module docstring). Builder keywords are the trainer's plus the switches below (``model_options``).

    Args:
        num_classes, num_cameras, backbone, image_size, weights, require_pretrained: as :class:`ClipBaseline`.
        sie_factor: scale of the SIE camera embedding on the class tokens.
        sfm: SFM in the ViT blocks (Eqs. 2-8); False gives plain CLIP attention (Table 3).
        sfm_sharing: "layer" (alpha, beta per layer shared by the heads, paper's best), "all", "head" (Table 5).
        sfm_layers: "all", "early" (first half of the blocks), "late" (second half) (Table 5).
        sfm_init: initial alpha and beta.
        mask_perturbation: p, probability that a background token is flipped to foreground while training.
        use_str: STR + fusion + U + the text head; False keeps only G (Table 3 A/B).
        num_queries: K learnable queries per modality (4, Fig. 5).
        fusion: "hypergraph" (CHI) or the Table 4 replacements "concat" (H' = H), "mlp", "self_attention".
        tau: hyperedge similarity threshold; chi_layers: hypergraph (or self-attention) layers.
        num_heads: heads of STR's / Eq. 18's cross-attention; None: D // 64 (8 for ViT-B-16's 512), at least 1.
        freeze_text: freeze the CLIP text tower (the paper trains it: False).
        retrieval: "+"-joined heads for the test feature, from "global", "fused", "text" (default "global+fused").
        test_feature: "pre_bn" (before each head's BNNeck, as the baseline and the reference configs) or "bn".
    """

    inputs: tuple[str, ...] = ("token_mask", "captions")
    caption_keys: tuple[str, ...] = ("fused",)  # STR reads the fused triplet caption only (reidtrain.batch)

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        sie_factor: float = 1.0,
        sfm: bool = True,
        sfm_sharing: SFMSharing = "layer",
        sfm_layers: SFMLayers = "all",
        sfm_init: float = 0.1,
        mask_perturbation: float = 0.1,
        use_str: bool = True,
        num_queries: int = 4,
        fusion: Fusion = "hypergraph",
        tau: float = 0.5,
        chi_layers: int = 1,
        num_heads: int | None = None,
        freeze_text: bool = False,
        retrieval: str = "global+fused",
        test_feature: TestFeature = "pre_bn",
    ) -> None:
        super().__init__()
        check_test_feature(test_feature)
        if not 0.0 <= mask_perturbation <= 1.0:
            raise ValueError(f"mask_perturbation is a probability, got {mask_perturbation}")
        heads_used = HEAD_NAMES if use_str else HEAD_NAMES[:1]
        self.retrieval_heads = tuple(part.strip() for part in retrieval.split("+"))
        bad = [name for name in self.retrieval_heads if name not in heads_used]
        if bad or not self.retrieval_heads:
            raise ValueError(f"retrieval {retrieval!r}: choose '+'-joined heads from {heads_used}")

        clip = build_clip(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(clip.visual, project=True)  # shared by the three modalities
        dim = self.encoder.out_dim  # D (512 for ViT-B-16)
        m = len(MODALITIES)
        self.feat_dim, self.num_cameras, self.sie_factor = dim, num_cameras, sie_factor
        self.test_feature, self.use_str, self.mask_perturbation = test_feature, use_str, mask_perturbation
        self.sie_embed = camera_embedding(num_cameras, self.encoder.width)  # (cameras, width) or None

        self.sfm = (
            SFMGates(len(self.encoder.blocks), self.encoder.num_heads, sfm_sharing, sfm_layers, sfm_init)
            if sfm
            else None
        )
        heads = num_heads if num_heads is not None else max(1, dim // 64)
        self.text_encoder: ClipTextEncoder | None = None
        self.reallocation: SemanticTokenReallocation | None = None
        self.fusion: nn.Module | None = None
        self.global_attention: CrossAttention | None = None
        if use_str:
            self.text_encoder = ClipTextEncoder(clip)
            if self.text_encoder.out_dim != dim:
                raise ValueError(f"text feature size {self.text_encoder.out_dim} differs from the visual D {dim}")
            if freeze_text:
                self.text_encoder.freeze()
            self.reallocation = SemanticTokenReallocation(dim, num_queries, m, heads)
            self.fusion = build_fusion(fusion, dim, m, num_queries, heads, tau, chi_layers)
            self.global_attention = CrossAttention(dim, heads)  # Eq. 18
        self.inputs = tuple(
            name for name, needed in (("token_mask", sfm), ("captions", use_str)) if needed
        )  # what the data side must supply for this configuration
        sizes = {"global": m * dim, "fused": m * dim, "text": dim}
        self.heads = nn.ModuleDict({name: BNNeck(sizes[name], num_classes) for name in heads_used})

    # --- pieces --------------------------------------------------------------------------------------------------

    def encode_text(self, captions: Sequence[str], device: torch.device) -> torch.Tensor:
        """Fused captions (B strings) -> T (B, D), CLIP's EOT-pooled text feature.

        Tokens past the longest caption's end-of-text are cut: under CLIP's causal mask they cannot change the
        pooled feature, and the shorter context is much cheaper.
        """
        tokens = tokenize_captions(list(captions))  # (B, 77)
        tokens = tokens[:, : int(eot_positions(tokens).max()) + 1].to(device)  # (B, L)
        assert self.text_encoder is not None, "encode_text needs STR (use_str)"
        return self.text_encoder(tokens)  # (B, D)

    def relation(self, token_mask: torch.Tensor, copies: int) -> torch.Tensor:
        """Token mask (B, N) -> R (B * copies, 1 + N, 1 + N), repeated for the modalities (Eqs. 2, 6).

        A row without any foreground patch (no mask) counts as all foreground; while training, background tokens
        flip to foreground with probability ``mask_perturbation``.
        """
        if token_mask.dim() != 2 or token_mask.shape[1] != self.encoder.num_patches:
            raise ValueError(
                f"token_mask must be (B, {self.encoder.num_patches}) for grid {self.encoder.grid_size}, "
                f"got {tuple(token_mask.shape)}"
            )
        mask = token_mask.bool()
        mask = torch.where(mask.any(dim=1, keepdim=True), mask, torch.ones_like(mask))  # (B, N)
        if self.training:
            mask = perturb_mask(mask, self.mask_perturbation)
        return foreground_relation(mask).repeat_interleave(copies, dim=0)  # (B * copies, 1 + N, 1 + N)

    def backbone_tokens(
        self, images: torch.Tensor, cls_bias: torch.Tensor | None, relation: torch.Tensor | None
    ) -> torch.Tensor:
        """Images (B', 3, H, W) -> tokens (B', 1 + N, D) through blocks with SFM attention where gated."""
        x = self.encoder.embed(images, cls_bias)  # (B', 1 + N, width)
        foreground = None if relation is None else (relation > 0.5).unsqueeze(1)  # (B', 1, T, T) bool, once
        for index, block in enumerate(self.encoder.blocks):
            gates = self.sfm(index) if self.sfm is not None and relation is not None else None
            x = sfm_block(block, x, foreground, *gates) if gates is not None else block(x)
        return self.encoder.head(x)  # (B', 1 + N, D)

    # --- forward -------------------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
        token_mask: torch.Tensor | None = None,
        captions: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """images (B, 3 [rgb, nir, tir], 3, H, W); token_mask (B, N) bool (SFM); captions {"fused": B strings} (STR).

        Returns ``features`` [G (B, 3D), U (B, 3D), T (B, D)] pre-BN (one per head; only G without STR),
        ``bn_features`` likewise, and in train mode ``logits`` (one (B, num_classes) per head), in eval mode
        ``retrieval`` (the ``retrieval`` heads concatenated). ``missing`` zeroes those modalities' images.
        """
        b, m = images.shape[:2]
        if m != len(MODALITIES):
            raise ValueError(f"expected images (B, {len(MODALITIES)}, 3, H, W), got {tuple(images.shape)}")
        images = zero_missing_modalities(images, missing)
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m)  # (B * 3, width) or None
        relation = None
        if self.sfm is not None:
            if token_mask is None:
                raise ValueError("STMI with SFM needs token_mask (B, N) bool")
            relation = self.relation(token_mask.to(images.device), m)  # (B * 3, 1 + N, 1 + N)
        tokens = self.backbone_tokens(images.flatten(0, 1), cls_bias, relation)  # (B * 3, 1 + N, D)
        tokens = tokens.view(b, m, tokens.shape[1], self.feat_dim)  # (B, 3, 1 + N, D)
        g = tokens[:, :, 0]  # (B, 3, D), Eq. 17
        features = {"global": g.flatten(1)}  # (B, 3D)
        if self.use_str:
            if captions is None or "fused" not in captions:
                raise ValueError("STMI with STR needs captions['fused'] (B strings)")
            text = self.encode_text(captions["fused"], images.device)  # (B, D)
            assert self.reallocation is not None and self.fusion is not None and self.global_attention is not None
            semantic = self.reallocation(tokens[:, :, 1:], text)  # (B, 3, K + 1, D), Eqs. 9-13
            fused_tokens = self.fusion(semantic)  # (B, 3 (K + 1), D), Eqs. 14-16 (or Table 4)
            u = self.global_attention(g, fused_tokens) + g  # (B, 3, D), Eq. 18
            features["fused"] = u.flatten(1)  # (B, 3D)
            features["text"] = text.to(u.dtype)  # (B, D)
        bn_features, logits = {}, {}
        for name, head in self.heads.items():
            bn_features[name], logits[name] = head(features[name])
        names = list(self.heads.keys())
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "features": [features[name] for name in names],
            "bn_features": [bn_features[name] for name in names],
        }
        if self.training:
            out["logits"] = [logits[name] for name in names]
        else:
            chosen = retrieval_feature(features, bn_features, self.test_feature)
            out["retrieval"] = torch.cat([chosen[name] for name in self.retrieval_heads], dim=1)
        return out

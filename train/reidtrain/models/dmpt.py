"""DMPT (Lin et al.): decoupled modality-aware prompt tuning of a frozen CLIP for multi-modal ReID.

The CLIP visual and text encoders are frozen (one shared visual tower: the paper's three streams start from the
same pretrained weights and stay frozen, so they are the same function). Trained: the prompts, the interaction
layer and the BNNeck classifier.

- Modality prompts (Sec. 3.3): the word embeddings of "a visible/near-infrared/thermal-infrared photo" (CLIP's frozen
  token embedding, mean over the words) are projected by P into M tokens at every layer (M = 1 in the paper).
- Semantic prompts: S learnable tokens per modality and per layer (S = 32). Deep prompting as Eqs. 7-10: at every
  layer the prompt positions are replaced by that layer's prompts, [c, M_p^l, S_p^l, E] -> block; the last block's
  outputs at the prompt positions are kept for the interaction.
- PromptIBind (Eqs. 11-16): k interaction layers (k = 1, Table 4), each the bind cross-attention on the semantic
  prompts, then a self-attention per modality over [c, M_p, S_b2m, E].
- Output: z_m = proj(ln_post(c_m)) per modality (CLIP's frozen ImageProj, the V-L space); the ReID feature is
  [z_R, z_N, z_T] (B, 3D) with a BNNeck classifier (CE after it, triplet before it, Eq. 17).
- Losses (``losses``): the image-text contrastive loss against the frozen text features of "a visible/near-infrared/
  thermal-infrared photo of a person/vehicle." (Eqs. 5-6, temperature = CLIP's frozen logit scale) and the center
  MAE loss on z_m; both weighted 1 as Eq. 17.

ASSUMED (the paper is silent, the authors' code is not public): no camera embedding; semantic prompts initialised
uniformly as VPT (+-sqrt(6 / (3 * patch^2 + width))); the interaction layer randomly initialised; retrieval with the
pre-BN feature (the TransReID lineage's ``NECK_FEAT: before``); the building blocks below mark their own.

The center loss needs the batch's identity labels: the model declares the "labels" input (``reidtrain.batch``), so
``reidtrain fit`` passes them in training batches; a direct call without labels skips the loss with one warning.

The file reads top to bottom: the building blocks (modality prompts from text words, Sec. 3.3; the PromptIBind
interaction layer, Eqs. 11-15; the two model-specific losses, Eqs. 5-6 and the center MAE of Eq. 17), then the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reidtrain.data.text import eot_positions, tokenize_captions
from reidtrain.models.layers.clip import ClipTextEncoder, ClipVisualEncoder, build_clip
from reidtrain.models.layers.heads import (
    MODALITIES,
    BNNeck,
    TestFeature,
    check_test_feature,
    retrieval_feature,
    zero_missing_modalities,
)
from reidtrain.models.registry import register_model

__all__ = [
    "DMPT",
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


log = logging.getLogger(__name__)


@register_model("dmpt")
class DMPT(nn.Module):
    """Frozen CLIP + modality, semantic and bind prompts -> [z_R, z_N, z_T] -> BNNeck classifier.

    Args:
        num_classes: training identities.
        backbone, image_size, weights, require_pretrained: as :class:`reidtrain.models.baseline.ClipBaseline`.
        num_cameras: accepted for the trainer's interface and unused (DMPT has no camera embedding).
        object_word: "person" or "vehicle" in the text prompts.
        semantic_prompt_length: S, semantic prompt tokens per modality and layer (32; Fig. 4).
        modality_prompt_length: M, modality prompt tokens per layer (1; Table 5); 0 switches modality prompts off.
        interaction_layers: k PromptIBind layers (1; Table 4); 0 switches the bind interaction off.
        text_prompts: the image-text contrastive loss on/off (W_t in Table 3).
        contrastive_weight, center_weight: loss weights (1 and 1, Eq. 17); 0 switches a loss off.
        test_feature: "pre_bn" (default) or "bn", the retrieval feature.
    """

    logit_scale: torch.Tensor  # buffers, declared for the type checker
    text_tokens: torch.Tensor
    phrase_tokens: torch.Tensor

    inputs: tuple[str, ...] = ("labels",)  # training labels for the center loss (reidtrain.batch)

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        object_word: str = "person",
        semantic_prompt_length: int = 32,
        modality_prompt_length: int = 1,
        interaction_layers: int = 1,
        text_prompts: bool = True,
        contrastive_weight: float = 1.0,
        center_weight: float = 1.0,
        test_feature: TestFeature = "pre_bn",
    ) -> None:
        super().__init__()
        if semantic_prompt_length < 1:
            raise ValueError("semantic_prompt_length must be >= 1 (the semantic prompts are DMPT's base prompts)")
        if modality_prompt_length < 0 or interaction_layers < 0:
            raise ValueError("modality_prompt_length and interaction_layers must be >= 0")
        if contrastive_weight < 0 or center_weight < 0:
            raise ValueError("loss weights must be >= 0")
        check_test_feature(test_feature)
        clip = build_clip(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(clip.visual, project=True).requires_grad_(False)  # frozen
        self.text = ClipTextEncoder(clip).freeze()  # frozen
        self.register_buffer("logit_scale", clip.logit_scale.detach().exp().reshape(()).clone())  # 1 / tau
        self.register_buffer("text_tokens", tokenize_captions(modality_text_prompts(object_word)), persistent=False)
        self.register_buffer("phrase_tokens", tokenize_captions(MODALITY_PHRASES), persistent=False)
        self.object_word = object_word
        self.use_text_prompts = text_prompts
        self.contrastive_weight, self.center_weight = contrastive_weight, center_weight
        self.test_feature = test_feature
        self._warned_no_labels = False

        width, layers = self.encoder.width, len(self.encoder.blocks)
        self.semantic_length, self.modality_length = semantic_prompt_length, modality_prompt_length
        text_width = self.text.token_embedding.embedding_dim
        self.modality_prompts = (
            ModalityPromptProjector(text_width, width, layers, modality_prompt_length)
            if modality_prompt_length > 0
            else None
        )
        patch = self.encoder.visual.conv1.kernel_size[0]
        bound = math.sqrt(6.0 / (3 * patch * patch + width))  # VPT's initialisation
        self.semantic_prompts = nn.Parameter(
            torch.empty(layers, len(MODALITIES), semantic_prompt_length, width).uniform_(-bound, bound)
        )  # (L, 3, S, width)
        self.interaction = nn.ModuleList(
            PromptInverseBindLayer(width, self.encoder.num_heads, len(MODALITIES)) for _ in range(interaction_layers)
        )
        self.feat_dim = self.encoder.out_dim  # D
        self.neck = BNNeck(len(MODALITIES) * self.feat_dim, num_classes)

    # --- prompts ----------------------------------------------------------------------------------------------------

    def modality_words(self) -> torch.Tensor:
        """(3, d_t): mean frozen token embedding of each modality phrase's words (no start/end-of-text tokens)."""
        tokens = self.phrase_tokens  # (3, L)
        embedded = self.text.token_embedding(tokens)  # (3, L, d_t)
        positions = torch.arange(tokens.shape[1], device=tokens.device)  # (L,)
        words = (positions >= 1) & (positions < eot_positions(tokens).unsqueeze(1))  # (3, L)
        weights = words.to(embedded.dtype).unsqueeze(-1)  # (3, L, 1)
        return (embedded * weights).sum(dim=1) / weights.sum(dim=1)

    def layer_prompts(self) -> torch.Tensor:
        """[M_p^l, S_p^l] for every layer and modality: (L, 3, M + S, width)."""
        if self.modality_prompts is None:
            return self.semantic_prompts
        modality = self.modality_prompts(self.modality_words())  # (L, 3, M, width)
        return torch.cat([modality, self.semantic_prompts], dim=2)

    def text_features(self) -> torch.Tensor:
        """(3, D): the frozen text encoder's features of the three text prompts (t_r, t_n, t_t)."""
        with torch.no_grad():
            return self.text(self.text_tokens)

    # --- encoder ----------------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 3, H, W) -> tokens (B, 3, 1 + M + S + N, width) after the blocks and PromptIBind."""
        b, m = images.shape[:2]
        x = self.encoder.embed(images.flatten(0, 1))  # (B * 3, 1 + N, width)
        prompts = self.layer_prompts()  # (L, 3, P, width), P = M + S
        p = prompts.shape[2]
        for layer, block in enumerate(self.encoder.blocks):
            injected = prompts[layer].unsqueeze(0).expand(b, -1, -1, -1).reshape(b * m, p, -1)  # (B * 3, P, width)
            patches = x[:, 1:] if layer == 0 else x[:, 1 + p :]  # drop the previous layer's prompt outputs
            x = block(torch.cat([x[:, :1], injected, patches], dim=1))  # Eqs. 7-10
        x = x.view(b, m, *x.shape[1:])  # (B, 3, 1 + P + N, width)
        start = 1 + self.modality_length
        for interaction in self.interaction:
            x = interaction(x, start, self.semantic_length)  # Eqs. 11-16
        return x

    # --- forward ----------------------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """images (B, 3 modalities [rgb, nir, tir], 3, H, W); camids are ignored; labels (B,) for the center loss.

        Returns ``features`` (B, 3D) pre-BN, ``bn_features``, ``modality_features`` (B, 3, D) (z_m); in train mode
        ``logits`` and ``losses`` ({"contrastive", "center"}, weighted); in eval mode ``retrieval``.
        """
        images = zero_missing_modalities(images, missing)
        tokens = self.encode(images)  # (B, 3, T, width)
        z = self.encoder.head(tokens[:, :, 0])  # (B, 3, D): ImageProj of the class tokens
        features = z.flatten(1)  # (B, 3D)
        bn_features, logits = self.neck(features)
        out: dict[str, torch.Tensor | dict[str, torch.Tensor]] = {
            "features": features,
            "bn_features": bn_features,
            "modality_features": z,
        }
        if not self.training:
            out["retrieval"] = retrieval_feature(features, bn_features, self.test_feature)
            return out
        out["logits"] = logits
        losses: dict[str, torch.Tensor] = {}
        if self.use_text_prompts and self.contrastive_weight > 0:
            con = modality_text_contrastive_loss(z, self.text_features(), self.logit_scale)
            losses["contrastive"] = self.contrastive_weight * con
        if self.center_weight > 0:
            if labels is not None:
                losses["center"] = self.center_weight * center_mae_loss(z, labels)
            elif not self._warned_no_labels:
                log.warning("DMPT: no labels passed to forward, the center MAE loss is skipped")
                self._warned_no_labels = True
        if losses:
            out["losses"] = losses
        return out

    # --- parameter efficiency ---------------------------------------------------------------------------------------

    def parameter_report(self) -> dict[str, float]:
        """Parameter counts and the trainable fraction, two ways.

        ``fraction_of_model``: trainable / every parameter of this module (one shared frozen visual tower plus the
        frozen text tower). ``fraction_three_streams``: trainable / (trainable + 3 x visual tower), the count the
        paper's 17.9 M = 6.5 % matches (three frozen ViT-B/16 visual streams of 86 M each).
        """
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        visual = sum(p.numel() for p in self.encoder.parameters())
        text = sum(p.numel() for p in self.text.parameters())
        return {
            "trainable": trainable,
            "total": total,
            "visual": visual,
            "text": text,
            "fraction_of_model": trainable / total,
            "fraction_three_streams": trainable / (trainable + 3 * visual),
        }

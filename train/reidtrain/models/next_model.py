"""NEXT (Li et al.): multi-grained mixture of experts via text modulation for multi-modal object ReID (section 3).

One trainable CLIP ViT encodes RGB, NIR and TIR (as the baseline); the frozen CLIP text tower encodes captions.
- TMSE (Eq. 1-7): N_T semantic experts; each samples the patch tokens of every modality with a route whose scores
  are modulated by the cosine between its own random sentence subset and the tokens (Eq. 4-6).
- CSSE (Eq. 8-9): N_C structure experts over the concatenated tokens, mixed by a modality-shared soft router.
- MMFA (Eq. 10-11): the three class tokens query each expert's tokens (cross-attention, LN, FFN); the N_T + 1
  outputs are concatenated into the identity feature, which gets the ID and triplet losses (Eq. 12) through a
  BNNeck and a bias-free classifier, as the baseline.

Ablation switches (``model_options`` of a recipe, defaults = the paper's best setting): ``use_mmfa`` / ``use_tmse``
/ ``use_csse`` (Table 3), ``semantic_route`` / ``structure_route`` (Table 4), ``sampling`` (Table 8),
``num_semantic_experts`` / ``num_structure_experts`` (Fig. 4), plus ``text_modulation`` and ``sentence_sampling``.

ASSUMED where the paper is silent (see also ``next_experts`` and ``next_text``):
- N_T = N_C = 3 (Fig. 5 shows three semantic experts and a third structure expert; Fig. 4's values are not in
  the text). Expert MLPs and MMFA's FFN are 4x wide, dropout 0.1.
- Without TMSE and CSSE, MMFA treats the concatenated backbone tokens as its single expert (Table 3 row B).
  Without MMFA, the identity feature is the concatenated class tokens (the baseline's feature, Table 3 row A)
  followed by each expert's tokens averaged per modality.
- A modality named in ``missing`` has its image zeroed (as the baseline) and its caption dropped (""): the caption
  of an absent image does not exist.
- SIE camera embedding on the class token as in the baseline (NEXT's code builds on DeMo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from reidtrain.models.layers.clip import ClipTextEncoder, ClipVisualEncoder, build_clip
from reidtrain.models.layers.heads import (
    MODALITIES,
    BNNeck,
    TestFeature,
    check_test_feature,
    retrieval_feature,
    zero_missing_modalities,
)
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.next_experts import (
    SAMPLING_STRATEGIES,
    ExpertAggregation,
    Sampling,
    SemanticExpert,
    StructureExperts,
    check_choice,
    heads_for,
    mean_per_modality,
)
from reidtrain.models.next_text import SENTENCE_SAMPLING, SentenceSampling, encode_texts, expert_captions
from reidtrain.models.registry import register_model

__all__ = ["NEXT"]

RouteKind = Literal["specific", "shared"]
ROUTE_KINDS = ("specific", "shared")


@register_model("next")
class NEXT(nn.Module):
    """CLIP ViT (3 modalities) + frozen CLIP text -> TMSE + CSSE -> MMFA -> BNNeck -> classifier.

    Args:
        num_classes, backbone, image_size, weights, require_pretrained, num_cameras, sie_factor, test_feature: as
            :class:`reidtrain.models.baseline.ClipBaseline` (``weights`` also supplies the text tower).
        use_mmfa, use_tmse, use_csse: Table 3's modules.
        num_semantic_experts, num_structure_experts: N_T, N_C (Fig. 4).
        semantic_route: "specific" (a route per modality, best) or "shared" (Table 4); structure_route: "shared"
            (one router for all modalities, best) or "specific".
        sampling: "dynamic_sigma" (best), "fixed_sigma" (threshold ``fixed_sigma``), "top_k" (``top_k_ratio`` of
            the tokens), "all_token" (Table 8).
        text_modulation: Eq. 5-6 on (False: gamma = alpha, captions unused).
        sentence_sampling, sentence_keep_prob: the training-time sentence distribution of Eq. 4 (``next_text``).
        mlp_ratio, expert_dropout, modulation_hidden, mask_temperature: expert widths, Eq. 1's dropout, the
            Modulation MLP width, the straight-through sigmoid's temperature.
    """

    inputs = ("captions",)
    caption_keys: tuple[str, ...] = ("rgb", "nir", "tir")  # one caption per modality (reidtrain.batch)

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        sie_factor: float = 1.0,
        test_feature: TestFeature = "pre_bn",
        use_mmfa: bool = True,
        use_tmse: bool = True,
        use_csse: bool = True,
        num_semantic_experts: int = 3,
        num_structure_experts: int = 3,
        semantic_route: RouteKind = "specific",
        structure_route: RouteKind = "shared",
        sampling: Sampling = "dynamic_sigma",
        fixed_sigma: float = 0.0,
        top_k_ratio: float = 0.5,
        text_modulation: bool = True,
        sentence_sampling: SentenceSampling = "random_subset",
        sentence_keep_prob: float = 0.5,
        mlp_ratio: float = 4.0,
        expert_dropout: float = 0.1,
        modulation_hidden: int = 16,
        mask_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        check_test_feature(test_feature)
        check_choice("semantic_route", semantic_route, ROUTE_KINDS)
        check_choice("structure_route", structure_route, ROUTE_KINDS)
        check_choice("sampling", sampling, SAMPLING_STRATEGIES)
        check_choice("sentence_sampling", sentence_sampling, SENTENCE_SAMPLING)
        if use_tmse and num_semantic_experts < 1:
            raise ValueError("use_tmse needs num_semantic_experts >= 1")
        clip = build_clip(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(clip.visual, project=True)  # trainable, tokens in the text space (D)
        self.text_encoder = ClipTextEncoder(clip).freeze()  # frozen (appendix A.2)
        dim = self.feat_dim = self.encoder.out_dim  # D
        if self.text_encoder.out_dim != dim:
            raise ValueError(f"text features ({self.text_encoder.out_dim}) and visual tokens ({dim}) differ in size")
        m = len(MODALITIES)
        self.num_cameras, self.sie_factor, self.test_feature = num_cameras, sie_factor, test_feature
        self.use_mmfa, self.sentence_sampling, self.sentence_keep_prob = use_mmfa, sentence_sampling, sentence_keep_prob
        self.sie_embed = camera_embedding(num_cameras, self.encoder.width)  # (cameras, width) or None

        self.semantic_experts = nn.ModuleList(
            SemanticExpert(
                dim,
                m,
                shared_route=semantic_route == "shared",
                sampling=sampling,
                text_modulation=text_modulation,
                mlp_ratio=mlp_ratio,
                dropout=expert_dropout,
                modulation_hidden=modulation_hidden,
                fixed_sigma=fixed_sigma,
                top_k_ratio=top_k_ratio,
                temperature=mask_temperature,
            )
            for _ in range(num_semantic_experts if use_tmse else 0)
        )
        self.structure_experts = (
            StructureExperts(dim, num_structure_experts, m, structure_route == "shared", mlp_ratio, expert_dropout)
            if use_csse
            else None
        )
        num_experts = len(self.semantic_experts) + int(use_csse)
        self.aggregators = nn.ModuleList(
            ExpertAggregation(dim, heads_for(dim), mlp_ratio) for _ in range(max(1, num_experts) if use_mmfa else 0)
        )
        parts = len(self.aggregators) if use_mmfa else 1 + num_experts  # without MMFA: class tokens + experts
        feature_dim = parts * m * dim
        self.neck = BNNeck(feature_dim, num_classes)  # as the baseline

    @property
    def uses_text(self) -> bool:
        return any(expert.modulation is not None for expert in self.semantic_experts)

    def text_features(
        self, captions: Mapping[str, Sequence[str]] | None, batch: int, missing: Sequence[str], device: torch.device
    ) -> torch.Tensor:
        """Per expert the text features f^cls_{hat T, m}: (N_T, B, M, D); sentence subsets in training (Eq. 4)."""
        captions = captions or {}
        present = {m: list(captions.get(m) or [""] * batch) for m in MODALITIES if m not in missing}
        texts = expert_captions(
            present,
            MODALITIES,
            len(self.semantic_experts),
            sample=self.training,
            mode=self.sentence_sampling,
            keep_prob=self.sentence_keep_prob,
        )
        flat = [text for expert in texts for m in MODALITIES for text in expert[m]]  # (N_T * M * B) strings
        features = encode_texts(self.text_encoder, flat, device)  # (N_T * M * B, D)
        return features.view(len(texts), len(MODALITIES), batch, -1).transpose(1, 2)  # (N_T, B, M, D)

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
        captions: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """images (B, 3 modalities, 3, H, W), camids (B,) or None, captions {modality: B strings} (None: no text).

        Returns ``features`` (B, F) pre-BN (triplet loss), ``bn_features``, ``sampling_masks`` (B, N_T, M, N) when
        TMSE is on, ``structure_weights`` (omega) when CSSE is on; in train mode ``logits`` (B, num_classes), in
        eval mode ``retrieval`` (B, F). F = (N_T + 1) * 3 * D with every module on.
        """
        b, m = images.shape[:2]
        if m != len(MODALITIES):
            raise ValueError(f"expected images (B, {len(MODALITIES)}, 3, H, W), got {tuple(images.shape)}")
        images = zero_missing_modalities(images, missing)  # DeMo's missing-modality protocol, as the baseline
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m)  # (B * M, width) or None
        tokens = self.encoder(images.flatten(0, 1), cls_bias=cls_bias)  # (B * M, 1 + N, D)
        tokens = tokens.view(b, m, tokens.shape[1], tokens.shape[2])  # (B, M, 1 + N, D)
        cls, patches = tokens[:, :, 0], tokens[:, :, 1:]  # (B, M, D), (B, M, N, D)

        out: dict[str, torch.Tensor] = {}
        experts: list[torch.Tensor] = []  # each (B, M * N, D)
        if len(self.semantic_experts):
            text = self.text_features(captions, b, missing, images.device) if self.uses_text else None
            masks = []
            for i, expert in enumerate(self.semantic_experts):
                sampled, mask = expert(cls, patches, None if text is None else text[i])  # (B, M*N, D), (B, M, N)
                experts.append(sampled)
                masks.append(mask)
            out["sampling_masks"] = torch.stack(masks, dim=1)  # (B, N_T, M, N)
        if self.structure_experts is not None:
            structure, omega = self.structure_experts(patches)  # (B, M * N, D)
            experts.append(structure)
            out["structure_weights"] = omega
        if self.use_mmfa:
            experts = experts or [patches.flatten(1, 2)]  # Table 3 row B: the backbone tokens as one expert
            parts = [aggregate(cls, feats) for aggregate, feats in zip(self.aggregators, experts, strict=True)]
        else:
            parts = [cls.flatten(1)] + [mean_per_modality(feats, m) for feats in experts]
        features = torch.cat(parts, dim=1)  # (B, F), Eq. 10
        bn_features, logits = self.neck(features)
        out.update(features=features, bn_features=bn_features)
        if self.training:
            out["logits"] = logits  # (B, num_classes)
        else:
            out["retrieval"] = retrieval_feature(features, bn_features, self.test_feature)
        return out

"""MambaPro (Wang et al., AAAI 2025): a frozen CLIP ViT with PFA and SRP, then Mamba Aggregation (MA).

The three modalities pass the one shared, frozen CLIP image encoder as one batch. Every block gets a Parallel
Feed-Forward Adapter beside its FFN (``mambapro_pfa``, Eqs. 1-3) and Synergistic Residual Prompts appended to its
input (``mambapro_srp``, Eqs. 4-12). The class tokens, concatenated, give f_cls (B, 3D); the patch tokens go through
the Mamba Aggregation (``mambapro_ma``, Eqs. 13-19), which gives f_ma (B, 3D). Each of f_cls and f_ma is supervised
by the triplet loss (pre-BN) and label-smoothed CE (BNNeck -> bias-free classifier), L = L_g^CLIP + L_g^MA (Eq. 21;
the recipe weighs CE 0.25 and triplet 1.0, Eq. 20). Retrieval uses f_ma, or f_cls when MA is off (Sec. Ablation),
before the BNNeck as in the authors' configs (``TEST.NECK_FEAT: before``). ``cls_supervision="per_modality"``
supervises the three class tokens separately with one shared BNNeck and classifier instead of f_cls, as the authors'
RGBNT100 and MSVR310 configs do (``MODEL.DIRECT: 0``; the paper describes only the concatenation).

Facts from the authors' code where the paper is silent: tokens are CLIP's projected tokens (ln_post + proj, D = 512
for ViT-B-16); SIE adds ``sie_factor * sie_embed[camid]`` (width 768, trunc_normal 0.02, factor 1.0) to the class
token; the frozen parameters are all of CLIP's image encoder (ln_post and proj included); BNNeck and classifier
initialised as the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from reidtrain.models.layers.activations import Activation
from reidtrain.models.layers.clip import ClipVisualEncoder, build_clip_visual
from reidtrain.models.layers.heads import (
    MODALITIES,
    TestFeature,
    bnneck_layers,
    check_test_feature,
    retrieval_feature,
    zero_missing_modalities,
)
from reidtrain.models.layers.selective_scan import ScanBackend
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.mambapro_ma import MambaAggregation, MAMode
from reidtrain.models.mambapro_pfa import ParallelFeedForwardAdapter, run_block
from reidtrain.models.mambapro_srp import PromptInit, PromptMode, SynergisticResidualPrompt
from reidtrain.models.registry import register_model

__all__ = ["MambaPro"]


@register_model("mambapro")
class MambaPro(nn.Module):
    """MambaPro over (rgb, nir, tir); the defaults are the paper's best setting (Table 3 F, Figs. 8-9).

    Args:
        num_classes, backbone, image_size, weights, require_pretrained, num_cameras, sie_factor: as the baseline.
        freeze_backbone: CLIP(L), the frozen encoder (True); False fine-tunes it too (Table 3 G, CLIP(F)).
        pfa: Parallel Feed-Forward Adapters; ``pfa_ratio`` hidden/width (2); ``pfa_start_layer`` the first block
            with one (0: all, Fig. 9 c).
        srp: prompts; ``num_prompts`` k (4, Fig. 9 a); ``prompt_mode`` "fusion" (SRP) / "synergistic" (SP) /
            "independent" (IP) (Table 4); ``srp_start_layer`` (0: all, Fig. 9 b); ``prompt_identity_paths`` the
            authors' code's extra identity terms (on; see ``mambapro_srp``); ``prompt_init`` "trunc_normal" or
            "zeros" (the authors' code).
        activation: of the PFA and the prompt blocks, "gelu" (paper) or "quick_gelu" (authors' code).
        ma: Mamba Aggregation; ``ma_blocks`` (2, Fig. 9 d); ``ma_mode`` "intra+inter" / "intra" / "inter"
            (Table 6); ``d_state`` (16), ``dt_rank`` (None: ceil(D / 16) = 32, Fig. 8), ``ssm_expand`` (2),
            ``d_conv`` (3).
        cls_supervision: "concat" supervises f_cls (B, 3D) (paper); "per_modality" each class token (B, D) with a
            shared BNNeck and classifier (authors' vehicle configs).
        test_feature: retrieval feature before ("pre_bn", the authors' setting) or after ("bn") the BNNeck.
        scan_backend: "auto" (mamba-ssm's kernel on CUDA when installed), "torch" or "mamba_ssm".
    """

    inputs: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        sie_factor: float = 1.0,
        freeze_backbone: bool = True,
        pfa: bool = True,
        pfa_ratio: float = 2.0,
        pfa_start_layer: int = 0,
        srp: bool = True,
        num_prompts: int = 4,
        prompt_mode: PromptMode = "fusion",
        srp_start_layer: int = 0,
        prompt_identity_paths: bool = True,
        prompt_init: PromptInit = "trunc_normal",
        activation: Activation = "gelu",
        ma: bool = True,
        ma_blocks: int = 2,
        ma_mode: MAMode = "intra+inter",
        d_state: int = 16,
        dt_rank: int | None = None,
        ssm_expand: int = 2,
        d_conv: int = 3,
        cls_supervision: Literal["concat", "per_modality"] = "concat",
        test_feature: TestFeature = "pre_bn",
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        check_test_feature(test_feature)
        if cls_supervision not in ("concat", "per_modality"):
            raise ValueError(f"cls_supervision must be 'concat' or 'per_modality', not {cls_supervision!r}")
        visual = build_clip_visual(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(visual, project=True)  # shared by the modalities
        if freeze_backbone:
            self.encoder.requires_grad_(False)
        width, depth = self.encoder.width, len(self.encoder.blocks)
        if not 0 <= pfa_start_layer < depth:
            raise ValueError(f"pfa_start_layer must be in [0, {depth}), got {pfa_start_layer}")
        self.feat_dim = self.encoder.out_dim  # D
        self.num_cameras, self.sie_factor, self.test_feature = num_cameras, sie_factor, test_feature
        self.cls_supervision = cls_supervision
        self.sie_embed = camera_embedding(num_cameras, width)  # (cameras, width) or None
        self.pfa_start_layer = pfa_start_layer
        self.pfa = (
            nn.ModuleList(
                ParallelFeedForwardAdapter(width, pfa_ratio, activation) for _ in range(pfa_start_layer, depth)
            )
            if pfa
            else None
        )
        self.srp = (
            SynergisticResidualPrompt(
                width,
                depth,
                num_prompts,
                len(MODALITIES),
                prompt_mode,
                srp_start_layer,
                prompt_identity_paths,
                prompt_init,
                activation,
            )
            if srp
            else None
        )
        self.ma = (
            MambaAggregation(
                self.feat_dim,
                self.encoder.grid_size,
                len(MODALITIES),
                ma_blocks,
                ma_mode,
                d_state,
                dt_rank,
                ssm_expand,
                d_conv,
                scan_backend,
            )
            if ma
            else None
        )
        dim = len(MODALITIES) * self.feat_dim  # 3D
        cls_dim = dim if cls_supervision == "concat" else self.feat_dim
        self.bottleneck, self.classifier = bnneck_layers(cls_dim, num_classes)  # class-token head (L_g^CLIP)
        if ma:
            self.bottleneck_ma, self.classifier_ma = bnneck_layers(dim, num_classes)  # f_ma head (L_g^MA)

    def encode(self, images: torch.Tensor, cls_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Images (M, B, 3, H, W) modality-major -> tokens (M, B, 1 + N, D) through the adapted, prompted encoder."""
        m, b = images.shape[:2]
        x = self.encoder.embed(images.flatten(0, 1), cls_bias)  # (M B, 1 + N, width)
        length, width = x.shape[1:]
        fused = None
        for layer, block in enumerate(self.encoder.blocks):
            use_pfa = self.pfa is not None and layer >= self.pfa_start_layer
            adapter = self.pfa[layer - self.pfa_start_layer] if self.pfa is not None and use_pfa else None
            if self.srp is None or not self.srp.prompted(layer):
                x = run_block(block, x, adapter)
                continue
            prompts = self.srp.layer_prompts(layer, b, fused)  # (M, B, P, width)
            x = torch.cat([x, prompts.flatten(0, 1).to(x.dtype)], dim=1)  # (M B, 1 + N + P, width)
            x = run_block(block, x, adapter)
            fused = self.srp.fuse(x[:, length:].reshape(m, b, -1, width))  # (M, B, k, width) or None
            x = x[:, :length]  # the prompts leave; the next layer appends its own
        return self.encoder.head(x).reshape(m, b, length, -1)  # (M, B, 1 + N, D)

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """images (B, 3 modalities [rgb, nir, tir], 3, H, W), camids (B,) long or None.

        Returns ``features`` [f_cls, f_ma] (each (B, 3D), pre-BN; [f_cls] when MA is off; with per-modality
        class-token supervision [cls_rgb, cls_nir, cls_tir (each (B, D)), f_ma]) and ``bn_features``; in train mode
        ``logits`` (one (B, num_classes) per feature); in eval mode ``retrieval`` (B, 3D): f_ma (f_cls without MA),
        pre- or post-BN per ``test_feature``. ``missing`` modalities are zeroed before the encoder, as
        the baseline (DeMo's protocol).
        """
        b, m = images.shape[:2]
        if m != len(MODALITIES):
            raise ValueError(f"expected images (B, {len(MODALITIES)}, 3, H, W), got {tuple(images.shape)}")
        images = zero_missing_modalities(images, missing)
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m, modality_major=True)  # (M B, width)
        tokens = self.encode(images.transpose(0, 1), cls_bias)  # (M, B, 1 + N, D)
        cls = tokens[:, :, 0].transpose(0, 1)  # (B, M, D)
        per_modality = self.cls_supervision == "per_modality"
        # f_cls (B, 3D) [rgb | nir | tir], or the M class tokens (B, D) each
        features = list(cls.unbind(dim=1)) if per_modality else [cls.reshape(b, m * self.feat_dim)]
        bn_features = [self.bottleneck(f) for f in features]
        classifiers = [self.classifier] * len(features)
        if self.ma is not None:
            features.append(self.ma(cls, tokens[:, :, 1:].transpose(0, 1)))  # f_ma (B, 3D)
            bn_features.append(self.bottleneck_ma(features[-1]))
            classifiers.append(self.classifier_ma)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {"features": features, "bn_features": bn_features}
        if self.training:
            out["logits"] = [head(f) for head, f in zip(classifiers, bn_features, strict=True)]
        elif self.ma is not None:
            out["retrieval"] = retrieval_feature(features, bn_features, self.test_feature)[-1]
        else:  # f_cls, whichever way the class tokens were supervised
            out["retrieval"] = torch.cat(retrieval_feature(features, bn_features, self.test_feature), dim=-1)
        return out

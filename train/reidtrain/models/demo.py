"""DeMo (Wang et al., AAAI 2025): decoupled feature-based mixture of experts on a shared CLIP ViT.

One CLIP ViT (tokens projected to C = 512 for ViT-B-16) encodes RGB, NIR and TIR. PIFE turns each modality's class
token and pooled patches into f_m (Eq. 2); HDM decouples the tokens into seven features with learnable queries
(Eqs. 3-8); ATMoE weights them with multi-head attention gates (Eqs. 9-15) into f (B, 7C).

Losses (Eq. 17): L_g([f_R, f_N, f_T]) + L_g(f), each L_g = label-smoothed CE (after a BNNeck) + triplet (before
it). The model returns ``features = [f_cat, f]`` and ``logits = [ce(f_cat), ce(f)]``; the trainer's objective sums
them. Test feature (Table 5, model E): [f_R, f_N, f_T, f] before the BNNecks, as the authors' code
(``NECK_FEAT: before``). The camera embedding (SIE) is added to every modality's class token, as the baseline.

Switches (``model_options``): ``pife``, ``hdm``, ``atmoe`` (Table 5: A = all off, B = PIFE, C = PIFE + HDM,
D/E = all on), ``heads`` (ATMoE heads, Table 6: 4 best on RGBNT201), ``test_feature`` ("all" = model E,
"moe" = model D, "modality" = [f_R, f_N, f_T]). With ``atmoe=False`` f is the plain concatenation of the seven
decoupled features (model C, as the authors' code); ATMoE without HDM has no experts and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from reidtrain.models.demo_modules import (
    EXPERT_SETS,
    AttentionTriggeredMoE,
    HierarchicalDecoupling,
    PatchIntegratedExtractor,
)
from reidtrain.models.layers.clip import ClipVisualEncoder, build_clip_visual
from reidtrain.models.layers.heads import (
    MODALITIES,
    BNNeck,
    zero_missing_modalities,
)
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.registry import register_model

__all__ = ["DeMo"]

TestFeature = Literal["all", "moe", "modality"]


@register_model("demo")
class DeMo(nn.Module):
    """DeMo: shared CLIP ViT -> PIFE -> HDM -> ATMoE, with BNNeck heads on [f_R, f_N, f_T] and on f.

    Args:
        num_classes: training identities.
        backbone, image_size, weights, require_pretrained: as :class:`reidtrain.models.baseline.ClipBaseline`.
        num_cameras: cameras for SIE (0 switches it off); ``sie_factor`` scales it (1.0 in DeMo).
        pife: Patch-Integrated Feature Extractor on (else f_m is the class token).
        hdm: Hierarchical Decoupling Module on (else only [f_R, f_N, f_T] is trained and used).
        atmoe: Attention-Triggered MoE on (needs ``hdm``).
        heads: ATMoE heads H (Table 6); must divide C.
        hdm_heads: heads of HDM's cross-attentions; None = C // 64 (the authors' code), at least 1.
        hdm_dropout: attention dropout of HDM's cross-attentions (0.1 in the authors' code).
        test_feature: "all" ([f_R, f_N, f_T, f]; without HDM just [f_R, f_N, f_T]), "moe" (f) or "modality"
            ([f_R, f_N, f_T]), all pre-BN.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "ViT-B-16",
        image_size: tuple[int, int] = (256, 128),
        weights: Path | str | None = None,
        require_pretrained: bool = True,
        num_cameras: int = 0,
        sie_factor: float = 1.0,
        pife: bool = True,
        hdm: bool = True,
        atmoe: bool = True,
        heads: int = 4,
        hdm_heads: int | None = None,
        hdm_dropout: float = 0.1,
        test_feature: TestFeature = "all",
    ) -> None:
        super().__init__()
        if atmoe and not hdm:
            raise ValueError("atmoe=True needs hdm=True: ATMoE weights the decoupled features that HDM produces")
        if test_feature not in ("all", "moe", "modality"):
            raise ValueError(f"test_feature must be 'all', 'moe' or 'modality', not {test_feature!r}")
        if test_feature == "moe" and not hdm:
            raise ValueError("test_feature='moe' needs hdm=True (f comes from the decoupled features)")
        visual = build_clip_visual(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(visual, project=True)  # shared by the modalities; gets backbone_lr
        dim = self.encoder.out_dim  # C
        self.feat_dim = dim
        self.test_feature = test_feature
        self.sie_factor = sie_factor
        self.sie_embed = camera_embedding(num_cameras, self.encoder.width)  # (cameras, width) or None
        self.pife = nn.ModuleList(PatchIntegratedExtractor(dim) for _ in MODALITIES) if pife else None
        self.hdm = HierarchicalDecoupling(dim, hdm_heads, hdm_dropout) if hdm else None
        self.atmoe = AttentionTriggeredMoE(dim, len(EXPERT_SETS), heads) if atmoe else None
        self.modality_neck = BNNeck(len(MODALITIES) * dim, num_classes)  # on [f_R, f_N, f_T]
        self.moe_neck = BNNeck(len(EXPERT_SETS) * dim, num_classes) if hdm else None  # on f

    def modality_features(
        self, images: torch.Tensor, camids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, 3, H, W) -> (f_m (B, 3, C) after PIFE (or class tokens), patch tokens (B, 3, N, C))."""
        b, m = images.shape[:2]
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m)  # (B * 3, width) or None
        tokens = self.encoder(images.flatten(0, 1), cls_bias=cls_bias)  # (B * 3, 1 + N, C)
        tokens = tokens.view(b, m, *tokens.shape[1:])  # (B, 3, 1 + N, C)
        cls, patches = tokens[:, :, 0], tokens[:, :, 1:]  # (B, 3, C), (B, 3, N, C)
        if self.pife is not None:
            cls = torch.stack([pife(cls[:, i], patches[:, i]) for i, pife in enumerate(self.pife)], dim=1)
        return cls, patches

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """images (B, 3 modalities [rgb, nir, tir], 3, H, W), camids (B,) or None.

        Returns ``features`` [f_cat (B, 3C), f (B, 7C)] (pre-BN; only f_cat without HDM), in train mode ``logits``
        (one per feature), in eval mode ``retrieval`` (see ``test_feature``); with ATMoE also ``expert_weights``
        (B, H, 7), the gates alpha (Fig. 6). ``missing`` modalities are zeroed before the backbone (Tables 3-4).
        """
        images = zero_missing_modalities(images, missing)
        features, patches = self.modality_features(images, camids)  # (B, 3, C), (B, 3, N, C)
        f_cat = features.flatten(1)  # (B, 3C): [f_R | f_N | f_T]
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        feats, necks = [f_cat], [self.modality_neck]
        if self.hdm is not None:
            decoupled = self.hdm(features, patches)  # (B, 7, C)
            if self.atmoe is not None:
                f_moe, alpha = self.atmoe(decoupled)  # (B, 7C), (B, H, 7)
                out["expert_weights"] = alpha
            else:
                f_moe = decoupled.flatten(1)  # (B, 7C), Table 5 model C
            feats.append(f_moe)
            assert self.moe_neck is not None  # built whenever HDM is
            necks.append(self.moe_neck)
        out["features"] = feats
        if self.training:
            out["logits"] = [neck(f)[1] for neck, f in zip(necks, feats, strict=True)]
        elif self.test_feature == "all":
            out["retrieval"] = torch.cat(feats, dim=1)  # (B, 3C + 7C)
        elif self.test_feature == "moe":
            out["retrieval"] = feats[1]
        else:
            out["retrieval"] = f_cat
        return out

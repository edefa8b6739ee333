"""The three-branch CLIP baseline (STMI/DeMo baseline): one shared ViT for RGB, NIR and TIR, class tokens concatenated.

Retrieval uses the concatenation of the three modalities' class tokens. Training heads follow TransReID/DeMo:
features (pre-BN) feed the triplet loss, a BNNeck (BatchNorm1d, bias frozen at 0) then a bias-free linear classifier
feed the ID loss. Losses live beside the trainer; ``forward`` only returns features and logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from reidtrain.models.layers.clip import ClipVisualEncoder, build_clip_visual
from reidtrain.models.layers.heads import (
    MODALITIES,
    TestFeature,
    bnneck_layers,
    check_test_feature,
    retrieval_feature,
    zero_missing_modalities,
)
from reidtrain.models.layers.sie import camera_bias, camera_embedding
from reidtrain.models.registry import register_model

__all__ = ["MODALITIES", "ClipBaseline"]


@register_model("baseline")
class ClipBaseline(nn.Module):
    """Shared CLIP ViT over three modalities -> concatenated class tokens (B, 3D) -> BNNeck -> classifier.

    Args:
        num_classes: identities in the training set (classifier outputs).
        backbone: CLIP name for :func:`build_clip_visual` ("ViT-B-16", "ViT-B-16-quickgelu" for OpenAI weights, "tiny").
        image_size: (height, width); 256x128 for persons, 128x256 for vehicles.
        weights: local CLIP checkpoint; None needs ``require_pretrained=False`` (random init).
        num_cameras: cameras for SIE; 0 switches SIE off.
        sie_factor: scale of the camera embedding (1.0 in TransReID/DeMo).
        test_feature: eval-mode retrieval feature, "pre_bn" (before the BNNeck, as the reference configs test:
            ``TEST.NECK_FEAT: 'before'`` in the TransReID / DeMo / MambaPro lineage) or "bn" (after it).
        project: pass tokens through CLIP's ``proj`` (D = 512 for ViT-B-16, as DeMo) or keep the width (768).
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
        test_feature: TestFeature = "pre_bn",
        project: bool = True,
    ) -> None:
        super().__init__()
        check_test_feature(test_feature)
        visual = build_clip_visual(backbone, image_size, weights, require_pretrained)
        self.encoder = ClipVisualEncoder(visual, project=project)  # one backbone, shared by the three modalities
        self.feat_dim = self.encoder.out_dim  # D
        self.num_cameras = num_cameras
        self.sie_factor = sie_factor
        self.test_feature = test_feature
        self.sie_embed = camera_embedding(num_cameras, self.encoder.width)  # (cameras, width) or None
        dim = len(MODALITIES) * self.feat_dim  # 3D
        self.bottleneck, self.classifier = bnneck_layers(dim, num_classes)

    def forward(
        self,
        images: torch.Tensor,
        camids: torch.Tensor | None = None,
        missing: Sequence[str] = (),
    ) -> dict[str, torch.Tensor]:
        """images (B, 3 modalities [rgb, nir, tir], 3, H, W), camids (B,) long or None.

        Returns ``features`` (B, 3D) pre-BN (triplet loss) and ``bn_features`` (B, 3D); in train mode also
        ``logits`` (B, num_classes); in eval mode also ``retrieval`` (B, 3D), the feature to rank with
        (``features`` by default, see ``test_feature``).

        ``missing`` names modalities absent at test time (e.g. ``("rgb",)``): their images are replaced by zeros
        (the normalised mean colour) before the backbone, as DeMo's missing-modality evaluation (Tables 3-4). The
        feature keeps its (B, 3D) layout, so galleries with all modalities stay comparable.
        SIE adds ``sie_factor * sie_embed[camid]`` to every modality's class token when ``num_cameras > 0`` and
        ``camids`` is given; otherwise camids are ignored.
        """
        b, m = images.shape[:2]
        if m != len(MODALITIES):
            raise ValueError(f"expected images (B, {len(MODALITIES)}, 3, H, W), got {tuple(images.shape)}")
        images = zero_missing_modalities(images, missing)
        cls_bias = camera_bias(self.sie_embed, self.sie_factor, camids, m)  # (B * 3, width) or None
        tokens = self.encoder(images.flatten(0, 1), cls_bias=cls_bias)  # (B * 3, 1 + N, D)
        features = tokens[:, 0].reshape(b, m * self.feat_dim)  # (B, 3D): [rgb | nir | tir] class tokens
        bn_features = self.bottleneck(features)  # (B, 3D)
        out = {"features": features, "bn_features": bn_features}
        if self.training:
            out["logits"] = self.classifier(bn_features)  # (B, num_classes)
        else:
            out["retrieval"] = retrieval_feature(features, bn_features, self.test_feature)
        return out

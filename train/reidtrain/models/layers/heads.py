"""Pieces every multi-modal ReID model here shares: the modality order, missing-modality zeroing and the BNNeck head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODALITIES", "BNNeck", "zero_missing_modalities"]

MODALITIES: tuple[str, str, str] = ("rgb", "nir", "tir")


def zero_missing_modalities(images: torch.Tensor, missing: Sequence[str]) -> torch.Tensor:
    """images (B, 3, 3, H, W) -> the same with the modalities named in ``missing`` set to zero (DeMo Tables 3-4).

    Zero is the normalised mean colour. The feature layout stays the same, so galleries with all modalities stay
    comparable. Raises ValueError on a wrong shape or an unknown modality name.
    """
    if images.ndim != 5 or images.shape[1] != len(MODALITIES):
        raise ValueError(f"expected images (B, {len(MODALITIES)}, 3, H, W), got {tuple(images.shape)}")
    unknown = set(missing) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities in missing: {sorted(unknown)}; choose from {MODALITIES}")
    if not missing:
        return images
    keep = torch.tensor([name not in missing for name in MODALITIES], device=images.device, dtype=images.dtype)
    return images * keep.view(1, len(MODALITIES), 1, 1, 1)


class BNNeck(nn.Module):
    """BNNeck (TransReID/DeMo): BatchNorm1d with its bias frozen at 0, then a bias-free linear classifier.

    The triplet loss takes the features before the BN, the ID loss the logits after the classifier. Init as the
    reference repos: BN weight 1, bias 0; classifier weights normal(std 0.001).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = nn.BatchNorm1d(dim)
        self.bottleneck.bias.requires_grad_(False)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, D) -> (bn_features (B, D), logits (B, num_classes))."""
        bn = self.bottleneck(features)
        return bn, self.classifier(bn)

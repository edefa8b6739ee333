"""Pieces every multi-modal ReID model here shares: the modality order, missing-modality zeroing, the BNNeck head and
the choice of the retrieval feature (before or after the BNNeck)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import torch
from torch import nn

__all__ = [
    "MODALITIES",
    "TEST_FEATURES",
    "BNNeck",
    "TestFeature",
    "bnneck_layers",
    "check_test_feature",
    "retrieval_feature",
    "zero_missing_modalities",
]

MODALITIES: tuple[str, str, str] = ("rgb", "nir", "tir")

TestFeature = Literal["pre_bn", "bn"]
TEST_FEATURES: tuple[TestFeature, ...] = ("pre_bn", "bn")
"""The retrieval feature: before the BNNeck ("pre_bn", what the reference configs test with: ``TEST.NECK_FEAT:
'before'`` in the TransReID / DeMo / MambaPro lineage) or after it ("bn")."""

_Features = TypeVar("_Features")


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


def check_test_feature(value: str) -> None:
    """Raise ValueError naming the choices unless ``value`` is one of :data:`TEST_FEATURES`."""
    if value not in TEST_FEATURES:
        raise ValueError(f"test_feature must be one of {', '.join(TEST_FEATURES)}, not {value!r}")


def retrieval_feature(features: _Features, bn_features: _Features, test_feature: str) -> _Features:
    """The features to rank with: ``bn_features`` for "bn", else ``features`` (pre-BN); any matching structure."""
    return bn_features if test_feature == "bn" else features


def bnneck_layers(dim: int, num_classes: int) -> tuple[nn.BatchNorm1d, nn.Linear]:
    """A BNNeck's two layers, initialised as the reference repos: BatchNorm1d (weight 1, bias 0 and frozen) and a
    bias-free classifier (weights normal(std 0.001)). For models that keep them as two attributes of their own."""
    bottleneck = nn.BatchNorm1d(dim)
    bottleneck.bias.requires_grad_(False)
    nn.init.ones_(bottleneck.weight)
    nn.init.zeros_(bottleneck.bias)
    classifier = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    return bottleneck, classifier


class BNNeck(nn.Module):
    """BNNeck (TransReID/DeMo): BatchNorm1d with its bias frozen at 0, then a bias-free linear classifier.

    The triplet loss takes the features before the BN, the ID loss the logits after the classifier. Init as
    :func:`bnneck_layers`.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck, self.classifier = bnneck_layers(dim, num_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, D) -> (bn_features (B, D), logits (B, num_classes))."""
        bn = self.bottleneck(features)
        return bn, self.classifier(bn)

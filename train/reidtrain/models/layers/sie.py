"""SIE (TransReID's side information embedding): a learned per-camera vector added to every image's class token.

Every model here builds it the same way (DeMo's init: zeros, then trunc_normal(std 0.02), at the transformer width)
and adds ``sie_factor * embedding[camid]`` to the class token of each modality's image. The parameter stays a plain
attribute of the model (``sie_embed``), so checkpoints keep their key names.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["camera_bias", "camera_embedding"]


def camera_embedding(num_cameras: int, width: int) -> nn.Parameter | None:
    """(num_cameras, width) trainable camera vectors, or None when ``num_cameras`` is 0 (SIE off)."""
    if num_cameras < 0:
        raise ValueError(f"num_cameras must be >= 0, got {num_cameras}")
    if num_cameras == 0:
        return None
    embedding = nn.Parameter(torch.zeros(num_cameras, width))
    nn.init.trunc_normal_(embedding, std=0.02)
    return embedding


def camera_bias(
    embedding: torch.Tensor | None,
    factor: float,
    camids: torch.Tensor | None,
    modalities: int,
    *,
    modality_major: bool = False,
) -> torch.Tensor | None:
    """The class-token bias of every flattened image: (B * M, width), or None when SIE is off or camids are unknown.

    camids (B,) are camera indices. The rows follow the images' flattening: batch-major (``images.flatten(0, 1)`` of
    (B, M, ...): sample 0's M modalities first) by default, modality-major (all RGB images first) when
    ``modality_major``.
    """
    if embedding is None or camids is None:
        return None
    bias = factor * embedding[camids]  # (B, width)
    return bias.repeat(modalities, 1) if modality_major else bias.repeat_interleave(modalities, dim=0)

"""Fusing the per-modality masks of a triplet into one triplet mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

FUSIONS = ("majority", "union", "intersection")


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) bool mask (modalities of a triplet rarely differ in size)."""
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))


def fuse_masks(masks: Sequence[np.ndarray], how: str) -> np.ndarray:
    """(k, H, W) bool masks -> (H, W): majority = more than half agree, or union / intersection."""
    stack = np.stack(masks)  # (k, H, W)
    if how == "majority":
        return np.asarray(stack.sum(axis=0) * 2 > len(masks))
    if how == "union":
        return np.asarray(stack.any(axis=0))
    if how == "intersection":
        return np.asarray(stack.all(axis=0))
    raise ValueError(f"unknown fusion {how!r}; choose one of {', '.join(FUSIONS)}")

"""Patch-level mask tokenisation: the foreground fraction under every ViT patch, and its thresholded form."""

from __future__ import annotations

import numpy as np


def patch_grid(height: int, width: int, patch: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of the patch grid of a ViT with patch size ``patch`` and stride ``stride`` (no padding)."""
    if patch < 1 or stride < 1 or patch > min(height, width):
        raise ValueError(f"patch {patch} / stride {stride} do not fit a {height}x{width} image")
    return (height - patch) // stride + 1, (width - patch) // stride + 1


def token_fractions(mask: np.ndarray, patch: int = 16, stride: int = 16) -> np.ndarray:
    """(H, W) bool mask -> (rows, cols) float32 fraction of foreground pixels under each patch.

    Summed-area table: each patch sum is four lookups, so overlapping strides cost no more than disjoint ones.
    A 256x128 mask with patch = stride = 16 gives a 16x8 grid.
    """
    height, width = mask.shape
    rows, cols = patch_grid(height, width, patch, stride)
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)  # (H+1, W+1)
    table[1:, 1:] = mask.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    top = np.arange(rows) * stride  # (rows,)
    left = np.arange(cols) * stride  # (cols,)
    y0, x0 = top[:, None], left[None, :]  # (rows, 1), (1, cols)
    y1, x1 = y0 + patch, x0 + patch
    sums = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]  # (rows, cols)
    return (sums / float(patch * patch)).astype(np.float32)


def token_mask(fractions: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A patch is foreground when at least ``threshold`` of its pixels are (STMI's m_i)."""
    return fractions >= threshold

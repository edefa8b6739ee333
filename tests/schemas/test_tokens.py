"""Patch-level mask tokenisation against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest

from reidschemas.tokens import patch_grid, token_fractions, token_mask


def _brute(mask: np.ndarray, patch: int, stride: int) -> np.ndarray:
    rows, cols = (mask.shape[0] - patch) // stride + 1, (mask.shape[1] - patch) // stride + 1
    out = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            out[r, c] = mask[r * stride : r * stride + patch, c * stride : c * stride + patch].mean()
    return out


@pytest.mark.parametrize(("shape", "patch", "stride"), [((256, 128), 16, 16), ((128, 256), 16, 12), ((64, 48), 8, 5)])
def test_fractions_match_brute_force(shape, patch, stride):
    rng = np.random.default_rng(0)
    for density in (0.1, 0.5, 0.9):
        mask = rng.random(shape) < density
        np.testing.assert_allclose(token_fractions(mask, patch, stride), _brute(mask, patch, stride), atol=1e-6)


def test_grid_and_threshold():
    assert patch_grid(256, 128, 16, 16) == (16, 8)
    assert patch_grid(256, 128, 16, 12) == (21, 10)
    mask = np.zeros((32, 32), bool)
    mask[:16, :8] = True  # half of the top-left patch
    fractions = token_fractions(mask, 16, 16)
    assert fractions.tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert token_mask(fractions, 0.5).tolist() == [[True, False], [False, False]]
    assert token_mask(fractions, 0.6).sum() == 0
    with pytest.raises(ValueError, match="do not fit"):
        patch_grid(8, 8, 16, 16)

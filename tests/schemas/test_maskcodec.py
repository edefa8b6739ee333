"""Bit-packed mask storage and IoU."""

from __future__ import annotations

import numpy as np
import pytest

from reidschemas.maskcodec import decode_mask, encode_mask, mask_iou


@pytest.mark.parametrize("shape", [(256, 128), (128, 256), (7, 5), (1, 1), (33, 17)])
def test_round_trip(shape):
    mask = np.random.default_rng(0).random(shape) > 0.6
    data = encode_mask(mask)
    assert len(data) == (mask.size + 7) // 8
    assert np.array_equal(decode_mask(data, *shape), mask)


def test_errors():
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="has 2 bytes, got 3"):
        decode_mask(b"abc", 4, 4)


def test_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert mask_iou(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(a, np.zeros((2, 2), bool))

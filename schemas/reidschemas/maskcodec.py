"""Binary masks as bytes: row-major bits packed eight to a byte (``numpy.packbits``), with the shape kept aside.

The masks stage and the shards both store masks this way; the trainer decodes them. A 256x128 mask is 4 KiB.
"""

from __future__ import annotations

import numpy as np


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) bool or 0/1 array -> packed bytes (ceil(H * W / 8) of them)."""
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {mask.shape}")
    return np.packbits(mask.astype(bool, copy=False).ravel()).tobytes()


def decode_mask(data: bytes, height: int, width: int) -> np.ndarray:
    """Packed bytes -> (H, W) bool array; the byte count must match the shape."""
    expected = (height * width + 7) // 8
    if len(data) != expected:
        raise ValueError(f"a packed {height}x{width} mask has {expected} bytes, got {len(data)}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=height * width)
    return bits.reshape(height, width).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) boolean masks; 1.0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)

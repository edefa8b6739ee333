"""Loading a triplet's images as arrays, with RGBNT100's side-by-side crop applied."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reidschemas import Modality, SampleRecord


def load_modality(record: SampleRecord, modality: Modality) -> np.ndarray:
    """(H, W, 3) uint8 image of one modality (grey thermal/NIR files are expanded to three channels)."""
    with Image.open(record.path(modality)) as opened:
        box = record.box(modality)
        image = opened.crop(box) if box is not None else opened
        return np.array(image.convert("RGB"))  # a writable copy (torch warns on read-only arrays)

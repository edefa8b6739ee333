"""Pixel normalisation statistics, kept free of torch so that recipes can name them as defaults."""

from __future__ import annotations

__all__ = ["CLIP_MEAN", "CLIP_STD", "HALF"]

# open_clip.constants.OPENAI_DATASET_MEAN / _STD (copied: importing open_clip here would cost seconds per worker).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
# INPUT.PIXEL_MEAN / PIXEL_STD of the DeMo and MambaPro configs (config/defaults.py): maps [0, 1] to [-1, 1].
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)

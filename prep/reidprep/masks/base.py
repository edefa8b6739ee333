"""What every mask provider implements: images of one modality in, one foreground mask and score per image out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from reidschemas import Modality


@dataclass(frozen=True)
class MaskPrediction:
    mask: np.ndarray
    """(H, W) bool, at the size of the input image."""
    score: float
    """The provider's confidence in [0, 1] (SAM2: the predicted IoU of the chosen mask)."""


class MaskProvider(ABC):
    """A foreground segmenter for ReID crops (the object fills most of the crop)."""

    name: ClassVar[str]
    supported_sources: ClassVar[tuple[Modality, ...]] = ("rgb", "nir", "tir")
    cpu_bound: ClassVar[bool] = False
    """True for a provider that computes on the CPU alone (chunks may run in worker processes); False for a model
    on a device, which stays in one process."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the output: provider, model, checkpoint hash, parameters (JSON-able).

        The stage records it with the outputs and fingerprints it, so changing any of it marks old outputs stale.
        """

    @abstractmethod
    def predict(self, images: Sequence[np.ndarray], modality: Modality) -> list[MaskPrediction]:
        """One prediction per image, in order. ``images``: (H, W, 3) uint8 arrays, already cropped (RGBNT100).

        Raise on a failure: the stage retries the images one by one and ledgers the ones that still fail.
        """

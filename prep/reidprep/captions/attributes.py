"""The attribute-provider interface: images of a triplet in, one confidence-aware attribute set per image out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import numpy as np

from reidprep.captions.backends.base import RequestFailure
from reidschemas import AttributeSet, ObjectKind

View = Literal["rgb", "nir", "tir", "composite"]
VIEWS: tuple[View, ...] = get_args(View)
"""The three modality images and the composite: the three side by side in one image (STMI)."""


@dataclass(frozen=True)
class AttributeQuery:
    """One image of one triplet to describe."""

    key: str
    """The triplet key (``SampleRecord.triplet_key``)."""
    view: View
    kind: ObjectKind
    image: np.ndarray
    """(H, W, 3) uint8. For ``composite``: RGB | NIR | TIR side by side, each resized to a common height."""
    mask: np.ndarray | None = None
    """(H, W) bool foreground from the masks stage when it ran (composite: the three side by side)."""


@dataclass(frozen=True)
class AttributeAnswer:
    attributes: AttributeSet
    repairs: tuple[str, ...] = ()
    """What was repaired in the reply to make it valid (code fences, clipped confidences, ...)."""


class AttributeProvider(ABC):
    """Describes images with the attribute template of their kind (pedestrian or vehicle)."""

    name: ClassVar[str]
    cpu_bound: ClassVar[bool] = False
    """True for a provider that computes on the CPU alone (chunks may run in worker processes); False for a model
    on a device or a server (one process: its cache, connections and usage counters live there)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Provider, model, prompt hash, parameters (JSON-able, no secrets); fingerprinted by the stage."""

    @abstractmethod
    def describe(self, queries: Sequence[AttributeQuery]) -> list[AttributeAnswer | RequestFailure]:
        """One answer or failure per query, in order. May raise ``FatalBackendError`` to stop the stage."""


def composite_image(images: Sequence[np.ndarray]) -> np.ndarray:
    """The modality images side by side at the height of the first: (H, W1 + W2 + W3, 3) uint8."""
    from PIL import Image

    height = images[0].shape[0]
    parts = []
    for image in images:
        if image.shape[0] != height:
            width = round(image.shape[1] * height / image.shape[0])
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        parts.append(image)
    return np.concatenate(parts, axis=1)

"""The ``masks`` stage task: one foreground mask per triplet, stored bit-packed at the original image size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from reidprep.images import load_modality
from reidprep.masks.base import MaskProvider
from reidprep.masks.fusion import fuse_masks, resize_mask
from reidprep.stage import Failure, StageTask, WorkUnit
from reidschemas import MODALITIES, Modality
from reidschemas.maskcodec import encode_mask

MASKS_SCHEMA = pa.schema(
    [
        pa.field("triplet_key", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask", pa.binary(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
    + [pa.field(f"{m}_mask", pa.binary()) for m in MODALITIES]
    + [pa.field(f"{m}_score", pa.float32()) for m in MODALITIES]
)
"""One row per triplet. ``mask`` is the triplet mask (``reidschemas.maskcodec``), height x width of the reference
image: the source modality's, or RGB's for ``source=all``. With ``keep_modality_masks`` the three per-modality
masks are kept too, at the same size; otherwise those columns are null."""


class MasksTask(StageTask):
    name = "masks"
    schema = MASKS_SCHEMA

    def __init__(
        self, provider: MaskProvider, source: str, fusion: str = "majority", keep_modality_masks: bool = False
    ) -> None:
        needed = MODALITIES if source == "all" else (source,)
        if not set(needed) <= set(provider.supported_sources):
            raise ValueError(
                f"provider {provider.name} cannot segment source {source!r}; it supports "
                f"{', '.join(provider.supported_sources)}"
            )
        self.provider = provider
        self.source = source
        self.fusion = fusion
        self.keep_modality_masks = keep_modality_masks and source == "all"
        self.modalities: tuple[Modality, ...] = MODALITIES if source == "all" else (source,)  # type: ignore[assignment]

    def identity(self) -> dict[str, Any]:
        return {
            **self.provider.identity(),
            "source": self.source,
            "fusion": self.fusion if self.source == "all" else None,
            "keep_modality_masks": self.keep_modality_masks,
        }

    def parallel(self) -> bool:
        """Chunks run in worker processes (``masks.workers``) with a CPU provider (thermal), never with SAM2."""
        return self.provider.cpu_bound

    def process(self, units: Sequence[WorkUnit]) -> list[dict[str, Any] | Failure]:
        results: dict[str, dict[str, Any] | Failure] = {}
        loaded: list[tuple[WorkUnit, dict[Modality, np.ndarray]]] = []
        for unit in units:
            images = self._load(unit)
            if isinstance(images, Failure):
                results[unit.key] = images
            else:
                loaded.append((unit, images))
        if loaded:
            predictions = {m: self.provider.predict([images[m] for _, images in loaded], m) for m in self.modalities}
            for i, (unit, images) in enumerate(loaded):
                results[unit.key] = self._row(unit, images, {m: predictions[m][i] for m in self.modalities})
        return [results[unit.key] for unit in units]

    def _load(self, unit: WorkUnit) -> dict[Modality, np.ndarray] | Failure:
        """The unit's images of the modalities segmented, or a failure naming the modality that does not read."""
        images = {}
        for m in self.modalities:
            try:
                images[m] = load_modality(unit.record, m)
            except (OSError, ValueError) as exc:
                return Failure(unit.key, f"cannot read an image ({m.upper()}): {exc}", type(exc).__name__, modality=m)
        return images

    def _row(self, unit: WorkUnit, images: dict[Modality, np.ndarray], predictions: dict) -> dict[str, Any]:
        reference = self.modalities[0]  # rgb for "all"
        height, width = images[reference].shape[:2]
        masks = {m: resize_mask(p.mask, height, width) for m, p in predictions.items()}  # (H, W) bool each
        mask = masks[reference] if len(masks) == 1 else fuse_masks(list(masks.values()), self.fusion)
        row: dict[str, Any] = {
            "triplet_key": unit.key,
            "sample_id": unit.record.sample_id,
            "source": self.source,
            "provider": self.provider.name,
            "height": height,
            "width": width,
            "mask": encode_mask(mask),
            "score": float(np.mean([p.score for p in predictions.values()])),
        }
        for m in MODALITIES:
            keep = self.keep_modality_masks and m in masks
            row[f"{m}_mask"] = encode_mask(masks[m]) if keep else None
            row[f"{m}_score"] = float(predictions[m].score) if keep else None
        return row

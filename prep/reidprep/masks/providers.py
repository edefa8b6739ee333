"""Choosing and building the mask provider from the ``masks`` config section."""

from __future__ import annotations

from reidprep.masks.base import MaskProvider
from reidschemas.config import MasksConfig


def provider_name(config: MasksConfig) -> str:
    """``auto`` is sam2 when a checkpoint is configured, else the thermal baseline."""
    if config.provider != "auto":
        return config.provider
    return "sam2" if config.sam2.checkpoint is not None else "thermal"


def resolve_source(config: MasksConfig) -> str:
    """The images to segment: the configured source, else all three for sam2 and tir for thermal."""
    if config.source is not None:
        return config.source
    return "all" if provider_name(config) == "sam2" else "tir"


def make_provider(config: MasksConfig) -> MaskProvider:
    """Build the provider (sam2 imports torch and sam2 only here)."""
    name = provider_name(config)
    if name == "sam2":
        if config.sam2.checkpoint is None:
            raise ValueError("provider sam2 needs a checkpoint: pass --checkpoint or set masks.sam2.checkpoint")
        from reidprep.masks.sam2_provider import Sam2Masker

        return Sam2Masker(config.sam2, device=config.device, batch_size=config.batch_size)
    from reidprep.masks.thermal import ThermalMasker

    return ThermalMasker(config.thermal)

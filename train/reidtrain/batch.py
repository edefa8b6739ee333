"""What a model reads besides the images: the contract between the data side and every registered model.

A model class declares ``inputs``, a tuple drawn from :data:`MODEL_INPUTS` (the baseline declares none):

- ``"token_mask"``: (B, N) bool, the foreground patch tokens of the triplet's mask, row-major over the ViT's patch
  grid (N = rows * cols, the class token not included). Training recomputes it from the augmented mask; evaluation
  uses the resized stored mask. A row without a mask is all False (``has_mask`` (B,) bool says which rows had one).
- ``"captions"``: ``{"rgb", "nir", "tir", "fused"}`` -> list of B strings ("" where the shards hold no caption).
  Models tokenise (``reidtrain.data.text.tokenize_captions``) because NEXT samples sentences per expert. A model
  that reads only some of them says which in ``caption_keys`` (STMI: the fused caption; NEXT: one per modality), so
  ``reidtrain.load(...).embed`` can ask for exactly those.
- ``"labels"``: (B,) int64 training labels, in training batches only (a model's own label-dependent losses, e.g.
  DMPT's center loss); evaluation never passes them.

``forward(images, camids=None, missing=(), **inputs)`` then receives exactly the declared inputs as keywords. Every
model returns ``features`` (triplet loss) and, in train mode, ``logits`` (ID loss): a tensor or a list of tensors,
one per supervised head; in eval mode ``retrieval``. A model may add ``losses``, a dict of scalar tensors (already
weighted) that the objective adds to the total, e.g. DMPT's image-text contrastive and center losses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "CAPTION_KEYS",
    "MODALITY_COLUMNS",
    "MODEL_INPUTS",
    "forward_inputs",
    "item_inputs",
    "model_caption_keys",
    "model_inputs",
]

MODALITY_COLUMNS = ("rgb", "nir", "tir")
MODEL_INPUTS = ("token_mask", "captions", "labels")
CAPTION_KEYS = ("rgb", "nir", "tir", "fused")


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """The extra inputs ``model`` declares (its ``inputs`` attribute); unknown names are a programming error."""
    inputs = tuple(getattr(model, "inputs", ()))
    unknown = sorted(set(inputs) - set(MODEL_INPUTS))
    if unknown:
        raise ValueError(f"{type(model).__name__}.inputs has unknown entries {unknown}; known: {list(MODEL_INPUTS)}")
    return inputs


def model_caption_keys(model: nn.Module) -> tuple[str, ...]:
    """The captions ``model`` reads (its ``caption_keys``; all of :data:`CAPTION_KEYS` when it does not say)."""
    keys = tuple(getattr(model, "caption_keys", CAPTION_KEYS))
    unknown = sorted(set(keys) - set(CAPTION_KEYS))
    if unknown:
        raise ValueError(f"{type(model).__name__}.caption_keys has unknown entries {unknown}; known: {CAPTION_KEYS}")
    return keys


def shard_columns(inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Shard columns to read for a model with ``inputs``: the images, plus the mask and the captions if needed."""
    columns = list(MODALITY_COLUMNS)
    if "token_mask" in inputs:
        columns.append("mask")
    if "captions" in inputs:
        columns.extend(f"caption_{key}" for key in CAPTION_KEYS)
    return tuple(columns)


def item_inputs(inputs: tuple[str, ...], item: Mapping[str, Any], transformed: Mapping[str, Any]) -> dict[str, Any]:
    """One sample's extra inputs: ``item`` from ``ShardDataset``, ``transformed`` from the train or eval transform."""
    extra: dict[str, Any] = {}
    if "token_mask" in inputs:
        extra["token_mask"] = transformed["token_mask"].flatten()  # (N,) bool, row-major
        extra["has_mask"] = transformed["has_mask"]
    if "captions" in inputs:
        captions = item.get("captions") or {}
        extra["captions"] = {key: captions.get(key) or "" for key in CAPTION_KEYS}
    return extra


def forward_inputs(inputs: tuple[str, ...], batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The keyword arguments for ``model.forward`` from a collated batch."""
    kwargs: dict[str, Any] = {}
    if "token_mask" in inputs:
        kwargs["token_mask"] = batch["token_mask"].to(device, non_blocking=True)  # (B, N) bool
    if "captions" in inputs:
        kwargs["captions"] = {key: list(batch["captions"][key]) for key in CAPTION_KEYS}  # {key: B strings}
    if "labels" in inputs and "label" in batch:  # training batches only
        kwargs["labels"] = batch["label"].to(device, non_blocking=True)  # (B,) int64
    return kwargs

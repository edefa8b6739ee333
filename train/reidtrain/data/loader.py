"""The training data path: PK batches read and decoded in DataLoader workers, augmented per batch on the model's device.

Measured (``bench/loader.py``, RESULTS.md): on a CPU core the per-sample transform cost more than decoding the three
JPEGs, so the workers now only read the row, decode (torchvision's libjpeg-turbo), unpack the mask and draw the
augmentation (``TrainTransform.draw``); ``BatchTrainTransform`` does the rest for the whole batch where the model
runs, on uint8 until the normalisation, so a batch crosses PCIe at a quarter of the float32 bytes (plus, under
``erase_fill: noise``, the erased boxes' noise: drawn in the worker from the sample's generator, as the per-sample
transform draws it).
``decode_on="device"`` moves the JPEG decoding to the GPU as well (nvJPEG, one call per batch): for hosts with few
cores per GPU; not the default until measured on a GPU.

Reproducibility: every sample's draws come from its own seed, drawn from (PK seed, epoch, rank, position), so the
augmentation does not depend on the number of workers, and workers can persist across epochs (no per-epoch fork).
The DataLoader's own seeding uses a private generator, so the global RNG (dropout) sees the same draws whether the
workers are new or persistent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from reidtrain.data.augment import BatchTrainTransform, TrainTransform
from reidtrain.data.decode import decode_images, resize_uint8
from reidtrain.data.items import TrainItems
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import LabelMap, ShardDataset

__all__ = ["DeviceBatches", "SeededBatches", "auto_workers", "collate_train", "train_loader"]

MAX_AUTO_WORKERS = 8


def auto_workers(device: torch.device, cpus: int | None = None) -> int:
    """DataLoader workers when the run does not say: 0 on CPU (the step is all compute: RESULTS.md, 0.2% data),
    on CUDA one per core but one, at most ``MAX_AUTO_WORKERS`` (the main process feeds the GPU)."""
    if device.type != "cuda":
        return 0
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cpus - 1))


class SeededBatches:
    """A PK sampler's batches as lists of (dataset index, augmentation seed), the seeds drawn from (PK seed, epoch,
    rank, position in the epoch)."""

    def __init__(self, sampler: PKSampler) -> None:
        self.sampler = sampler
        self.batches = sampler.batch_sampler()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.sampler
        batches = list(self.batches)
        total = sum(len(b) for b in batches)
        sequence = np.random.SeedSequence([s.seed, s.epoch, s.rank, 0xA06])
        seeds = iter(sequence.generate_state(total, dtype=np.uint64).tolist())
        for batch in batches:
            yield [(int(index), next(seeds) >> 1) for index in batch]  # >> 1: manual_seed takes < 2**63


def collate_train(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate``, except the still encoded images (``decode_on="device"``): kept as B lists of 3 tensors,
    and the erasing noise (one length per sample): concatenated in batch order, as ``BatchTrainTransform`` reads it."""
    encoded = [sample.pop("encoded") for sample in samples] if "encoded" in samples[0] else None
    noise = torch.cat([sample.pop("noise") for sample in samples]) if "noise" in samples[0] else None
    batch = default_collate(samples)
    if encoded is not None:
        batch["encoded"] = encoded
    if noise is not None:
        batch["noise"] = noise
    return batch


class DeviceBatches:
    """The batches of a ``TrainItems`` DataLoader on ``device``, augmented (``BatchTrainTransform``): what
    ``train_one_epoch`` iterates. ``images`` (B, 3, 3, H, W) float32 and, for models that read it, ``token_mask``
    (B, N) and ``has_mask`` arrive on ``device``; the rest as collated."""

    def __init__(self, loader: DataLoader, transform: TrainTransform, device: torch.device, image_format: str) -> None:
        self.loader, self.device, self.image_format = loader, device, image_format
        self.size = transform.size
        self.augment = BatchTrainTransform(transform)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield self.prepare(batch)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A collated ``TrainItems`` batch -> the model's batch on ``device``."""
        if "encoded" in batch:
            images = self._decode(batch.pop("encoded"), batch.pop("stored_size"))
        else:
            images = batch["images"].to(self.device, non_blocking=True)  # (B, 3, 3, H, W) uint8
        mask = batch.get("mask")
        out = self.augment(
            images,
            None if mask is None else mask.to(self.device, non_blocking=True),
            batch["has_mask"].to(self.device, non_blocking=True),
            batch["draws"].to(self.device, non_blocking=True),
            batch.pop("noise").to(self.device, non_blocking=True) if "noise" in batch else None,
        )
        batch["images"] = out["images"]
        if mask is not None:
            batch["token_mask"] = out["token_mask"].flatten(1)  # (B, N) row-major, as reidtrain.batch says
            batch["has_mask"] = out["has_mask"]
            del batch["mask"]
        return batch

    def _decode(self, encoded: list[list[torch.Tensor]], stored: torch.Tensor) -> torch.Tensor:
        """B x 3 encoded images -> (B, 3, 3, H, W) uint8 on ``device``, in one decode call."""
        flat = [image for triplet in encoded for image in triplet]
        h, w = (int(v) for v in stored[0])
        decoded = decode_images(flat, self.image_format, h, w, self.device)
        if any(tuple(x.shape[-2:]) != self.size for x in decoded):  # shards at another size than the model's
            decoded = [resize_uint8(x, self.size) for x in decoded]
        return torch.stack(decoded).view(len(encoded), 3, 3, *self.size)


def train_loader(
    dataset: ShardDataset,
    transform: TrainTransform,
    labels: LabelMap,
    inputs: tuple[str, ...],
    sampler: PKSampler,
    device: torch.device,
    workers: int,
    decode_on: str = "workers",
) -> DeviceBatches:
    """The trainer's batches: ``TrainItems`` in a DataLoader over ``SeededBatches``, augmented on ``device``."""
    formats = {str(f) for f in dataset.column("image_format")} if len(dataset) else {"jpeg"}
    if decode_on == "device" and formats != {"jpeg"}:
        raise ValueError(f"decode_on='device' decodes JPEG shards; these hold {sorted(formats)}: decode in the workers")
    loader = DataLoader(
        TrainItems(dataset, transform, labels, inputs, decode_on=decode_on),
        batch_sampler=SeededBatches(sampler),
        num_workers=workers,
        collate_fn=collate_train,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),  # worker seeding never touches the global RNG
    )
    return DeviceBatches(loader, transform, device, next(iter(formats)))

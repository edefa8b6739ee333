"""Shard rows as model-ready tensors: per sample (``ShardItems``: evaluation, and the per-sample reference path) or
decoded but not yet augmented, for augmentation per batch on the model's device (``TrainItems``: training)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from reidschemas.maskcodec import decode_mask
from reidtrain.batch import item_inputs
from reidtrain.data.augment import AugmentedTriplet, TrainTransform
from reidtrain.data.decode import as_byte_tensor, decode_images, resize_uint8
from reidtrain.data.shards import CAPTION_TARGETS, MODALITIES, LabelMap, ShardDataset

__all__ = ["DECODE_ON", "ShardItems", "TrainItems"]

DECODE_ON = ("workers", "device")

Transform = Callable[[np.ndarray, np.ndarray | None], AugmentedTriplet]


class ShardItems(Dataset):
    """One split's rows: transformed images (3, 3, H, W), camera index (SIE), raw pid, camid, sceneid (-1: none),
    the model's extra inputs (``reidtrain.batch``), and with ``with_labels`` the class label of a training id.

    ``transform`` is :class:`~reidtrain.data.augment.TrainTransform` (random, torch's global RNG, reseeded every
    epoch) or :class:`~reidtrain.data.augment.EvalTransform` (deterministic).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        transform: Transform,
        labels: LabelMap,
        inputs: tuple[str, ...] = (),
        *,
        with_labels: bool = False,
    ) -> None:
        self.dataset, self.transform, self.labels, self.inputs = dataset, transform, labels, inputs
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        out = self.transform(item["images"], item["mask"])
        scene = item["sceneid"]
        row = {
            "images": out["images"],
            "cam_index": self.labels.camid_to_index[int(item["camid"])],
            "pid": int(item["pid"]),
            "camid": int(item["camid"]),
            "sceneid": -1 if scene is None else int(scene),
            **item_inputs(self.inputs, item, out),
        }
        if self.with_labels:
            row["label"] = self.labels.pid_to_label[int(item["pid"])]
        return row


class TrainItems(Dataset):
    """Training rows for :class:`~reidtrain.data.augment.BatchTrainTransform` (``reidtrain.data.loader``): the
    DataLoader workers read, decode and draw; flip, pad-crop, normalisation, erasing and the token mask run once
    per batch on the model's device.

    ``items[(index, seed)]`` (``SeededBatches`` yields such pairs) is a dict: ``images`` (3, 3, H, W) uint8 at the
    model size (or, with ``decode_on="device"``, ``encoded``: the three images' bytes as uint8 tensors, decoded with
    nvJPEG per batch), ``mask`` (H, W) bool when the model reads the token mask (all False without one),
    ``has_mask``, ``draws`` (``TrainTransform.draw`` from a generator seeded with ``seed``: the augmentation does not
    depend on which worker reads the row; its ``values``, and for ``erase_value="random"`` its ``noise`` as
    ``noise``), ``cam_index``, ``pid``, ``camid``, ``sceneid``, ``label`` and the model's
    captions. Shards stored at another size than the model's are resized here, on uint8 (``resize_uint8``).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        transform: TrainTransform,
        labels: LabelMap,
        inputs: tuple[str, ...] = (),
        *,
        decode_on: str = "workers",
    ) -> None:
        if decode_on not in DECODE_ON:
            raise ValueError(f"decode_on must be one of {DECODE_ON}, not {decode_on!r}")
        self.dataset, self.transform, self.labels, self.inputs = dataset, transform, labels, inputs
        self.decode_on = decode_on
        self.with_mask = "token_mask" in inputs and "mask" in dataset.columns

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        values = self.dataset.row(int(index))
        h, w, fmt = int(values["height"]), int(values["width"]), str(values["image_format"])
        encoded = [values[m] for m in MODALITIES]
        row: dict[str, Any] = {}
        if self.decode_on == "device":
            row["encoded"] = [as_byte_tensor(data) for data in encoded]
            row["stored_size"] = torch.tensor([h, w])
        else:
            images = torch.stack(decode_images(encoded, fmt, h, w))  # (3, 3, h, w)
            row["images"] = resize_uint8(images, self.transform.size)  # (3, 3, H, W)
        packed = values.get("mask")
        row["has_mask"] = torch.tensor(self.with_mask and packed is not None)
        if self.with_mask:
            mask = (
                torch.from_numpy(decode_mask(packed, h, w))
                if packed is not None
                else torch.zeros(h, w, dtype=torch.bool)
            )
            if (h, w) != self.transform.size:  # nearest-exact keeps it binary, as TrainTransform
                mask = torch.nn.functional.interpolate(mask[None, None].float(), size=self.transform.size,
                                                       mode="nearest-exact")[0, 0].bool()  # fmt: skip
            row["mask"] = mask  # (H, W)
        draws = self.transform.draw(torch.Generator().manual_seed(int(seed)))
        row["draws"] = draws.values
        if self.transform.erase_value == "random":
            row["noise"] = draws.noise  # (n,) float32, its length depends on the boxes: concatenated by collate_train
        scene = values["sceneid"]
        row.update(
            cam_index=self.labels.camid_to_index[int(values["camid"])],
            pid=int(values["pid"]),
            camid=int(values["camid"]),
            sceneid=-1 if scene is None else int(scene),
            label=self.labels.pid_to_label[int(values["pid"])],
        )
        captions = {t: values.get(f"caption_{t}") for t in CAPTION_TARGETS}
        row.update(item_inputs(tuple(i for i in self.inputs if i == "captions"), {"captions": captions}, {}))
        return row

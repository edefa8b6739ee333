"""Shard rows as model-ready tensors, for training and for query/gallery feature extraction alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from reidtrain.batch import item_inputs
from reidtrain.data.augment import AugmentedTriplet
from reidtrain.data.shards import LabelMap, ShardDataset

__all__ = ["ShardItems"]

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

"""Small real stage tasks for testing the stage machinery (not tests themselves)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from reidprep.stage import Failure, StageTask, WorkUnit


class MeanPixelTask(StageTask):
    """Mean pixel value of each triplet's RGB image; raises on the keys in ``fail_keys`` (a corrupt image)."""

    name = "means"
    schema = pa.schema([pa.field("triplet_key", pa.string(), nullable=False), pa.field("rgb_mean", pa.float64())])

    def __init__(self, fail_keys: Sequence[str] = (), delay: float = 0.0, tag: str = "v1", soft_fail: bool = False):
        self.fail_keys = set(fail_keys)
        self.delay = delay
        self.tag = tag
        self.soft_fail = soft_fail
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"provider": "mean", "tag": self.tag}

    def process(self, units: Sequence[WorkUnit]) -> list[dict[str, Any] | Failure]:
        self.calls += 1
        results: list[dict[str, Any] | Failure] = []
        for unit in units:
            time.sleep(self.delay)
            if unit.key in self.fail_keys:
                if self.soft_fail:
                    results.append(Failure(unit.key, "image is corrupt", "CorruptImage"))
                    continue
                raise ValueError(f"cannot decode {unit.record.rgb_path}")
            with Image.open(unit.record.rgb_path) as image:
                results.append({"triplet_key": unit.key, "rgb_mean": float(np.asarray(image).mean())})
        return results

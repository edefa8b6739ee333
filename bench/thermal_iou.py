"""Mask IoU of the ``thermal`` baseline provider against the synthetic dataset's ground truth, day and night.

python bench/thermal_iou.py --kind person vehicle --ids 30 --images-per-id 6 --seeds 0 1 2
python bench/thermal_iou.py --param background_margin=0 --param otsu_levels=1   # the textbook Otsu pipeline

Generates each (kind, seed) dataset in a temporary folder, segments every thermal image with ``ThermalConfig``
(defaults, or ``--param`` overrides) and prints mean / median / min IoU per kind, overall and split by the
``capture_time`` attribute.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reidprep.masks.thermal import ThermalMasker
from reidprep.synth import generate_dataset
from reidschemas.config import ThermalConfig
from reidschemas.maskcodec import mask_iou

RGB_TO_TIR = {"person": ("/RGB/", "/TI/"), "vehicle": ("/vis/", "/th/")}


def dataset_ious(root: Path, kind: str, masker: ThermalMasker) -> tuple[list[float], list[str], float]:
    """IoU of every thermal image of one dataset, its capture time, and the seconds spent in ``predict``."""
    ious, times, seconds = [], [], 0.0
    rgb_dir, tir_dir = RGB_TO_TIR[kind]
    for line in (root / "groundtruth" / "attributes.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        rel = record["file"].replace(rgb_dir, tir_dir)
        with Image.open(root / rel) as file:
            image = np.asarray(file.convert("RGB"))
        with Image.open(root / "groundtruth" / "masks" / Path(rel).with_suffix(".png")) as file:
            truth = np.asarray(file) > 127
        start = time.perf_counter()
        (prediction,) = masker.predict([image], "tir")
        seconds += time.perf_counter() - start
        ious.append(mask_iou(prediction.mask, truth))
        times.append(record["attributes"]["capture_time"])
    return ious, times, seconds


def describe(label: str, ious: list[float]) -> str:
    if not ious:
        return f"  {label:5s} n=   0"
    a = np.asarray(ious)
    return (
        f"  {label:5s} n={a.size:4d}  mean {a.mean():.3f}  median {np.median(a):.3f}  min {a.min():.3f}"
        f"  (IoU < 0.5: {(a < 0.5).mean():.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", nargs="+", choices=["person", "vehicle"], default=["person", "vehicle"])
    parser.add_argument("--ids", type=int, default=30)
    parser.add_argument("--images-per-id", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a ThermalConfig field")
    args = parser.parse_args()
    params = dict(item.split("=", 1) for item in args.param)
    masker = ThermalMasker(ThermalConfig.model_validate(params))
    print(f"thermal baseline, parameters {masker.identity()['params']}")
    for kind in args.kind:
        ious: list[float] = []
        times: list[str] = []
        seconds = 0.0
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                written = generate_dataset(
                    Path(out), kind=kind, ids=args.ids, images_per_id=args.images_per_id, seed=seed
                )
                seed_ious, seed_times, seed_seconds = dataset_ious(written.root, kind, masker)
            ious += seed_ious
            times += seed_times
            seconds += seed_seconds
        print(f"{kind}: seeds {args.seeds}, {seconds / len(ious) * 1e3:.1f} ms per image")
        print(describe("all", ious))
        print(describe("day", [v for v, t in zip(ious, times, strict=True) if t == "daytime"]))
        print(describe("night", [v for v, t in zip(ious, times, strict=True) if t == "nighttime"]))


if __name__ == "__main__":
    main()

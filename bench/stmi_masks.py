"""Does STMI's mask guidance help? Baseline vs STMI vs STMI without SFM, same budget and seeds, on synthetic persons.

OMP_NUM_THREADS=1 python bench/stmi_masks.py --ids 40 --images-per-id 8 --epochs 8 --seeds 0 1

Builds a synthetic person dataset through the real prep pipeline (``reidprep run``: synth -> index -> thermal masks ->
heuristic captions -> shards; ``tests/train/conftest.py``'s ``build_full_shards``), then trains each model with
``reidtrain.trainer.fit`` from a random tiny CLIP (2 layers, 64 wide) on the CPU with the ``stmi-tiny-demo`` recipe
(the same lrs, epochs, batches, augmentation and image size for all; ``--epochs`` / ``--image-size`` override it)
and prints the test mAP / R1 of the last epoch (and the best epoch's mAP) per model and seed, and their means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from reidschemas.config import TrainConfig
from reidtrain.trainer import fit

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline", {}),
    "stmi": ("stmi", {}),  # the paper's best setting (stmi.py defaults)
    "stmi w/o SFM": ("stmi", {"sfm": False}),
    "baseline + SFM": ("stmi", {"use_str": False, "retrieval": "global"}),  # Table 3 B; not run by default
}
DEFAULT_VARIANTS = ["baseline", "stmi", "stmi w/o SFM"]


def build_shards(root: Path, ids: int, images_per_id: int, seed: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))
    from conftest import build_full_shards

    return build_full_shards(root, "person", ids=ids, images_per_id=images_per_id, seed=seed)


def train_one(
    shards: Path, out: Path, model: str, options: dict[str, Any], seed: int, overrides: dict[str, Any]
) -> dict[str, float]:
    start = time.perf_counter()
    fit(
        TrainConfig(
            shards=shards,
            output=out,
            recipe="stmi-tiny-demo",
            set={**overrides, "model_options": options},
            model=model,
            backbone="tiny",
            random_init=True,
            seed=seed,
        ),
        progress=False,
        echo=lambda _: None,
    )
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    return {
        "mAP": 100 * last["mAP"],
        "R1": 100 * last["R1"],
        "best_mAP": 100 * max(line["mAP"] for line in lines),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="recipe epochs (default: the recipe's)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="extra STMI model option (YAML value)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep shards and runs here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)}
    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.image_size is not None:
        overrides["image_size"] = list(args.image_size)

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        start = time.perf_counter()
        shards = build_shards(Path(tmp), args.ids, args.images_per_id, args.data_seed)
        print(
            f"shards: {args.ids} ids x {args.images_per_id} triplets, data seed {args.data_seed} "
            f"({time.perf_counter() - start:.0f} s); recipe stmi-tiny-demo, overrides {overrides or 'none'}, "
            f"STMI options {extra or 'defaults'}"
        )
        results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
        for seed in args.seeds:
            for name in args.variants:
                model, options = VARIANTS[name]
                options = {**options, **extra} if model == "stmi" else options
                out = Path(tmp) / "runs" / f"{name.replace(' ', '_').replace('/', '')}-{seed}"
                r = train_one(shards, out, model, options, seed, overrides)
                results[name].append(r)
                print(
                    f"  seed {seed}  {name:14s} mAP {r['mAP']:5.1f}  R1 {r['R1']:5.1f}  "
                    f"(best mAP {r['best_mAP']:5.1f})  {r['seconds']:5.0f} s",
                    flush=True,
                )

    print("\n| model | test mAP (last epoch) | R1 | best-epoch mAP | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        mean = {key: statistics.mean(r[key] for r in runs) for key in ("mAP", "R1", "best_mAP")}
        spread = " / ".join(f"{r['mAP']:.1f}" for r in runs)
        print(f"| {name} | {mean['mAP']:.1f} ({spread}) | {mean['R1']:.1f} | {mean['best_mAP']:.1f} | {len(runs)} |")


if __name__ == "__main__":
    main()

"""Time the sam2 mask provider: images per second of the per-image loop against the batched encoder path.

python bench/masks.py --images 64 --batch-size 8 --device cpu
python bench/masks.py --device cuda --config tiny --checkpoint sam2.1_hiera_tiny.pt   # a real model, if you have one

Without --checkpoint it builds the tiny random SAM 2.1 of the tests (tests/prep/sam2_tiny.py) in a temporary folder.
Input: random uint8 crops of 256x128 (h x w), the RGBNT201 person size. Each path runs once to warm up, then the
best of --repeats is reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reidprep.masks.base import MaskPrediction
from reidprep.masks.sam2_provider import Sam2Masker
from reidschemas.config import Sam2Config


def best_seconds(run: Callable[[], list[MaskPrediction]], repeats: int) -> tuple[float, list[MaskPrediction]]:
    run()  # warm-up (TorchScript transforms, CUDA kernels)
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default=None, help="masks.sam2.model for a real checkpoint (default: tiny)")
    parser.add_argument("--version", choices=["2", "2.1"], default="2.1")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a real SAM 2 checkpoint; default: tiny random")
    parser.add_argument("--prompt", choices=["box", "box+center"], default="box")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "prep"))
            from sam2_tiny import make_tiny_sam2_checkpoint

            checkpoint = Path(tmp) / "tiny.pt"
            name, overrides = make_tiny_sam2_checkpoint(checkpoint, seed=args.seed)
            config = Sam2Config(model=name, checkpoint=checkpoint, overrides=overrides, prompt=args.prompt)
            label = "tiny random SAM 2.1 (tests/prep/sam2_tiny.py)"
        else:
            config = Sam2Config(
                model=args.config or "tiny", version=args.version, checkpoint=args.checkpoint, prompt=args.prompt
            )
            label = str(args.checkpoint)
        masker = Sam2Masker(config, device=args.device, batch_size=args.batch_size)

        rng = np.random.default_rng(args.seed)
        images = [rng.integers(0, 256, (256, 128, 3), dtype=np.uint8) for _ in range(args.images)]
        loop_s, loop_out = best_seconds(lambda: masker.predict_one_by_one(images, "rgb"), args.repeats)
        batch_s, batch_out = best_seconds(lambda: masker.predict(images, "rgb"), args.repeats)

    same = sum(np.array_equal(a.mask, b.mask) for a, b in zip(loop_out, batch_out, strict=True))
    print(f"model: {label} ({masker.config_name}), device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{args.images} random 256x128 crops, prompt {args.prompt}, best of {args.repeats}")
    batched = f"batched (set_image_batch, batch {args.batch_size})"
    print(f"{'per-image loop (set_image + predict)':40s} {loop_s:7.3f} s  {args.images / loop_s:8.1f} images/s")
    print(f"{batched:40s} {batch_s:7.3f} s  {args.images / batch_s:8.1f} images/s  ({loop_s / batch_s:.2f}x)")
    print(f"identical masks on both paths: {same}/{args.images}")


if __name__ == "__main__":
    main()

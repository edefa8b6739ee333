"""Time ``reidprep synth``: seconds for N triplets of persons and of vehicles (goal: 1,000 in well under a minute).

python bench/bench_synth.py --ids 100 --images-per-id 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reidprep.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--images-per-id", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for kind in ("person", "vehicle"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = generate_dataset(
                Path(out), kind=kind, ids=args.ids, images_per_id=args.images_per_id, seed=args.seed
            )
            seconds = time.perf_counter() - start
            triplets = sum(summary.triplets.values())
            size_mb = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 2**20
        rate = triplets / seconds
        print(f"{kind:8s} {triplets} triplets in {seconds:6.2f} s  ({rate:6.1f} triplets/s, {size_mb:.1f} MB)")


if __name__ == "__main__":
    main()

"""Samples per second: decoding a training stream from the shards against PIL reading the dataset folders.

Both paths produce, per sample, the three modality images as (H, W, 3) uint8 arrays at the model input size
(persons 256x128), in the same order, with the same number of threads. The folder path does what the reference
repos' loaders do: ``Image.open(path).convert("RGB")`` per modality file, then a bicubic resize. The shard path
reads Parquet row groups (images already at the stored size) and decodes the JPEG bytes, plus the packed mask.

    python bench/loader.py --ids 60 --images-per-id 10 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from reidprep.index import run_index
from reidprep.manifest import read_manifest, sort_records
from reidprep.masks.providers import make_provider
from reidprep.masks.stage import MasksTask
from reidprep.shards.build import build_shards
from reidprep.stage import StageOptions, run_stage
from reidprep.synth import generate_dataset
from reidschemas import SampleRecord
from reidschemas.config import MasksConfig, ShardsConfig
from reidschemas.shards import decode_batch

SIZE = (128, 256)  # PIL (width, height) of the person model input


def _from_folders(record: SampleRecord) -> list[np.ndarray]:
    out = []
    for path in (record.rgb_path, record.nir_path, record.tir_path):
        with Image.open(path) as image:
            out.append(np.asarray(image.convert("RGB").resize(SIZE, Image.BICUBIC)))
    return out


def folder_stream(records: list[SampleRecord], threads: int) -> int:
    with ThreadPoolExecutor(threads) as pool:
        return sum(1 for _ in pool.map(_from_folders, records))


def shard_stream(shards: list[Path], threads: int) -> int:
    """Row group by row group, as a training loader reads: ``decode_batch`` (raw: no per-row objects)."""
    count = 0
    columns = ["rgb", "nir", "tir", "mask", "height", "width", "image_format"]
    groups = [(path, g) for path in shards for g in range(pq.ParquetFile(path).num_row_groups)]

    def read(item: tuple[Path, int]) -> int:
        path, group = item
        batch = decode_batch(pq.ParquetFile(path).read_row_group(group, columns=columns))
        return len(batch["rgb"])

    with ThreadPoolExecutor(threads) as pool:
        count = sum(pool.map(read, groups))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=60)
    parser.add_argument("--images-per-id", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-format", choices=["jpeg", "png", "raw"], default="jpeg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(root / "data", kind="person", ids=args.ids, images_per_id=args.images_per_id, seed=0)
        run_index(root / "w", "rgbnt201", root / "data")
        masks = MasksConfig(provider="thermal")
        run_stage(MasksTask(make_provider(masks), "tir"), root / "w", StageOptions(chunk_size=256))
        summary = build_shards(root / "w", ShardsConfig(require=["masks"], image_format=args.image_format))
        print(summary.line())
        records = sort_records(read_manifest(root / "w" / "index" / "manifest.parquet"))
        shards = sorted((root / "w" / "shards").glob("shard-*.parquet"))
        timings = {}
        for name, run in (("folders (PIL per file)", lambda: folder_stream(records, args.threads)),
                          ("shards (Parquet row groups)", lambda: shard_stream(shards, args.threads))):  # fmt: skip
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                n = run()
                best = min(best, time.perf_counter() - start)
            assert n == len(records)
            timings[name] = n / best
            print(f"{name:30s} {n} samples in {best:6.2f} s  {n / best:8.1f} samples/s  ({args.threads} threads)")
        shard_mb = sum(p.stat().st_size for p in shards) / 2**20
        folder_mb = sum(Path(p).stat().st_size for r in records for p in (r.rgb_path, r.nir_path, r.tir_path)) / 2**20
        print(f"bytes: shards {shard_mb:.1f} MB ({args.image_format}), dataset files {folder_mb:.1f} MB")
        folders, shard = timings.values()
        print(f"ratio shards / folders: {shard / folders:.2f}x")


if __name__ == "__main__":
    main()

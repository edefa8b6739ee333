"""Does NEXT's text modulation help? Baseline vs NEXT vs NEXT with captions shuffled across identities (CPU, tiny).

Builds the synthetic person set with `reidprep run` (synth -> index -> thermal masks -> heuristic captions -> shards),
writes a copy of the shards whose four caption columns are permuted jointly over all rows (train, query and gallery,
one seeded permutation), so every image reads the caption of a random other image: text that carries no identity.
Then trains every variant through the real ``reidtrain.trainer.fit`` with the same recipe (``next-tiny-demo``, the
baseline with its model options cleared), budget and seeds, tiny CLIP from random init, and prints test mAP / R1.

OMP_NUM_THREADS=1 python bench/next_text.py --ids 40 --images-per-id 8 --epochs 20 --seeds 0 1 2
(add ``--variants baseline next next-shuffled-text next-no-text`` for NEXT without Eq. 5-6 as a fourth row)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from gpusuite.training import build_shards  # bench/ is on sys.path when run as a script

from reidschemas.config import TrainConfig
from reidtrain.trainer import fit

CAPTION_COLUMNS = ("caption_rgb", "caption_nir", "caption_tir", "caption_fused")
# Changes to next-tiny-demo for every variant alike, chosen on the baseline alone (seed 0, 8-20 epochs) so that a
# random-init tiny ViT gets above chance on 28 training ids: lr 3e-3 (1e-3 barely moved), P x K = 8 x 2, and no
# padding / random erasing (both slowed the baseline down at 64x32).
BENCH_OVERRIDES: dict[str, object] = {
    "base_lr": 3e-3,
    "backbone_lr": 3e-3,
    "ids_per_batch": 8,
    "instances_per_id": 2,
    "augment": {"flip_p": 0.5, "pad": 0, "erase_p": 0.0},
}
# name -> (model, model_options, shards: "real" or "shuffled")
VARIANTS: dict[str, tuple[str, dict[str, object], str]] = {
    "baseline": ("baseline", {}, "real"),
    "next": ("next", {"num_semantic_experts": 2, "num_structure_experts": 2}, "real"),
    "next-shuffled-text": ("next", {"num_semantic_experts": 2, "num_structure_experts": 2}, "shuffled"),
    "next-no-text": ("next", {"num_semantic_experts": 2, "num_structure_experts": 2, "text_modulation": False}, "real"),
}


def shuffle_captions(shards: Path, out: Path, seed: int) -> Path:
    """A copy of ``shards`` whose caption columns are permuted jointly over all rows of all shard files."""
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((shards / "dataset.json").read_text())
    tables = [pq.read_table(shards / shard["file"]) for shard in info["shards"]]
    captions = {c: pa.concat_arrays([t.column(c).combine_chunks() for t in tables]) for c in CAPTION_COLUMNS}
    order = pa.array(np.random.default_rng(seed).permutation(sum(t.num_rows for t in tables)))
    shuffled = {c: captions[c].take(order) for c in CAPTION_COLUMNS}
    start = 0
    for shard, table in zip(info["shards"], tables, strict=True):
        for c in CAPTION_COLUMNS:
            column = shuffled[c].slice(start, table.num_rows)
            table = table.set_column(table.schema.get_field_index(c), table.schema.field(c), column)
        start += table.num_rows
        row_group = pq.ParquetFile(shards / shard["file"]).metadata.row_group(0).num_rows
        pq.write_table(table, out / shard["file"], row_group_size=row_group)
    shutil.copy(shards / "dataset.json", out / "dataset.json")
    return out


def run_variant(name: str, shards: Path, output: Path, epochs: int, seed: int) -> dict[str, float]:
    model, options, _ = VARIANTS[name]
    overrides = {**BENCH_OVERRIDES, "epochs": epochs, "warmup_epochs": min(1, epochs - 1), "model_options": options}
    start = time.perf_counter()
    summary = fit(
        TrainConfig(
            shards=shards,
            output=output,
            recipe="next-tiny-demo",
            set=overrides,
            model=model,
            backbone="tiny",
            random_init=True,
            seed=seed,
        ),
        progress=False,
        echo=lambda _: None,
    )
    last = json.loads((output / "metrics.jsonl").read_text().splitlines()[-1])
    chance = getattr(summary, "chance_map", None)  # mAP of random rankings of the same test set, when computed
    return {
        "mAP": 100 * last["mAP"],
        "R1": 100 * last["R1"],
        "seconds": time.perf_counter() - start,
        "chance_mAP": float("nan") if chance is None else 100 * chance,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS)[:3], choices=list(VARIANTS))
    parser.add_argument("--workdir", type=Path, default=None, help="keep shards and runs here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        real = build_shards(root / "data", args.ids, args.images_per_id, args.data_seed)
        shards = {"real": real, "shuffled": shuffle_captions(real, root / "shuffled", seed=args.data_seed)}
        rows = json.loads((real / "dataset.json").read_text())["rows_per_split"]
        print(f"shards {rows} built in {time.perf_counter() - start:.0f} s")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
        for seed in args.seeds:
            for name in args.variants:
                kind = VARIANTS[name][2]
                result = run_variant(name, shards[kind], root / "runs" / f"{name}-seed{seed}", args.epochs, seed)
                results[name].append(result)
                scores = f"mAP {result['mAP']:5.1f}  R1 {result['R1']:5.1f}"
                chance = f"(random ranking: mAP {result['chance_mAP']:.1f})"
                print(f"seed {seed} {name:20s} {scores}  {result['seconds']:.0f} s  {chance}")
        print(f"\n| variant | mAP (seeds {' / '.join(map(str, args.seeds))}) | mean mAP | R1 | mean R1 | s / run |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, runs in results.items():
            maps, r1s = [r["mAP"] for r in runs], [r["R1"] for r in runs]
            seconds = statistics.mean(r["seconds"] for r in runs)
            print(
                f"| {name} | {' / '.join(f'{v:.1f}' for v in maps)} | {statistics.mean(maps):.1f} | "
                f"{' / '.join(f'{v:.1f}' for v in r1s)} | {statistics.mean(r1s):.1f} | {seconds:.0f} |"
            )


if __name__ == "__main__":
    main()

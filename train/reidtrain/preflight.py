"""What ``reidtrain fit`` checks and says before its first step: the shards' facts, the refusals, the start block.

Refusals (each one line, each with its override, also a key of pipeline.yaml's train section):

- the recipe's image size is portrait and the shards' stored images landscape, or the reverse
  (``--allow-orientation-mismatch``);
- an input the model declares (``token_mask``: the mask, ``captions``: the fused caption) is missing on more than
  1% of the train rows, e.g. shards built with ``--missing null`` (``--allow-missing-inputs``);
- the shards folder lives in a prep workdir and was built from other index/masks/captions outputs than the
  workdir's current complete ones (``--allow-stale-shards``).

Train ids that also appear in query/gallery are a warning, not a refusal (WMVEID863 has seven).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from reidschemas.config import TrainConfig
from reidschemas.stages import is_workdir, stale_inputs
from reidtrain.data.shards import ShardDataset, ShardIndex

__all__ = [
    "ALLOW_KEYS",
    "MISSING_LIMIT",
    "FitRefused",
    "ShardFacts",
    "SplitFacts",
    "orientation",
    "refusals",
    "shard_facts",
    "start_block",
]

ALLOW_KEYS = ("allow_orientation_mismatch", "allow_missing_inputs", "allow_stale_shards")
"""The overrides of the refusals: TrainConfig keys, and ``--allow-...`` options of ``reidtrain fit``."""
MISSING_LIMIT = 0.01  # a declared input may be missing on at most this share of the train rows
INPUT_COLUMNS = {"token_mask": ("mask", "mask"), "captions": ("caption_fused", "fused caption")}
"""A declared model input -> (the shard column whose presence it needs, what the block calls it)."""


class FitRefused(ValueError):
    """``fit`` will not train this run as configured (the message names the override)."""


@dataclass(frozen=True)
class SplitFacts:
    rows: int
    ids: int
    cameras: int


@dataclass(frozen=True)
class ShardFacts:
    """What the start block reports and the refusals check, read from the index and light columns only."""

    splits: dict[str, SplitFacts]  # split -> rows, ids, cameras
    stored_sizes: dict[tuple[int, int], int]  # (H, W) -> train rows stored at that size
    coverage: dict[str, float]  # declared input -> share of train rows that carry it
    shared_ids: list[int]  # train ids that also appear in query or gallery
    workdir: Path | None  # the prep workdir the shards folder lives in (None: not in one)
    stale: list[str]  # why the shards are stale against that workdir (empty: fresh or not checked)

    @property
    def stored_orientation(self) -> str:
        """The orientation of most train rows' stored size."""
        counts: Counter[str] = Counter()
        for size, n in self.stored_sizes.items():
            counts[orientation(size)] += n
        return counts.most_common(1)[0][0] if counts else "square"


def orientation(size: tuple[int, int]) -> str:
    """(H, W) -> "portrait" (H > W), "landscape" (W > H) or "square"."""
    h, w = size
    return "portrait" if h > w else "landscape" if w > h else "square"


def _present(index: ShardIndex, column: str, split: str = "train") -> tuple[int, int]:
    """(rows of ``split`` whose ``column`` is set and non-empty, rows of ``split``), reading only that column."""
    present = total = 0
    files: dict[str, pq.ParquetFile] = {}
    try:
        for group in index.row_groups:
            wanted = [i for i, name in enumerate(group.splits) if name == split]
            if not wanted:
                continue
            if group.file not in files:
                files[group.file] = pq.ParquetFile(index.root / group.file)
            values = files[group.file].read_row_group(group.row_group, columns=[column]).column(column)
            present += sum(1 for i in wanted if values[i].is_valid and len(values[i].as_py() or "") > 0)
            total += len(wanted)
    finally:
        for handle in files.values():
            handle.close()
    return present, total


def shard_facts(index: ShardIndex, inputs: tuple[str, ...]) -> ShardFacts:
    """Ids, cameras and rows per split, the train rows' stored sizes, the coverage of ``inputs`` on train rows,
    the ids shared by train and test, and (when the shards folder lives in a prep workdir) its staleness."""
    splits, pids = {}, {}
    order = ("train", "query", "gallery")
    for split in sorted(index.rows_per_split, key=lambda s: (order.index(s) if s in order else len(order), s)):
        rows = ShardDataset(index.root, split, columns=(), index=index)
        pids[split] = {int(p) for p in rows.pids}
        splits[split] = SplitFacts(len(rows), len(pids[split]), len({int(c) for c in rows.camids}))
    train = ShardDataset(index.root, "train", columns=(), index=index)
    sizes = Counter(zip(train.column("height").tolist(), train.column("width").tolist(), strict=True))
    coverage = {}
    for name in inputs:
        if name in INPUT_COLUMNS:
            present, total = _present(index, INPUT_COLUMNS[name][0])
            coverage[name] = present / total if total else 0.0
    test = pids.get("query", set()) | pids.get("gallery", set())
    workdir = index.root.parent if is_workdir(index.root.parent) else None
    recorded = dict(index.info.get("inputs") or {})
    stale = stale_inputs(recorded, workdir) if workdir is not None else []
    return ShardFacts(
        splits=splits,
        stored_sizes={(int(h), int(w)): n for (h, w), n in sorted(sizes.items())},
        coverage=coverage,
        shared_ids=sorted(pids.get("train", set()) & test),
        workdir=workdir,
        stale=stale,
    )


def refusals(facts: ShardFacts, image_size: tuple[int, int], train: TrainConfig) -> list[str]:
    """The problems that stop ``fit`` (each naming its override); those ``train`` allows are left out."""
    problems = []
    wanted, stored = orientation(image_size), facts.stored_orientation
    if not train.allow_orientation_mismatch and "square" not in (wanted, stored) and wanted != stored:
        sizes = ", ".join(f"{h}x{w}" for h, w in facts.stored_sizes)
        problems.append(
            f"image size {image_size[0]}x{image_size[1]} (H x W) is {wanted} but the shards store {stored} images "
            f"({sizes}): set --set image_size=[H,W] to match, or pass --allow-orientation-mismatch"
        )
    if not train.allow_missing_inputs:
        for name, share in facts.coverage.items():
            if 1.0 - share > MISSING_LIMIT:
                what = INPUT_COLUMNS[name][1]
                problems.append(
                    f"the model reads {name} but {100 * (1 - share):.1f}% of train rows have no {what} "
                    f"(more than {100 * MISSING_LIMIT:.0f}%; shards built with --missing null?): rebuild the shards "
                    "with that stage's output, or pass --allow-missing-inputs"
                )
    if facts.stale and not train.allow_stale_shards:
        problems.append(
            f"the shards are stale against {facts.workdir} ({'; '.join(facts.stale)}): rerun "
            "`reidprep build-shards`, or pass --allow-stale-shards"
        )
    return problems


def start_block(
    train: TrainConfig,
    image_size: tuple[int, int],
    params: tuple[int, int],
    inputs: tuple[str, ...],
    facts: ShardFacts,
) -> list[str]:
    """The lines ``fit`` prints before its first step: what it trains, on what, reading what.

    ``train`` is the resolved run (``resolve_run``); ``params`` is (trainable, total) parameter counts.
    """
    weights = str(train.weights) if train.weights is not None else "random init"
    stored = ", ".join(f"{h}x{w}" for h, w in facts.stored_sizes)
    splits = " | ".join(f"{name} {s.ids} ids, {s.cameras} cameras, {s.rows} rows" for name, s in facts.splits.items())
    read = ["images (rgb, nir, tir)"]
    for name in inputs:
        if name in facts.coverage:
            read.append(f"{name} ({INPUT_COLUMNS[name][1]} on {100 * facts.coverage[name]:.1f}% of train rows)")
        else:
            read.append(name)
    if facts.workdir is None:
        fresh = "not in a prep workdir: staleness not checked"
    elif facts.stale:
        fresh = f"STALE against {facts.workdir} (allowed): {'; '.join(facts.stale)}"
    else:
        fresh = f"current with {facts.workdir} (index, masks, captions)"
    lines = [
        f"fit: model {train.model}, recipe {train.recipe}, backbone {train.backbone}, weights {weights}",
        f"  image size {image_size[0]} x {image_size[1]} (H x W); shards store {stored} ({facts.stored_orientation})",
        f"  parameters: {params[0]:,} trainable / {params[1]:,} total",
        f"  {splits}",
        f"  inputs: {', '.join(read)}",
        f"  shards: {fresh}",
    ]
    allowed = [key for key in ALLOW_KEYS if getattr(train, key)]
    if allowed:
        lines.append(f"  overrides: {', '.join('--' + key.replace('_', '-') for key in allowed)}")
    if facts.shared_ids:
        shown = ", ".join(map(str, facts.shared_ids[:10])) + (", ..." if len(facts.shared_ids) > 10 else "")
        lines.append(
            f"warning: {len(facts.shared_ids)} train ids also appear in query/gallery ({shown}); "
            "`reidprep index --drop-overlapping-ids` removes them from train"
        )
    return lines

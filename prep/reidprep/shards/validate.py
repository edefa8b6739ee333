"""``reidprep validate-shards``: the index, checksums, schema, row counts, unlisted files, and every image decoded;
problems named per shard."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import ValidationError

from reidprep.progress import track
from reidprep.step import StepFailed, StepResult
from reidschemas.maskcodec import decode_mask
from reidschemas.shards import (
    INDEX_NAME,
    SHARD_GLOB,
    SHARD_SCHEMA,
    ShardEntry,
    ShardSetIndex,
    decode_image,
    index_problems,
    shard_file_problem,
)


def _check_rows(path: Path) -> list[str]:
    """Decode every image and mask of one shard; the problems found (at most a few per kind)."""
    problems: list[str] = []
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        for row in parquet.read_row_group(group).to_pylist():
            for modality in ("rgb", "nir", "tir"):
                try:
                    pixels = decode_image(row[modality], row["image_format"], row["height"], row["width"])
                    if pixels.shape != (row["height"], row["width"], 3):
                        problems.append(f"{row['sample_id']}: {modality} is {pixels.shape[:2]}, not the stored size")
                except Exception as exc:  # any decoder error names the sample
                    problems.append(f"{row['sample_id']}: {modality} image does not decode ({exc})")
            if row["mask"] is not None:
                try:
                    decode_mask(row["mask"], row["height"], row["width"])
                except ValueError as exc:
                    problems.append(f"{row['sample_id']}: mask: {exc}")
            if len(problems) > 20:
                return [*problems, "... (more problems not listed)"]
    return problems


def _shard_problems(path: Path, entry: ShardEntry) -> list[str]:
    """Everything wrong with one listed shard file: bytes and checksum, schema, rows and rows per split, images."""
    if not path.is_file():
        return ["file is missing"]
    problems = [p for p in [shard_file_problem(path, entry)] if p is not None]
    try:
        with pq.ParquetFile(path) as parquet:
            schema = parquet.schema_arrow
            splits = Counter(parquet.read(columns=["split"]).column("split").to_pylist())
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        return [*problems, f"not a readable Parquet file ({exc})"]
    if not schema.remove_metadata().equals(SHARD_SCHEMA.remove_metadata()):
        problems.append("schema differs from the shard schema")
    rows = sum(splits.values())
    if rows != entry.rows:
        problems.append(f"{rows} rows, dataset.json says {entry.rows}")
    if dict(sorted(splits.items())) != {k: v for k, v in sorted(entry.rows_per_split.items()) if v}:
        problems.append(f"rows per split {dict(sorted(splits.items()))}, dataset.json says {entry.rows_per_split}")
    return problems or _check_rows(path)


def validate_shards(shards_dir: Path, progress: bool = False) -> dict[str, list[str]]:
    """``{shard file (or "dataset.json"): [problems]}``; empty when everything checks out.

    ``dataset.json`` must be well formed and add up (``reidschemas.shards.index_problems``); every listed shard must
    have its recorded size, SHA-256, schema, rows and rows per split, and decode; a ``shard-*.parquet`` that the
    index does not list is a problem too (a mixed or half-replaced set).
    """
    index_path = shards_dir / INDEX_NAME
    if not index_path.is_file():
        return {INDEX_NAME: [f"{index_path} not found: run `reidprep build-shards` first"]}
    try:
        info = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {INDEX_NAME: [f"not valid JSON: {exc}"]}
    problems = index_problems(info)
    if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
        return {INDEX_NAME: problems or ["no list of shards"]}  # nothing more to check
    report: dict[str, list[str]] = {INDEX_NAME: problems} if problems else {}
    try:
        entries = ShardSetIndex.model_validate(info).shards
    except ValidationError:  # named above; the shards cannot be matched to their entries
        return report
    listed = {entry.file for entry in entries}
    for path in sorted(shards_dir.glob(SHARD_GLOB)):
        if path.name not in listed:
            report[path.name] = ["not listed in dataset.json (left from another build, or dropped from the list)"]
    for entry in track(entries, len(entries), "validating shards", progress):
        shard_problems = _shard_problems(shards_dir / entry.file, entry)
        if shard_problems:
            report[entry.file] = shard_problems
    return report


def check_shards(shards_dir: Path, progress: bool = False) -> StepResult:
    """``reidprep validate-shards``: raises FileNotFoundError when there are no shards to check (a precondition)
    and ``StepFailed`` naming every problem of every shard; otherwise says the folder is valid."""
    if not (shards_dir / INDEX_NAME).is_file():
        raise FileNotFoundError(
            f"{shards_dir / INDEX_NAME} not found: run `reidprep build-shards`, or give the folder with --shards"
        )
    report = validate_shards(shards_dir, progress=progress)
    if report:
        lines = [f"{name}: {problem}" for name, problems in report.items() for problem in problems]
        raise StepFailed("\n".join([*lines, f"{len(report)} shard(s) or index entries have problems in {shards_dir}"]))
    return StepResult("validate-shards", [f"validate-shards: {shards_dir} is valid"], complete=True)

"""``reidprep validate-shards``: schema, checksums, row counts, and every image decoded; problems named per shard."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from reidprep.progress import track
from reidprep.step import StepFailed, StepResult
from reidschemas.digest import file_sha256
from reidschemas.maskcodec import decode_mask
from reidschemas.shards import SHARD_SCHEMA, SHARD_SCHEMA_VERSION, decode_image

INDEX_NAME = "dataset.json"


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


def validate_shards(shards_dir: Path, progress: bool = False) -> dict[str, list[str]]:
    """``{shard file (or "dataset.json"): [problems]}``; empty when everything checks out."""
    index_path = shards_dir / INDEX_NAME
    if not index_path.is_file():
        return {INDEX_NAME: [f"{index_path} not found: run `reidprep build-shards` first"]}
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        return {INDEX_NAME: [f"not valid JSON: {exc.msg}"]}
    report: dict[str, list[str]] = {}
    if index.get("schema_version") != SHARD_SCHEMA_VERSION:
        report[INDEX_NAME] = [
            f"schema version {index.get('schema_version')}, this reidprep reads {SHARD_SCHEMA_VERSION}"
        ]
    total = 0
    for shard in track(index["shards"], len(index["shards"]), "validating shards", progress):
        path = shards_dir / shard["file"]
        problems: list[str] = []
        if not path.is_file():
            report[shard["file"]] = ["file is missing"]
            continue
        if file_sha256(path) != shard["sha256"]:
            problems.append("checksum differs from dataset.json (the file changed or is corrupt)")
        try:
            metadata = pq.read_metadata(path)
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt footer
            report[shard["file"]] = [*problems, f"not a readable Parquet file ({exc})"]
            continue
        if not schema.remove_metadata().equals(SHARD_SCHEMA.remove_metadata()):
            problems.append("schema differs from the shard schema")
        if metadata.num_rows != shard["rows"]:
            problems.append(f"{metadata.num_rows} rows, dataset.json says {shard['rows']}")
        total += metadata.num_rows
        if not problems:
            problems = _check_rows(path)
        if problems:
            report[shard["file"]] = problems
    if total != index.get("rows") and not report:
        report[INDEX_NAME] = [f"shards hold {total} rows, dataset.json says {index.get('rows')}"]
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

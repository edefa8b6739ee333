"""The manifest: every triplet of a dataset with its split, as Parquet (explicit schema), one row per record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reidprep.atomic import write_parquet
from reidprep.workdir import require_manifest
from reidschemas import SPLITS, SampleRecord

MANIFEST_SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
"""Version 2 added ``object_kind`` (generic data); version 1 manifests read as before."""

_BOX = pa.list_(pa.int32(), 4)
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("triplet_key", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("pid", pa.int64(), nullable=False),
        pa.field("camid", pa.int32(), nullable=False),
        pa.field("sceneid", pa.int32()),
        pa.field("rgb_path", pa.string(), nullable=False),
        pa.field("nir_path", pa.string(), nullable=False),
        pa.field("tir_path", pa.string(), nullable=False),
        pa.field("rgb_box", _BOX),
        pa.field("nir_box", _BOX),
        pa.field("tir_box", _BOX),
        pa.field("object_kind", pa.string()),
    ],
    metadata={"reid.manifest_schema_version": MANIFEST_SCHEMA_VERSION},
)


def sort_records(records: Sequence[SampleRecord]) -> list[SampleRecord]:
    """The manifest's canonical order: split (train, query, gallery), then sample id."""
    order = {split: i for i, split in enumerate(SPLITS)}
    return sorted(records, key=lambda r: (order[r.split], r.sample_id))


def write_manifest(records: Sequence[SampleRecord], path: Path) -> None:
    rows = [r.model_dump() for r in sort_records(records)]
    write_parquet(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), path)


def read_manifest(path: Path) -> list[SampleRecord]:
    """Read and validate a manifest; a missing file gets an error that says which command makes it."""
    table = pq.read_table(require_manifest(path))
    version = (table.schema.metadata or {}).get(b"reid.manifest_schema_version", b"?").decode()
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: manifest schema version {version}, this reidprep reads {MANIFEST_SCHEMA_VERSION}: "
            "rerun `reidprep index --force`"
        )
    return [SampleRecord(**row) for row in table.to_pylist()]

"""The errors ledger of a stage: one Parquet row per failed record (or warning), with the reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reidprep.atomic import write_parquet
from reidschemas import LedgerEntry

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("sample_id", pa.string()),
    ]
)


def ledger_table(entries: Iterable[LedgerEntry]) -> pa.Table:
    return pa.Table.from_pylist([entry.model_dump() for entry in entries], schema=LEDGER_SCHEMA)


def write_ledger(entries: Iterable[LedgerEntry], path: Path) -> None:
    write_parquet(ledger_table(entries), path)


def read_ledger(path: Path) -> list[LedgerEntry]:
    if not path.is_file():
        return []
    return [LedgerEntry(**row) for row in pq.read_table(path).to_pylist()]


def count_by_type(entries: Iterable[LedgerEntry]) -> dict[str, int]:
    """``{"error:missing_modality": 3, "warning:id_in_train_and_test": 7}``, sorted by key."""
    counts = Counter(f"{e.severity}:{e.error_type}" for e in entries)
    return dict(sorted(counts.items()))

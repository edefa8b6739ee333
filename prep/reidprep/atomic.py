"""Atomic, durable file writes of the stages (see :mod:`reidschemas.safeio`): a per-process temporary name in
the same folder, fsync, rename over the target, fsync the folder.

A reader never sees a half-written file; a process killed mid-write leaves only its ``.tmp-HOST-PID`` file,
removed by the next write of the same target once that process is gone. A full disk raises ``DiskFull``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reidschemas.safeio import atomic_write, atomic_write_bytes, atomic_write_text


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` as zstd Parquet, atomically."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), needed=table.nbytes)


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes :func:`write_parquet` writes (for a caller that hashes them before writing)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def write_bytes(data: bytes, path: Path) -> None:
    atomic_write_bytes(data, path)


def write_text(text: str, path: Path) -> None:
    atomic_write_text(text, path)


def write_json(data: Any, path: Path) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", path)

"""Atomic file writes: write to a temporary name in the same folder, then rename over the target.

A reader never sees a half-written file, and a process killed mid-write leaves only a ``.tmp-*`` file behind
(removed by the next write of the same target).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` as zstd Parquet, atomically."""
    _atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_text(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(data: Any, path: Path) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", path)

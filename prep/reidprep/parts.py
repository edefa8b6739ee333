"""A stage run's parts with their checksums: written, recorded, verified.

Chunk ``c`` of a run is ``parts/part-<c>.parquet`` (its rows), ``failures/part-<c>.parquet`` (its ledger, when a
unit failed) and ``checksums/part-<c>.json``: the SHA-256 and size (bytes) of both files, the rows and the failed units,
written atomically *after* them. The record is the chunk's completion mark: it is removed before a chunk is
recomputed, so a process killed at any moment leaves a chunk either recorded and whole or unrecorded.

A part is checked against its record by size (cheap: ``status``) or by size and hash (a rerun before skipping it,
and every read): a truncated or bit-flipped part raises :class:`CorruptPart`, one line naming the file.

A part without a record was written by an older version (before checksums), or by a process killed between the
part's rename and its record. Its bytes are whole either way (the part was renamed into place complete), so it is
read in full (the Parquet footer and every page decode, and its rows plus its failed units fill the chunk) and
its checksum is recorded then; one that does not read is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reidprep.atomic import parquet_bytes, write_bytes, write_json
from reidprep.ledger import LEDGER_SCHEMA
from reidschemas import LedgerEntry

__all__ = ["ChunkRecord", "CorruptPart", "FileSum", "RunFolder", "part_name", "unreadable"]


class CorruptPart(ValueError):
    """A part (or failures part) that does not match its recorded checksum or does not read; one line."""

    def __init__(self, path: Path, problem: str, way_out: str = "") -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}" + (f": {way_out}" if way_out else ""))


@dataclass(frozen=True)
class FileSum:
    sha256: str
    size: int
    """Bytes."""

    @classmethod
    def of(cls, data: bytes) -> FileSum:
        return cls(hashlib.sha256(data).hexdigest(), len(data))


@dataclass(frozen=True)
class ChunkRecord:
    """What ``checksums/part-<c>.json`` holds."""

    part: FileSum
    failures: FileSum | None
    """None: no unit of the chunk failed (there is no failures part)."""
    rows: int
    failed: int
    """Units (triplets) that failed; the failures part may hold more entries (one per sample id)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChunkRecord:
        failures = data.get("failures")
        failure_sum = None if failures is None else FileSum(**failures)
        return cls(FileSum(**data["part"]), failure_sum, data["rows"], data["failed"])


def part_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


def _size_problem(size: int, recorded: int) -> str:
    why = "truncated?" if size < recorded else "changed on disk?"
    return f"fails its checksum ({size} bytes, {recorded} recorded: {why})"


def _checked_bytes(path: Path, recorded: FileSum | None) -> bytes:
    """The bytes of ``path``, checked against ``recorded`` (size first, then SHA-256) when given."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptPart(path, "is missing (its checksum is recorded)") from None
    if recorded is not None:
        if len(data) != recorded.size:
            raise CorruptPart(path, _size_problem(len(data), recorded.size))
        if hashlib.sha256(data).hexdigest() != recorded.sha256:
            raise CorruptPart(path, "fails its checksum (same size, another SHA-256: changed on disk?)")
    return data


def _read_verified(
    path: Path, recorded: FileSum | None, schema: pa.Schema | None, columns: list[str] | None
) -> pa.Table:
    """Read ``path`` once: its bytes are checked (against ``recorded``) and decoded from memory."""
    data = _checked_bytes(path, recorded)
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns, schema=schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(path, exc) from None


def unreadable(path: Path, exc: BaseException) -> CorruptPart:
    """The one-line error for a file that does not read as Parquet (Arrow's message can span lines)."""
    lines = str(exc).strip().splitlines()
    return CorruptPart(path, f"does not read as Parquet ({lines[0] if lines else type(exc).__name__})")


class RunFolder:
    """Paths inside ``<workdir>/<stage>/runs/<fingerprint>/`` and the checked reading and writing of its parts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parts = root / "parts"
        self.failures = root / "failures"
        self.checksums = root / "checksums"
        self.meta = root / "stage.json"
        self.success = root / "_SUCCESS"

    def part(self, chunk: int) -> Path:
        return self.parts / part_name(chunk)

    def failure_part(self, chunk: int) -> Path:
        return self.failures / part_name(chunk)

    def record_path(self, chunk: int) -> Path:
        return self.checksums / part_name(chunk).replace(".parquet", ".json")

    def written_chunks(self) -> list[int]:
        """The chunks with a part file (recorded or not), in order."""
        return sorted(int(p.name[5:10]) for p in self.parts.glob("part-*.parquet"))

    # ---------------------------------------------------------------------------------------------- records
    def record(self, chunk: int) -> ChunkRecord | None:
        path = self.record_path(chunk)
        if not path.is_file():
            return None
        try:
            return ChunkRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptPart(path, f"is not a checksum record ({type(exc).__name__}: {exc})") from None

    def forget(self, chunk: int) -> None:
        """Remove the chunk's record before it is recomputed (then a kill leaves it unrecorded, so not done)."""
        self.record_path(chunk).unlink(missing_ok=True)

    def write_chunk(self, chunk: int, rows: pa.Table, failures: pa.Table | None, failed: int) -> ChunkRecord:
        """Write the chunk's failures part (or remove an old one), its part, then the record of both, each
        atomically; the checksums are of the bytes written. Call :meth:`forget` before computing the chunk."""
        failure_sum = None
        if failures is not None:
            data = parquet_bytes(failures)
            write_bytes(data, self.failure_part(chunk))
            failure_sum = FileSum.of(data)
        else:
            self.failure_part(chunk).unlink(missing_ok=True)
        data = parquet_bytes(rows)
        write_bytes(data, self.part(chunk))
        record = ChunkRecord(FileSum.of(data), failure_sum, rows.num_rows, failed)
        write_json(asdict(record), self.record_path(chunk))
        return record

    def _record_existing(self, chunk: int, rows: int, failed: int) -> ChunkRecord:
        failures = self.failure_part(chunk)
        record = ChunkRecord(
            FileSum.of(self.part(chunk).read_bytes()),
            FileSum.of(failures.read_bytes()) if failures.is_file() else None,
            rows,
            failed,
        )
        write_json(asdict(record), self.record_path(chunk))
        return record

    # ---------------------------------------------------------------------------------------------- checks
    def check(self, chunk: int) -> ChunkRecord | None:
        """Cheap check (sizes only) of a recorded chunk: its record, or None when it has none.

        Raises :class:`CorruptPart` when a file is missing or has another size than recorded."""
        record = self.record(chunk)
        if record is None:
            return None
        for path, recorded in ((self.part(chunk), record.part), (self.failure_part(chunk), record.failures)):
            size = path.stat().st_size if path.is_file() else None
            if recorded is None and size is not None:
                raise CorruptPart(path, "is not in its chunk's checksum record (left from another run?)")
            if recorded is not None and size is None:
                raise CorruptPart(path, "is missing (its checksum is recorded)")
            if recorded is not None and size != recorded.size:
                raise CorruptPart(path, _size_problem(size or 0, recorded.size))
        return record

    def verify(self, chunk: int) -> ChunkRecord:
        """Full check of a recorded chunk: sizes, then the SHA-256 of both files. Raises :class:`CorruptPart`."""
        record = self.check(chunk)
        if record is None:
            raise CorruptPart(self.part(chunk), "has no recorded checksum")
        _checked_bytes(self.part(chunk), record.part)
        if record.failures is not None:
            _checked_bytes(self.failure_part(chunk), record.failures)
        return record

    def adopt(self, chunk: int, units: int, failed_units: Callable[[list[LedgerEntry]], int]) -> ChunkRecord:
        """Verify an unrecorded part by reading it (and its failures) whole, then record its checksum.

        ``units``: the chunk's size; ``failed_units``: how many units the failures' entries stand for.
        Raises :class:`CorruptPart` when it does not read or its rows and failed units do not fill the chunk."""
        rows = _read_verified(self.part(chunk), None, None, None).num_rows
        failures = self.failure_part(chunk)
        entries = _ledger(_read_verified(failures, None, LEDGER_SCHEMA, None)) if failures.is_file() else []
        failed = failed_units(entries)
        if rows + failed != units:
            raise CorruptPart(
                self.part(chunk), f"has no recorded checksum and holds {rows} rows + {failed} failed units "
                f"for a chunk of {units}",
            )  # fmt: skip
        return self._record_existing(chunk, rows, failed)

    # ---------------------------------------------------------------------------------------------- reading
    def read_part(self, chunk: int, columns: list[str] | None = None) -> pa.Table:
        """The chunk's rows, its bytes checked against the record (an unrecorded part: read as it is)."""
        record = self.record(chunk)
        return _read_verified(self.part(chunk), None if record is None else record.part, None, columns)

    def read_failures(self, chunks: Collection[int] | None = None) -> list[LedgerEntry]:
        """The ledger entries of the failures parts (of ``chunks``, default all), each checked against its record."""
        entries: list[LedgerEntry] = []
        for path in sorted(self.failures.glob("part-*.parquet")):
            chunk = int(path.name[5:10])
            if chunks is not None and chunk not in chunks:
                continue
            record = self.record(chunk)
            if record is not None and record.failures is None:
                raise CorruptPart(path, "is not in its chunk's checksum record (left from another run?)")
            entries += _ledger(_read_verified(path, None if record is None else record.failures, LEDGER_SCHEMA, None))
        return entries


def _ledger(table: pa.Table) -> list[LedgerEntry]:
    return [LedgerEntry(**row) for row in table.to_pylist()]

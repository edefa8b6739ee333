"""The machinery every per-triplet stage shares (masks, captions, ...): chunks, parts, resume, shards, ledger.

A stage turns the manifest's triplets into rows. The work list is the manifest's unique ``triplet_key`` values in
sorted order (RGBNT201's test triplets are query and gallery at once, and are processed once), cut into chunks of
``chunk_size``. Chunk ``c`` is written to ``runs/<fingerprint>/parts/part-<c>.parquet`` with an explicit schema,
atomically (temporary name, then rename): a part that exists is complete. Failures of a chunk go to
``failures/part-<c>.parquet`` before its part is written (one ledger entry per ``Failure``; a unit may have
several, e.g. one per failed view, and counts once as failed). So:

- a rerun skips the chunks whose part exists and gives byte-identical files, except a chunk with a failure the task
  calls retryable (``StageTask.retry_on_rerun``: a provider, network or invalid-reply error), which a plain rerun
  processes again; ``retry_failed`` redoes every chunk with failures, ``force`` every chunk;
- a process killed at any moment loses at most the chunk in flight, and nothing is duplicated;
- ``--num-shards N --shard-index I`` processes the chunks ``c`` with ``c % N == I``; the chunk grid does not
  depend on the sharding, so all shards together write exactly the files of one unsharded run;
- the fingerprint hashes the task's identity (provider, model, checkpoint hash, parameters), the chunk size and
  the work list: other parameters give another run folder, and ``current.json`` points at the newest. Older run
  folders are kept and reported as stale, never mixed in.

Layout under ``<workdir>/<stage>/``: ``current.json``, ``summary.json``, ``errors.parquet`` (the current run's
ledger, merged), ``runs/<fingerprint>/{stage.json, parts/, failures/, _SUCCESS}``. ``stage.json`` also records
``inputs``: the fingerprints of the upstream outputs the run read (the manifest's digest, the masks run), which
``status`` compares with the upstreams' current ones (see :mod:`reidprep.step`).
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from reidprep.atomic import write_json, write_parquet
from reidprep.index import manifest_fingerprint
from reidprep.ledger import LEDGER_SCHEMA, read_ledger, write_ledger
from reidprep.manifest import read_manifest
from reidprep.progress import track
from reidprep.workdir import Workdir
from reidschemas import LedgerEntry, SampleRecord

STAGE_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class WorkUnit:
    """One triplet to process; ``record`` is the first manifest record with that key."""

    key: str
    record: SampleRecord


@dataclass(frozen=True)
class Failure:
    """A unit that could not be processed."""

    key: str
    reason: str
    error_type: str
    modality: str | None = None
    """The modality whose input failed (``rgb``, ``nir``, ``tir``): the ledger names its image path."""


UnitResult = dict[str, Any] | Failure | list[Failure]
"""What a task gives for one unit: its row, or why it failed (several failures: one ledger entry each)."""


class StageTask(ABC):
    """What a stage does to a chunk of units. Small: the runner owns files, resume, shards and the ledger."""

    name: ClassVar[str]
    schema: ClassVar[pa.Schema]
    """The rows it writes; the first field is ``triplet_key``."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the rows (JSON-able); recorded with the outputs and fingerprinted."""

    def inputs(self) -> dict[str, str | None]:
        """Fingerprints of the upstream stage outputs this task reads (beyond the manifest), recorded in
        ``stage.json`` so ``status`` can tell when one was rerun; already part of ``identity``."""
        return {}

    def retry_on_rerun(self, failure: LedgerEntry) -> bool:
        """Whether a plain rerun processes this failed unit's chunk again (a failure a retry may fix by itself);
        otherwise only ``--retry-failed`` or ``--force`` do."""
        return False

    @abstractmethod
    def process(self, units: Sequence[WorkUnit]) -> Sequence[UnitResult]:
        """One row dict (matching ``schema``), ``Failure`` or list of failures per unit, in order.

        Raising fails the whole call; the runner then retries the units one at a time to isolate the bad one.
        """


@dataclass(frozen=True)
class StageOptions:
    chunk_size: int = 64
    num_shards: int = 1
    shard_index: int = 0
    force: bool = False
    """Recompute this shard's chunks even when their parts exist."""
    retry_failed: bool = False
    """Recompute this shard's chunks that have failures."""
    fail_fast: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk size must be >= 1, got {self.chunk_size}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"--shard-index must be in [0, --num-shards); got index {self.shard_index} of {self.num_shards}"
            )


class StageFailure(RuntimeError):
    """``fail_fast``: a unit failed; the chunk in flight was not written."""


class StageAbort(RuntimeError):
    """Raised by a task for a problem no retry or other sample can fix (bad API key, no quota): the stage stops
    at once with this message; the chunk in flight is not written, finished chunks stay."""


@dataclass(frozen=True)
class StageSummary:
    stage: str
    fingerprint: str
    run_dir: Path
    units: int
    """Units in the whole stage (all shards)."""
    done: int
    """Units processed now without failure."""
    skipped: int
    """Units of this shard already done before this run."""
    failed: int
    """Units of this shard that failed now."""
    seconds: float
    complete: bool
    """Whether every chunk of the stage (all shards) is written."""
    num_shards: int = 1
    shard_index: int = 0
    stale_runs: int = 0

    def line(self) -> str:
        shard = f" (shard {self.shard_index + 1}/{self.num_shards})" if self.num_shards > 1 else ""
        state = "stage complete" if self.complete else "stage incomplete"
        return (
            f"{self.stage}{shard}: {self.done} done, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f}s; {state}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "run_dir": str(self.run_dir)}


def work_units(records: Sequence[SampleRecord]) -> list[WorkUnit]:
    """Unique triplets in ``triplet_key`` order, each with its first record by ``sample_id``."""
    first: dict[str, SampleRecord] = {}
    for record in sorted(records, key=lambda r: r.sample_id):
        first.setdefault(record.triplet_key, record)
    return [WorkUnit(key, first[key]) for key in sorted(first)]


def fingerprint(task: StageTask, chunk_size: int, units: Sequence[WorkUnit]) -> str:
    """16 hex digits of SHA-256 over the task identity, schema, chunk size and work list."""
    work = hashlib.sha256()
    for unit in units:
        r = unit.record
        work.update(f"{unit.key}\t{r.rgb_path}\t{r.nir_path}\t{r.tir_path}\t{r.rgb_box}\n".encode())
    payload = {
        "format": STAGE_FORMAT_VERSION,
        "stage": task.name,
        "identity": task.identity(),
        "schema": task.schema.to_string(show_schema_metadata=False),
        "chunk_size": chunk_size,
        "work": work.hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chunk_units(units: Sequence[WorkUnit], chunk_size: int) -> list[Sequence[WorkUnit]]:
    """The fixed chunk grid: chunk ``c`` holds units ``[c * chunk_size, (c + 1) * chunk_size)``."""
    return [units[i : i + chunk_size] for i in range(0, len(units), chunk_size)]


def shard_chunks(chunks: Sequence[Sequence[WorkUnit]], options: StageOptions) -> list[int]:
    """The chunk numbers this shard owns: ``c % num_shards == shard_index``."""
    return [c for c in range(len(chunks)) if c % options.num_shards == options.shard_index]


def _part_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


class _RunFolder:
    """Paths inside ``<workdir>/<stage>/runs/<fingerprint>/``."""

    def __init__(self, stage_dir: Path, fp: str) -> None:
        self.root = stage_dir / "runs" / fp
        self.parts = self.root / "parts"
        self.failures = self.root / "failures"
        self.meta = self.root / "stage.json"
        self.success = self.root / "_SUCCESS"

    def part(self, chunk: int) -> Path:
        return self.parts / _part_name(chunk)

    def failure_part(self, chunk: int) -> Path:
        return self.failures / _part_name(chunk)


def _process(task: StageTask, units: Sequence[WorkUnit], fail_fast: bool) -> list[UnitResult]:
    """Run the task; on an exception retry unit by unit so one bad unit fails alone."""
    try:
        results = list(task.process(units))
        if len(results) != len(units):
            raise RuntimeError(f"{task.name} returned {len(results)} results for {len(units)} units")
        return results
    except StageAbort:
        raise
    except Exception as exc:
        if fail_fast:
            raise StageFailure(f"{task.name}: {units[0].key if len(units) == 1 else 'a chunk'}: {exc}") from exc
        if len(units) == 1:
            return [Failure(units[0].key, str(exc) or type(exc).__name__, type(exc).__name__)]
        return [result for unit in units for result in _process(task, [unit], fail_fast)]


def _ledger_entries(task: StageTask, failures: list[Failure], by_key: dict[str, WorkUnit]) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            stage=task.name,
            severity="error",
            error_type=f.error_type,
            reason=f.reason,
            path=getattr(by_key[f.key].record, f"{f.modality or 'rgb'}_path"),
            sample_id=by_key[f.key].record.sample_id,
        )
        for f in failures
    ]


def run_stage(task: StageTask, workdir: Path, options: StageOptions) -> StageSummary:
    """Process this shard's chunks of the manifest's triplets; see the module docstring for the guarantees."""
    start = time.perf_counter()
    wd = Workdir(workdir)
    units = work_units(read_manifest(wd.manifest))
    fp = fingerprint(task, options.chunk_size, units)
    stage_dir = wd.stage_dir(task.name)
    run = _RunFolder(stage_dir, fp)
    chunks = chunk_units(units, options.chunk_size)
    meta = {
        "stage": task.name,
        "fingerprint": fp,
        "identity": task.identity(),
        "chunk_size": options.chunk_size,
        "units": len(units),
        "chunks": len(chunks),
        "format": STAGE_FORMAT_VERSION,
        "inputs": {"index": manifest_fingerprint(workdir), **task.inputs()},
    }
    write_json(meta, run.meta)
    write_json({"fingerprint": fp, "run_dir": f"runs/{fp}"}, stage_dir / "current.json")
    schema = task.schema.with_metadata(
        {"reid.stage": task.name, "reid.fingerprint": fp, "reid.identity": json.dumps(meta["identity"], sort_keys=True)}
    )
    by_key = {u.key: u for u in units}
    mine = shard_chunks(chunks, options)
    todo, skipped = [], 0
    for c in mine:
        redo = options.force or (
            run.failure_part(c).is_file()
            and (options.retry_failed or any(map(task.retry_on_rerun, read_ledger(run.failure_part(c)))))
        )
        if run.part(c).is_file() and not redo:
            skipped += len(chunks[c])
        else:
            todo.append(c)
    if todo:
        run.success.unlink(missing_ok=True)

    done = failed = 0
    total = sum(len(chunks[c]) for c in todo)
    for c in track(todo, len(todo), f"{task.name} ({total} triplets in {len(todo)} chunks)", options.progress):
        results = _process(task, chunks[c], options.fail_fast)
        rows = [r for r in results if isinstance(r, dict)]
        failures = [f for r in results if not isinstance(r, dict) for f in (r if isinstance(r, list) else [r])]
        if failures and options.fail_fast:
            first = failures[0]
            raise StageFailure(f"{task.name}: {first.key}: {first.error_type}: {first.reason}")
        if failures:
            write_ledger(_ledger_entries(task, failures, by_key), run.failure_part(c))
        else:
            run.failure_part(c).unlink(missing_ok=True)
        write_parquet(pa.Table.from_pylist(rows, schema=schema), run.part(c))
        done += len(rows)
        failed += len(results) - len(rows)

    complete = all(run.part(c).is_file() for c in range(len(chunks)))
    if complete:
        write_ledger(read_failures(run.root), stage_dir / "errors.parquet")
        write_json(meta, run.success)
    summary = StageSummary(
        stage=task.name,
        fingerprint=fp,
        run_dir=run.root,
        units=len(units),
        done=done,
        skipped=skipped,
        failed=failed,
        seconds=round(time.perf_counter() - start, 3),
        complete=complete,
        num_shards=options.num_shards,
        shard_index=options.shard_index,
        stale_runs=len(stale_runs(workdir, task.name)),
    )
    write_json(summary.to_json(), stage_dir / "summary.json")
    return summary


# ------------------------------------------------------------------------------------------------- reading
def current_run_dir(workdir: Path, stage: str) -> Path | None:
    """The run folder ``current.json`` points at, or None when the stage never ran."""
    pointer = Workdir(workdir).stage_dir(stage) / "current.json"
    if not pointer.is_file():
        return None
    return pointer.parent / json.loads(pointer.read_text())["run_dir"]


def complete_run(workdir: Path, stage: str) -> str | None:
    """The current run's fingerprint when that run is complete (``_SUCCESS`` written), else None."""
    run_dir = current_run_dir(workdir, stage)
    return run_dir.name if run_dir is not None and (run_dir / "_SUCCESS").is_file() else None


def run_inputs(workdir: Path, stage: str) -> dict[str, str | None]:
    """The upstream fingerprints the current run recorded in its ``stage.json`` (empty when it never ran)."""
    run_dir = current_run_dir(workdir, stage)
    meta = None if run_dir is None else run_dir / "stage.json"
    return dict(json.loads(meta.read_text()).get("inputs", {})) if meta is not None and meta.is_file() else {}


def stale_runs(workdir: Path, stage: str) -> list[Path]:
    """Run folders of other parameters than the current ones (kept, never mixed in)."""
    current = current_run_dir(workdir, stage)
    runs = Workdir(workdir).stage_dir(stage) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir() and p != current) if runs.is_dir() else []


def read_failures(run_dir: Path) -> list[LedgerEntry]:
    files = sorted((run_dir / "failures").glob("part-*.parquet"))
    if not files:
        return []
    table = pa.concat_tables([pq.read_table(f, schema=LEDGER_SCHEMA) for f in files])
    return [LedgerEntry(**row) for row in table.to_pylist()]


def read_stage_table(workdir: Path, stage: str, columns: list[str] | None = None) -> pa.Table:
    """The current run's rows of every written part, in chunk order."""
    run_dir = current_run_dir(workdir, stage)
    if run_dir is None:
        raise FileNotFoundError(f"{stage} has not run in {workdir}: run `reidprep {stage} --workdir {workdir}`")
    files = sorted((run_dir / "parts").glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{run_dir} has no parts yet")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def stage_status(workdir: Path, stage: str) -> dict[str, Any]:
    """done / failed / pending units of the current run, for ``reidprep status``."""
    run_dir = current_run_dir(workdir, stage)
    if run_dir is None or not (run_dir / "stage.json").is_file():
        units = (
            len(work_units(read_manifest(Workdir(workdir).manifest))) if Workdir(workdir).manifest.is_file() else None
        )
        return {"state": "not run", "done": 0, "failed": 0, "warnings": 0, "pending": units}
    meta = json.loads((run_dir / "stage.json").read_text())
    done = sum(pq.read_metadata(f).num_rows for f in (run_dir / "parts").glob("part-*.parquet"))
    failed = len({e.sample_id for e in read_failures(run_dir)})  # units, not ledger entries
    state = "complete" if (run_dir / "_SUCCESS").is_file() else "incomplete"
    status = {"state": state, "done": done, "failed": failed, "warnings": 0, "pending": meta["units"] - done - failed}
    stale = len(stale_runs(workdir, stage))
    if stale:
        status["stale_runs"] = stale
    return status

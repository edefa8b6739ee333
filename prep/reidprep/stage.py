"""The machinery every per-triplet stage shares (masks, captions, ...): chunks, parts, resume, shards, ledger.

A stage turns the manifest's triplets into rows. The work list is the manifest's unique ``triplet_key`` values in
sorted order (RGBNT201's test triplets are query and gallery at once, and are processed once), cut into chunks of
``chunk_size``. Chunk ``c`` is written to ``runs/<fingerprint>/parts/part-<c>.parquet`` with an explicit schema,
atomically (temporary name, then rename). Failures of a chunk go to ``failures/part-<c>.parquet`` before its part
is written, and the SHA-256 of both to ``checksums/part-<c>.json`` after it: a chunk is done when its record is
written and its files match it (:mod:`reidprep.parts`). A failure is ledgered once per sample id of its triplet,
with the path of the modality that failed. So:

- a rerun skips the chunks whose files match their checksums and gives byte-identical files; a part that fails
  its checksum (truncated, a flipped bit) is recomputed, saying so; a chunk with a failure the task calls
  retryable (``StageTask.retry_on_rerun``: a provider, network or invalid-reply error) is processed again;
  ``retry_failed`` redoes every chunk with failures, ``force`` every chunk. A unit may have several failures
  (e.g. one per failed view): one ledger entry each, counted once as failed;
- a process killed at any moment loses at most the chunk in flight, and nothing is duplicated;
- ``--num-shards N --shard-index I`` processes the chunks ``c`` with ``c % N == I``; the chunk grid does not
  depend on the sharding, so all shards together write exactly the files of one unsharded run;
- the fingerprint hashes the task's identity (provider, model, checkpoint hash, parameters), the chunk size and
  the work list: other parameters give another run folder, and ``current.json`` points at the newest. Older run
  folders are kept and reported as stale, never mixed in.

Layout under ``<workdir>/<stage>/``: ``current.json``, ``summary.json``, ``errors.parquet`` (the current run's
ledger, merged), ``runs/<fingerprint>/{stage.json, parts/, failures/, checksums/, _SUCCESS}``. ``stage.json``
also records ``inputs``: the fingerprints of the upstream outputs the run read (the manifest's digest, the masks
run), which ``status`` compares with the upstreams' current ones (see :mod:`reidprep.step`).

Readers (:func:`read_stage_table`, :func:`read_failures`) check every part's bytes against its checksum and raise
one line naming a bad part and the rerun that recomputes it (``CorruptPart``); :func:`stage_status` checks sizes
only and reports bad parts instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import pyarrow as pa
import pyarrow.parquet as pq

from reidprep.atomic import write_json
from reidprep.index import manifest_fingerprint
from reidprep.ledger import ledger_table, write_ledger
from reidprep.manifest import read_manifest
from reidprep.parts import CorruptPart, RunFolder, unreadable
from reidprep.progress import counter
from reidprep.workdir import Workdir
from reidschemas import LedgerEntry, Modality, SampleRecord
from reidschemas.safeio import DiskFull, is_disk_full

STAGE_FORMAT_VERSION = "1"
T = TypeVar("T")


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
    """The modality whose file failed (rgb, nir, tir): the ledger names that file; None: the RGB path."""


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

    def report_progress(self, units: float) -> None:
        """Move the runner's progress bar by ``units`` (fractions allowed) of the chunk in flight: for tasks whose
        chunk takes long (captions from a remote MLLM). Optional: the runner also moves it at each chunk's end."""
        hook: Callable[[float], None] | None = getattr(self, "_progress_hook", None)
        if hook is not None:
            hook(units)

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


def _run_folder(stage_dir: Path, fp: str) -> RunFolder:
    return RunFolder(stage_dir / "runs" / fp)


def _say(line: str) -> None:
    """A line for the user about a choice the runner made (a part recomputed or adopted)."""
    print(line, file=sys.stderr, flush=True)


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
        if is_disk_full(exc):  # not the sample's fault: stop with one line (DiskFull), finished chunks stay
            raise exc if isinstance(exc, DiskFull) else DiskFull(Path(getattr(exc, "filename", None) or ".")) from exc
        if fail_fast:
            raise StageFailure(f"{task.name}: {units[0].key if len(units) == 1 else 'a chunk'}: {exc}") from exc
        if len(units) == 1:
            return [Failure(units[0].key, str(exc) or type(exc).__name__, type(exc).__name__)]
        return [result for unit in units for result in _process(task, [unit], fail_fast)]


def _ledger_entries(
    task: StageTask, failures: list[Failure], samples: dict[str, list[SampleRecord]]
) -> list[LedgerEntry]:
    """One entry per sample id of each failed triplet (RGBNT201's test triplets are query and gallery at once),
    naming the file of the modality that failed (the RGB file when the task does not say)."""
    return [
        LedgerEntry(
            stage=task.name,
            severity="error",
            error_type=f.error_type,
            reason=f.reason,
            path=record.rgb_path if f.modality is None else record.path(cast(Modality, f.modality)),
            sample_id=record.sample_id,
        )
        for f in failures
        for record in samples[f.key]
    ]


def _samples(records: Sequence[SampleRecord]) -> dict[str, list[SampleRecord]]:
    """Every record of each triplet, by ``triplet_key``, in ``sample_id`` order."""
    samples: dict[str, list[SampleRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.sample_id):
        samples[record.triplet_key].append(record)
    return samples


def _chunk_done(run: RunFolder, chunk: int) -> bool:
    """Cheap: the chunk is recorded and its files have the recorded sizes."""
    try:
        return run.check(chunk) is not None
    except CorruptPart:
        return False


def _todo(
    task: StageTask,
    run: RunFolder,
    chunks: list[Sequence[WorkUnit]],
    options: StageOptions,
    samples: dict[str, list[SampleRecord]],
) -> tuple[list[int], int]:
    """This shard's chunks to compute and the units skipped as done. A written chunk is done when its files
    match their checksums (size, then SHA-256); one that does not is recomputed, saying so. A part without a
    checksum (an older run, or a writer killed before recording it) is read whole and adopted when sound."""
    key_of = {r.sample_id: key for key, records in samples.items() for r in records}
    todo, skipped, adopted = [], 0, 0
    for c in shard_chunks(chunks, options):
        if options.force or (options.retry_failed and run.failure_part(c).is_file()):
            todo.append(c)
            continue
        try:
            if run.record(c) is not None:
                run.verify(c)
                if run.failure_part(c).is_file() and any(map(task.retry_on_rerun, run.read_failures([c]))):
                    todo.append(c)  # a provider or network failure: a plain rerun tries it again
                    continue
            elif run.part(c).is_file():
                run.adopt(c, len(chunks[c]), lambda entries: len({key_of.get(e.sample_id or "") for e in entries}))
                adopted += 1
            else:
                todo.append(c)
                continue
        except CorruptPart as exc:
            _say(f"{task.name}: {exc.path.relative_to(run.root)} {exc.problem}; recomputing")
            todo.append(c)
            continue
        skipped += len(chunks[c])
    if adopted:
        _say(
            f"{task.name}: {adopted} part(s) without a recorded checksum (an older run, or a writer killed before "
            "recording it) read whole, found sound and their checksums recorded"
        )
    return todo, skipped


def run_stage(task: StageTask, workdir: Path, options: StageOptions) -> StageSummary:
    """Process this shard's chunks of the manifest's triplets; see the module docstring for the guarantees."""
    start = time.perf_counter()
    wd = Workdir(workdir)
    records = read_manifest(wd.manifest)
    units = work_units(records)
    samples = _samples(records)
    fp = fingerprint(task, options.chunk_size, units)
    stage_dir = wd.stage_dir(task.name)
    run = _run_folder(stage_dir, fp)
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
    todo, skipped = _todo(task, run, chunks, options, samples)
    if todo:
        run.success.unlink(missing_ok=True)

    done = failed = 0
    total = sum(len(chunks[c]) for c in todo)
    description = f"{task.name} ({total} triplets in {len(todo)} chunks)"
    with counter(total, description, options.progress, unit="triplets") as bar:
        task._progress_hook = bar.advance  # type: ignore[attr-defined]  # see StageTask.report_progress
        finished = 0
        for c in todo:
            run.forget(c)  # a kill from here on leaves the chunk unrecorded: not done
            results = _process(task, chunks[c], options.fail_fast)
            rows = [r for r in results if isinstance(r, dict)]
            failures = [f for r in results if not isinstance(r, dict) for f in (r if isinstance(r, list) else [r])]
            if failures and options.fail_fast:
                first = failures[0]
                raise StageFailure(f"{task.name}: {first.key}: {first.error_type}: {first.reason}")
            ledger = ledger_table(_ledger_entries(task, failures, samples)) if failures else None
            run.write_chunk(c, pa.Table.from_pylist(rows, schema=schema), ledger, len(results) - len(rows))
            done += len(rows)
            failed += len(results) - len(rows)
            finished += len(chunks[c])
            bar.set_completed(finished)

    complete = all(_chunk_done(run, c) for c in range(len(chunks)))
    if complete:
        write_ledger(_checked(run.read_failures, task.name, workdir), stage_dir / "errors.parquet")
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


def _checked(read: Callable[[], T], stage: str, workdir: Path) -> T:
    """``read()``, a bad part's ``CorruptPart`` given the way out."""
    try:
        return read()
    except CorruptPart as exc:
        way_out = f"rerun `reidprep {stage} --workdir {workdir}` to recompute it"
        raise CorruptPart(exc.path, exc.problem, way_out) from None


def read_failures(run_dir: Path) -> list[LedgerEntry]:
    """The run's ledger entries, each failures part checked against its checksum (``CorruptPart`` when bad)."""
    stage = run_dir.parent.parent.name
    return _checked(RunFolder(run_dir).read_failures, stage, run_dir.parent.parent.parent)


def read_stage_table(workdir: Path, stage: str, columns: list[str] | None = None) -> pa.Table:
    """The current run's rows of every written part, in chunk order, each part checked against its checksum:
    a bad one raises ``CorruptPart``, one line naming it and the rerun that recomputes it."""
    run_dir = current_run_dir(workdir, stage)
    if run_dir is None:
        raise FileNotFoundError(f"{stage} has not run in {workdir}: run `reidprep {stage} --workdir {workdir}`")
    run = RunFolder(run_dir)
    chunks = run.written_chunks()
    if not chunks:
        raise FileNotFoundError(f"{run_dir} has no parts yet")
    return pa.concat_tables([_checked(partial(run.read_part, c, columns), stage, workdir) for c in chunks])


def _chunk_counts(run: RunFolder, chunk: int) -> tuple[int, int]:
    """(rows, failed units) of a written chunk: from its record (sizes checked), or for an unrecorded part (an
    older run) from its Parquet footer and its failures. Raises ``CorruptPart``."""
    record = run.check(chunk)
    if record is not None:
        return record.rows, record.failed
    try:
        rows = pq.read_metadata(run.part(chunk)).num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(run.part(chunk), exc) from None
    return rows, len(run.read_failures([chunk]))


def stage_status(workdir: Path, stage: str) -> dict[str, Any]:
    """done / failed / pending units of the current run, for ``reidprep status``. Parts are checked cheaply (their
    sizes against the checksums); bad ones are listed under ``corrupt`` (state ``corrupt``), not raised."""
    run_dir = current_run_dir(workdir, stage)
    if run_dir is None or not (run_dir / "stage.json").is_file():
        units = (
            len(work_units(read_manifest(Workdir(workdir).manifest))) if Workdir(workdir).manifest.is_file() else None
        )
        return {"state": "not run", "done": 0, "failed": 0, "warnings": 0, "pending": units}
    meta = json.loads((run_dir / "stage.json").read_text())
    run = RunFolder(run_dir)
    recorded = {int(p.name[5:10]) for p in run.checksums.glob("part-*.json")}
    done = failed = 0
    corrupt = []
    for chunk in sorted(recorded | set(run.written_chunks())):
        try:
            rows, failures = _chunk_counts(run, chunk)
        except CorruptPart as exc:
            corrupt.append(f"{exc.path.relative_to(run_dir)} {exc.problem}")
            continue
        done, failed = done + rows, failed + failures
    state = "complete" if (run_dir / "_SUCCESS").is_file() else "incomplete"
    status = {
        "state": "corrupt" if corrupt else state, "done": done, "failed": failed, "warnings": 0,
        "pending": meta["units"] - done - failed,
    }  # fmt: skip
    if corrupt:
        status["corrupt"] = corrupt
    stale = len(stale_runs(workdir, stage))
    if stale:
        status["stale_runs"] = stale
    return status

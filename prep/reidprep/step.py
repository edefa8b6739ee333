"""The contract of a prep step, as datatrove's ``PipelineStep``: what it reads, its fingerprint, how it runs and
reports. The concrete steps and their order are in :mod:`reidprep.steps`.

Every step writes its outputs, then a completion marker holding its fingerprint (:mod:`reidprep.marker`; the
per-triplet stages through :func:`reidprep.stage.run_stage`). The fingerprint covers the step's own parameters
and the fingerprints of the upstream outputs it reads, which the step also records. A step is **stale** when an
upstream it read has since been rerun with other parameters: a recorded upstream fingerprint differs from that
upstream's current one. A rerun then computes another fingerprint and redoes the work.

One writer per step and workdir: :meth:`Step.run` holds the advisory lock ``<workdir>/<step>/.lock``
(:func:`step_lock`) around the work, so a second process on the same step and workdir gets ``LockHeld`` (exit 2,
naming the holder) instead of corrupting the first's files. The slices of a sharded run (``--shard-index``) hold
that lock shared and their own ``.lock-shard-<i>`` exclusive: they run side by side, one process per slice.
"""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from reidschemas import PipelineConfig
from reidschemas.locks import hold_lock
from reidschemas.stages import stale_reasons

if TYPE_CHECKING:
    from reidprep.stage import StageOptions


@dataclass(frozen=True)
class StepOptions:
    """How to run a step (not what it computes: that is the config)."""

    force: bool = False
    """Redo the work even where the marker says it is done (the per-triplet stages: this shard's chunks)."""
    progress: bool = False
    num_shards: int = 1
    """Per-triplet stages: split the work into N deterministic slices..."""
    shard_index: int = 0
    """...and run this one (0-based)."""
    retry_failed: bool = False
    fail_fast: bool = False
    preview: int = 0
    """masks: also write ``masks/preview.png`` with this many triplets (0: none)."""

    def stage_options(self, chunk_size: int, workers: int = 1) -> StageOptions:
        """These options for the chunked per-triplet runner, with ``chunk_size`` triplets per part and ``workers``
        worker processes (for tasks that allow them)."""
        from reidprep.stage import StageOptions

        return StageOptions(
            chunk_size=chunk_size,
            num_shards=self.num_shards,
            shard_index=self.shard_index,
            force=self.force,
            retry_failed=self.retry_failed,
            fail_fast=self.fail_fast,
            progress=self.progress,
            workers=workers,
        )


@dataclass
class StepResult:
    """What a step run did, as the lines a command prints."""

    step: str
    lines: list[str]
    complete: bool
    """The step's output is whole (False: a slice of a sharded run, or Batch API jobs still running)."""
    skipped: bool = False
    """Nothing was redone: the marker matched the fingerprint."""
    details: dict[str, Any] = field(default_factory=dict)


class StepFailed(RuntimeError):
    """The work itself failed (a bad sample with ``fail_fast``, a dead backend, ``--strict`` problems): exit 1.
    Every other exception a step raises is a precondition (missing input, bad option): exit 2."""


class Step(ABC):
    """One prep step on the shared contract."""

    name: ClassVar[str]
    """Its folder in the workdir and its key in ``status``."""
    command: ClassVar[str]
    """The ``reidprep`` command that runs it."""
    upstream: ClassVar[tuple[str, ...]] = ()
    """The steps whose outputs it reads."""

    def run(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        """Check the preconditions, then do the work holding this step's lock in the workdir (:func:`step_lock`;
        ``LockHeld`` when another process holds it)."""
        self.check(config)
        with step_lock(config.workdir, self.name, self.command, options):
            return self.work(config, options)

    def check(self, config: PipelineConfig) -> None:
        """Raise for a missing input before anything is locked or written (default: the manifest, for the
        steps that read it)."""
        if self.upstream:
            from reidprep.workdir import Workdir

            Workdir(config.workdir).require_manifest()

    @abstractmethod
    def work(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        """Do the work for ``config`` (skipping it when the marker matches), writing the marker last."""

    @abstractmethod
    def output(self, workdir: Path) -> str | None:
        """The fingerprint of the current, complete output (what a downstream step records), or None."""

    @abstractmethod
    def inputs(self, workdir: Path) -> dict[str, str | None]:
        """The upstream fingerprints the current output was built on (upstream name -> fingerprint or None)."""

    @abstractmethod
    def counts(self, workdir: Path) -> dict[str, Any]:
        """``state`` (not run / incomplete / complete), ``done``, ``failed``, ``warnings``, ``pending``."""

    def status(self, workdir: Path, current: dict[str, str | None]) -> dict[str, Any]:
        """``counts`` plus ``fingerprint``, ``inputs`` and ``stale`` (why, or None); the state becomes ``stale``
        when an upstream in ``current`` (name -> its output fingerprint now) differs from what was recorded."""
        row = self.counts(workdir)
        if row["state"] == "not run":
            return {**row, "fingerprint": None, "inputs": {}, "stale": None}
        inputs = self.inputs(workdir)
        reasons = stale_reasons({name: inputs[name] for name in self.upstream if name in inputs}, current)
        if reasons:
            row["state"] = "stale"
        return {**row, "fingerprint": self.output(workdir), "inputs": inputs, "stale": "; ".join(reasons) or None}


@contextlib.contextmanager
def step_lock(workdir: Path, step: str, command: str, options: StepOptions) -> Iterator[None]:
    """Hold ``<workdir>/<step>/.lock``: exclusive for a whole run; for a slice of a sharded run, shared plus
    ``.lock-shard-<index>`` exclusive (so the slices run side by side, and a whole run waits for none of them and
    is refused while any runs). A lock left by a killed process is taken over, saying so on stderr."""
    folder = Path(workdir) / step
    with contextlib.ExitStack() as stack:
        if options.num_shards > 1:
            what = f"reidprep {command} --shard-index {options.shard_index} on {workdir}"
            stack.enter_context(hold_lock(folder / ".lock", what, shared=True, note=_note))
            stack.enter_context(hold_lock(folder / f".lock-shard-{options.shard_index:05d}", what, note=_note))
        else:
            stack.enter_context(hold_lock(folder / ".lock", f"reidprep {command} on {workdir}", note=_note))
        yield


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

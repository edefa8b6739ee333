"""The prep steps in pipeline order, on one contract (:mod:`reidprep.step`): ``run``, ``status`` and ``report``
walk :data:`STEPS`.

=========  ==============  ==================  =====================================================
step       command         reads               completion marker (holds the fingerprint)
=========  ==============  ==================  =====================================================
index      index           the dataset         ``index/_SUCCESS`` (``output``: the manifest's digest)
masks      masks           index               ``masks/runs/<fingerprint>/_SUCCESS``
captions   captions        index, masks        ``captions/runs/<fingerprint>/_SUCCESS``
shards     build-shards    index, masks,       ``shards/dataset.json``
                           captions
=========  ==============  ==================  =====================================================

``synth`` writes a dataset folder, not a workdir: ``run`` starts with it when ``synth.out`` is set; it skips
through the same marker helper (``groundtruth/synth.json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from reidprep.ledger import read_ledger
from reidprep.marker import Marker
from reidprep.step import Step, StepFailed, StepOptions, StepResult
from reidprep.workdir import Workdir
from reidschemas import SPLITS, PipelineConfig
from reidschemas.stages import recorded_stages


class IndexStep(Step):
    name = command = "index"

    def check(self, config: PipelineConfig) -> None:
        if config.dataset.root is None:
            raise ValueError("no dataset root: pass --root or set dataset.root in the config")

    def work(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        from reidprep.index import StrictIndexError, run_index

        assert config.dataset.root is not None  # check()
        try:
            summary = run_index(
                config.workdir,
                config.dataset.layout,
                config.dataset.root,
                kind=config.dataset.kind,
                protocol=config.dataset.protocol,
                strict=config.index.strict,
                check_images=config.index.check_images,
                drop_overlapping_train_ids=config.index.drop_overlapping_train_ids,
                force=options.force,
                progress=options.progress,
            )
        except StrictIndexError as exc:
            raise StepFailed(str(exc)) from exc
        lines = []
        if summary["skipped"]:
            lines.append(f"index: already done for these parameters in {config.workdir} (use --force to redo)")
        lines.append(f"{summary['params']['layout']} at {summary['dataset_dir']}")
        if "protocol" in summary:  # summaries written before the protocol was recorded lack it
            p = summary["protocol"]
            lines.append(f"  evaluation protocol: {p['name']} rule ({p['layout']} layout: {p['rule']})")
        for split in (s for s in SPLITS if s in summary["splits"]):
            n = summary["splits"][split]
            cameras = ",".join(map(str, n["cameras"]))
            lines.append(
                f"  {split}: {n['triplets']} triplets, {n['ids']} ids, cameras {cameras}, {n['scenes']} scenes"
            )
        lines += [f"  {key}: {count}" for key, count in summary["problems"].items()]
        ledger = Workdir(config.workdir).ledger("index")
        lines.append(
            f"index: {summary['records']} records, {summary['errors']} errors, {summary['seconds']:.1f}s; "
            f"ledger {ledger}"
        )
        return StepResult(self.name, lines, True, summary["skipped"], summary)

    def output(self, workdir: Path) -> str | None:
        marker = Marker(Workdir(workdir).done_marker(self.name)).read()
        return None if marker is None or not Workdir(workdir).manifest.is_file() else marker.get("output")

    def inputs(self, workdir: Path) -> dict[str, str | None]:
        return {}

    def counts(self, workdir: Path) -> dict[str, Any]:
        wd = Workdir(workdir)
        ledger = read_ledger(wd.ledger(self.name))
        errors = sum(e.severity == "error" for e in ledger)
        warnings = sum(e.severity == "warning" for e in ledger)
        if wd.done_marker(self.name).is_file() and wd.manifest.is_file():
            done = pq.read_metadata(wd.manifest).num_rows
            return {"state": "complete", "done": done, "failed": errors, "warnings": warnings, "pending": 0}
        started = wd.ledger(self.name).is_file() or wd.manifest.is_file()  # not the lock file alone
        state = "incomplete" if started else "not run"
        return {"state": state, "done": 0, "failed": errors, "warnings": warnings, "pending": None}


class _TripletStep(Step):
    """A per-triplet stage on the chunked runner (``reidprep.stage.run_stage``)."""

    def output(self, workdir: Path) -> str | None:
        from reidprep.stage import complete_run

        return complete_run(workdir, self.name)

    def inputs(self, workdir: Path) -> dict[str, str | None]:
        from reidprep.stage import run_inputs

        return run_inputs(workdir, self.name)

    def counts(self, workdir: Path) -> dict[str, Any]:
        from reidprep.stage import stage_status

        return stage_status(workdir, self.name)


class MasksStep(_TripletStep):
    name = command = "masks"
    upstream = ("index",)

    def work(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        from reidprep.masks.run import run_masks

        return run_masks(config, options, options.preview)


class CaptionsStep(_TripletStep):
    name = command = "captions"
    upstream = ("index", "masks")

    def work(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        from reidprep.captions.run import run_captions

        return run_captions(config, options)


class ShardsStep(Step):
    name = "shards"
    command = "build-shards"
    upstream = ("index", "masks", "captions")

    def work(self, config: PipelineConfig, options: StepOptions) -> StepResult:
        from reidprep.shards.build import build_shards

        summary = build_shards(config.workdir, config.shards, force=options.force, progress=options.progress)
        lines = [summary.line()]
        if summary.excluded and not summary.skipped:
            lines.append(f"  excluded samples are listed in {summary.out_dir / 'errors.parquet'}")
        details = {"rows": summary.rows, "shards": summary.shards, "excluded_per_split": summary.excluded_per_split}
        return StepResult(self.name, lines, True, summary.skipped, details)

    def _index(self, workdir: Path) -> dict[str, Any] | None:
        return Marker(Workdir(workdir).stage_dir(self.name) / "dataset.json").read()

    def output(self, workdir: Path) -> str | None:
        index = self._index(workdir)
        return None if index is None else index.get("fingerprint")

    def inputs(self, workdir: Path) -> dict[str, str | None]:
        return recorded_stages((self._index(workdir) or {}).get("inputs", {}))

    def counts(self, workdir: Path) -> dict[str, Any]:
        index = self._index(workdir)
        if index is None:
            return {"state": "not run", "done": 0, "failed": 0, "warnings": 0, "pending": None}
        return {
            "state": "complete", "done": index["rows"], "failed": index["excluded"], "warnings": 0, "pending": 0,
            "excluded_per_split": index.get("excluded_per_split"),  # None: built before it was recorded
        }  # fmt: skip


STEPS: tuple[Step, ...] = (IndexStep(), MasksStep(), CaptionsStep(), ShardsStep())
"""Every workdir step, in pipeline order (each after its upstream)."""


def get_step(name: str) -> Step:
    for step in STEPS:
        if name in (step.name, step.command):
            return step
    raise ValueError(f"no step {name!r}; the steps are {', '.join(s.name for s in STEPS)}")


def run_synth(config: PipelineConfig, options: StepOptions) -> StepResult:
    """Write the synthetic dataset of the ``synth`` section (skipped when already there)."""
    from reidprep.synth import generate_dataset

    s = config.synth
    if s.out is None:
        raise ValueError("no output folder: give --out or set synth.out in the config")
    summary = generate_dataset(
        s.out, kind=s.kind, ids=s.ids, images_per_id=s.images_per_id, seed=s.seed, progress=options.progress,
        force=options.force,
    )  # fmt: skip
    return StepResult("synth", summary.describe().splitlines(), True, summary.skipped)


def run_pipeline(config: PipelineConfig, options: StepOptions) -> Iterator[StepResult]:
    """Run synth (when ``synth.out`` is set), then every step of :data:`STEPS`, each skipping work already done
    for its current fingerprint (so a step whose upstream changed is redone). Yields each step's result as it
    finishes; stops after a step that is not complete (Batch API jobs still running)."""
    if config.synth.out is not None:
        yield run_synth(config, options)
    for step in STEPS:
        result = step.run(config, options)
        yield result
        if not result.complete:
            return


def workdir_status(workdir: Path) -> dict[str, Any]:
    """Every step's counts, fingerprint, recorded inputs and staleness (``reidprep status``, the report)."""
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist: run `reidprep index --workdir {workdir}` first")
    current = {step.name: step.output(workdir) for step in STEPS}
    return {
        "workdir": str(workdir.resolve()),
        "stages": {step.name: step.status(workdir, current) for step in STEPS},
    }


def status_json(workdir: Path) -> str:
    return json.dumps(workdir_status(workdir), indent=2)


__all__ = ["STEPS", "StepFailed", "StepOptions", "StepResult", "get_step", "run_pipeline", "workdir_status"]

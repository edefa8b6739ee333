"""The stage machinery: parts, rerun and resume, force, shards, failures, staleness, a kill mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from stage_tasks import MeanPixelTask

from reidprep.index import run_index
from reidprep.stage import (
    StageAbort,
    StageFailure,
    StageOptions,
    read_stage_table,
    run_stage,
    stage_status,
    work_units,
)
from reidprep.synth import generate_dataset

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=6, images_per_id=4, seed=1)
    return out


def _indexed(dataset: Path, workdir: Path) -> Path:
    run_index(workdir, "rgbnt201", dataset)
    return workdir


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*.parquet"))}


def test_units_are_unique_triplets(dataset, tmp_path):
    from reidprep.manifest import read_manifest

    wd = _indexed(dataset, tmp_path / "w")
    records = read_manifest(wd / "index" / "manifest.parquet")
    units = work_units(records)
    assert len(units) == len({r.triplet_key for r in records}) < len(records)  # query == gallery in RGBNT201
    assert [u.key for u in units] == sorted(u.key for u in units)


def test_run_rerun_force_are_identical(dataset, tmp_path):
    wd = _indexed(dataset, tmp_path / "w")
    task = MeanPixelTask()
    first = run_stage(task, wd, StageOptions(chunk_size=5))
    assert first.complete and first.failed == 0 and first.done == first.units == 24
    assert len(list((first.run_dir / "parts").glob("part-*.parquet"))) == 5
    before = _files(first.run_dir)
    again = run_stage(task, wd, StageOptions(chunk_size=5))
    assert (again.done, again.skipped) == (0, 24) and task.calls == 5
    forced = run_stage(task, wd, StageOptions(chunk_size=5, force=True))
    assert forced.done == 24 and _files(forced.run_dir) == before
    table = read_stage_table(wd, "means")
    assert table.num_rows == 24 and len(set(table["triplet_key"].to_pylist())) == 24
    assert pq.read_schema(first.run_dir / "parts" / "part-00000.parquet").metadata[b"reid.stage"] == b"means"
    assert stage_status(wd, "means") == {"state": "complete", "done": 24, "failed": 0, "warnings": 0, "pending": 0}


def test_shards_together_equal_one_run(dataset, tmp_path):
    whole = run_stage(MeanPixelTask(), _indexed(dataset, tmp_path / "whole"), StageOptions(chunk_size=4))
    wd = _indexed(dataset, tmp_path / "sharded")
    summaries = [
        run_stage(MeanPixelTask(), wd, StageOptions(chunk_size=4, num_shards=3, shard_index=i)) for i in (2, 0, 1)
    ]
    assert [s.complete for s in summaries] == [False, False, True]
    assert sum(s.done for s in summaries) == 24
    assert summaries[-1].fingerprint == whole.fingerprint
    assert _files(summaries[-1].run_dir) == _files(whole.run_dir)
    with pytest.raises(ValueError, match="shard-index"):
        StageOptions(num_shards=2, shard_index=2)


@pytest.mark.parametrize("soft_fail", [False, True])
def test_failures_are_ledgered_and_do_not_stop_the_rest(dataset, tmp_path, soft_fail):
    wd = _indexed(dataset, tmp_path / "w")
    bad = work_units_keys(wd)[3]
    summary = run_stage(MeanPixelTask(fail_keys=[bad], soft_fail=soft_fail), wd, StageOptions(chunk_size=5))
    assert (summary.done, summary.failed, summary.complete) == (23, 1, True)
    ledger = pq.read_table(wd / "means" / "errors.parquet").to_pylist()
    # The bad triplet is a test one: query and gallery at once, so one failed unit is ledgered under both ids.
    layout, folder, name = bad.split("/")
    assert folder == "test"
    assert sorted(e["sample_id"] for e in ledger) == [f"{layout}/gallery/{name}", f"{layout}/query/{name}"]
    for entry in ledger:
        assert entry["stage"] == "means" and entry["path"].endswith(f"/RGB/{name}.jpg")
        assert entry["error_type"] == ("CorruptImage" if soft_fail else "ValueError")
    assert stage_status(wd, "means")["failed"] == 1
    # A rerun keeps the failure; --retry-failed recomputes that chunk (here it fails again, still once).
    assert run_stage(MeanPixelTask(fail_keys=[bad]), wd, StageOptions(chunk_size=5)).skipped == 24
    retried = run_stage(MeanPixelTask(), wd, StageOptions(chunk_size=5, retry_failed=True))
    assert (retried.done, retried.failed) == (5, 0)
    assert stage_status(wd, "means")["failed"] == 0 and read_stage_table(wd, "means").num_rows == 24


def work_units_keys(wd: Path) -> list[str]:
    from reidprep.manifest import read_manifest

    return [u.key for u in work_units(read_manifest(wd / "index" / "manifest.parquet"))]


def test_fail_fast_stops_without_writing_the_chunk(dataset, tmp_path):
    wd = _indexed(dataset, tmp_path / "w")
    bad = work_units_keys(wd)[7]  # in the second chunk of 5
    with pytest.raises(StageFailure, match="cannot decode"):
        run_stage(MeanPixelTask(fail_keys=[bad]), wd, StageOptions(chunk_size=5, fail_fast=True))
    status = stage_status(wd, "means")
    assert (status["done"], status["state"]) == (5, "incomplete")


def test_changed_parameters_make_a_new_run_and_keep_the_old_one_stale(dataset, tmp_path):
    wd = _indexed(dataset, tmp_path / "w")
    old = run_stage(MeanPixelTask(tag="v1"), wd, StageOptions(chunk_size=5))
    new = run_stage(MeanPixelTask(tag="v2"), wd, StageOptions(chunk_size=5))
    assert new.fingerprint != old.fingerprint and new.done == 24 and new.stale_runs == 1
    assert (old.run_dir / "_SUCCESS").is_file()  # kept
    assert stage_status(wd, "means")["stale_runs"] == 1
    meta = json.loads((new.run_dir / "stage.json").read_text())
    assert meta["identity"] == {"provider": "mean", "tag": "v2"}
    back = run_stage(MeanPixelTask(tag="v1"), wd, StageOptions(chunk_size=5))
    assert back.fingerprint == old.fingerprint and back.skipped == 24  # switching back resumes the old run


_RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, {here!r})
from stage_tasks import MeanPixelTask
from reidprep.stage import StageOptions, run_stage
run_stage(MeanPixelTask(delay={delay}), Path({workdir!r}), StageOptions(chunk_size=2))
"""


def test_killed_mid_run_resumes_with_nothing_lost_or_duplicated(dataset, tmp_path):
    reference = run_stage(MeanPixelTask(), _indexed(dataset, tmp_path / "ref"), StageOptions(chunk_size=2))
    wd = _indexed(dataset, tmp_path / "w")
    code = _RUNNER.format(here=str(HERE), delay=0.05, workdir=str(wd))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    parts_dir = wd / "means" / "runs" / reference.fingerprint / "parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(parts_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(parts_dir.glob("part-*.parquet")))
    assert 3 <= written < 12, "the kill must land mid-run"
    resumed = run_stage(MeanPixelTask(), wd, StageOptions(chunk_size=2))
    assert resumed.skipped == 2 * written and resumed.done == 24 - 2 * written and resumed.complete
    assert _files(resumed.run_dir) == _files(reference.run_dir)
    assert not list(parts_dir.glob(".*tmp*"))  # no half-written leftovers once resumed
    assert read_stage_table(wd, "means").num_rows == 24


class _AbortingTask(MeanPixelTask):
    def process(self, units):
        if any(u.key == self.abort_key for u in units):
            raise StageAbort("the API key was rejected (401): set OPENAI_API_KEY")
        return super().process(units)


def test_abort_stops_the_stage_and_keeps_finished_chunks(dataset, tmp_path):
    wd = _indexed(dataset, tmp_path / "w")
    task = _AbortingTask()
    task.abort_key = work_units_keys(wd)[12]  # third chunk of 5
    with pytest.raises(StageAbort, match="401"):
        run_stage(task, wd, StageOptions(chunk_size=5))
    status = stage_status(wd, "means")
    assert (status["done"], status["failed"], status["state"]) == (10, 0, "incomplete")

"""One writer per step and workdir: a second `reidprep masks` exits 2 naming the first, the slices of a sharded run
still run side by side, and the lock of a killed process is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.synth import generate_dataset

runner = CliRunner()

# A real `reidprep masks` process whose image reads are slowed (a slow disk), so a second one meets it mid-run.
_SLOW_MASKS = """
import sys, time
import reidprep.masks.stage as stage
read = stage.load_modality
def slow(record, modality):
    time.sleep({delay})
    return read(record, modality)
stage.load_modality = slow
from reidprep.cli import main
sys.argv = ["reidprep", "masks", "--no-progress", *{args!r}]
main()
"""

# Takes a step's lock as `reidprep masks` does, says so, and waits to be killed.
_HOLDER = """
import sys, time
from pathlib import Path
from reidprep.step import StepOptions, step_lock
with step_lock(Path({workdir!r}), "masks", "masks", StepOptions()):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=6, images_per_id=4, seed=4)
    return out


def _workdir(dataset: Path, path: Path) -> Path:
    run_index(path, "rgbnt201", dataset)
    return path


def _masks(workdir: Path, *args: str):
    return runner.invoke(app, ["masks", "--workdir", str(workdir), "--no-progress", "--chunk-size", "4", *args])


def _start_slow(workdir: Path, *args: str, lock: str = ".lock", delay: float = 0.15) -> subprocess.Popen:
    """Start a `reidprep masks` whose image reads take ``delay`` seconds more; return once it holds
    ``workdir/masks/<lock>``."""
    code = _SLOW_MASKS.format(delay=delay, args=["--workdir", str(workdir), "--chunk-size", "4", *args])
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = workdir / "masks" / lock
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        holder = json.loads(path.read_text() or "{}") if path.is_file() else {}
        if holder.get("pid") == proc.pid and not holder.get("released"):
            return proc
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the first process never took the lock")


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    return output


def _parts(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "masks" / "runs").glob("*/parts/part-*.parquet"))}


def test_a_second_masks_on_the_same_workdir_exits_2_naming_the_first(dataset, tmp_path):
    reference = _workdir(dataset, tmp_path / "ref")
    assert _masks(reference).exit_code == 0
    wd = _workdir(dataset, tmp_path / "w")
    first = _start_slow(wd)
    second = _masks(wd)
    assert first.poll() is None, "the first must still be running"
    assert second.exit_code == 2
    lines = second.output.strip().splitlines()
    assert len(lines) == 1, second.output
    assert f"pid {first.pid} on " in lines[0] and str(wd / "masks" / ".lock") in lines[0]
    assert "reidprep masks" in lines[0] and "Wait for it to finish" in lines[0]
    assert "masks: 24 done, 0 skipped, 0 failed" in _finish(first)  # the first is untouched by the second
    assert _parts(wd) == _parts(reference)
    assert not list((wd / "masks").rglob(".*.tmp-*"))
    again = _masks(wd)
    assert again.exit_code == 0 and "masks: 0 done, 24 skipped" in again.output  # the lock was released


def test_slices_of_a_sharded_run_go_side_by_side_and_exclude_a_whole_run(dataset, tmp_path):
    reference = _workdir(dataset, tmp_path / "ref")
    assert _masks(reference).exit_code == 0
    wd = _workdir(dataset, tmp_path / "w")
    # 0.4 s per image read: slice 0 outlasts slice 1's whole run and the two refusals on a busy machine
    first = _start_slow(wd, "--num-shards", "2", "--shard-index", "0", lock=".lock-shard-00000", delay=0.4)
    other = _masks(wd, "--num-shards", "2", "--shard-index", "1")  # while slice 0 runs
    assert first.poll() is None, "slice 0 must still be running"
    assert other.exit_code == 0 and "masks (shard 2/2): 12 done" in other.output
    same = _masks(wd, "--num-shards", "2", "--shard-index", "0")
    assert same.exit_code == 2 and f"pid {first.pid}" in same.output and ".lock-shard-00000" in same.output
    whole = _masks(wd)
    assert whole.exit_code == 2 and f"pid {first.pid}" in whole.output
    output = _finish(first)  # the last slice to finish completes the stage
    assert "masks (shard 1/2): 12 done" in output and "stage complete" in output
    assert _parts(wd) == _parts(reference)


def test_the_lock_of_a_killed_process_is_taken_over(dataset, tmp_path):
    wd = _workdir(dataset, tmp_path / "w")
    code = _HOLDER.format(workdir=str(wd))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    refused = _masks(wd)
    assert refused.exit_code == 2 and f"pid {holder.pid}" in refused.output
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    result = _masks(wd)
    assert result.exit_code == 0, result.output
    assert f"taking over a stale lock of pid {holder.pid}" in result.output and "masks: 24 done" in result.output


def test_a_refused_command_leaves_no_folder_behind(tmp_path):
    empty = tmp_path / "empty"
    result = runner.invoke(app, ["masks", "--workdir", str(empty)])
    assert result.exit_code == 2 and "run `reidprep index`" in result.output
    assert not empty.exists()
    result = runner.invoke(app, ["index", "--workdir", str(empty)])
    assert result.exit_code == 2 and "no dataset root" in result.output and not empty.exists()

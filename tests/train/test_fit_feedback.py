"""Feedback on long work: Ctrl-C during ``fit`` says where it stopped and a rerun resumes; the progress bar shows
the epoch line's lr; per-epoch evaluation and ``reidtrain eval`` show progress."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from interrupts import ctrl_c_as_in_a_terminal

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig

FIT = ["--model", "baseline", "--backbone", "tiny", "--random-init", "--recipe", "baseline-tiny-demo", "--seed", "1"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("feedback")
    generate_dataset(tmp / "data", kind="person", ids=8, images_per_id=4, seed=0)
    run_index(tmp / "work", "rgbnt201", tmp / "data")
    return build_shards(tmp / "work", ShardsConfig(missing="null")).out_dir


def _reidtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "reidtrain.cli", *args]


def _epochs(run: Path) -> list[int]:
    metrics = run / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] if metrics.is_file() else []


def test_ctrl_c_says_where_fit_stopped_and_a_rerun_resumes(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit = _reidtrain("fit", "--shards", str(shards), "--output", str(run), *FIT, "--set", "epochs=60", "--progress")
    process = subprocess.Popen(
        fit, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_in_a_terminal
    )
    try:
        deadline = time.monotonic() + 240
        while not ((run / "last.pt").is_file() and _epochs(run)):  # epoch 1 is saved
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "fit did not finish its first epoch in 4 minutes"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    # Ctrl-C lands in training ("during") or while an epoch's files are written, which finish first ("after")
    match = re.search(r"interrupted (during|after) epoch (\d+) of 60: (\S+) holds epoch (\d+) of 60; run the same "
                      r"command again to resume from epoch (\d+)", stderr)  # fmt: skip
    assert match is not None, stderr
    when, running, path, completed, resume_from = match[1], int(match[2]), match[3], int(match[4]), int(match[5])
    assert path == str(run / "last.pt") and resume_from == completed + 1
    assert running == {"during": completed + 1, "after": completed}[when]
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == completed  # the note tells the truth

    # the progress bar showed the lr that the epoch line and metrics.jsonl report
    epoch_1 = next(line for line in stdout.splitlines() if line.startswith("epoch 1:"))
    (shown,) = re.findall(r"\blr (\S+)", epoch_1)
    bar_lrs = set(re.findall(r"epoch 1/60[^\r\n]*?lr=([0-9.e+-]+)", stderr))
    assert bar_lrs == {shown}, (bar_lrs, shown)
    assert f"{json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])['lr']:.2e}" == shown
    assert "epoch 1 eval test query" in stderr and "epoch 1 eval test gallery" in stderr  # per-epoch eval

    rerun = subprocess.run(
        [*fit[:-1], "--epochs", str(completed + 1), "--no-progress"], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {run} after epoch {completed}" in rerun.stdout
    assert _epochs(run) == list(range(1, completed + 2))

    evaluated = subprocess.run(
        _reidtrain("eval", "--run", str(run), "--checkpoint", "last", "--progress"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "last query" in evaluated.stderr and "last gallery" in evaluated.stderr

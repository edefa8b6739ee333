"""DDP: ``reidtrain fit`` under ``torchrun`` with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import ShardDataset
from reidtrain.distributed import dist_env


def _torchrun(shards: Path, run: Path, epochs: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "reidtrain.cli", "fit", "--shards", str(shards), "--output", str(run), "--backbone", "tiny"]
    command += ["--random-init", "--recipe", "baseline-tiny-demo", "--epochs", str(epochs), "--no-progress"]
    command += ["--set", "ids_per_batch=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_cpu_processes_train_disjoint_batches_and_resume(full_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    first = _torchrun(full_shards, run, 1)
    assert first.returncode == 0, first.stdout + first.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1]  # rank 0 alone writes the metrics
    assert first.stdout.count("epoch 1: loss") == 1  # and echoes
    assert first.stdout.count("best on test: epoch 1") == 1

    # each rank trained half of the epoch's PK batches, disjoint
    pids = ShardDataset(full_shards, "train", columns=()).pids
    shares = [PKSampler(pids, 2, 2, seed=0, rank=r, world_size=2) for r in (0, 1)]
    batches = [{tuple(b) for b in s.batches()} for s in shares]
    assert batches[0] and not batches[0] & batches[1]
    single = PKSampler(pids, 2, 2, seed=0)
    assert lines[0]["samples"] == len(shares[0]) == (single.num_batches // 2) * 4

    second = _torchrun(full_shards, run, 2)  # resume under DDP
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_dist_env_reads_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dist_env().world_size == 1 and not dist_env().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = dist_env()
    assert (env.rank, env.local_rank, env.world_size, env.is_main) == (3, 1, 4, False)

"""Shared fixtures of the trainer tests: tiny shard sets built through the real prep code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reidprep.cli import app as prep_app


def build_full_shards(root: Path, kind: str = "person", ids: int = 8, images_per_id: int = 4, seed: int = 0) -> Path:
    """synth -> index -> masks (thermal) -> captions (heuristic) -> build-shards with `reidprep run`; the shards dir."""
    layout = "rgbnt201" if kind == "person" else "msvr310"
    config = {
        "workdir": str(root / "work"),
        "dataset": {"layout": layout, "root": str(root / "synth")},
        "synth": {"out": str(root / "synth"), "kind": kind, "ids": ids, "images_per_id": images_per_id, "seed": seed},
        "masks": {"provider": "thermal"},
        "captions": {"providers": ["heuristic"]},
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(prep_app, ["run", "--config", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "work" / "shards"


@pytest.fixture(scope="session")
def full_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic persons x 4 triplets with thermal masks and heuristic captions (RGBNT201 layout)."""
    return build_full_shards(tmp_path_factory.mktemp("full_shards"))


@pytest.fixture(scope="session")
def learning_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic persons x 8 triplets (28 train ids, 12 test ids) for the learning tests (test_learning.py)."""
    return build_full_shards(tmp_path_factory.mktemp("learning"), ids=40, images_per_id=8)


def _fit_tiny(shards: Path, output: Path, recipe: str, epochs: int = 1) -> Path:
    """``reidtrain fit`` of a shipped tiny recipe from random weights; the run folder."""
    from reidtrain.cli import app as train_app

    args = ["fit", "--shards", str(shards), "--output", str(output), "--recipe", recipe, "--random-init"]
    result = CliRunner().invoke(train_app, [*args, "--epochs", str(epochs), "--seed", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="session")
def stmi_run(full_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the tiny STMI (reads the mask and the fused caption) on ``full_shards``: a run folder."""
    return _fit_tiny(full_shards, tmp_path_factory.mktemp("stmi_run") / "stmi", "stmi-tiny-demo")


@pytest.fixture(scope="session")
def fit_tiny() -> Callable[..., Path]:
    """``fit_tiny(shards, output, recipe, epochs=1)``: ``reidtrain fit`` of a shipped tiny recipe from random weights
    (seed 0); the run folder."""
    return _fit_tiny

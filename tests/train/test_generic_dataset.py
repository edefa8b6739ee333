"""The user's own data end to end: a generic manifest -> index, masks, captions, build-shards -> fit -> eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from reidprep.cli import app as prep_app
from reidprep.manifest import read_manifest
from reidprep.synth import generate_dataset
from reidtrain.cli import app as train_app

runner = CliRunner()


def _ok(app, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_generic_vehicle_data_with_the_scene_rule_trains_and_evaluates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_dataset(data, kind="vehicle", ids=6, images_per_id=3, seed=4)
    _ok(prep_app, ["index", "--layout", "msvr310", "--root", str(data), "--workdir", str(tmp_path / "b"),
                   "--no-progress"])  # fmt: skip
    oracle = read_manifest(tmp_path / "b" / "index" / "manifest.parquet")
    manifest = data / "list.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rgb", "nir", "tir", "split", "pid", "camid", "sceneid"])
        for r in oracle:
            writer.writerow([Path(r.path(m)).relative_to(data) for m in ("rgb", "nir", "tir")]
                            + [r.split, r.pid, r.camid, r.sceneid])  # fmt: skip
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "workdir": str(tmp_path / "w"),
        "dataset": {"layout": "generic", "root": str(manifest), "kind": "vehicle", "protocol": "scene"},
        "masks": {"provider": "thermal"},
        "captions": {"providers": ["heuristic"]},
    }))  # fmt: skip
    _ok(prep_app, ["run", "--config", str(config), "--no-progress"])
    shards = json.loads((tmp_path / "w" / "shards" / "dataset.json").read_text())
    assert shards["dataset"] == "generic" and shards["protocol"] == "scene"
    assert shards["rows_per_split"] == {s: sum(r.split == s for r in oracle) for s in ("train", "query", "gallery")}

    run = tmp_path / "run"
    _ok(train_app, ["fit", "--config", str(config), "--output", str(run), "--random-init", "--epochs", "1",
                    "--set", "image_size=[32,64]", "--no-progress"])  # fmt: skip
    out = _ok(train_app, ["eval", "--run", str(run)])
    assert "scene rule (generic layout: same id and same scene removed" in out

"""`reidprep synth` then `reidprep index` on the result: the manifest has the generator's ids, cameras and splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.manifest import read_manifest

runner = CliRunner()

SPLIT_OF_FOLDER = {
    "rgbnt201": {"train_171": ("train",), "test": ("query", "gallery")},
    "msvr310": {"bounding_box_train": ("train",), "query3": ("query",), "bounding_box_test": ("gallery",)},
}


@pytest.mark.parametrize(
    ("kind", "layout", "top"), [("person", "rgbnt201", "RGBNT201"), ("vehicle", "msvr310", "MSVR310")]
)
def test_synth_then_index_gives_the_ground_truth(tmp_path, kind, layout, top):
    data, workdir = tmp_path / "synth", tmp_path / "work"
    made = runner.invoke(app, ["synth", str(data), "--kind", kind, "--ids", "6", "--images-per-id", "4", "--seed", "3"])
    assert made.exit_code == 0, made.output
    indexed = runner.invoke(
        app, ["index", "--layout", layout, "--root", str(data), "--workdir", str(workdir), "--no-progress"]
    )
    assert indexed.exit_code == 0, indexed.output

    dataset_dir = data / top
    truth = [json.loads(line) for line in (dataset_dir / "groundtruth" / "attributes.jsonl").read_text().splitlines()]
    expected = set()
    for row in truth:
        folder = Path(row["file"]).parts[0]
        for split in SPLIT_OF_FOLDER[layout][folder]:
            expected.add((split, str(dataset_dir / row["file"]), row["pid"], row["camid"], row["sceneid"]))
    records = read_manifest(workdir / "index" / "manifest.parquet")
    got = {(r.split, r.rgb_path, r.pid, r.camid, r.sceneid) for r in records}
    assert got == expected
    assert all(Path(r.nir_path).is_file() and Path(r.tir_path).is_file() for r in records)
    assert {r.dataset for r in records} == {layout}
    train_ids = {r.pid for r in records if r.split == "train"}
    test_ids = {r.pid for r in records if r.split != "train"}
    assert train_ids and test_ids and not train_ids & test_ids

    status = runner.invoke(app, ["status", "--workdir", str(workdir), "--json"])
    index_status = json.loads(status.output)["stages"]["index"]
    assert index_status["state"] == "complete" and index_status["done"] == len(records)
    assert index_status["failed"] == 0

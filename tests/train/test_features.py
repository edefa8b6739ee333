"""Feature and distance files: ``reidtrain embed``, ``reidtrain eval --save-features / --save-distances``, and
``reidtrain rank`` on what eval saved."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import reidtrain
from reidtrain.cli import app
from reidtrain.data.shards import ShardDataset
from reidtrain.evaluate import rank_gallery
from reidtrain.features import embed_shards, read_features

runner = CliRunner()


@pytest.fixture(scope="module")
def ranking(stmi_run: Path, full_shards: Path):
    """The eval path's features and distances of the run's last checkpoint (the oracle)."""
    model = reidtrain.load(stmi_run / "last.pt", device="cpu", echo=lambda line: None)
    return rank_gallery(model.network, full_shards, model.transform.size, torch.device("cpu"))


def test_embed_writes_every_split_with_its_ids(stmi_run: Path, full_shards: Path, ranking, tmp_path: Path) -> None:
    out = tmp_path / "feats.parquet"
    args = ["embed", "--run", str(stmi_run), "--checkpoint", "last", "--split", "query,gallery,train"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"features: .*feats.parquet \(query 8, gallery 8, train 24 rows, \d+ dimensions", result.output)
    schema = pq.read_schema(out)
    assert pa.types.is_fixed_size_list(schema.field("feature").type)
    assert schema.field("feature").type.value_type == pa.float32()
    arrays, meta = read_features(out)
    assert meta["checkpoint"] == str(stmi_run / "last.pt") and meta["epoch"] == 1 and meta["model"] == "stmi"
    assert (
        meta["protocol"] == "camera"
        and meta["dataset"] == "rgbnt201"
        and meta["splits"] == ["query", "gallery", "train"]
    )
    for split in ("query", "gallery", "train"):
        rows = ShardDataset(full_shards, split, columns=())
        take = arrays["split"] == split
        assert list(arrays["sample_id"][take]) == list(rows.column("sample_id"))
        np.testing.assert_array_equal(arrays["pid"][take], rows.pids)
        np.testing.assert_array_equal(arrays["camid"][take], rows.camids)
    np.testing.assert_allclose(arrays["feature"][arrays["split"] == "query"], ranking.query_feats, atol=1e-6)
    np.testing.assert_allclose(arrays["feature"][arrays["split"] == "gallery"], ranking.gallery_feats, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(arrays["feature"], axis=1), 1.0, atol=1e-5)


def test_eval_saves_features_and_distances_that_rank_scores_alike(stmi_run: Path, ranking, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--run", str(stmi_run), "--save-features", "--save-distances"])
    assert result.exit_code == 0, result.output
    features, dist = stmi_run / "features-last.parquet", stmi_run / "dist-last.npz"  # one epoch: last = best
    assert f"features: {features}" in result.output and f"distances: {dist}" in result.output
    arrays, meta = read_features(features)
    assert meta["checkpoint_label"] == "last (= best on test)" and meta["missing"] == []
    assert list(arrays["split"]) == ["query"] * 8 + ["gallery"] * 8
    np.testing.assert_allclose(arrays["feature"][:8], ranking.query_feats, atol=1e-6)
    saved = np.load(dist)
    np.testing.assert_allclose(saved["distmat"], ranking.distmat, atol=1e-6)
    q, g = arrays["feature"][:8].astype(np.float64), arrays["feature"][8:].astype(np.float64)
    np.testing.assert_allclose(saved["distmat"], np.clip(2 - 2 * q @ g.T, 0, None), atol=1e-5)  # from the features
    assert str(saved["protocol"]) == "camera" and list(saved["q_sample_ids"]) == list(arrays["sample_id"][:8])
    scored = runner.invoke(app, ["rank", str(dist)])
    assert scored.exit_code == 0, scored.output
    assert "the npz's protocol entry" in scored.output
    record = json.loads((stmi_run / "eval.json").read_text())["results"][0]
    assert (
        f"mAP {100 * record['mAP']:.2f}  mINP {100 * record['mINP']:.2f}  R1 {100 * record['R1']:.2f}" in scored.output
    )


def test_eval_missing_saves_under_its_own_name(stmi_run: Path) -> None:
    result = runner.invoke(app, ["eval", "--run", str(stmi_run), "--missing", "rgb", "--save-distances"])
    assert result.exit_code == 0, result.output
    assert (stmi_run / "dist-last-missing-rgb.npz").is_file()
    refused = runner.invoke(app, ["eval", "--run", str(stmi_run), "--missing", "all", "--save-features"])
    assert refused.exit_code == 2 and "save one setting" in refused.output


def test_unseen_cameras_take_the_default_and_are_counted(stmi_run: Path, full_shards: Path) -> None:
    lines: list[str] = []
    model = reidtrain.load(stmi_run / "last.pt", device="cpu", echo=lines.append)
    assert model.camera_ids is not None
    rows = ShardDataset(full_shards, ("query", "gallery"))
    last = int(rows.camids[-1])  # a test camera (synthetic persons: test ids on cameras 1 and 2 only)
    kept = tuple(c for c in model.camera_ids if c != last)
    fewer = dataclasses.replace(model, camera_ids=kept)  # as if trained without that camera
    result = embed_shards(fewer, full_shards, ["query", "gallery"], echo=lines.append)
    counted = int(np.sum(np.asarray(result.table.column("camid")) == last))
    assert counted > 0 and result.unseen_cameras == {last: counted}
    assert any(line.startswith(f"{counted} rows: camera {last} was not seen in training") for line in lines)
    feats = result.table.column("feature").combine_chunks().flatten().to_numpy().reshape(len(rows), -1)
    i = int(np.flatnonzero(rows.camids == last)[0])
    item = rows[i]
    default = model.embed(*item["images"], mask=item["mask"], caption=item["captions"]["fused"], camera=None)
    np.testing.assert_allclose(feats[i], default, atol=1e-5)


def test_embed_errors_are_one_line(stmi_run: Path, tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "f.parquet")]
    result = runner.invoke(app, ["embed", "--checkpoint", "best", *out])
    assert result.exit_code == 2 and "--checkpoint best needs --run RUN" in result.output
    result = runner.invoke(app, ["embed", "--run", str(stmi_run), "--split", "test", *out])
    assert result.exit_code == 2 and "unknown split(s) ['test']" in result.output
    result = runner.invoke(app, ["embed", "--run", str(stmi_run), "--shards", str(tmp_path / "none"), *out])
    assert result.exit_code == 2 and "none does not exist; pass --shards" in result.output
    assert not (tmp_path / "f.parquet").exists()

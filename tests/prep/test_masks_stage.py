"""`reidprep masks` end to end with the thermal baseline: storage, shards, staleness, IoU, preview, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.manifest import read_manifest
from reidprep.masks.fusion import fuse_masks
from reidprep.stage import read_stage_table
from reidprep.synth import generate_dataset
from reidschemas.maskcodec import decode_mask

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=6, images_per_id=4, seed=2)
    return out


def _workdir(dataset: Path, path: Path) -> Path:
    run_index(path, "rgbnt201", dataset)
    return path


def _masks(workdir: Path, *args: str) -> str:
    result = runner.invoke(app, ["masks", "--workdir", str(workdir), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_thermal_masks_are_stored_at_image_size_with_provider_and_score(dataset, tmp_path):
    wd = _workdir(dataset, tmp_path / "w")
    output = _masks(wd, "--chunk-size", "5")
    assert "masks: 24 done, 0 skipped, 0 failed" in output and "provider thermal, source tir" in output
    assert "mask IoU vs ground truth: mean" in output
    table = read_stage_table(wd, "masks")
    assert table.num_rows == 24
    records = {r.sample_id: r for r in read_manifest(wd / "index" / "manifest.parquet")}
    for row in table.to_pylist():
        assert row["provider"] == "thermal" and row["source"] == "tir" and 0.0 <= row["score"] <= 1.0
        with Image.open(records[row["sample_id"]].tir_path) as image:
            assert (row["width"], row["height"]) == image.size
        mask = decode_mask(row["mask"], row["height"], row["width"])
        assert 0 < mask.mean() < 1
        assert row["rgb_mask"] is None and row["tir_mask"] is None
    summary = json.loads((wd / "masks" / "summary.json").read_text())
    assert summary["complete"] and summary["groundtruth"]["compared"] == 24
    run_dir = next((wd / "masks" / "runs").iterdir())
    identity = json.loads(pq.read_schema(run_dir / "parts" / "part-00000.parquet").metadata[b"reid.identity"])
    assert identity["provider"] == "thermal" and identity["source"] == "tir" and "params" in identity
    assert "masks: 0 done, 24 skipped" in _masks(wd, "--chunk-size", "5")


def test_sharded_cli_runs_equal_one_run(dataset, tmp_path):
    whole, sharded = _workdir(dataset, tmp_path / "whole"), _workdir(dataset, tmp_path / "sharded")
    _masks(whole, "--chunk-size", "4")
    for index in ("1", "0"):
        _masks(sharded, "--chunk-size", "4", "--num-shards", "2", "--shard-index", index)

    def files(wd: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((wd / "masks" / "runs").rglob("part-*.parquet"))}

    assert files(whole) == files(sharded) and len(files(whole)) == 6


def test_changing_a_parameter_marks_the_old_masks_stale(dataset, tmp_path):
    wd = _workdir(dataset, tmp_path / "w")
    _masks(wd)
    output = _masks(wd, "--config", str(_thermal_config(tmp_path, closing_radius=6)))
    assert "24 done" in output and "1 earlier run(s) with other parameters kept as stale" in output
    status = runner.invoke(app, ["status", "--workdir", str(wd), "--json"])
    assert json.loads(status.output)["stages"]["masks"]["stale_runs"] == 1


def _thermal_config(tmp_path: Path, **params) -> Path:
    path = tmp_path / "pipeline.yaml"
    lines = ["masks:", "  thermal:"] + [f"    {k}: {v}" for k, v in params.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_preview_grid(dataset, tmp_path):
    wd = _workdir(dataset, tmp_path / "w")
    output = _masks(wd, "--preview", "4")
    preview = wd / "masks" / "preview.png"
    assert str(preview) in output
    with Image.open(preview) as image:
        # three 128-px columns with 4-px gaps (labels wrap to that width); four rows of 256 px under their labels
        assert image.size[0] == 3 * 128 + 4 * 4 and image.size[1] > 4 * (256 + 14)
        pixels = np.asarray(image)
    assert (np.abs(pixels.astype(int) - [255, 40, 40]).sum(axis=2) == 0).any()  # mask outlines drawn


def test_bad_choices_are_clear_errors(dataset, tmp_path):
    wd = _workdir(dataset, tmp_path / "w")
    result = runner.invoke(app, ["masks", "--workdir", str(wd), "--source", "all", "--provider", "thermal"])
    assert result.exit_code == 2 and "cannot segment source 'all'" in result.output
    result = runner.invoke(app, ["masks", "--workdir", str(wd), "--provider", "sam2"])
    assert result.exit_code == 2 and "needs a checkpoint" in result.output
    result = runner.invoke(app, ["masks", "--workdir", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "run `reidprep index`" in result.output
    result = runner.invoke(app, ["masks", "--workdir", str(wd), "--num-shards", "2", "--shard-index", "2"])
    assert result.exit_code == 2 and "shard-index" in result.output


def test_unreadable_image_is_ledgered(dataset, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    victim = sorted((copy / "RGBNT201" / "train_171" / "TI").glob("*.jpg"))[0]
    wd = tmp_path / "w"
    run_index(wd, "rgbnt201", copy)
    victim.write_bytes(b"garbage")  # corrupted after indexing
    output = _masks(wd)
    assert "23 done, 0 skipped, 1 failed" in output
    ledger = pq.read_table(wd / "masks" / "errors.parquet").to_pylist()
    assert len(ledger) == 1 and ledger[0]["sample_id"].endswith(victim.stem) and ledger[0]["stage"] == "masks"
    assert "cannot read an image" in ledger[0]["reason"]


def test_fusion_rules():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    c = np.array([[1, 1, 1, 0]], bool)
    assert fuse_masks([a, b, c], "majority").tolist() == [[True, True, True, False]]
    assert fuse_masks([a, b, c], "union").tolist() == [[True, True, True, False]]
    assert fuse_masks([a, b, c], "intersection").tolist() == [[True, False, False, False]]
    assert fuse_masks([a, b, np.zeros_like(a)], "majority").tolist() == [[True, False, False, False]]
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse_masks([a], "vote")


def test_sam2_all_sources_through_the_cli(dataset, tmp_path):
    """The real sam2 path on CPU with a tiny random checkpoint: three masks per triplet fused, resume, identity."""
    import torch
    from sam2_tiny import make_tiny_sam2_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is latency-bound; two threads fight over two busy cores
    try:
        checkpoint = tmp_path / "tiny.pt"
        name, overrides = make_tiny_sam2_checkpoint(checkpoint)
        config = tmp_path / "pipeline.yaml"
        lines = ["masks:", "  sam2:", f"    model: {name}", "    overrides:", *[f"      - {o}" for o in overrides]]
        config.write_text("\n".join(lines) + "\n")
        wd = _workdir(dataset, tmp_path / "w")
        args = ["--config", str(config), "--checkpoint", str(checkpoint), "--device", "cpu", "--keep-modality-masks"]
        output = _masks(wd, *args, "--chunk-size", "10")
        assert "masks: 24 done" in output and "provider sam2, source all" in output
        rows = read_stage_table(wd, "masks").to_pylist()
        for row in rows:
            assert row["provider"] == "sam2" and row["source"] == "all"
            modality_masks = [decode_mask(row[f"{m}_mask"], row["height"], row["width"]) for m in ("rgb", "nir", "tir")]
            fused = decode_mask(row["mask"], row["height"], row["width"])
            assert np.array_equal(fused, fuse_masks(modality_masks, "majority"))
            assert row["score"] == pytest.approx(np.mean([row[f"{m}_score"] for m in ("rgb", "nir", "tir")]), abs=1e-6)
        run_dir = next((wd / "masks" / "runs").iterdir())
        identity = json.loads((run_dir / "stage.json").read_text())["identity"]
        assert identity["provider"] == "sam2" and len(identity["checkpoint_sha256"]) == 64
        assert identity["params"]["dtype"] == "fp32" and identity["fusion"] == "majority"
        assert "0 done, 24 skipped" in _masks(wd, *args, "--chunk-size", "10")
    finally:
        torch.set_num_threads(threads)

"""``reidtrain fit``'s start block, its refusals and their overrides, and the provenance a run records
(issue 15, points 3-4), on shard sets built by the real prep code."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from reidprep.cli import app as prep_app
from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidtrain.cli import app
from reidtrain.models.layers.clip import build_clip

runner = CliRunner()


def _args(shards: Path, output: Path, *extra: str) -> list[str]:
    return ["fit", "--shards", str(shards), "--output", str(output), "--no-progress", "--epochs", "1", *extra]


def _rows(shards: Path) -> dict[str, list]:
    """Every row's split, pid, camid, mask presence and fused caption, read with pyarrow alone (the oracle)."""
    columns = ["split", "pid", "camid", "mask", "caption_fused", "height", "width"]
    table = pa.concat_tables(pq.read_table(p, columns=columns) for p in sorted(shards.glob("shard-*.parquet")))
    return table.to_pydict()


def _refusal(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def null_person_shards(tmp_path_factory) -> Path:
    """Person shards built with ``--missing null`` from an index alone: no mask, no caption on any row."""
    tmp = tmp_path_factory.mktemp("null_person")
    generate_dataset(tmp / "data", kind="person", ids=8, images_per_id=4, seed=0)
    run_index(tmp / "work", "rgbnt201", tmp / "data")
    return build_shards(tmp / "work", ShardsConfig(missing="null")).out_dir


@pytest.fixture(scope="module")
def vehicle_shards(tmp_path_factory) -> Path:
    """Vehicle (MSVR310-layout) shards, stored landscape (128 x 256)."""
    tmp = tmp_path_factory.mktemp("vehicle")
    generate_dataset(tmp / "data", kind="vehicle", ids=8, images_per_id=4, seed=0)
    run_index(tmp / "work", "msvr310", tmp / "data")
    return build_shards(tmp / "work", ShardsConfig(missing="null")).out_dir


@pytest.fixture(scope="module")
def weighted_run(full_shards: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    """One STMI epoch from a tiny random CLIP weights file: (run folder, weights file, fit's output)."""
    tmp = tmp_path_factory.mktemp("weighted")
    torch.manual_seed(1)
    weights = tmp / "tiny-clip.pt"
    torch.save(build_clip("tiny", (64, 32), None, require_pretrained=False).state_dict(), weights)
    run = tmp / "run"
    args = _args(full_shards, run, "--recipe", "stmi-tiny-demo", "--weights", str(weights), "--set", "ids_per_batch=2")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return run, weights, result.output


def test_the_start_block_says_what_is_trained_on_what(weighted_run, full_shards: Path) -> None:
    run, weights, output = weighted_run
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("fit: "))
    assert first < next(i for i, line in enumerate(lines) if line.startswith("epoch 1:"))  # before the first step
    block = "\n".join(lines[first : first + 6])
    assert f"fit: model stmi, recipe stmi-tiny-demo, backbone tiny, weights {weights.resolve()}" in block
    assert "image size 64 x 32 (H x W); shards store 256x128 (portrait)" in block
    # parameter counts against the model fit saved, rebuilt and counted here
    from reidtrain.evaluate import load_checkpoint

    model, config, _ = load_checkpoint(run / "last.pt")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < total  # STMI's frozen text tower
    assert f"parameters: {trainable:,} trainable / {total:,} total" in block
    assert config["parameters"] == {"trainable": trainable, "total": total}
    # ids, cameras and rows per split, against the Parquet files read directly
    rows = _rows(full_shards)
    for split in ("train", "query", "gallery"):
        chosen = [i for i, s in enumerate(rows["split"]) if s == split]
        ids = len({rows["pid"][i] for i in chosen})
        cameras = len({rows["camid"][i] for i in chosen})
        assert f"{split} {ids} ids, {cameras} cameras, {len(chosen)} rows" in block
    train = [i for i, s in enumerate(rows["split"]) if s == "train"]
    masks = sum(rows["mask"][i] is not None for i in train) / len(train)
    captions = sum(bool(rows["caption_fused"][i]) for i in train) / len(train)
    assert f"token_mask (mask on {100 * masks:.1f}% of train rows)" in block
    assert f"captions (fused caption on {100 * captions:.1f}% of train rows)" in block
    assert f"shards: current with {full_shards.parent}" in block
    assert "warning" not in block  # the synthetic splits share no id


def test_config_and_both_checkpoints_record_provenance(weighted_run, full_shards: Path) -> None:
    run, weights, _ = weighted_run
    config = json.loads((run / "config.json").read_text())
    index = json.loads((full_shards / "dataset.json").read_text())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (config["model"], config["recipe"]["model"], config["recipe_name"]) == ("stmi", "stmi", "stmi-tiny-demo")
    assert config["image_size"] == [64, 32] and config["model_options"] == config["recipe"]["model_options"]
    assert config["num_classes"] == len({p for p, s in zip(*_split_pids(full_shards), strict=True) if s == "train"})
    assert config["dataset_fingerprint"] == index["fingerprint"]
    prov = config["provenance"]
    assert prov["dataset_fingerprint"] == index["fingerprint"] and prov["weights_sha256"] == digest
    assert prov["package_version"] and prov["torch_version"] == str(torch.__version__)
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    for name in ("last.pt", "best.pt"):
        assert torch.load(run / name, weights_only=True)["config"] == config, name


def _split_pids(shards: Path) -> tuple[list[int], list[str]]:
    rows = _rows(shards)
    return rows["pid"], rows["split"]


def test_random_init_records_no_weights_digest(null_person_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, _args(null_person_shards, run, "--random-init", "--recipe", "baseline-tiny-demo"))
    assert result.exit_code == 0, result.output
    assert "weights random init" in result.output and "inputs: images (rgb, nir, tir)\n" in result.output
    assert json.loads((run / "config.json").read_text())["provenance"]["weights_sha256"] is None


def test_a_checkpoint_moved_out_of_its_run_folder_evaluates(weighted_run, full_shards: Path, tmp_path: Path) -> None:
    run, _, _ = weighted_run
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    expected = json.loads((run / "eval.json").read_text())["results"][0]
    moved = tmp_path / "elsewhere" / "model.pt"
    moved.parent.mkdir()
    shutil.copy(run / "last.pt", moved)
    result = runner.invoke(app, ["eval", "--checkpoint", str(moved), "--shards", str(full_shards)])
    assert result.exit_code == 0, result.output
    got = json.loads((moved.parent / "eval.json").read_text())["results"][0]
    assert got["epoch"] == 1 and got["mAP"] == pytest.approx(expected["mAP"]) and got["R1"] == expected["R1"]
    # a checkpoint of an earlier version (no config inside) still loads beside its config.json, and says why not
    old = {k: v for k, v in torch.load(run / "last.pt", weights_only=True).items() if k != "config"}
    torch.save(old, moved)
    result = runner.invoke(app, ["eval", "--checkpoint", str(moved), "--shards", str(full_shards)])
    assert "does not record its configuration" in _refusal(result)
    shutil.copy(run / "config.json", moved.parent / "config.json")
    result = runner.invoke(app, ["eval", "--checkpoint", str(moved), "--shards", str(full_shards)])
    assert result.exit_code == 0, result.output


def test_a_portrait_size_on_landscape_shards_is_refused_unless_allowed(vehicle_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = _args(vehicle_shards, run, "--random-init", "--recipe", "baseline-tiny-demo")  # image_size [64, 32]
    line = _refusal(runner.invoke(app, args))
    assert "64x32 (H x W) is portrait but the shards store landscape images (128x256)" in line
    assert "--allow-orientation-mismatch" in line and not run.exists()  # nothing written
    result = runner.invoke(app, [*args, "--allow-orientation-mismatch"])
    assert result.exit_code == 0, result.output
    assert "overrides: --allow-orientation-mismatch" in result.output
    assert json.loads((run / "config.json").read_text())["allowed"]["allow_orientation_mismatch"] is True
    # a landscape size trains without the override
    result = runner.invoke(app, _args(vehicle_shards, tmp_path / "ok", "--random-init", "--set", "image_size=[32,64]"))
    assert result.exit_code == 0, result.output


def test_inputs_missing_on_train_rows_are_refused_unless_allowed(null_person_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = _args(null_person_shards, run, "--random-init", "--recipe", "stmi-tiny-demo", "--set", "ids_per_batch=2")
    line = _refusal(runner.invoke(app, args))
    assert "reads token_mask but 100.0% of train rows have no mask" in line
    assert "reads captions but 100.0% of train rows have no fused caption" in line
    assert "--allow-missing-inputs" in line and not run.exists()
    # the override is also a key of pipeline.yaml's train section
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"train": {"allow_missing_inputs": True}}))
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "token_mask (mask on 0.0% of train rows)" in result.output


def test_shards_stale_against_a_masks_rerun_are_refused_unless_allowed(full_shards: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(full_shards.parent, work, ignore=shutil.ignore_patterns("train"))
    original = yaml.safe_load((full_shards.parent.parent / "pipeline.yaml").read_text())
    config = {**original, "workdir": str(work), "masks": {"provider": "thermal", "thermal": {"smoothing_sigma": 2.0}}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(prep_app, ["masks", "--config", str(tmp_path / "pipeline.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    built_on = json.loads((work / "shards" / "dataset.json").read_text())["inputs"]["masks_run"]
    current = json.loads((work / "masks" / "current.json").read_text())["run_dir"].split("/")[-1]
    assert built_on != current  # the rerun made another masks run current
    run = tmp_path / "run"
    args = _args(work / "shards", run, "--random-init", "--recipe", "baseline-tiny-demo")
    line = _refusal(runner.invoke(app, args))
    assert f"stale against {work}" in line and f"built on masks run {built_on}, current is run {current}" in line
    assert "--allow-stale-shards" in line and not run.exists()
    result = runner.invoke(app, [*args, "--allow-stale-shards"])
    assert result.exit_code == 0, result.output
    assert "shards: STALE" in result.output


def test_train_ids_shared_with_the_test_splits_are_a_warning(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "data", kind="person", ids=8, images_per_id=4, seed=0)
    run_index(tmp_path / "work", "rgbnt201", tmp_path / "data")
    manifest = tmp_path / "work" / "index" / "manifest.parquet"
    table = pq.read_table(manifest)
    pids, splits = table.column("pid").to_pylist(), table.column("split").to_pylist()
    train_pid = next(p for p, s in zip(pids, splits, strict=True) if s == "train")
    test_pid = next(p for p, s in zip(pids, splits, strict=True) if s != "train")
    shared = [train_pid if p == test_pid else p for p in pids]  # one test id relabelled as a train id
    table = table.set_column(
        table.schema.get_field_index("pid"), "pid", pa.array(shared, table.schema.field("pid").type)
    )
    pq.write_table(table, manifest)
    shards = build_shards(tmp_path / "work", ShardsConfig(missing="null"), out_dir=tmp_path / "shards").out_dir
    result = runner.invoke(app, _args(shards, tmp_path / "run", "--random-init", "--recipe", "baseline-tiny-demo"))
    assert result.exit_code == 0, result.output
    assert f"warning: 1 train ids also appear in query/gallery ({train_pid})" in result.output
    assert "not in a prep workdir: staleness not checked" in result.output

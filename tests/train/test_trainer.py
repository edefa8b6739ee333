"""``reidtrain fit`` / ``reidtrain eval`` end to end on a tiny shard set (tiny random CLIP, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidtrain.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trainer")
    generate_dataset(tmp / "data", kind="person", ids=8, images_per_id=4, seed=0)
    workdir = tmp / "work"
    run_index(workdir, "rgbnt201", tmp / "data")
    return build_shards(workdir, ShardsConfig(missing="null")).out_dir


def _fit(shards: Path, output: Path, *extra: str) -> str:
    args = ["fit", "--shards", str(shards), "--output", str(output), "--model", "baseline", "--backbone", "tiny"]
    args += ["--random-init", "--recipe", "baseline-tiny-demo", "--seed", "3", "--no-progress", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def two_epochs(shards: Path, tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("runs") / "straight"
    return run, _fit(shards, run, "--epochs", "2")


def test_fit_writes_metrics_checkpoints_and_config(two_epochs: tuple[Path, str], shards: Path) -> None:
    run, output = two_epochs
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:
        assert math.isfinite(line["loss"]) and math.isfinite(line["loss_id"]) and math.isfinite(line["loss_triplet"])
        assert 0.0 <= line["mAP"] <= 1.0 and 0.0 <= line["mINP"] <= 1.0 and 0.0 <= line["R1"] <= line["R10"] <= 1.0
        assert line["rule"] == "camera" and line["lr"] > 0 and line["seconds"] > 0
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    assert not list(run.glob(".*.tmp-*"))  # temporary names: .NAME.tmp-HOST-PID
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "tiny" and config["epochs"] == 2 and config["recipe"]["image_size"] == [64, 32]
    assert config["shards"] == str(shards.resolve())
    best = max(lines, key=lambda line: line["mAP"])
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == best["epoch"]
    final = output.strip().splitlines()[-1]
    assert final.startswith("last epoch 2: test mAP") and f"best on test: epoch {best['epoch']}, test mAP" in final
    assert "no validation split" in output and all(
        line["best_on"] == "test" and "val_mAP" not in line for line in lines
    )
    assert torch.load(run / "best.pt", weights_only=True)["selected_on"] == "test"


def test_resume_equals_an_uninterrupted_run(two_epochs: tuple[Path, str], shards: Path, tmp_path: Path) -> None:
    straight, _ = two_epochs
    run = tmp_path / "pieces"
    _fit(shards, run, "--epochs", "1")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    output = _fit(shards, run, "--epochs", "2", "--resume")
    assert "resuming" in output
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    first = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["loss"] for line in first] == [line["loss"] for line in second]
    assert [line["mAP"] for line in first] == [line["mAP"] for line in second]
    again = _fit(shards, run, "--epochs", "2")  # a finished run: nothing trained, nothing rewritten
    assert "already trained to epoch 2" in again and again.strip().splitlines()[-1].startswith("last epoch 2")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_run_folder_of_another_config_is_refused(two_epochs: tuple[Path, str], shards: Path) -> None:
    run, _ = two_epochs
    args = ["fit", "--shards", str(shards), "--output", str(run), "--backbone", "tiny", "--random-init"]
    result = runner.invoke(app, [*args, "--seed", "4", "--epochs", "2"])
    assert result.exit_code == 2 and "different configuration" in result.output and "seed" in result.output


def test_eval_with_and_without_missing_modalities(two_epochs: tuple[Path, str]) -> None:
    run, _ = two_epochs
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    full = json.loads((run / "eval.json").read_text())["results"][0]
    assert full["missing"] == [] and full["epoch"] == 2 and full["rule"] == "camera"
    last_line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert full["mAP"] == pytest.approx(last_line["mAP"])
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "best", "--missing", "rgb"])
    assert result.exit_code == 0, result.output
    assert "missing rgb" in result.output
    assert json.loads((run / "eval-missing-rgb.json").read_text())["results"][0]["checkpoint"] == "best on test"
    result = runner.invoke(app, ["eval", "--run", str(run), "--missing", "rgb,nir"])
    assert result.exit_code == 0, result.output
    partial = json.loads((run / "eval-missing-rgb-nir.json").read_text())["results"][0]
    assert partial["missing"] == ["rgb", "nir"]
    assert (partial["mAP"], partial["mINP"], partial["R1"]) != (full["mAP"], full["mINP"], full["R1"])
    for bad, message in (("rgb,depth", "unknown modalities"), ("rgb,rgb", "twice"), ("rgb,nir,tir", "all three")):
        result = runner.invoke(app, ["eval", "--run", str(run), "--missing", bad])
        assert result.exit_code == 2 and message in result.output


def test_eval_missing_all_scores_the_seven_settings_and_their_average(two_epochs: tuple[Path, str]) -> None:
    """--missing all: none, each modality, each pair absent; every row equals its own --missing run, the average
    row their mean."""
    run, _ = two_epochs
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last", "--missing", "all"])
    assert result.exit_code == 0, result.output
    assert "average" in result.output and "rgb,nir" in result.output  # the table names each setting
    payload = json.loads((run / "eval-missing-all.json").read_text())
    rows = payload["results"]
    expected = [[], ["rgb"], ["nir"], ["tir"], ["rgb", "nir"], ["rgb", "tir"], ["nir", "tir"]]
    assert payload["settings"] == expected and [r["missing"] for r in rows] == [*expected, "average"]
    for row in rows[1:3]:  # two settings checked against the single-setting path
        alone = runner.invoke(
            app, ["eval", "--run", str(run), "--checkpoint", "last", "--missing", ",".join(row["missing"])]
        )
        assert alone.exit_code == 0, alone.output
        single = json.loads((run / f"eval-missing-{'-'.join(row['missing'])}.json").read_text())["results"][0]
        assert row["mAP"] == pytest.approx(single["mAP"]) and row["R1"] == pytest.approx(single["R1"])
    for key in ("mAP", "R1", "R5", "R10", "mINP"):
        assert rows[-1][key] == pytest.approx(sum(r[key] for r in rows[:-1]) / 7)
    assert len({round(r["mAP"], 6) for r in rows[:-1]}) > 1  # the settings do differ
    refused = runner.invoke(app, ["eval", "--run", str(run), "--missing", "all", "--rank-list", "2"])
    assert refused.exit_code == 2 and "--rank-list" in refused.output


def test_eval_reports_last_and_best_with_their_epochs(two_epochs: tuple[Path, str]) -> None:
    run, _ = two_epochs
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best_epoch = max(metrics, key=lambda m: m["mAP"])["epoch"]  # the first of equal maxima, as fit keeps it
    result = runner.invoke(app, ["eval", "--run", str(run)])
    assert result.exit_code == 0, result.output
    records = json.loads((run / "eval.json").read_text())["results"]
    if best_epoch == 2:
        assert [(r["checkpoint"], r["epoch"]) for r in records] == [("last (= best on test)", 2)]
    else:
        assert [(r["checkpoint"], r["epoch"]) for r in records] == [("last", 2), ("best on test", best_epoch)]
        assert records[1]["mAP"] == pytest.approx(metrics[best_epoch - 1]["mAP"])
    assert "epoch" in result.output and "mAP" in result.output and "best on test" in result.output


def test_rank_list_png_shows_top_k_with_correct_ones_marked(two_epochs: tuple[Path, str], shards: Path) -> None:
    from PIL import Image

    from reidtrain.ranklist import CORRECT, WRONG

    run, _ = two_epochs
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last", "--rank-list", "3", "--top-k", "4"])
    assert result.exit_code == 0, result.output
    shown = json.loads((run / "eval.json").read_text())["rank_list"]
    assert len(shown["queries"]) == 3 and all(len(q["gallery"]) == 4 for q in shown["queries"])
    from reidtrain.data.shards import ShardDataset

    rows = ShardDataset(shards, ("query", "gallery"), columns=())
    pid = dict(zip(rows.column("sample_id"), rows.pids, strict=True))
    for q in shown["queries"]:
        assert q["correct"] == [pid[g] == pid[q["query"]] for g in q["gallery"]]
    image = np.asarray(Image.open(run / "rank_list.png").convert("RGB"))
    assert image.shape[0] > 3 * 64 and image.shape[1] > 5 * 64
    colours = {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0).tolist()}
    any_correct = any(any(q["correct"]) for q in shown["queries"])
    any_wrong = any(not all(q["correct"]) for q in shown["queries"])
    assert (CORRECT in colours) == any_correct and (WRONG in colours) == any_wrong


def test_missing_shards_folder_is_a_clear_error(tmp_path: Path) -> None:
    args = ["fit", "--shards", str(tmp_path / "nope"), "--output", str(tmp_path / "run"), "--backbone", "tiny"]
    result = runner.invoke(app, [*args, "--random-init"])
    assert result.exit_code == 2
    assert "shards folder" in result.output and "does not exist" in result.output
    result = runner.invoke(app, ["eval", "--run", str(tmp_path / "run")])
    assert result.exit_code == 2 and "not a run folder" in result.output


@pytest.fixture(scope="module")
def with_val(shards: Path, tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("runs") / "val"
    return run, _fit(shards, run, "--epochs", "2", "--val-ids", "2")


def test_val_ids_hold_ids_out_and_choose_best(with_val: tuple[Path, str], shards: Path) -> None:
    from rank_reference import reference_evaluate_rank

    from reidtrain.batch import model_inputs, shard_columns
    from reidtrain.data.augment import EvalTransform
    from reidtrain.data.items import ShardItems
    from reidtrain.data.shards import ShardDataset
    from reidtrain.evaluate import extract_features, load_run_model

    run, output = with_val
    config = json.loads((run / "config.json").read_text())
    train_ids = sorted(set(ShardDataset(shards, "train", columns=()).pids.tolist()))
    held = config["val_pids"]
    assert config["val_ids"] == 2 and len(held) == 2 and set(held) <= set(train_ids)
    assert config["num_classes"] == len(train_ids) - 2  # the classifier's classes: the remaining ids
    assert f"ids {held} held out of train" in output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(line["best_on"] == "val" and 0.0 <= line["val_mAP"] <= 1.0 for line in lines)
    best = max(lines, key=lambda line: line["val_mAP"])  # the first of equal maxima, as fit keeps it
    state = torch.load(run / "best.pt", weights_only=True)
    assert (state["epoch"], state["selected_on"]) == (best["epoch"], "val")
    assert state["val_mAP"] == pytest.approx(best["val_mAP"]) and state["mAP"] == pytest.approx(best["mAP"])
    final = output.strip().splitlines()[-1]
    assert f"best on val: epoch {best['epoch']} (val mAP {100 * best['val_mAP']:.2f}" in final
    assert f"test mAP {100 * best['mAP']:.2f}" in final

    # Oracle: the last epoch's val mAP, recomputed from the rule (README) with the plain reference evaluator.
    model, _, _ = load_run_model(run, "last")
    inputs = model_inputs(model)
    rows = ShardDataset(shards, "train", columns=shard_columns(inputs))
    labels = rows.label_map()
    feats = extract_features(model, ShardItems(rows, EvalTransform(size=(64, 32)), labels, inputs), torch.device("cpu"))
    pids, cams = feats["pids"], feats["camids"]
    gallery = np.flatnonzero(np.isin(pids, held))
    firsts: dict[tuple[int, int], int] = {}
    for i in gallery.tolist():
        firsts.setdefault((int(pids[i]), int(cams[i])), i)
    query = np.asarray(sorted(firsts.values()))
    f = feats["feats"].astype(np.float64)
    distmat = np.clip(2.0 - 2.0 * f[query] @ f[gallery].T, 0.0, None)
    _, ref_map, _, valid, skipped = reference_evaluate_rank(
        distmat, pids[query], pids[gallery], cams[query], cams[gallery]
    )
    assert skipped == 0 and valid == len(query)
    assert lines[-1]["val_mAP"] == pytest.approx(ref_map, abs=1e-6)


def test_resume_with_val_ids_equals_an_uninterrupted_run(
    with_val: tuple[Path, str], shards: Path, tmp_path: Path
) -> None:
    straight, _ = with_val
    run = tmp_path / "pieces"
    _fit(shards, run, "--epochs", "1", "--val-ids", "2")
    _fit(shards, run, "--epochs", "2", "--val-ids", "2", "--resume")
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert (a["best_epoch"], a["best_map"], a["best_test_map"]) == (b["best_epoch"], b["best_map"], b["best_test_map"])
    first = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "mAP", "val_mAP"):
        assert [line[key] for line in first] == [line[key] for line in second], key
    assert torch.load(straight / "best.pt", weights_only=True)["epoch"] == torch.load(run / "best.pt")["epoch"]
    result = runner.invoke(
        app,
        [
            "fit",
            "--shards",
            str(shards),
            "--output",
            str(run),
            "--backbone",
            "tiny",
            "--random-init",
            "--recipe",
            "baseline-tiny-demo",
            "--seed",
            "3",
            "--epochs",
            "2",
        ],
    )
    assert result.exit_code == 2 and "different configuration" in result.output and "val_ids" in result.output


def test_eval_labels_best_on_val(with_val: tuple[Path, str]) -> None:
    run, _ = with_val
    result = runner.invoke(app, ["eval", "--run", str(run)])
    assert result.exit_code == 0, result.output
    labels = [r["checkpoint"] for r in json.loads((run / "eval.json").read_text())["results"]]
    assert labels in (["last (= best on val)"], ["last", "best on val"])
    assert "best on val" in result.output


def test_too_many_val_ids_is_a_clear_error(shards: Path, tmp_path: Path) -> None:
    args = ["fit", "--shards", str(shards), "--output", str(tmp_path / "run"), "--backbone", "tiny", "--random-init"]
    result = runner.invoke(app, [*args, "--recipe", "baseline-tiny-demo", "--val-ids", "5"])
    assert result.exit_code == 2 and "--val-ids 5" in result.output and "hold out fewer" in result.output
    assert not (tmp_path / "run").exists()

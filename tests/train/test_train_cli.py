"""reidtrain's command line."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from reidtrain.cli import app as train_app

runner = CliRunner()


def test_reidtrain_rank_scores_a_saved_distance_matrix(tmp_path):
    arrays = tmp_path / "dist.npz"
    # Query 0 (id 1, cam 0): gallery 0 is the same camera (removed), gallery 1 a distractor, gallery 2 the match.
    np.savez(
        arrays,
        distmat=np.array([[0.1, 0.2, 0.3]]),
        q_pids=np.array([1]),
        g_pids=np.array([1, 2, 1]),
        q_camids=np.array([0]),
        g_camids=np.array([0, 1, 1]),
    )
    result = runner.invoke(train_app, ["rank", str(arrays), "--max-rank", "2"])
    assert result.exit_code == 0, result.output
    assert "mAP 50.00" in result.output and "R1 0.00" in result.output
    np.savez(arrays, distmat=np.zeros((1, 1)))
    result = runner.invoke(train_app, ["rank", str(arrays)])
    assert result.exit_code == 2 and "lacks the arrays" in result.output


def test_fit_and_eval_take_their_defaults_from_the_config_train_section(full_shards, tmp_path):
    import json

    import yaml

    config = tmp_path / "pipeline.yaml"
    workdir = full_shards.parent  # <root>/work, holding shards/
    train = {"backbone": "tiny", "random_init": True, "set": {"ids_per_batch": 2}, "epochs": 1, "seed": 7}
    config.write_text(yaml.safe_dump({"workdir": str(workdir), "train": train}))
    result = runner.invoke(train_app, ["fit", "--config", str(config), "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["shards"] == str(full_shards.resolve())  # <workdir>/shards
    assert (saved["backbone"], saved["seed"], saved["epochs"], saved["random_init"]) == ("tiny", 7, 1, True)
    assert saved["recipe"]["ids_per_batch"] == 2 and "random ranking: mAP" in result.output
    # the command line wins over the file; without --output the run goes to <workdir>/train/<model>
    result = runner.invoke(train_app, ["fit", "--config", str(config), "--seed", "8", "--set", "instances_per_id=3"])
    assert result.exit_code == 0, result.output
    saved = json.loads((workdir / "train" / "baseline" / "config.json").read_text())
    assert saved["seed"] == 8 and saved["recipe"]["instances_per_id"] == 3 and saved["recipe"]["ids_per_batch"] == 2
    result = runner.invoke(train_app, ["eval", "--config", str(config), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert (workdir / "train" / "baseline" / "eval.json").is_file()


def test_fit_without_shards_or_config_and_bad_config_keys_are_clear_errors(tmp_path):
    result = runner.invoke(train_app, ["fit", "--backbone", "tiny", "--random-init"])
    assert result.exit_code == 2 and "--shards and --output, or --config" in result.output
    config = tmp_path / "pipeline.yaml"
    config.write_text("train:\n  modle: stmi\n")
    result = runner.invoke(train_app, ["fit", "--config", str(config)])
    assert result.exit_code == 2 and "train.modle: unknown key" in result.output

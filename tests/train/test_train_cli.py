"""reidtrain's command line."""

from __future__ import annotations

import numpy as np
import pytest
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
    assert "evaluation protocol: camera rule (rgbnt201 layout: same id and same camera removed)" in result.output
    # the command line wins over the file; without --output the run goes to <workdir>/train/<model>
    result = runner.invoke(train_app, ["fit", "--config", str(config), "--seed", "8", "--set", "instances_per_id=3"])
    assert result.exit_code == 0, result.output
    saved = json.loads((workdir / "train" / "baseline" / "config.json").read_text())
    assert saved["seed"] == 8 and saved["recipe"]["instances_per_id"] == 3 and saved["recipe"]["ids_per_batch"] == 2
    result = runner.invoke(train_app, ["eval", "--config", str(config), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert (workdir / "train" / "baseline" / "eval.json").is_file()
    assert "evaluation protocol: camera rule (rgbnt201 layout" in result.output


def test_fit_without_shards_or_config_and_bad_config_keys_are_clear_errors(tmp_path):
    result = runner.invoke(train_app, ["fit", "--backbone", "tiny", "--random-init"])
    assert result.exit_code == 2 and "--shards and --output, or --config" in result.output
    config = tmp_path / "pipeline.yaml"
    config.write_text("train:\n  modle: stmi\n")
    result = runner.invoke(train_app, ["fit", "--config", str(config)])
    assert result.exit_code == 2 and "train.modle: unknown key" in result.output


def _fit_args(shards, output, *extra):
    return ["fit", "--shards", str(shards), "--output", str(output), "--random-init", "--no-progress", *extra]


def test_a_recipe_names_its_model_and_backbone(full_shards, tmp_path):
    import json

    import torch

    from reidtrain.models import create_model

    run = tmp_path / "stmi"
    args = _fit_args(full_shards, run, "--recipe", "stmi-tiny-demo", "--set", "ids_per_batch=2", "--epochs", "1")
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"], saved["backbone"], saved["recipe_name"]) == ("stmi", "tiny", "stmi-tiny-demo")
    assert (saved["recipe"]["model"], saved["recipe"]["backbone"]) == ("stmi", "tiny")
    # the checkpoint is an STMI's: the same entries as an STMI built directly
    reference = create_model(
        "stmi", num_classes=saved["num_classes"], num_cameras=saved["num_cameras"], backbone="tiny",
        image_size=(64, 32), require_pretrained=False, **saved["recipe"]["model_options"],
    )  # fmt: skip
    assert torch.load(run / "last.pt", weights_only=True)["model"].keys() == reference.state_dict().keys()


def test_a_recipe_can_be_a_path_and_the_run_records_the_edited_value(full_shards, tmp_path):
    import json

    import yaml

    from reidschemas.resources import read_text

    text = read_text("recipes/baseline-tiny-demo.yaml").replace("instances_per_id: 2", "instances_per_id: 3")
    assert "instances_per_id: 3" in text  # the edit hit
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "mine.yaml"
    path.write_text(text)
    run = tmp_path / "run"
    args = _fit_args(full_shards, run, "--recipe", str(path), "--set", "ids_per_batch=2", "--epochs", "1")
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe_name"] == str(path.resolve()) and saved["model"] == "baseline"
    assert saved["recipe"]["instances_per_id"] == 3 and saved["recipe"]["ids_per_batch"] == 2
    assert saved["overrides"] == {"ids_per_batch": 2}

    # pipeline.yaml may name the file relative to its own folder; the same run is found finished
    config = tmp_path / "pipeline.yaml"
    train = {"recipe": "recipes/mine.yaml", "random_init": True, "set": {"ids_per_batch": 2}, "epochs": 1}
    config.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w"), "train": {**train, "shards": str(full_shards)}}))
    result = runner.invoke(train_app, ["fit", "--config", str(config), "--output", str(run), "--no-progress"])
    assert result.exit_code == 0 and "already trained to epoch 1" in result.output, result.output

    # a run folder of an earlier version (its recipe did not name model and backbone) still resumes
    saved["recipe"].pop("model")
    saved["recipe"].pop("backbone")
    (run / "config.json").write_text(json.dumps(saved))
    result = runner.invoke(train_app, ["fit", "--config", str(config), "--output", str(run), "--no-progress"])
    assert result.exit_code == 0 and "already trained to epoch 1" in result.output, result.output


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_model_option_typo_is_one_line_naming_the_key_and_the_valid_keys(tmp_path):
    from reidtrain.models.registry import model_options

    args = _fit_args(tmp_path / "no-shards", tmp_path / "run", "--recipe", "stmi-demo")
    line = _one_line_error(runner.invoke(train_app, [*args, "--set", "model_options.fusoin=concat"]))
    assert "model_options.fusoin: not an option of stmi; valid: " in line
    assert set(line.split("valid: ")[1].split(", ")) == set(model_options("stmi") or {})
    assert "fusion" in line and "num_queries" in line
    # a value the builder's annotation does not accept
    line = _one_line_error(runner.invoke(train_app, [*args, "--set", "model_options.fusion=concot"]))
    assert "model_options.fusion" in line and "concot" in line and "hypergraph" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_model_is_an_override_refused_when_the_recipe_options_do_not_fit(tmp_path):
    args = _fit_args(tmp_path / "no-shards", tmp_path / "run")
    line = _one_line_error(runner.invoke(train_app, [*args, "--recipe", "stmi-rgbnt201", "--model", "baseline"]))
    assert "--model baseline does not fit recipe 'stmi-rgbnt201'" in line and "model_options.sfm" in line
    assert "valid: sie_factor, test_feature, project" in line
    # a model without a recipe of its own: refused, listing its recipes (not the baseline's demo recipe)
    line = _one_line_error(runner.invoke(train_app, [*args, "--model", "stmi"]))
    assert "--model stmi needs a recipe" in line and "stmi-rgbnt201" in line
    line = _one_line_error(runner.invoke(train_app, [*args, "--recipe", "nope.yaml"]))
    assert "nope.yaml not found" in line
    # options that do fit: the override passes resolution (then stops at the missing shards)
    line = _one_line_error(runner.invoke(train_app, [*args, "--recipe", "baseline-tiny-demo", "--model", "stmi"]))
    assert "shards folder" in line


def test_help_shows_every_default_and_h_works():
    import re

    import typer

    commands = sorted(typer.main.get_command(train_app).commands)  # type: ignore[attr-defined]
    assert {"fit", "eval", "embed", "rank", "report", "status"} <= set(commands)
    for command in commands:
        long = runner.invoke(train_app, [command, "--help"])
        short = runner.invoke(train_app, [command, "-h"])
        assert long.exit_code == 0 and short.exit_code == 0 and long.output == short.output
        blocks = re.split(r"\n\s*(?=(?:-[a-z], )?--[a-z][a-z-]*[\s,/])", long.output.split("Options:")[1])
        for block in blocks:
            name = block.split()[0] if block.strip() else ""
            if name and name not in ("-h,", "--help"):
                assert "[default:" in block or "[required]" in block, f"{command} {name}: no default shown"
    for command in ("fit", "eval"):
        assert "--config" in runner.invoke(train_app, [command, "--help"]).output
    text = re.sub(r"\s+", " ", runner.invoke(train_app, ["fit", "--help"]).output)
    assert "[default: (baseline-tiny-demo)]" in text and "[default: (cpu)]" in text and "[default: (0)]" in text


def test_the_shipped_pipeline_yaml_trains_the_demo_stmi():
    from pathlib import Path

    from reidschemas.config import load_config
    from reidtrain.trainer import resolve_run

    repo = Path(__file__).resolve().parents[2]
    config = load_config(repo / "pipeline.yaml")
    train, recipe = resolve_run(config.train, config.workdir)  # what `make demo` (fit --config pipeline.yaml) runs
    assert (train.recipe, train.model, train.backbone, train.random_init) == ("stmi-demo", "stmi", "tiny", True)
    assert train.output == repo / "runs" / "demo" / "train" / "stmi" and train.epochs == recipe.epochs == 20


def test_recipe_files_are_strict(tmp_path):
    """A recipe file with a duplicate key, a boolean count or a non-UTF-8 byte is refused naming the key or byte."""
    from reidtrain.recipes import RecipeError, load_recipe

    cases = {
        "dup.yaml": ("epochs: 5\nepochs: 6\n", "key 'epochs' is given twice (lines 1 and 2)"),
        "bool.yaml": ("epochs: true\n", "epochs: Input should be a valid integer"),
        "size.yaml": ("image_size: [0, 128]\n", "image_size.0: Input should be greater than 0"),
        "empty.yaml": ("# nothing\n", "the file is empty"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(RecipeError) as info:
            load_recipe(str(tmp_path / name))
        assert message in str(info.value), (name, str(info.value))
    (tmp_path / "latin.yaml").write_bytes("description: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(str(tmp_path / "latin.yaml"))

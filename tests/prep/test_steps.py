"""``reidprep.steps``: every step on one contract (marker last, skip, redo on change), staleness after an upstream
rerun with other parameters, and the uniform command line (``-h``, defaults in help, ``--workdir``/``--config``,
exit 2 for preconditions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.synth import generate_dataset
from reidschemas.stages import current_outputs, stale_inputs

runner = CliRunner()
COMMANDS = ["synth", "index", "masks", "captions", "build-shards", "validate-shards", "run", "report", "status"]


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _status(workdir: Path) -> dict[str, dict]:
    return json.loads(_ok("status", "--workdir", str(workdir), "--json"))["stages"]


def _run_name(workdir: Path, stage: str) -> str:
    """The current run folder of a per-triplet stage, read from its pointer file (not through reidprep)."""
    return Path(json.loads((workdir / stage / "current.json").read_text())["run_dir"]).name


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """index, thermal masks, heuristic captions and shards of 12 synthetic person triplets, through the CLI."""
    root = tmp_path_factory.mktemp("steps")
    generate_dataset(root / "data", kind="person", ids=4, images_per_id=3, seed=5)
    w = str(root / "w")
    _ok("index", "--layout", "rgbnt201", "--root", str(root / "data"), "--workdir", w, "--no-progress")
    for command in ("masks", "captions", "build-shards"):
        _ok(command, "--workdir", w, "--no-progress")
    return root / "w"


@pytest.fixture
def workdir(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w"


def test_fresh_pipeline_is_complete_and_records_its_inputs(built):
    status = _status(built)
    assert [row["state"] for row in status.values()] == ["complete"] * 4
    assert all(row["stale"] is None for row in status.values())
    shards_index = json.loads((built / "shards" / "dataset.json").read_text())
    assert shards_index["inputs"]["captions_run"] == _run_name(built, "captions") == status["captions"]["fingerprint"]
    assert status["shards"]["inputs"] == {
        "index": status["index"]["fingerprint"],
        "masks": _run_name(built, "masks"),
        "captions": _run_name(built, "captions"),
    }
    assert status["captions"]["inputs"]["masks"] == _run_name(built, "masks")


def test_rerunning_captions_with_other_parameters_makes_the_shards_stale(workdir):
    old = _run_name(workdir, "captions")
    _ok("captions", "--workdir", str(workdir), "--chunk-size", "5", "--no-progress")
    new = _run_name(workdir, "captions")
    assert new != old
    status = _status(workdir)
    assert status["captions"]["state"] == "complete" and status["captions"]["stale"] is None
    assert status["shards"]["state"] == "stale"
    assert status["shards"]["stale"] == f"built on captions run {old}, current is run {new}"
    text = _ok("status", "--workdir", str(workdir))
    assert "shards is stale" in text and old in text

    rebuilt = _ok("build-shards", "--workdir", str(workdir), "--no-progress")
    assert "already built" not in rebuilt  # the upstream changed: the work is redone, not skipped
    assert json.loads((workdir / "shards" / "dataset.json").read_text())["inputs"]["captions_run"] == new
    assert _status(workdir)["shards"]["state"] == "complete"


def test_rerunning_masks_with_other_parameters_makes_captions_and_shards_stale(workdir, tmp_path):
    old = _run_name(workdir, "masks")
    root = json.loads((workdir / "index" / "summary.json").read_text())["params"]["root"]
    config = tmp_path / "radius.yaml"
    config.write_text(f"dataset:\n  layout: rgbnt201\n  root: {root}\nmasks:\n  thermal:\n    closing_radius: 6\n")
    _ok("masks", "--workdir", str(workdir), "--config", str(config), "--no-progress")
    new = _run_name(workdir, "masks")
    status = _status(workdir)
    assert status["masks"]["state"] == "complete"
    assert (
        status["captions"]["state"] == "stale"
        and f"masks run {old}, current is run {new}" in status["captions"]["stale"]
    )
    assert status["shards"]["state"] == "stale" and f"masks run {old}" in status["shards"]["stale"]
    # the trainer reads the markers without reidprep: it must see the same current outputs and the same reasons
    assert current_outputs(workdir) == {name: status[name]["fingerprint"] for name in ("index", "masks", "captions")}
    recorded = json.loads((workdir / "shards" / "dataset.json").read_text())["inputs"]
    assert (
        stale_inputs(recorded, workdir)
        == status["shards"]["stale"].split("; ")
        == [f"built on masks run {old}, current is run {new}"]
    )

    output = _ok("run", "--workdir", str(workdir), "--config", str(config), "--no-progress")
    assert "index: already done" in output and "captions: 12 done" in output and "already built" not in output
    assert {row["state"] for row in _status(workdir).values()} == {"complete"}
    again = _ok("run", "--workdir", str(workdir), "--config", str(config), "--no-progress")
    assert "captions: 0 done, 12 skipped" in again and "already built" in again


def test_index_is_on_the_contract(workdir):
    args = ["index", "--workdir", str(workdir), "--layout", "rgbnt201", "--no-progress"]
    summary = json.loads((workdir / "index" / "summary.json").read_text())
    args += ["--root", summary["params"]["root"]]
    marker = workdir / "index" / "_SUCCESS"
    first = json.loads(marker.read_text())
    assert "already done" in _ok(*args)  # same parameters: skipped
    for output in ("manifest.parquet", "errors.parquet", "summary.json"):
        assert (workdir / "index" / output).stat().st_mtime_ns <= marker.stat().st_mtime_ns  # marker written last

    redone = _ok(*args, "--no-check-images")  # other parameters: redone, another fingerprint
    assert "already done" not in redone
    second = json.loads(marker.read_text())
    assert second["fingerprint"] != first["fingerprint"]
    assert second["output"] == first["output"]  # the same manifest bytes: downstream steps are not stale
    assert {row["state"] for row in _status(workdir).values()} == {"complete"}


def test_index_interrupted_before_its_marker_is_redone(workdir):
    summary = json.loads((workdir / "index" / "summary.json").read_text())
    (workdir / "index" / "_SUCCESS").unlink()  # as if killed after the outputs, before the marker
    assert _status(workdir)["index"]["state"] == "incomplete"
    args = ["index", "--workdir", str(workdir), "--root", summary["params"]["root"], "--no-progress"]
    assert "already done" not in _ok(*args)
    assert _status(workdir)["index"]["state"] == "complete"


def test_build_shards_is_on_the_contract(workdir):
    index = workdir / "shards" / "dataset.json"
    before = json.loads(index.read_text())
    assert "already built" in _ok("build-shards", "--workdir", str(workdir), "--no-progress")
    for shard in before["shards"]:
        assert (workdir / "shards" / shard["file"]).stat().st_mtime_ns <= index.stat().st_mtime_ns
    other = _ok("build-shards", "--workdir", str(workdir), "--image-format", "png", "--no-progress")
    assert "already built" not in other
    after = json.loads(index.read_text())
    assert after["fingerprint"] != before["fingerprint"] and after["config"]["image_format"] == "png"
    index.unlink()  # a build that died before its marker: nothing counts as built
    assert _status(workdir)["shards"]["state"] == "not run"
    assert "already built" not in _ok("build-shards", "--workdir", str(workdir), "--no-progress")


# ------------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("command", COMMANDS)
def test_dash_h_is_help(command):
    assert _ok(command, "-h") == _ok(command, "--help")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default(command):
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        if param.param_type_name == "option" and param.name != "help":
            shown = param.show_default if isinstance(param.show_default, str) else param.default
            assert param.show_default is not False and shown is not None, f"{command} {param.opts}: no default shown"
    text = _ok(command, "--help")
    assert "[default:" in text


def test_help_names_the_config_key_and_its_default():
    text = " ".join(_ok("masks", "--help").split())
    assert "masks.provider=auto" in text and "masks.chunk_size=64" in text and "workdir=runs/demo" in text


def test_workdir_and_config_are_accepted_by_every_reading_command(built, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"workdir: {built}\n")
    for command in ("status", "report", "validate-shards"):
        by_option = runner.invoke(app, [command, "--workdir", str(built)])
        by_config = runner.invoke(app, [command, "--config", str(config)])
        assert by_option.exit_code == by_config.exit_code == 0, (command, by_option.output, by_config.output)
    assert "is valid" in _ok("validate-shards", "-c", str(config))


def test_preconditions_exit_2_with_the_way_out(tmp_path, built):
    missing = str(tmp_path / "nothing")
    for command in ("status", "report", "masks", "captions", "build-shards"):
        result = runner.invoke(app, [command, "--workdir", missing])
        assert result.exit_code == 2, (command, result.output)
        assert "error:" in result.output and "reidprep" in result.output, (command, result.output)
    result = runner.invoke(app, ["validate-shards", "--workdir", missing])
    assert result.exit_code == 2 and "build-shards" in result.output
    result = runner.invoke(app, ["status", str(built)])  # a positional workdir: say how to give it
    assert result.exit_code == 2 and "--workdir" in result.output
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output
    result = runner.invoke(app, ["synth"])
    assert result.exit_code == 2 and "synth.out" in result.output

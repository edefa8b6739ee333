"""The command lines: help and version of both scripts; reidprep index and status, config overrides, exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jpeg
from typer.testing import CliRunner

from reidprep.cli import app as prep_app

runner = CliRunner()
BIN = Path(sys.executable).parent


def _tree(root: Path) -> Path:
    for folder, names in {
        "train_171": ["000001_cam1_0_00.jpg", "000001_cam2_0_01.jpg", "000002_cam3_0_00.jpg"],
        "test": ["000031_cam1_0_00.jpg", "000031_cam2_0_01.jpg"],
    }.items():
        for name in names:
            for mod in ("RGB", "NI", "TI"):
                write_jpeg(root / "RGBNT201" / folder / mod / name)
    return root


@pytest.mark.parametrize(
    ("script", "commands"),
    [
        (
            "reidprep",
            ["synth", "index", "masks", "captions", "build-shards", "validate-shards", "run", "report", "status"],
        ),
        ("reidtrain", ["rank"]),
    ],
)
def test_installed_scripts_list_every_command_and_print_a_version(script, commands):
    exe = shutil.which(script, path=str(BIN)) or shutil.which(script)
    assert exe, f"{script} is not installed"
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in commands:
        assert command in help_text
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"{script} 0.")


def _json_status(workdir: Path) -> dict:
    result = runner.invoke(prep_app, ["status", "--workdir", str(workdir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_index_then_status_then_rerun_skips(tmp_path):
    root, workdir = _tree(tmp_path / "data"), tmp_path / "work"
    args = ["index", "--layout", "rgbnt201", "--root", str(root), "--workdir", str(workdir), "--no-progress"]
    first = runner.invoke(prep_app, args)
    assert first.exit_code == 0, first.output
    assert "index: 7 records, 0 errors" in first.output
    manifest = workdir / "index" / "manifest.parquet"
    before = manifest.read_bytes()
    status = _json_status(workdir)["stages"]["index"]
    assert status == {
        "state": "complete", "done": 7, "failed": 0, "warnings": 0, "pending": 0,
        "fingerprint": hashlib.sha256(before).hexdigest()[:16], "inputs": {}, "stale": None,
    }  # fmt: skip

    second = runner.invoke(prep_app, args)
    assert second.exit_code == 0 and "already done" in second.output
    forced = runner.invoke(prep_app, [*args, "--force"])
    assert forced.exit_code == 0 and "already done" not in forced.output
    assert manifest.read_bytes() == before  # deterministic: same inputs, same bytes


def test_bad_file_is_ledgered_and_strict_fails(tmp_path):
    root, workdir = _tree(tmp_path / "data"), tmp_path / "work"
    (root / "RGBNT201" / "test" / "TI" / "000031_cam2_0_01.jpg").write_bytes(b"")
    args = ["index", "--layout", "rgbnt201", "--root", str(root), "--workdir", str(workdir), "--no-progress"]
    ok = runner.invoke(prep_app, args)
    assert ok.exit_code == 0 and "error:empty_image: 1" in ok.output
    assert _json_status(workdir)["stages"]["index"]["failed"] == 1

    strict = runner.invoke(prep_app, [*args, "--strict", "--force"])
    assert strict.exit_code == 1
    assert "000031_cam2_0_01.jpg" in strict.output and "empty" in strict.output
    assert _json_status(workdir)["stages"]["index"]["state"] == "incomplete"


def test_config_file_with_cli_overrides(tmp_path):
    root = _tree(tmp_path / "data")
    config = tmp_path / "pipeline.yaml"
    config.write_text("workdir: from_file\ndataset:\n  layout: msvr310\n  root: data\n")
    result = runner.invoke(
        prep_app, ["index", "--config", str(config), "--layout", "rgbnt201", "--workdir", str(tmp_path / "w")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "w" / "index" / "manifest.parquet").is_file()
    assert not (tmp_path / "from_file").exists()
    assert root.is_dir()


def test_clear_errors_exit_2(tmp_path):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("dataset:\n  layuot: rgbnt201\n")
    result = runner.invoke(prep_app, ["index", "--config", str(bad_config)])
    assert result.exit_code == 2 and "dataset.layuot: unknown key" in result.output
    result = runner.invoke(prep_app, ["index", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2 and "no dataset root" in result.output
    result = runner.invoke(prep_app, ["index", "--root", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2 and "no rgbnt201 dataset under" in result.output
    result = runner.invoke(prep_app, ["status", "--workdir", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "does not exist" in result.output

"""A full disk in a prep stage ends in one line naming the file and the bytes needed, exit 1, no temporary left."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.synth import generate_dataset


def test_a_full_disk_in_index_is_one_line_and_a_rerun_finishes(tmp_path: Path, disk_full, monkeypatch) -> None:
    generate_dataset(tmp_path / "data", kind="person", ids=4, images_per_id=2, seed=0)
    workdir = tmp_path / "work"
    args = ["index", "--layout", "rgbnt201", "--root", str(tmp_path / "data"), "--workdir", str(workdir)]
    disk_full("manifest.parquet")
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    manifest = workdir / "index" / "manifest.parquet"
    assert line.startswith(f"error: no space left on the device writing {manifest} (about ")
    assert " needed" in line and "free some space" in line
    assert not manifest.exists() and not list(workdir.rglob(".*.tmp-*"))

    monkeypatch.undo()  # space freed: the rerun completes the stage
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert manifest.is_file()

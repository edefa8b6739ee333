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


def test_a_full_disk_in_a_per_triplet_stage_is_one_line_and_keeps_finished_chunks(
    tmp_path: Path, disk_full, monkeypatch
) -> None:
    generate_dataset(tmp_path / "data", kind="person", ids=4, images_per_id=2, seed=0)
    workdir = tmp_path / "work"
    runner = CliRunner()
    index = ["index", "--layout", "rgbnt201", "--root", str(tmp_path / "data"), "--workdir", str(workdir)]
    assert runner.invoke(app, [*index, "--no-progress"]).exit_code == 0
    masks = ["masks", "--workdir", str(workdir), "--provider", "thermal", "--chunk-size", "4", "--no-progress"]
    disk_full("part-00001.parquet")  # the first chunk fits, the second does not
    result = runner.invoke(app, masks)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: no space left on the device writing ") and "part-00001.parquet" in line
    parts = sorted(p.name for p in workdir.glob("masks/runs/*/parts/*.parquet"))
    assert parts == ["part-00000.parquet"] and not list(workdir.rglob(".*.tmp-*"))

    monkeypatch.undo()  # space freed: the rerun keeps chunk 0 and writes the rest
    result = runner.invoke(app, masks)
    assert result.exit_code == 0, result.output
    assert "4 skipped" in result.output and "0 failed" in result.output

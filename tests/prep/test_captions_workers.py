"""Heuristic captions computed in worker processes write the files of one process."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.synth import generate_dataset

runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return result.output


def _files(stage_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(stage_dir)): p.read_bytes()
        for p in sorted(stage_dir.rglob("*"))
        if p.is_file() and p.name not in (".lock", "summary.json")
    }


def test_one_and_two_workers_write_byte_identical_captions(tmp_path):
    generate_dataset(tmp_path / "data", kind="person", ids=4, images_per_id=3, seed=4)
    outputs = {}
    for workers in ("1", "2"):
        wd = tmp_path / f"w{workers}"
        run_index(wd, "rgbnt201", tmp_path / "data")
        _invoke("masks", "--workdir", str(wd), "--workers", "1")
        output = _invoke("captions", "--workdir", str(wd), "--chunk-size", "3", "--workers", workers)
        assert "captions: 12 done" in output and f"3 triplets per part, {workers} worker(s)" in output
        outputs[workers] = _files(wd / "captions")
    assert outputs["1"] == outputs["2"]
    assert sum("/parts/" in name for name in outputs["1"]) == 4


def test_an_import_stays_in_one_process(tmp_path):
    generate_dataset(tmp_path / "data", kind="person", ids=3, images_per_id=2, seed=4)
    wd = tmp_path / "w"
    run_index(wd, "rgbnt201", tmp_path / "data")
    release = tmp_path / "release"
    release.mkdir()
    for split in ("train", "test"):
        for modality in ("RGB", "NI", "TI"):
            names = [p.name for p in (tmp_path / "data").rglob(f"*/{modality}/*.jpg") if split in str(p.parent.parent)]
            entries = ",".join(f'{{"item": "{n}", "description": "a person"}}' for n in names)
            (release / f"{split}_{modality}.json").write_text(f"[{entries}]")
    output = _invoke("captions", "--workdir", str(wd), "--provider", "import", "--import-dir", str(release))
    assert "1024 triplets per part, 1 worker(s)" in output and "0 failed" in output

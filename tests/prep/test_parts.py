"""Checksummed stage parts: a truncated or bit-flipped part is found by readers, reported by status and recomputed
by a rerun; parts of older runs (no checksums) are adopted; failures are ledgered per sample id, with the path of
the modality that failed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.manifest import read_manifest
from reidprep.masks.base import MaskPrediction, MaskProvider
from reidprep.masks.stage import MasksTask
from reidprep.parts import CorruptPart
from reidprep.stage import StageOptions, read_failures, read_stage_table, run_stage, stage_status
from reidprep.synth import generate_dataset
from reidschemas import Modality

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=6, images_per_id=4, seed=3)
    return out


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict[str, bytes]:
    """The parts of an undisturbed masks run (chunk size 5: five parts)."""
    wd = tmp_path_factory.mktemp("ref") / "w"
    run_index(wd, "rgbnt201", dataset)
    _masks(wd)
    return _parts(wd)


def _masks(workdir: Path, *args: str) -> str:
    result = runner.invoke(app, ["masks", "--workdir", str(workdir), "--no-progress", "--chunk-size", "5", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _parts(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "masks" / "runs").glob("*/parts/part-*.parquet"))}


def _run_dir(workdir: Path) -> Path:
    return next((workdir / "masks" / "runs").iterdir())


def _status(workdir: Path) -> tuple[int, str, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--workdir", str(workdir), "--json"])
    plain = runner.invoke(app, ["status", "--workdir", str(workdir)])
    assert plain.exit_code == result.exit_code
    return result.exit_code, plain.output, json.loads(result.output)["stages"]["masks"] if result.output else {}


def _done(dataset: Path, workdir: Path) -> Path:
    run_index(workdir, "rgbnt201", dataset)
    _masks(workdir)
    return workdir


def test_each_part_records_its_checksum(dataset, tmp_path, reference):
    import hashlib

    wd = _done(dataset, tmp_path / "w")
    run = _run_dir(wd)
    assert _parts(wd) == reference
    for part in sorted((run / "parts").glob("part-*.parquet")):
        record = json.loads((run / "checksums" / part.name.replace(".parquet", ".json")).read_text())
        data = part.read_bytes()
        assert record["part"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        assert record["rows"] == pq.read_metadata(part).num_rows and record["failed"] == 0
        assert record["failures"] is None


def test_truncated_part_is_reported_refused_and_recomputed(dataset, tmp_path, reference):
    wd = _done(dataset, tmp_path / "w")
    part = _run_dir(wd) / "parts" / "part-00003.parquet"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])

    code, text, row = _status(wd)  # status does not crash: it names the part
    assert code == 0 and row["state"] == "corrupt" and row["done"] == 24 - 5 and row["pending"] == 5
    assert row["corrupt"] == [f"parts/part-00003.parquet fails its checksum ({len(data) // 2} bytes, "
                              f"{len(data)} recorded: truncated?)"]  # fmt: skip
    assert "masks: parts/part-00003.parquet fails its checksum" in text and "rerun `reidprep masks`" in text

    with pytest.raises(CorruptPart) as raised:  # downstream readers: one line, not an ArrowInvalid traceback
        read_stage_table(wd, "masks")
    message = str(raised.value)
    assert str(part) in message and "truncated?" in message and "rerun `reidprep masks" in message
    assert "\n" not in message

    output = _masks(wd)
    assert "masks: parts/part-00003.parquet fails its checksum" in output and "truncated?); recomputing" in output
    assert "masks: 5 done, 19 skipped, 0 failed" in output
    assert _parts(wd) == reference
    assert _status(wd)[2]["state"] == "complete"


@pytest.mark.parametrize("where", [0.05, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_flipped_bit_anywhere_is_caught_and_recomputed(dataset, tmp_path, reference, where):
    wd = _done(dataset, tmp_path / "w")
    part = _run_dir(wd) / "parts" / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[int(where * (len(data) - 1))] ^= 0x10
    part.write_bytes(bytes(data))

    with pytest.raises(CorruptPart, match=r"part-00001\.parquet fails its checksum \(same size, another SHA-256"):
        read_stage_table(wd, "masks", columns=["triplet_key", "mask"])
    output = _masks(wd)
    assert "masks: parts/part-00001.parquet fails its checksum (same size" in output and "recomputing" in output
    assert "masks: 5 done, 19 skipped" in output and _parts(wd) == reference


def test_a_corrupt_part_stops_the_next_stage_with_one_line(dataset, tmp_path):
    wd = _done(dataset, tmp_path / "w")
    part = _run_dir(wd) / "parts" / "part-00002.parquet"
    part.write_bytes(part.read_bytes()[:-40])
    result = runner.invoke(app, ["build-shards", "--workdir", str(wd), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "part-00002.parquet fails its checksum" in lines[0] and "Traceback" not in lines[0]


def test_parts_of_an_older_run_without_checksums_are_adopted_or_recomputed(dataset, tmp_path, reference):
    wd = _done(dataset, tmp_path / "w")
    run = _run_dir(wd)
    shutil.rmtree(run / "checksums")  # as written before checksums were recorded
    (run / "_SUCCESS").unlink()
    legacy = run / "parts" / "part-00004.parquet"
    legacy.write_bytes(legacy.read_bytes()[:100])  # and one of them broken

    code, _, row = _status(wd)  # no record: the footer tells the rows, or that it does not read
    assert code == 0 and row["state"] == "corrupt" and row["done"] == 20
    assert row["corrupt"][0].startswith("parts/part-00004.parquet does not read as Parquet (")

    output = _masks(wd)
    assert "masks: parts/part-00004.parquet does not read as Parquet" in output and "recomputing" in output
    assert "masks: 4 part(s) without a recorded checksum" in output and "found sound" in output
    assert "masks: 4 done, 20 skipped" in output
    assert sorted(p.name for p in (run / "checksums").iterdir()) == [f"part-0000{i}.json" for i in range(5)]
    assert _parts(wd) == reference and _status(wd)[2]["state"] == "complete"


def test_a_recorded_part_that_vanished_is_recomputed(dataset, tmp_path, reference):
    wd = _done(dataset, tmp_path / "w")
    (_run_dir(wd) / "parts" / "part-00000.parquet").unlink()
    assert _status(wd)[2]["corrupt"] == ["parts/part-00000.parquet is missing (its checksum is recorded)"]
    assert "masks: 5 done, 19 skipped" in _masks(wd) and _parts(wd) == reference


class _WholeFrame(MaskProvider):
    """Every pixel is foreground: a provider at the edge, so the test is about the images the task reads."""

    name = "whole"
    supported_sources: ClassVar[tuple[Modality, ...]] = ("rgb", "nir", "tir")

    def identity(self) -> dict[str, Any]:
        return {"provider": self.name}

    def predict(self, images: Sequence[np.ndarray], modality: Modality) -> list[MaskPrediction]:
        return [MaskPrediction(np.ones(image.shape[:2], bool), 1.0) for image in images]


def test_unreadable_nir_file_of_a_shared_triplet_is_ledgered_under_both_ids_with_its_path(dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    wd = tmp_path / "w"
    run_index(wd, "rgbnt201", copy)
    records = read_manifest(wd / "index" / "manifest.parquet")
    shared = next(r for r in records if r.split == "query")  # RGBNT201 test triplets: query and gallery at once
    Path(shared.nir_path).write_bytes(b"not a jpeg")  # broken after indexing

    summary = run_stage(MasksTask(_WholeFrame(), "all"), wd, StageOptions(chunk_size=5))
    assert (summary.done, summary.failed, summary.complete) == (23, 1, True)
    ledger = pq.read_table(wd / "masks" / "errors.parquet").to_pylist()
    expected = {r.sample_id for r in records if r.triplet_key == shared.triplet_key}
    assert len(expected) == 2 and {e["sample_id"] for e in ledger} == expected and len(ledger) == 2
    for entry in ledger:
        assert entry["path"] == shared.nir_path and entry["stage"] == "masks"
        assert entry["reason"].startswith("cannot read an image (NIR)")
    assert stage_status(wd, "masks")["failed"] == 1  # one unit, two ledger entries
    records = [json.loads(p.read_text()) for p in sorted((summary.run_dir / "checksums").glob("*.json"))]
    assert [(r["rows"], r["failed"], r["failures"] is None) for r in records if r["failed"]] == [(4, 1, False)]


def test_a_flipped_bit_in_a_failures_part_is_caught(dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    wd = tmp_path / "w"
    run_index(wd, "rgbnt201", copy)
    victim = next(r for r in read_manifest(wd / "index" / "manifest.parquet") if r.split == "train")
    Path(victim.tir_path).write_bytes(b"")
    _masks(wd)
    run = _run_dir(wd)
    (failures,) = (run / "failures").glob("part-*.parquet")
    data = bytearray(failures.read_bytes())
    data[len(data) // 2] ^= 1
    failures.write_bytes(bytes(data))
    with pytest.raises(CorruptPart, match=r"failures/part-\d+\.parquet fails its checksum"):
        read_failures(run)
    output = _masks(wd)
    assert f"masks: failures/{failures.name} fails its checksum" in output and "recomputing" in output
    assert "masks: 4 done, 19 skipped, 1 failed" in output
    assert len(read_failures(run)) == 1 and read_failures(run)[0].path == victim.tir_path

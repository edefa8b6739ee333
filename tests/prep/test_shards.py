"""build-shards, validate-shards and run: contents, token masks, determinism, rotation, missing inputs, corruption."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from interrupts import ctrl_c_as_in_a_terminal
from PIL import Image
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.shards.build import SHOWN_EXCLUSIONS, QueryGalleryExcluded, build_shards
from reidprep.shards.validate import validate_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidschemas.maskcodec import decode_mask
from reidschemas.tokens import token_fractions

runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, [*args, "--no-progress"] if args[0] != "validate-shards" else list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A workdir with index, thermal masks and heuristic captions of 12 person triplets."""
    root = tmp_path_factory.mktemp("prepared")
    generate_dataset(root / "data", kind="person", ids=4, images_per_id=3, seed=9)
    run_index(root / "w", "rgbnt201", root / "data")
    _invoke("masks", "--workdir", str(root / "w"))
    _invoke("captions", "--workdir", str(root / "w"))
    return root / "w"


def _rows(shards: Path) -> list[dict]:
    return [row for f in sorted(shards.glob("shard-*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_rows_hold_images_mask_tokens_and_captions(prepared, tmp_path):
    summary = build_shards(prepared, ShardsConfig(), out_dir=tmp_path / "s")
    index = json.loads((tmp_path / "s" / "dataset.json").read_text())
    manifest = pq.read_table(prepared / "index" / "manifest.parquet")
    assert summary.rows == index["rows"] == manifest.num_rows and summary.excluded == 0
    assert (index["protocol"], index["dataset"]) == ("camera", "rgbnt201")  # the layout's evaluation protocol
    assert index["rows_per_split"] == dict(sorted(index["rows_per_split"].items()))
    assert sum(index["rows_per_split"].values()) == manifest.num_rows
    for row in _rows(tmp_path / "s"):
        assert (row["height"], row["width"]) == (256, 128)
        for modality in ("rgb", "nir", "tir"):
            with Image.open(io.BytesIO(row[modality])) as image:
                assert image.format == "JPEG" and image.size == (128, 256)
        mask = decode_mask(row["mask"], 256, 128)
        assert row["token_grid"] == [16, 8]
        np.testing.assert_allclose(row["token_fraction"], token_fractions(mask, 16, 16).ravel(), atol=1e-6)
        assert row["token_mask"] == [f >= 0.5 for f in row["token_fraction"]]
        assert row["caption_fused"] and json.loads(row["attributes"])["fused"]


def test_deterministic_and_skipped_when_unchanged(prepared, tmp_path):
    first = build_shards(prepared, ShardsConfig(), out_dir=tmp_path / "a")
    second = build_shards(prepared, ShardsConfig(), out_dir=tmp_path / "b")
    assert [s["sha256"] for s in first.shards] == [s["sha256"] for s in second.shards]
    assert build_shards(prepared, ShardsConfig(), out_dir=tmp_path / "a").skipped
    rebuilt = build_shards(prepared, ShardsConfig(), out_dir=tmp_path / "a", force=True)
    assert not rebuilt.skipped and rebuilt.shards == first.shards


def test_size_rotation_row_groups_png_and_original_size(prepared, tmp_path):
    config = ShardsConfig(target_shard_mb=0.1, row_group_rows=4, image_format="png", size="original")
    summary = build_shards(prepared, config, out_dir=tmp_path / "s")
    assert len(summary.shards) > 1 and sum(s["rows"] for s in summary.shards) == summary.rows
    parquet = pq.ParquetFile(tmp_path / "s" / summary.shards[0]["file"])
    assert parquet.metadata.row_group(0).num_rows == 4
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    row = parquet.read_row_group(0).to_pylist()[0]
    with Image.open(io.BytesIO(row["rgb"])) as image:
        assert image.format == "PNG" and image.size == (row["width"], row["height"])
    assert validate_shards(tmp_path / "s") == {}


def test_missing_inputs_are_excluded_with_a_ledger_or_kept_as_null(prepared, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(prepared / "index", bare / "index")
    records = pq.read_metadata(bare / "index" / "manifest.parquet").num_rows
    with pytest.raises(
        QueryGalleryExcluded, match=r"refusing to exclude \d+ test sample\(s\) \(gallery \d+, query \d+\)"
    ):
        build_shards(bare, ShardsConfig(), out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before anything was written
    excluded = build_shards(bare, ShardsConfig(allow_test_exclusions=True), out_dir=tmp_path / "x")
    assert excluded.rows == 0 and excluded.excluded == records
    manifest = pq.read_table(bare / "index" / "manifest.parquet").to_pylist()
    assert excluded.excluded_per_split == {
        s: sum(r["split"] == s for r in manifest) for s in ("gallery", "query", "train")
    }
    ledger = pq.read_table(tmp_path / "x" / "errors.parquet").to_pylist()
    assert ledger[0]["error_type"] == "missing_input" and "no masks and no captions" in ledger[0]["reason"]
    kept = build_shards(bare, ShardsConfig(missing="null"), out_dir=tmp_path / "n")  # nothing excluded: no refusal
    rows = _rows(tmp_path / "n")
    assert kept.rows == records and all(r["mask"] is None and r["caption_rgb"] is None for r in rows)


def test_validate_names_corrupt_shards(prepared, tmp_path):
    build_shards(prepared, ShardsConfig(target_shard_mb=0.1, row_group_rows=4), out_dir=tmp_path / "s")
    shards = sorted((tmp_path / "s").glob("shard-*.parquet"))
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    shards[1].unlink()
    result = runner.invoke(app, ["validate-shards", "--shards", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert (
        f"{shards[0].name}: checksum differs" in result.output and f"{shards[1].name}: file is missing" in result.output
    )


def test_run_the_whole_pipeline_from_a_config(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "workdir: w\ndataset:\n  layout: msvr310\n  root: data\n"
        "synth:\n  out: data\n  kind: vehicle\n  ids: 4\n  images_per_id: 3\n  seed: 1\n"
    )
    output = _invoke("run", "--config", str(config))
    assert "build-shards:" in output and "run: done" in output
    index = json.loads((tmp_path / "w" / "shards" / "dataset.json").read_text())
    assert index["rows"] > 0 and index["config"]["vehicle_size"] == [128, 256]
    row = _rows(tmp_path / "w" / "shards")[0]
    assert (row["height"], row["width"], row["token_grid"]) == (128, 256, [8, 16])
    again = _invoke("run", "--config", str(config))
    assert "already built" in again and "0 done" in again


def test_raw_pixels_read_in_batches_match_the_jpeg_source(prepared, tmp_path):
    from reidschemas.shards import decode_batch, decode_image

    raw = build_shards(prepared, ShardsConfig(image_format="raw", row_group_rows=5), out_dir=tmp_path / "raw")
    png = build_shards(prepared, ShardsConfig(image_format="png", row_group_rows=5), out_dir=tmp_path / "png")
    assert validate_shards(tmp_path / "raw") == {}
    raw_file = pq.ParquetFile(tmp_path / "raw" / raw.shards[0]["file"])
    png_file = pq.ParquetFile(tmp_path / "png" / png.shards[0]["file"])
    assert raw_file.metadata.row_group(0).column(raw_file.schema_arrow.get_field_index("rgb")).compression == "LZ4"
    for group in range(raw_file.num_row_groups):
        raw_table, png_table = raw_file.read_row_group(group), png_file.read_row_group(group)
        batch = decode_batch(raw_table.slice(1))  # a sliced table exercises the buffer offsets
        rows = png_table.slice(1).to_pylist()
        assert batch["rgb"].shape == (len(rows), 256, 128, 3) and batch["mask"].shape == (len(rows), 256, 128)
        for i, row in enumerate(rows):  # PNG is lossless: raw pixels equal decoded PNG pixels
            for m in ("rgb", "nir", "tir"):
                np.testing.assert_array_equal(batch[m][i], decode_image(row[m], "png", 256, 128))
            np.testing.assert_array_equal(batch["mask"][i], decode_mask(row["mask"], 256, 128))
    with pytest.raises(ValueError, match="raw 256x128 image has 98304 bytes"):
        decode_image(b"short", "raw", 256, 128)


def _shard_set(folder: Path) -> dict[str, bytes]:
    """The files of a shard set by name, without the step's ``.lock`` (it records the last command's start time)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


def test_a_query_or_gallery_row_is_never_excluded_silently(tmp_path):
    """Real failures: one train and one test triplet lose an image after the shards were built. Rebuilding refuses
    (exit 1, naming the query and gallery rows and why) and keeps the previous shards; the override excludes them,
    and the exclusions per split are in the summary line, dataset.json, the ledger, ``status`` and the report."""
    from reidprep.manifest import read_manifest

    generate_dataset(tmp_path / "data", kind="person", ids=4, images_per_id=3, seed=9)
    workdir = tmp_path / "w"
    run_index(workdir, "rgbnt201", tmp_path / "data")
    _invoke("masks", "--workdir", str(workdir))
    _invoke("captions", "--workdir", str(workdir))
    _invoke("build-shards", "--workdir", str(workdir))
    before = _shard_set(workdir / "shards")

    records = read_manifest(workdir / "index" / "manifest.parquet")
    train = next(r for r in records if r.split == "train")
    test = next(r for r in records if r.split == "query")
    test_rows = sorted(r.sample_id for r in records if r.triplet_key == test.triplet_key)  # query and gallery
    assert {r.split for r in records if r.triplet_key == test.triplet_key} == {"query", "gallery"}
    for record in (train, test):
        Path(record.rgb_path).write_bytes(b"")  # unreadable from now on

    result = runner.invoke(app, ["build-shards", "--workdir", str(workdir), "--force", "--no-progress"])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "refusing to exclude 2 test sample(s) (gallery 1, query 1)" in message
    for sample_id in test_rows:
        assert sample_id in message
    assert "cannot read an image" in message and "--allow-test-exclusions" in message
    assert train.sample_id not in message
    assert _shard_set(workdir / "shards") == before  # nothing lost
    assert not list((workdir / "shards").glob(".shard-*"))  # no temporary file left

    output = _invoke("build-shards", "--workdir", str(workdir), "--force", "--allow-test-exclusions")
    assert "3 excluded (gallery 1, query 1, train 1)" in output
    index = json.loads((workdir / "shards" / "dataset.json").read_text())
    assert index["excluded_per_split"] == {"gallery": 1, "query": 1, "train": 1} and index["excluded"] == 3
    ledger = pq.read_table(workdir / "shards" / "errors.parquet").to_pylist()
    assert sorted(e["sample_id"] for e in ledger) == sorted([train.sample_id, *test_rows])
    assert {r["sample_id"] for r in _rows(workdir / "shards")}.isdisjoint(e["sample_id"] for e in ledger)
    assert index["rows"] == len(records) - 3

    def cli(*args: str) -> str:
        result = runner.invoke(app, [*args, "--workdir", str(workdir)])
        assert result.exit_code == 0, result.output
        return result.output

    status = json.loads(cli("status", "--json"))
    assert status["stages"]["shards"]["excluded_per_split"] == {"gallery": 1, "query": 1, "train": 1}
    assert "shards excluded per split: gallery 1, query 1, train 1" in cli("status")
    cli("report")
    html = (workdir / "report.html").read_text()
    assert 'id="shard-exclusions"' in html and '<span data-split="query">query 1</span>' in html


def test_a_refusal_names_the_first_rows_and_counts_the_rest(prepared, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(prepared / "index", bare / "index")
    with pytest.raises(QueryGalleryExcluded) as refused:
        build_shards(bare, ShardsConfig(), out_dir=tmp_path / "x")
    test_ids = [
        r["sample_id"] for r in pq.read_table(bare / "index" / "manifest.parquet").to_pylist() if r["split"] != "train"
    ]
    message = str(refused.value)
    named = [sample_id for sample_id in test_ids if sample_id in message]
    assert len(named) == SHOWN_EXCLUSIONS < len(test_ids)
    assert f"and {len(test_ids) - SHOWN_EXCLUSIONS} more" in message and "no masks and no captions output" in message


# --- No leftovers, full disk (issue 16, points 5 and 6) -----------------------------------------------------------

_SLOW_BUILD = """
import sys, time
from pathlib import Path
import reidprep.shards.build as build
from reidschemas.config import ShardsConfig

real = build.load_modality
build.load_modality = lambda record, modality: (time.sleep(0.05), real(record, modality))[1]  # room for a kill
build.build_shards(Path(sys.argv[1]), ShardsConfig(row_group_rows=2, workers=1), out_dir=Path(sys.argv[2]), force=True)
"""


def _build_and_signal(workdir: Path, out: Path, signum: int) -> tuple[int, list[str]]:
    """Run build-shards in a child process, send ``signum`` once its first temporary shard exists; (exit status,
    the temporary names seen at that moment)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, "-c", _SLOW_BUILD, str(workdir), str(out)]
    child = subprocess.Popen(command, env=env, preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 120
    seen: list[str] = []
    while not seen and child.poll() is None and time.monotonic() < deadline:
        seen = [p.name for p in out.glob(".shard-*.tmp-*")]
        time.sleep(0.01)
    child.send_signal(signum)
    assert seen, "the build ended before it wrote a temporary shard"
    assert all(name.endswith(f".tmp-{socket.gethostname()}-{child.pid}") for name in seen), seen
    return child.wait(timeout=120), seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_terminated_or_interrupted_build_removes_its_temporaries_and_keeps_the_previous_set(
    prepared, tmp_path, signum
):
    build_shards(prepared, ShardsConfig(row_group_rows=2), out_dir=tmp_path / "s")
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    status, _ = _build_and_signal(prepared, tmp_path / "s", signum)
    assert status == {signal.SIGTERM: 143, signal.SIGINT: -signal.SIGINT}[signum]  # stopped as by the signal
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before  # no temporary, nothing lost
    assert validate_shards(tmp_path / "s") == {}


def test_a_killed_builds_temporaries_are_removed_by_the_next_start(prepared, tmp_path):
    """SIGKILL cannot be caught: its temporary shard stays until the next build starts, which removes it (and a
    planted one of a dead process, an old-style name), says so, and leaves a live process's file alone."""
    out = tmp_path / "s"
    build_shards(prepared, ShardsConfig(row_group_rows=2), out_dir=out)
    status, seen = _build_and_signal(prepared, out, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert set(seen) <= {p.name for p in out.glob(".shard-*.tmp-*")}  # left behind
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    planted = [out / f".shard-00003.parquet.tmp-{socket.gethostname()}-{dead.stdout.strip()}",
               out / f".dataset.json.tmp-{dead.stdout.strip()}"]  # fmt: skip
    live = out / f".shard-00000.parquet.tmp-{socket.gethostname()}-1"  # pid 1 runs: its writer is alive
    for path in (*planted, live):
        path.write_bytes(b"partial")
    summary = build_shards(prepared, ShardsConfig(row_group_rows=2), out_dir=out)  # skipped: already built
    assert summary.skipped and f"removed {len(seen) + 2} temporary file(s)" in summary.line()
    assert [p.name for p in out.glob(".*.tmp-*")] == [live.name]
    assert validate_shards(out) == {}


@pytest.mark.parametrize("how", ["dev-full", "patched"])
def test_a_full_disk_names_the_path_and_bytes_and_keeps_the_previous_set(prepared, tmp_path, monkeypatch, how):
    """ENOSPC while a shard is written: real where the first temporary shard's name can point at /dev/full; else
    the lowest Python-visible write (pyarrow's ``write_table``) raises it on the second row group. One line naming
    the shard and the bytes needed; the previous set unchanged; no temporary file left."""
    from reidschemas.safeio import DiskFull, temporary_path

    out = tmp_path / "s"
    build_shards(prepared, ShardsConfig(row_group_rows=4), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if how == "dev-full":
        if not Path("/dev/full").exists():
            pytest.skip("a real ENOSPC needs /dev/full (Linux only); the 'patched' case simulates it here")
        temporary_path(out / "shard-00000.parquet").symlink_to("/dev/full")
    else:
        real, calls = pq.ParquetWriter.write_table, []

        def write_table(self, table, *args, **kwargs):
            calls.append(table.num_rows)
            if len(calls) == 2:
                assert temporary_path(out / "shard-00000.parquet").stat().st_size > 0  # there is something to clean
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, table, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    with pytest.raises(DiskFull) as full:
        build_shards(prepared, ShardsConfig(row_group_rows=4), out_dir=out, force=True)
    message = str(full.value)
    assert "\n" not in message and str(out / "shard-00000.parquet") in message and "256.0 MiB needed" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    assert validate_shards(out) == {}


def test_one_and_two_worker_processes_write_byte_identical_sets(prepared, tmp_path):
    """Row groups built in two worker processes give the files of one process (shards, ledger, dataset.json), with
    a train image that does not read excluded inside a worker and shards rotated mid-run."""
    manifest = pq.read_table(prepared / "index" / "manifest.parquet").to_pylist()
    victim = Path(next(r["rgb_path"] for r in manifest if r["split"] == "train"))
    original = victim.read_bytes()
    victim.write_bytes(b"not a jpeg")
    try:
        summaries = {}
        for workers in (1, 2):
            config = ShardsConfig(workers=workers, row_group_rows=4, target_shard_mb=0.2)
            summaries[workers] = build_shards(prepared, config, out_dir=tmp_path / str(workers))
    finally:
        victim.write_bytes(original)
    files = {w: {p.name: p.read_bytes() for p in sorted((tmp_path / str(w)).iterdir())} for w in (1, 2)}
    assert files[1] == files[2]
    assert summaries[2].workers == 2 and "with 2 worker(s)" in summaries[2].line()
    assert summaries[1].excluded == 1 and len(summaries[1].shards) > 1
    assert "cannot read an image" in pq.read_table(tmp_path / "2" / "errors.parquet").to_pylist()[0]["reason"]

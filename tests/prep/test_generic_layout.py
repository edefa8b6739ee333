"""``--layout generic``: the user's own data from a CSV/Parquet manifest, validated like the benchmarks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.ledger import read_ledger
from reidprep.manifest import read_manifest
from reidprep.synth import generate_dataset

runner = CliRunner()
COLUMNS = ["split", "pid", "camid", "sceneid", "rgb", "nir", "tir"]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> tuple[Path, list]:
    """A synthetic RGBNT201 dataset and its manifest through the rgbnt201 layout (the oracle)."""
    root = tmp_path_factory.mktemp("generic")
    generate_dataset(root / "data", kind="person", ids=4, images_per_id=3, seed=2)
    work = root / "bench"
    _index("--layout", "rgbnt201", "--root", str(root / "data"), "--workdir", str(work))
    return root, read_manifest(work / "index" / "manifest.parquet")


def _index(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["index", *args, "--no-progress"])
    assert result.exit_code == code, result.output
    return result.output


def _rows(records, base: Path) -> list[dict]:
    """One CSV row per benchmark record, paths relative to ``base``."""
    return [
        {
            "split": r.split, "pid": r.pid, "camid": r.camid, "sceneid": "" if r.sceneid is None else r.sceneid,
            **{m: str(Path(r.path(m)).relative_to(base)) for m in ("rgb", "nir", "tir")},
        }
        for r in records
    ]  # fmt: skip


def _write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_generic_manifest_gives_the_benchmark_layouts_records(benchmark, tmp_path):
    root, records = benchmark
    manifest = _write_csv(root / "data" / "mine.csv", _rows(records, root / "data"))
    out = _index("--layout", "generic", "--root", str(manifest), "--kind", "person", "--protocol", "camera",
                 "--workdir", str(tmp_path / "w"))  # fmt: skip
    assert "evaluation protocol: camera rule (generic layout" in out
    mine = read_manifest(tmp_path / "w" / "index" / "manifest.parquet")

    def essence(r):
        return (r.split, r.pid, r.camid, r.sceneid, r.rgb_path, r.nir_path, r.tir_path)

    assert sorted(map(essence, mine)) == sorted(map(essence, records))
    assert {r.dataset for r in mine} == {"generic"} and {r.kind for r in mine} == {"pedestrian"}
    # a triplet listed as query and gallery is one unit of work, as RGBNT201's test/ folder
    keys = {(r.split, r.rgb_path): r.triplet_key for r in mine}
    shared = [r for r in mine if r.split == "query"]
    assert shared and all(keys[("gallery", r.rgb_path)] == r.triplet_key for r in shared)
    assert len({r.triplet_key for r in mine}) == len({r.triplet_key for r in records})
    summary = json.loads((tmp_path / "w" / "index" / "summary.json").read_text())
    assert summary["protocol"]["name"] == "camera" and summary["params"]["kind"] == "person"


def test_parquet_manifest_and_crop_boxes(benchmark, tmp_path):
    root, records = benchmark
    rows = _rows([r for r in records if r.split == "train"], root / "data")
    for row in rows:
        row["box"] = "0,0,8,20"
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "mine.parquet")
    _index("--layout", "generic", "--root", str(root / "data" / "mine.parquet"), "--kind", "vehicle",
           "--protocol", "camera", "--workdir", str(tmp_path / "w"))  # fmt: skip
    mine = read_manifest(tmp_path / "w" / "index" / "manifest.parquet")
    assert len(mine) == len(rows)
    assert all(r.rgb_box == r.nir_box == r.tir_box == (0, 0, 8, 20) and r.kind == "vehicle" for r in mine)


def test_bad_rows_are_ledgered_with_their_line_and_strict_stops(benchmark, tmp_path):
    root, records = benchmark
    good = _rows([r for r in records if r.split == "train"], root / "data")
    bad = [
        {**good[0], "split": "val"},  # line 2
        {**good[1], "pid": "seven"},  # line 3
        {**good[2], "nir": "nowhere/x.jpg"},  # line 4
        {**good[3], "box": "5,5,2,9"},  # line 5
        good[4],  # line 6
        good[4],  # line 7: listed twice
        *good[5:],
    ]
    manifest = _write_csv(root / "data" / "bad.csv", bad, [*COLUMNS, "box"])
    w = tmp_path / "w"
    _index("--layout", "generic", "--root", str(manifest), "--kind", "person", "--protocol", "camera",
           "--workdir", str(w))  # fmt: skip
    ledger = {(e.error_type, e.reason.split(":")[0]): e for e in read_ledger(w / "index" / "errors.parquet")}
    assert set(ledger) == {
        ("bad_split", "line 2"), ("bad_id", "line 3"), ("missing_file", "line 4"), ("bad_box", "line 5"),
        ("duplicate_row", "line 7"),
    }  # fmt: skip
    assert ledger[("missing_file", "line 4")].path == str(root / "data" / "nowhere" / "x.jpg")
    assert "nir file not found" in ledger[("missing_file", "line 4")].reason
    assert len(read_manifest(w / "index" / "manifest.parquet")) == len(good) - 4
    out = _index("--layout", "generic", "--root", str(manifest), "--kind", "person", "--protocol", "camera",
                 "--workdir", str(tmp_path / "strict"), "--strict", code=1)  # fmt: skip
    assert "--strict: 5 problem(s)" in out


def test_scene_protocol_needs_every_sceneid(benchmark, tmp_path):
    root, records = benchmark
    rows = _rows([r for r in records if r.split == "train"], root / "data")
    for i, row in enumerate(rows):
        row["sceneid"] = "" if i == 0 else i % 2
    manifest = _write_csv(root / "data" / "scenes.csv", rows)
    w = tmp_path / "w"
    _index("--layout", "generic", "--root", str(manifest), "--kind", "person", "--protocol", "scene",
           "--workdir", str(w))  # fmt: skip
    (entry,) = [e for e in read_ledger(w / "index" / "errors.parquet") if e.error_type == "missing_scene"]
    assert "give the row a sceneid" in entry.reason
    assert len(read_manifest(w / "index" / "manifest.parquet")) == len(rows) - 1


def test_kind_and_protocol_are_never_guessed(benchmark, tmp_path):
    root, records = benchmark
    manifest = _write_csv(root / "data" / "plain.csv", _rows(records, root / "data"))
    out = _index("--layout", "generic", "--root", str(manifest), "--workdir", str(tmp_path / "w"), code=2)
    assert "needs dataset.kind (--kind person|vehicle) and dataset.protocol (--protocol camera|scene)" in out
    out = _index("--layout", "rgbnt201", "--root", str(root / "data"), "--protocol", "scene",
                 "--workdir", str(tmp_path / "w2"), code=2)  # fmt: skip
    assert "dataset.protocol (scene) apply to the generic layout only" in out
    missing = _write_csv(root / "data" / "cols.csv", [{"split": "train", "pid": 1}], ["split", "pid"])
    out = _index("--layout", "generic", "--root", str(missing), "--kind", "person", "--protocol", "camera",
                 "--workdir", str(tmp_path / "w3"), code=2)  # fmt: skip
    assert "missing column(s) camid, rgb, nir, tir" in out

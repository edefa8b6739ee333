"""The GPU suite's CPU smoke run (``bench/gpu_suite.py --device cpu --tiny``): it runs in CI so that it cannot rot.

One subprocess run (as CI and `make bench-gpu` run it) is shared by the tests below; they check the table it prints
and the JSON it writes: every section present, every figure with a unit, positive throughputs, and figures that
must agree with each other (tokens/s = requests/s x tokens per reply, triplets/s x step time = batch size).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.py"
SECTIONS = ("sam2", "qwen", "train", "scan", "fit")
MODELS = ("baseline", "demo", "dmpt", "mambapro", "next", "stmi")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    paths = [str(ROOT / p) for p in ("prep", "train", "schemas")] + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(
        [sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu_suite")
    # Under a minute on an idle 2-core machine; the limit leaves room for a CI machine shared with other jobs.
    result = _run("--device", "cpu", "--tiny", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result, out


def _document(out: Path) -> dict[str, Any]:
    files = sorted(out.glob("results-*.json"))
    assert len(files) == 1, files
    assert files[0].name.startswith(f"results-{dt.date.today().isoformat()}-")
    assert files[0].name.endswith("-tiny.json")
    return json.loads(files[0].read_text())


def _rows(document: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return document["sections"][section]["rows"]


def _value(row: dict[str, Any], key: str) -> float:
    return row["figures"][key]["value"]


@pytest.mark.slow
def test_every_section_has_measured_rows_with_units(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = tiny_run
    document = _document(out)
    assert list(document["sections"]) == list(SECTIONS)
    meta = document["meta"]
    assert meta["tiny"] is True and meta["device_type"] == "cpu" and meta["peak_bf16_flops"] is None
    for name in SECTIONS:
        section = document["sections"][name]
        assert section["budget_s"] > 0 and section["seconds"] > 0
        measured = [row for row in section["rows"] if "skipped" not in row]
        assert measured, f"{name}: no measured row"
        for row in section["rows"]:
            assert "error" not in row, row
        for row in measured:
            assert row["figures"], row
            for key, figure in row["figures"].items():
                assert isinstance(figure["unit"], str), (name, row["case"], key)
                if figure["value"] is None:  # only MFU, which has no CPU peak
                    assert key == "mfu" and "n/a" in figure["note"], (name, row["case"], key)
                    continue
                assert math.isfinite(figure["value"]) and figure["value"] >= 0, (name, row["case"], key, figure)
                if "/s" in figure["unit"] or figure["unit"] in ("MiB", "ms", "ms/image", "ms/step"):
                    assert figure["value"] > 0, (name, row["case"], key, figure)


@pytest.mark.slow
def test_figures_agree_with_each_other(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = tiny_run
    document = _document(out)
    tokens = document["sections"]["qwen"]["setup"]["tokens"]
    qwen = _rows(document, "qwen")
    assert [row["case"].rsplit(" ", 1)[-1] for row in qwen] == ["1", "8", "32"]
    for row in qwen:  # every reply is exactly `tokens` long
        assert _value(row, "tokens_per_s") == pytest.approx(tokens * _value(row, "requests_per_s"), rel=1e-6)
    for row in _rows(document, "sam2"):
        assert _value(row, "images_per_s") * _value(row, "ms_per_image") == pytest.approx(1000, rel=1e-6)
        assert "identical masks on both paths: 8/8" in row["note"]
    train = _rows(document, "train")
    assert [row["case"].split(" ")[0] for row in train] == list(MODELS)
    for row in train:  # tiny-demo recipes: P 4 x K 2
        assert _value(row, "triplets_per_s") * _value(row, "step_time") / 1000 == pytest.approx(8, rel=1e-6)
        assert 0 < _value(row, "data_wait") < 100
        assert _value(row, "flops_per_step") > 0
    scan = {row["case"]: row for row in _rows(document, "scan")}
    assert _value(scan["PyTorch scan, L=32"], "vs_naive_loop") < 1e-4
    assert "needs CUDA" in scan["mamba-ssm kernel, L=32"]["skipped"]
    fit = _rows(document, "fit")
    assert [row["case"] for row in fit] == ["stmi (stmi-tiny-demo) amp=bf16", "stmi (stmi-tiny-demo) amp=fp16"]
    for row in fit:
        assert 0 <= _value(row, "test_map") <= 100 and _value(row, "final_loss") > 0
        assert "trains in fp32" in row["note"]


@pytest.mark.slow
def test_the_table_shows_every_row(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = tiny_run
    document = _document(out)
    lines = result.stdout.splitlines()
    assert any(line.startswith("| section") and "figures" in line for line in lines), result.stdout
    for name in SECTIONS:
        for row in _rows(document, name):
            assert any(line.startswith(f"| {name} ") and row["case"] in line for line in lines), (name, row["case"])
    assert "wrote " in result.stdout and str(out) in result.stdout


def test_full_sizes_on_a_cpu_are_refused_in_one_line(tmp_path: Path) -> None:
    result = _run("--device", "cpu", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--tiny" in result.stderr
    assert not list(tmp_path.iterdir())

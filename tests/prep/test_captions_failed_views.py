"""A caption view without a valid answer is a failure (issue 16, point 3), against the fake OpenAI server.

The server answers malformed JSON for about a quarter of the images. Each such view must fail its triplet, be
ledgered with its reason and image, be counted by ``captions``, ``status`` and the report, and stay out of the
request cache. Once the server is fixed, a plain rerun (and ``--retry-failed``, and ``--force``) asks exactly those
views again and gives the rows of a clean run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAI, default_handler, image_parts
from typer.testing import CliRunner

from reidprep.captions.attributes import composite_image
from reidprep.captions.mllm import encode_jpeg
from reidprep.captions.parse import parse_attributes
from reidprep.cli import app
from reidprep.images import load_modality
from reidprep.index import run_index
from reidprep.manifest import read_manifest
from reidprep.stage import read_stage_table
from reidprep.synth import generate_dataset
from reidschemas import MODALITIES

runner = CliRunner()
KEY = "sk-test-failed-views"
MALFORMED = '{"gender": {"value": "male", "confidence": 0.9},'


def _digest(body: dict[str, Any]) -> str:
    """SHA-256 of the JPEG a chat request carries."""
    url = image_parts(body)[0]["url"]
    return hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()


class Flaky:
    """Malformed JSON for the images whose digest starts with 0-3, while ``broken``; the others answered."""

    def __init__(self) -> None:
        self.broken = True
        self.bad: list[str] = []

    def __call__(self, body: dict[str, Any]) -> str:
        digest = _digest(body)
        if self.broken and digest[0] in "0123":
            self.bad.append(digest)
            return MALFORMED
        return default_handler(body)


def _views(workdir: Path) -> dict[str, tuple[str, str, str]]:
    """The oracle: image digest -> (triplet key, view, the ledger's path) for every view of every triplet."""
    first: dict[str, Any] = {}
    for record in sorted(read_manifest(workdir / "index" / "manifest.parquet"), key=lambda r: r.sample_id):
        first.setdefault(record.triplet_key, record)
    views = {}
    for key, record in first.items():
        images = {m: load_modality(record, m) for m in MODALITIES}
        for view, image in (*images.items(), ("composite", composite_image(list(images.values())))):
            path = getattr(record, f"{view}_path") if view in MODALITIES else record.rgb_path
            views[hashlib.sha256(encode_jpeg(image)).hexdigest()] = (key, view, path)
    return views


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=4, images_per_id=3, seed=5)
    return out


def _captions(workdir: Path, config: Path, *args: str) -> str:
    result = runner.invoke(
        app, ["captions", "--workdir", str(workdir), "--config", str(config), "--no-progress", *args]
    )
    assert result.exit_code == 0, result.output
    return result.output


def _config(path: Path, server: FakeOpenAI) -> Path:
    path.write_text(
        "captions:\n  providers: [openai]\n  chunk_size: 4\n  openai:\n"
        f"    base_url: {server.base_url}\n    max_concurrency: 2\n    max_retries: 0\n    timeout_s: 20\n"
    )
    return path


def _clean_rows(dataset: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """The rows of a run against a server that always answers well."""
    run_index(tmp_path / "clean", "rgbnt201", dataset)
    with FakeOpenAI() as server:
        _captions(tmp_path / "clean", _config(tmp_path / "clean.yaml", server))
    return read_stage_table(tmp_path / "clean", "captions").to_pylist()


@pytest.mark.parametrize("flag", [None, "--retry-failed", "--force"])
def test_malformed_views_fail_are_ledgered_not_cached_and_a_rerun_repairs_them(dataset, tmp_path, monkeypatch, flag):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    workdir = tmp_path / "w"
    run_index(workdir, "rgbnt201", dataset)
    views = _views(workdir)
    flaky = Flaky()
    with FakeOpenAI(handler=flaky) as server:
        config = _config(tmp_path / "pipeline.yaml", server)
        output = _captions(workdir, config)
        assert server.chat_count == len(views) == 48
        broken = {views[d] for d in flaky.bad}
        failed = {key for key, _, _ in broken}
        assert 0 < len(failed) < 12, "the fixture must break some triplets and leave others whole"
        assert f"captions: {12 - len(failed)} done, 0 skipped, {len(failed)} failed" in output

        # One ledger entry per broken view and sample id of its triplet (a test triplet is query and gallery),
        # naming the view, its image and the reason.
        samples: dict[str, int] = {}
        for record in read_manifest(workdir / "index" / "manifest.parquet"):
            samples[record.triplet_key] = samples.get(record.triplet_key, 0) + 1
        ledger = pq.read_table(workdir / "captions" / "errors.parquet").to_pylist()
        assert sorted((e["reason"].split(" view:")[0], e["path"]) for e in ledger) == sorted(
            (view, path) for key, view, path in broken for _ in range(samples[key])
        )
        assert all(e["error_type"] == "UnusableReply" and "malformed JSON" in e["reason"] for e in ledger)
        rows = read_stage_table(workdir, "captions").to_pylist()
        assert {r["triplet_key"] for r in rows} == {key for key, _, _ in views.values()} - failed  # no partial row

        # status and the report count the failed triplets.
        status = runner.invoke(app, ["status", "--workdir", str(workdir), "--json"])
        assert json.loads(status.output)["stages"]["captions"]["failed"] == len(failed)
        assert runner.invoke(app, ["report", "--workdir", str(workdir)]).exit_code == 0
        html = (workdir / "report.html").read_text()
        cells = re.search(r'data-stage="captions">.*?<td class="num">(\d+)</td><td class="num">(\d+)</td>', html)
        assert cells is not None and (int(cells[1]), int(cells[2])) == (12 - len(failed), len(failed))

        # The malformed replies are not in the request cache; every valid one is.
        with sqlite3.connect(workdir / "captions" / "requests.sqlite") as db:
            texts = [text for (text,) in db.execute("SELECT text FROM replies")]
        assert MALFORMED not in texts and len(texts) == 48 - len(broken)
        for text in texts:
            parse_attributes(text, "pedestrian")

        # The server is fixed: the rerun asks exactly the broken views, once each.
        flaky.broken = False
        server.reset_log()
        output = _captions(workdir, config, *([flag] if flag else []))
        assert sorted(_digest(b) for b in server.chat_bodies) == sorted(flaky.bad)
        assert " 0 failed" in output and "stage complete" in output
        assert pq.read_table(workdir / "captions" / "errors.parquet").num_rows == 0
        repaired = read_stage_table(workdir, "captions").to_pylist()

        server.reset_log()
        assert "0 done, 12 skipped, 0 failed" in _captions(workdir, config)  # nothing left to retry
        assert server.chat_count == 0

    assert repaired == _clean_rows(dataset, tmp_path)

"""``reidtrain report RUN`` and ``reidtrain status``: on a real two-epoch run (tiny random CLIP, CPU) with a
validation split, ``eval --missing all`` and a rank list; the page is checked with an HTML parser and, where
installed, in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from browser import needs_chromium, screenshot
from PIL import Image
from typer.testing import CliRunner

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidschemas.locks import hold_lock
from reidtrain.cli import app
from reidtrain.report import write_run_report

runner = CliRunner()
C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two line colours: mAP and Rank-1


class Page(HTMLParser):
    """Tags with attributes, all text, and the cell texts of every table row by the table's id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.pre: dict[str, str] = {}
        self._table: list[str] = []
        self._cell: list[str] | None = None
        self._pre: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table.append(a.get("id") or a.get("class") or "")
            self.tables.setdefault(self._table[-1], [])
        if tag == "tr" and self._table:
            self.tables[self._table[-1]].append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag == "pre":
            self._pre = a.get("id") or ""
            self.pre[self._pre] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table[-1]][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "pre":
            self._pre = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self.pre[self._pre] += data

    def images(self) -> list[str]:
        return [a.get("src") or "" for tag, a in self.tags if tag == "img"]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """W with shards and W/train/baseline: two epochs of three, --val-ids 2, eval --missing all and a rank list."""
    tmp = tmp_path_factory.mktemp("report")
    generate_dataset(tmp / "data", kind="person", ids=8, images_per_id=4, seed=0)
    work = tmp / "work"
    run_index(work, "rgbnt201", tmp / "data")
    shards = build_shards(work, ShardsConfig(missing="null")).out_dir
    run = work / "train" / "baseline"
    args = ["fit", "--shards", str(shards), "--output", str(run), "--model", "baseline", "--backbone", "tiny"]
    args += ["--random-init", "--recipe", "baseline-tiny-demo", "--seed", "3", "--no-progress", "--epochs", "2"]
    for command in (
        [*args, "--val-ids", "2"],
        ["eval", "--run", str(run), "--checkpoint", "last", "--missing", "all"],
        ["eval", "--run", str(run), "--rank-list", "2", "--top-k", "3"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    return work


@pytest.fixture()
def run(workdir: Path) -> Path:
    return workdir / "train" / "baseline"


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_page_is_self_contained_and_deterministic(run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    path = run / "report.html"
    assert f"report: {path}" in result.output.replace("\n", "")
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object")]
    assert all(src.startswith("data:image/png;base64,") for src in page.images()) and len(page.images()) == 2
    assert "http://" not in text and "https://" not in text
    assert write_run_report(run, tmp_path / "again.html").read_bytes() == path.read_bytes()


def test_last_and_best_match_the_run(run: Path) -> None:
    page = Page(write_run_report(run).read_text(encoding="utf-8"))
    metrics = _metrics(run)
    best_epoch = torch.load(run / "best.pt", weights_only=True)["epoch"]  # what fit saved as best (on val)
    rows = {row[0]: row for row in page.tables["results"][1:]}
    assert set(rows) == {"last", "best on val"}
    for label, m in (("last", metrics[-1]), ("best on val", metrics[best_epoch - 1])):
        expected = [str(m["epoch"]), *(_pct(m[k]) for k in ("mAP", "R1", "R5", "R10", "mINP"))]
        assert rows[label][1:] == [*expected, _pct(m["val_mAP"]), _pct(m["val_R1"])]
    epochs = page.tables["epochs"][1:]
    assert [row[0] for row in epochs] == [str(m["epoch"]) for m in metrics]
    assert [row[1] for row in epochs] == [f"{m['loss']:.4f}" for m in metrics]
    # the curves: a matplotlib figure with the mAP (C0) and Rank-1 (C1) lines drawn
    figure = next(a for tag, a in page.tags if tag == "img" and (a.get("alt") or "").startswith("loss, mAP"))
    png = Image.open(io.BytesIO(base64.b64decode((figure["src"] or "").split(",", 1)[1]))).convert("RGB")
    assert png.size == (1100, 360)
    colours = {c for _, c in png.getcolors(maxcolors=1_000_000) or []}
    assert C0 in colours and C1 in colours


def test_eval_tables_rank_list_config_and_provenance(run: Path) -> None:
    page = Page(write_run_report(run).read_text(encoding="utf-8"))
    every = json.loads((run / "eval-missing-all.json").read_text())["results"]
    table = page.tables["eval-missing-all"][1:]
    assert [row[1] for row in table] == [
        "none", "no RGB", "no NIR", "no TIR", "no RGB, NIR", "no RGB, TIR", "no NIR, TIR", "average"
    ]  # fmt: skip
    assert [row[3] for row in table] == [_pct(r["mAP"]) for r in every]
    assert [row[4] for row in table] == [_pct(r["R1"]) for r in every]
    # the rank list's labels: ids from the shards, distances rising, matches where the ids agree
    from reidtrain.data.shards import ShardDataset

    config = json.loads((run / "config.json").read_text())
    rows = ShardDataset(Path(config["shards"]), ("query", "gallery"), columns=())
    pid = dict(zip(rows.column("sample_id"), rows.pids.tolist(), strict=True))
    ranks = page.tables["ranks"][1:]
    assert len(ranks) == 2 * 3
    shown = json.loads((run / "eval.json").read_text())["rank_list"]
    for q, query in enumerate(shown["queries"]):
        block = ranks[3 * q : 3 * q + 3]
        cells = [row[-6:] for row in block]  # rank, id, camera, distance, match, gallery item
        assert [c[0] for c in cells] == ["1", "2", "3"]
        assert [int(c[1]) for c in cells] == [pid[c[5]] for c in cells]
        distances = [float(c[3]) for c in cells]
        assert distances == sorted(distances)
        assert [c[4] for c in cells] == ["same id" if pid[c[5]] == pid[query["query"]] else "other id" for c in cells]
        assert block[0][0].startswith(f"id {pid[query['query']]} cam")
    assert f"checkpoint {shown['checkpoint']}, top-3" in "".join(page.text)
    resolved = json.loads(page.pre["resolved"])
    assert resolved == {k: v for k, v in config.items() if k != "provenance"}
    provenance = dict(row for row in page.tables["provenance"] if len(row) == 2)
    assert provenance["git_commit"] == str(config["provenance"]["git_commit"])
    assert provenance["dataset_fingerprint"] == config["provenance"]["dataset_fingerprint"]


def test_text_is_escaped_and_missing_parts_do_not_stop_it(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    hostile = '<script>alert("x")</script> & <b>'
    config = json.loads((copy / "config.json").read_text())
    config["recipe_name"] = hostile
    (copy / "config.json").write_text(json.dumps(config))
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # a line cut by a killed writer
    (copy / "eval.json").write_text("{not json")
    text = write_run_report(copy).read_text(encoding="utf-8")
    page = Page(text)
    assert not [tag for tag, _ in page.tags if tag == "script"] and hostile not in text
    assert html.escape(hostile) in text and hostile in "".join(page.text)
    assert [row[0] for row in page.tables["epochs"][1:]] == ["1"]
    body = "".join(page.text)
    assert "1 unreadable line(s) of metrics.jsonl left out" in body
    assert "eval.json is unreadable and left out" in body
    (copy / "metrics.jsonl").unlink()
    assert "No finished epoch yet" in "".join(Page(write_run_report(copy).read_text()).text)
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_status_lists_runs_with_their_state(workdir: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    for name in ("a-stopped", "b-running", "c-incomplete", "d-finished"):
        shutil.copytree(workdir / "train" / "baseline", work / "train" / name, ignore=shutil.ignore_patterns("*.pt"))
    (work / "train" / "not-a-run").mkdir()
    c = work / "train" / "c-incomplete"
    (c / "metrics.jsonl").write_text((c / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    d = work / "train" / "d-finished"
    config = json.loads((d / "config.json").read_text())
    config["recipe"]["epochs"] = 2  # the schedule is done
    (d / "config.json").write_text(json.dumps(config))
    with hold_lock(work / "train" / "b-running" / ".lock", "reidtrain fit"):
        result = runner.invoke(app, ["status", "--workdir", str(work), "--json"])
        table = runner.invoke(app, ["status", "--workdir", str(work)])
    assert result.exit_code == 0 and table.exit_code == 0, result.output + table.output
    runs = {Path(r["run"]).name: r for r in json.loads(result.output)}
    assert {name: r["state"] for name, r in runs.items()} == {
        "a-stopped": "stopped",
        "b-running": "running",
        "c-incomplete": "incomplete",
        "d-finished": "finished",
    }
    metrics = _metrics(workdir / "train" / "baseline")
    best = max(metrics, key=lambda m: m["val_mAP"])
    a = runs["a-stopped"]
    assert (a["done"], a["target"], a["total"], a["model"], a["recipe"]) == (2, 2, 3, "baseline", "baseline-tiny-demo")
    assert a["last_map"] == metrics[-1]["mAP"] and a["best_map"] == best["mAP"] and a["best_on"] == "val"
    assert runs["c-incomplete"]["done"] == 1
    assert runs["b-running"]["holder"]["command"]
    assert "running" in table.output and "stopped" in table.output and "2/2 of 3" in table.output
    # the lock is released: nobody trains b any more
    again = runner.invoke(app, ["status", "--workdir", str(work), "--json"])
    assert {Path(r["run"]).name: r["state"] for r in json.loads(again.output)}["b-running"] == "stopped"
    missing = runner.invoke(app, ["status", "--workdir", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "no training run" in missing.output


@needs_chromium
def test_report_renders_in_headless_chromium(run: Path, tmp_path: Path) -> None:
    report = write_run_report(run)
    shot = screenshot(report, tmp_path, (1280, 1400))
    with Image.open(shot) as image:
        assert image.size == (1280, 1400)
        pixels = np.asarray(image.convert("RGB"))
    colours = Image.fromarray(pixels).resize((320, 350)).getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, "the screenshot looks blank"
    # the curves figure is displayed: its mAP line colour is on screen (the browser decoded the embedded PNG)
    assert (np.abs(pixels.astype(int) - np.array(C0)).sum(axis=2) < 30).sum() > 100

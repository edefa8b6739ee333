"""``write_report``: one self-contained HTML page, checked with an HTML parser and, where installed, Chromium;
and the mask preview PNG it shares the overlays with."""

from __future__ import annotations

import html
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import needs_chromium, screenshot
from PIL import Image
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.ledger import read_ledger
from reidprep.report import write_report
from reidprep.stage import current_run_dir, read_stage_table
from reidprep.steps import workdir_status
from reidprep.synth import generate_dataset

runner = CliRunner()
SAMPLES = 4


class Page(HTMLParser):
    """Tags with their attributes, the text, and the text of the elements with an ``id`` or ``data-*`` key."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stage_rows: dict[str, list[str]] = {}
        self.values: dict[str, list[tuple[float, str]]] = {}
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._section: list[str] = []
        self._value: float | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "tr" and a.get("data-stage"):
            self._row = a["data-stage"]
            self.stage_rows[self._row] = []
        if tag == "td" and self._row is not None:
            self._cell = []
        if tag == "div" and a.get("id"):
            self._section.append(a["id"])
        if tag == "span" and "data-value" in a and self._section:
            self._value = float(a["data-value"] or "nan")
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self.stage_rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "span" and self._value is not None and self._cell is not None:
            self.values.setdefault(self._section[-1], []).append((self._value, "".join(self._cell)))
            self._value, self._cell = None, None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def attr_values(self, name: str) -> list[str]:
        return [a[name] or "" for _, a in self.tags if name in a]

    def images(self) -> list[dict[str, str | None]]:
        return [a for tag, a in self.tags if tag == "img"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=4, images_per_id=3, seed=3)
    return out


@pytest.fixture(scope="module")
def full(dataset, tmp_path_factory) -> Path:
    """A workdir with index, masks and captions done through the real code and CLI."""
    workdir = tmp_path_factory.mktemp("full") / "w"
    run_index(workdir, "rgbnt201", dataset)
    for command in ("masks", "captions"):
        result = runner.invoke(app, [command, "--workdir", str(workdir), "--no-progress"])
        assert result.exit_code == 0, result.output
    return workdir


def _read(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def test_report_is_one_self_contained_page(full, tmp_path):
    path = write_report(full, samples=SAMPLES)
    assert path == full / "report.html"
    text, page = _read(path)
    references = page.attr_values("src") + page.attr_values("href")
    assert references, "the page embeds its images"
    assert all(ref.startswith("data:") for ref in references), [r[:40] for r in references if not r.startswith("data:")]
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe")]
    assert "http://" not in text and "https://" not in text
    assert len(page.images()) == 3 * SAMPLES
    assert all((img["src"] or "").startswith("data:image/png;base64,") for img in page.images())
    # deterministic: the same workdir gives the same bytes
    again = write_report(full, out=tmp_path / "again.html", samples=SAMPLES)
    assert again.read_bytes() == path.read_bytes()


def test_stage_table_and_quality_figures_match_the_workdir(full):
    _, page = _read(write_report(full, samples=SAMPLES))
    stages = workdir_status(full)["stages"]
    assert list(page.stage_rows) == list(stages) == ["index", "masks", "captions", "shards"]
    assert page.stage_rows["shards"][1] == stages["shards"]["state"] == "not run"
    for name in ("index", "masks", "captions"):
        status, cells = stages[name], page.stage_rows[name]
        assert cells[0] == name and cells[1] == status["state"] == "complete"
        assert (int(cells[2]), int(cells[3]), int(cells[5])) == (status["done"], status["failed"], status["pending"])
    assert int(page.stage_rows["masks"][2]) == read_stage_table(full, "masks").num_rows

    masks = json.loads((full / "masks" / "summary.json").read_text())
    iou = page.values["mask-iou"]
    assert iou[0][0] == pytest.approx(masks["groundtruth"]["mean_iou"], abs=1e-4)
    assert iou[0][1] == f"{masks['groundtruth']['mean_iou']:.3f}"

    captions = json.loads((full / "captions" / "summary.json").read_text())
    shown = page.values["unknown-rates"]
    expected = [captions["unknown_rates"][m][w] for m in ("rgb", "nir", "tir") for w in ("before", "after")]
    assert [v for v, _ in shown] == pytest.approx(expected, abs=1e-4)
    assert [label for _, label in shown] == [f"{100 * v:.1f}%" for v in expected]
    accuracy = [v for v, label in page.values["attribute-accuracy"]]
    assert captions["groundtruth"]["fused"]["mean_accuracy"] == pytest.approx(accuracy[6], abs=1e-4)


def test_samples_show_captions_attributes_and_fused_caption(full):
    text, page = _read(write_report(full, samples=SAMPLES))
    keys = [a["data-key"] for tag, a in page.tags if tag == "div" and a.get("data-key")]
    assert len(keys) == SAMPLES
    rows = {r["triplet_key"]: r for r in read_stage_table(full, "captions").to_pylist()}
    body = "".join(page.text)
    for key in keys:
        row = rows[key]
        for target in ("rgb", "nir", "tir", "fused"):
            assert row[f"caption_{target}"] in body
            assert html.escape(row[f"caption_{target}"]) in text
        merged = json.loads(row["attributes"])
        known = [e["value"] for e in merged["rgb"].values() if e["value"] is not None]
        assert all(str(value) in body for value in known)
    assert "Fused:" in body


def test_text_is_escaped_and_missing_files_do_not_stop_it(full, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(full, workdir)
    hostile = '<script>alert("x")</script> & <b>bold</b>'
    run_dir = current_run_dir(workdir, "captions")
    assert run_dir is not None
    shutil.rmtree(run_dir / "checksums")  # parts rewritten below: unrecorded, they are read as they are
    for part in sorted((run_dir / "parts").glob("part-*.parquet")):
        table = pq.read_table(part)
        column = table.schema.get_field_index("caption_fused")
        values = pa.array([hostile] * table.num_rows, type=pa.string())
        pq.write_table(table.set_column(column, table.schema.field(column), values), part)
    (workdir / "masks" / "summary.json").unlink()
    (workdir / "captions" / "errors.parquet").unlink()
    text, page = _read(write_report(workdir, samples=SAMPLES))
    assert not [tag for tag, _ in page.tags if tag == "script"]
    assert hostile not in text
    assert html.escape(hostile) in text
    assert hostile in "".join(page.text)
    assert "mask-iou" not in page.values  # its summary is gone: the figure is left out
    assert "unknown-rates" in page.values


def test_index_only_workdir_skips_the_later_sections(dataset, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(dataset, copy)
    lost = sorted(copy.glob("RGBNT201/train_171/NI/*.jpg"))[0]
    lost.unlink()
    workdir = tmp_path / "w"
    run_index(workdir, "rgbnt201", copy)
    text, page = _read(write_report(workdir, samples=2))
    assert page.stage_rows["index"][1] == "complete"
    assert page.stage_rows["masks"][1] == page.stage_rows["captions"][1] == "not run"
    assert not page.values  # no quality figures
    assert "Quality" not in "".join(page.text) and "Fused:" not in "".join(page.text)
    assert len(page.images()) == 3 * 2  # samples from the manifest, without masks or captions
    assert not any("with mask" in (img["alt"] or "") for img in page.images())
    # the index ledger: counts by type and the first rows, with the path and reason
    entries = read_ledger(workdir / "index" / "errors.parquet")
    assert entries and int(page.stage_rows["index"][3]) == sum(e.severity == "error" for e in entries)
    assert f"index: {len(entries)} ledger entries" in "".join(page.text)
    for entry in entries[:5]:
        assert html.escape(entry.reason) in text and entry.error_type in text
        assert html.escape(entry.sample_id or entry.path or "") in text


@needs_chromium
def test_report_renders_in_headless_chromium(full, tmp_path):
    report = write_report(full, samples=SAMPLES)
    shot = screenshot(report, tmp_path, (1280, 2000))
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").resize((320, 500)).getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, "the screenshot looks blank"


def _oracle_ious(workdir: Path) -> dict[str, float]:
    """Triplet mask IoU against the reference modality's ground-truth PNG, computed here with numpy alone."""
    from reidprep.manifest import read_manifest
    from reidschemas.maskcodec import decode_mask

    dataset = Path(json.loads((workdir / "index" / "summary.json").read_text())["dataset_dir"])
    records = {r.sample_id: r for r in read_manifest(workdir / "index" / "manifest.parquet")}
    ious = {}
    for row in read_stage_table(workdir, "masks").to_pylist():
        reference = "rgb" if row["source"] == "all" else row["source"]
        image_path = Path(records[row["sample_id"]].path(reference))
        truth_path = dataset / "groundtruth" / "masks" / image_path.relative_to(dataset).with_suffix(".png")
        truth = np.asarray(Image.open(truth_path).convert("L")) > 127
        mask = decode_mask(row["mask"], row["height"], row["width"])
        assert mask.shape == truth.shape  # the synthetic masks are at image size: no resizing to trust
        ious[row["triplet_key"]] = float((mask & truth).sum() / (mask | truth).sum())
    return ious


def test_worst_triplets_are_named_and_can_come_first(full, tmp_path):
    truth = _oracle_ious(full)
    worst = sorted(truth, key=lambda key: (truth[key], key))
    text, page = _read(write_report(full, out=tmp_path / "w.html", samples=SAMPLES, order="worst"))
    named = []
    parser_rows = text.split('id="worst-triplets"')[1].split("</table>")[0]
    for key in worst[:5]:
        assert f'data-key="{html.escape(key)}"' in parser_rows
        named.append(parser_rows.index(f'data-key="{html.escape(key)}"'))
        assert f"{truth[key]:.3f}" in parser_rows
    assert named == sorted(named), "the worst first"
    shown = [a["data-key"] for tag, a in page.tags if tag == "div" and a.get("data-key")]
    assert shown == worst[:SAMPLES]
    ious = [float(a["data-iou"] or "nan") for tag, a in page.tags if tag == "b" and a.get("data-iou")]
    assert ious == pytest.approx([truth[key] for key in worst[:SAMPLES]], abs=1e-4)
    assert "lowest mask IoU vs ground truth, worst first" in "".join(page.text)
    # the default order spreads the samples over the table and still shows each one's IoU
    _, spread = _read(write_report(full, out=tmp_path / "s.html", samples=SAMPLES))
    spread_keys = [a["data-key"] for tag, a in spread.tags if tag == "div" and a.get("data-key")]
    assert spread_keys != worst[:SAMPLES]
    spread_ious = [float(a["data-iou"] or "nan") for tag, a in spread.tags if tag == "b" and a.get("data-iou")]
    assert spread_ious == pytest.approx([truth[key] for key in spread_keys], abs=1e-4)


def test_order_worst_without_ground_truth_is_one_clear_error(dataset, tmp_path):
    workdir = tmp_path / "w"
    run_index(workdir, "rgbnt201", dataset)
    result = runner.invoke(app, ["report", "--workdir", str(workdir), "--order", "worst"])
    assert result.exit_code == 2
    assert "--order worst needs the masks step" in result.output and "--order spread" in result.output
    result = runner.invoke(app, ["report", "--workdir", str(workdir), "--order", "best"])
    assert result.exit_code == 2 and "choose one of spread, worst" in result.output


def test_mask_preview_labels_modalities_and_each_samples_iou(full, tmp_path):
    from reidprep.masks.preview import PAD, draw_preview, preview_rows

    truth = _oracle_ious(full)
    rows = preview_rows(full, 3)
    assert len(rows) == 3
    for row in rows:
        assert row.iou == pytest.approx(truth[row.key], abs=1e-6)
        assert row.label.startswith(row.key) and row.label.endswith(f"IoU {truth[row.key]:.2f}")
    result = runner.invoke(app, ["masks", "--workdir", str(full), "--no-progress", "--preview", "3"])
    assert result.exit_code == 0, result.output
    shown = np.asarray(Image.open(full / "masks" / "preview.png").convert("RGB"))
    assert np.array_equal(shown, np.asarray(draw_preview(rows)))
    # a header band with one name over each of the three columns, then a label line over each row of images
    cell_w = rows[0].cells[0].shape[1]
    ink = shown.min(axis=2) < 128
    header = ink[: 13 + 2 * PAD]
    for c in range(3):
        left = PAD + c * (cell_w + PAD)
        assert header[:, left : left + cell_w].sum() > 20, f"no modality name over column {c}"
    top = 13 + 2 * PAD
    assert ink[top : top + 13 + 2 * PAD].sum() > 100, "no label over the first row"
    # sized to what is drawn: images or labels end within 2 PAD (glyph bearings) of the edges
    drawn = np.nonzero((shown != 255).any(axis=2))
    assert shown.shape[0] - 1 - drawn[0].max() <= 2 * PAD and shown.shape[1] - 1 - drawn[1].max() <= 2 * PAD

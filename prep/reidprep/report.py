"""``write_report``: one self-contained HTML page about a workdir: dataset, stages, failures, quality, samples.

The page has no external resources and no JavaScript: images are embedded as base64 PNG data URLs, the CSS is
inline, the bar charts are CSS widths. It is deterministic for a workdir (no timestamps) and degrades gracefully:
a stage that has not run is shown as "not run" and its sections are skipped; a missing or unreadable file leaves
its section out or says so, it never stops the report.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidprep.atomic import write_text
from reidprep.images import load_modality
from reidprep.ledger import read_ledger
from reidprep.manifest import read_manifest
from reidprep.masks.fusion import resize_mask
from reidprep.masks.preview import overlay
from reidprep.masks.quality import triplet_ious
from reidprep.stage import current_run_dir, read_failures, read_stage_table, work_units
from reidprep.steps import workdir_status
from reidprep.workdir import Workdir
from reidschemas import MODALITIES, LedgerEntry, SampleRecord
from reidschemas.htmlpage import data_url, page
from reidschemas.htmlpage import esc as _e
from reidschemas.maskcodec import decode_mask

FAILURE_ROWS = 5
"""Ledger rows shown per stage (the counts by type cover all of them)."""
THUMB_BOX = (120, 200)
"""Largest displayed size of a sample image, (width, height) in CSS pixels; the PNG is twice that at most."""
MODALITY_NAMES = {"rgb": "RGB", "nir": "NIR", "tir": "TIR"}
WORST_ROWS = 5
"""Triplets named in the worst-IoU table."""
ORDERS = ("spread", "worst")
"""Sample orders: evenly spaced over the masks table, or the lowest mask IoU vs ground truth first."""
STATE_CLASS = {"complete": "ok", "incomplete": "warn", "stale": "warn", "not run": "off"}

CSS = """
.progress { display: flex; width: 160px; height: 10px; border-radius: 5px; overflow: hidden; background: #e5e7eb;
  margin-top: 4px; }
.progress .d { background: #22c55e; } .progress .f { background: #ef4444; }
.bars { display: grid; grid-template-columns: max-content 1fr max-content; gap: 5px 10px; align-items: center;
  font-size: 13px; }
.bar { height: 12px; background: #eef0f3; border-radius: 6px; overflow: hidden; min-width: 120px; }
.bar > span { display: block; height: 100%; border-radius: 6px; }
.c-iou { background: #0ea5e9; } .c-before { background: #f59e0b; } .c-after { background: #6366f1; }
.c-acc { background: #22c55e; } .c-cov { background: #a3a3a3; }
.legend { font-size: 12px; color: #6b7280; margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
.failures td { font-size: 12.5px; }
.sample { border-top: 1px solid #e5e7eb; padding-top: 14px; margin-top: 14px; }
.sample:first-of-type { border-top: 0; margin-top: 0; padding-top: 0; }
.sample-head { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: baseline; margin-bottom: 8px; }
.sample-head b { font-size: 14px; }
.views { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 14px; }
.view { display: flex; gap: 10px; background: #fafafa; border: 1px solid #eceef1; border-radius: 8px; padding: 8px; }
.view figure { margin: 0; flex: none; text-align: center; }
.view figcaption { font-size: 12px; font-weight: 700; color: #374151; margin-top: 2px; }
.view img { display: block; border-radius: 4px; background: #000; }
.view .text { min-width: 0; flex: 1; }
.caption { font-size: 12.5px; margin: 0 0 6px; }
.attrs { display: grid; grid-template-columns: max-content minmax(0, 1fr) 44px; gap: 1px 6px; font-size: 11.5px;
  align-items: center; }
.attrs .n { color: #6b7280; }
.attrs .v { font-weight: 600; overflow-wrap: anywhere; }
.attrs .src { font-weight: 400; color: #7c3aed; font-size: 10.5px; }
.conf { height: 6px; background: #e5e7eb; border-radius: 3px; overflow: hidden; }
.conf > span { display: block; height: 100%; background: #3b82f6; }
.unknown { font-size: 11px; color: #9ca3af; margin-top: 4px; }
.fused { margin-top: 10px; background: #eef2ff; border-left: 3px solid #6366f1; border-radius: 4px; padding: 6px 10px;
  font-size: 13px; }
.fused b { color: #4338ca; }
.notes { font-size: 11.5px; color: #92400e; margin-top: 4px; }
.missing { width: 60px; height: 120px; display: flex; align-items: center; justify-content: center; font-size: 11px;
  color: #9ca3af; border: 1px dashed #d1d5db; border-radius: 4px; }
"""


# ------------------------------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: Any) -> str:
    return "" if value is None else _e(value)


def _bar(value: float | None, css: str) -> str:
    width = 0.0 if value is None else max(0.0, min(1.0, float(value))) * 100
    return f'<div class="bar"><span class="{css}" style="width:{width:.1f}%"></span></div>'


def _png_data_url(image: np.ndarray) -> tuple[str, int, int]:
    """A PNG data URL of the image (at most twice ``THUMB_BOX``) and its display width and height."""
    pil = Image.fromarray(image)
    box_w, box_h = THUMB_BOX
    scale = min(box_w / pil.width, box_h / pil.height)
    width, height = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
    if pil.width > 2 * width or pil.height > 2 * height:
        pil = pil.resize((2 * width, 2 * height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=False)
    return data_url(buffer.getvalue()), width, height


def _in_order(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """Items of a per-modality dict in pipeline order (RGB, NIR, TIR, fused), anything else after, by name."""
    order = {name: i for i, name in enumerate((*MODALITIES, "fused"))}
    return sorted(data.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def _spread(count: int, samples: int) -> list[int]:
    """``samples`` evenly spaced indices into ``count`` items (fewer when there are fewer items)."""
    if count == 0 or samples < 1:
        return []
    return sorted(set(np.linspace(0, count - 1, min(samples, count)).round().astype(int).tolist()))


def _stage_table_rows(workdir: Path, stage: str) -> list[dict[str, Any]] | None:
    """The current run's rows of a per-triplet stage, or None when it has not run or has no parts."""
    try:
        return read_stage_table(workdir, stage).to_pylist()
    except (FileNotFoundError, OSError, ValueError):
        return None


def _identity(workdir: Path, stage: str) -> str:
    """A short description of the stage's current run: provider, model, fingerprint."""
    run_dir = current_run_dir(workdir, stage)
    meta = _read_json(run_dir / "stage.json") if run_dir is not None else None
    if meta is None:
        return ""
    identity = meta.get("identity") or {}
    parts: list[str] = []
    providers = identity.get("providers")
    if isinstance(providers, list):
        parts.append("+".join(str(p.get("provider", "?")) for p in providers if isinstance(p, dict)))
    for key in ("provider", "model", "source", "fusion"):
        if identity.get(key) is not None:
            parts.append(f"{key} {identity[key]}")
    parts.append(f"run {meta.get('fingerprint', run_dir.name if run_dir else '?')}")
    return ", ".join(parts)


def _failures(workdir: Path, stage: str) -> list[LedgerEntry]:
    """The stage's ledger: the current run's failures (per-triplet stages) or ``<stage>/errors.parquet``."""
    wd = Workdir(workdir)
    try:
        run_dir = current_run_dir(workdir, stage)
        if run_dir is not None and run_dir.is_dir():
            return read_failures(run_dir)
        return read_ledger(wd.ledger(stage))
    except (OSError, ValueError):
        return []


# ------------------------------------------------------------------------------------------------- sections
def _header(workdir: Path, index_summary: dict[str, Any] | None) -> str:
    out = ['<section class="head">', "<h1>ReID data preparation report</h1>"]
    out.append(f'<div class="sub">workdir {_e(workdir.resolve())}</div>')
    if index_summary is None:
        out.append('<p class="none">No dataset index yet (index/summary.json is missing).</p></section>')
        return "".join(out)
    params = index_summary.get("params") or {}
    out.append('<div class="row" style="margin-top:12px"><div>')
    out.append("<table>")
    for label, value in (
        ("layout", params.get("layout")),
        ("dataset", index_summary.get("dataset_dir")),
        ("records", index_summary.get("records")),
        ("index errors", index_summary.get("errors")),
    ):
        if value is not None:
            out.append(f'<tr><th>{_e(label)}</th><td class="mono">{_e(value)}</td></tr>')
    out.append("</table></div>")
    splits = index_summary.get("splits") or {}
    if splits:
        out.append('<div><table><tr><th>split</th><th class="num">triplets</th><th class="num">ids</th>')
        out.append('<th class="num">scenes</th><th>cameras</th></tr>')
        for split, info in splits.items():
            info = info if isinstance(info, dict) else {}
            cameras = ", ".join(str(c) for c in info.get("cameras") or [])
            out.append(
                f'<tr><td>{_e(split)}</td><td class="num">{_num(info.get("triplets"))}</td>'
                f'<td class="num">{_num(info.get("ids"))}</td><td class="num">{_num(info.get("scenes"))}</td>'
                f"<td>{_e(cameras)}</td></tr>"
            )
        out.append("</table></div>")
    out.append("</div></section>")
    return "".join(out)


def _stale_note(status: dict[str, Any]) -> str:
    """Why a step is stale (the upstream run it was built on and the current one), under its state."""
    return f'<div class="sub">{_e(status["stale"])}</div>' if status.get("stale") else ""


def _stages_section(workdir: Path, stages: dict[str, dict[str, Any]]) -> str:
    out = ['<section><h2>Stages</h2><table class="stages">']
    out.append(
        '<tr><th>stage</th><th>state</th><th class="num">done</th><th class="num">failed</th>'
        '<th class="num">warnings</th><th class="num">pending</th><th class="num">stale runs</th>'
        "<th>progress</th><th>run</th></tr>"
    )
    for name, status in stages.items():
        state = str(status.get("state", "?"))
        done, failed = int(status.get("done") or 0), int(status.get("failed") or 0)
        pending = status.get("pending")
        total = done + failed + int(pending or 0)
        progress = ""
        if total:
            progress = (
                f'<div class="progress" title="{done} done, {failed} failed of {total}">'
                f'<span class="d" style="width:{100 * done / total:.1f}%"></span>'
                f'<span class="f" style="width:{100 * failed / total:.1f}%"></span></div>'
            )
        out.append(
            f'<tr data-stage="{_e(name)}"><td><b>{_e(name)}</b></td>'
            f'<td><span class="badge {STATE_CLASS.get(state, "warn")}">{_e(state)}</span>'
            f"{_stale_note(status)}</td>"
            f'<td class="num">{done}</td><td class="num">{failed}</td>'
            f'<td class="num">{_num(status.get("warnings", 0))}</td>'
            f'<td class="num">{"" if pending is None else _e(pending)}</td>'
            f'<td class="num">{_e(status.get("stale_runs", 0))}</td>'
            f'<td>{progress}</td><td class="sub">{_e(_identity(workdir, name) if name != "index" else "")}</td></tr>'
        )
    out.append("</table>")
    excluded = stages.get("shards", {}).get("excluded_per_split")
    if isinstance(excluded, dict):
        counts = ", ".join(f'<span data-split="{_e(k)}">{_e(k)} {_num(v)}</span>' for k, v in excluded.items())
        out.append(f'<p id="shard-exclusions">Samples excluded from the shards, per split: {counts}</p>')
    for name, status in stages.items():
        if status.get("state") == "not run":
            continue
        entries = _failures(workdir, name)
        if not entries:
            continue
        out.append(_failure_block(name, entries))
    if not any(s.get("failed") or s.get("warnings") for s in stages.values()):
        out.append('<p class="none" style="margin:10px 0 0">No failures or warnings in any ledger.</p>')
    out.append("</section>")
    return "".join(out)


def _failure_block(stage: str, entries: Sequence[LedgerEntry]) -> str:
    counts = Counter((e.severity, e.error_type) for e in entries)
    out = [f'<h3>{_e(stage)}: {len(entries)} ledger entries</h3><div class="row failures"><div style="flex:0 0 auto">']
    out.append('<table><tr><th>severity</th><th>error type</th><th class="num">count</th></tr>')
    for (severity, error_type), count in sorted(counts.items()):
        css = "err" if severity == "error" else "warn"
        out.append(
            f'<tr><td><span class="badge {css}">{_e(severity)}</span></td><td>{_e(error_type)}</td>'
            f'<td class="num">{count}</td></tr>'
        )
    out.append("</table></div><div><table><tr><th>sample / path</th><th>type</th><th>reason</th></tr>")
    for entry in entries[:FAILURE_ROWS]:
        where = entry.sample_id or entry.path or ""
        out.append(
            f'<tr><td class="mono">{_e(where)}</td><td>{_e(entry.error_type)}</td><td>{_e(entry.reason)}</td></tr>'
        )
    if len(entries) > FAILURE_ROWS:
        out.append(f'<tr><td colspan="3" class="none">and {len(entries) - FAILURE_ROWS} more</td></tr>')
    out.append("</table></div></div>")
    return "".join(out)


def _masks_quality(summary: dict[str, Any], ious: dict[str, float] | None) -> str:
    truth = summary.get("groundtruth")
    if not isinstance(truth, dict) or truth.get("mean_iou") is None:
        return ""
    rows = [("mean IoU", truth.get("mean_iou")), ("min IoU", truth.get("min_iou"))]
    rows += [(f"{MODALITY_NAMES.get(m, m)} IoU", v) for m, v in _in_order(truth.get("per_modality_mean_iou") or {})]
    out = ['<div class="quality" id="mask-iou"><h3>Masks vs ground truth</h3><div class="bars">']
    for label, value in rows:
        if value is None:
            continue
        out.append(
            f'<span>{_e(label)}</span>{_bar(value, "c-iou")}<span class="num" data-value="{float(value):.4f}">'
            f"{float(value):.3f}</span>"
        )
    out.append(f'</div><div class="legend">{_e(truth.get("compared", "?"))} triplets compared</div>')
    if ious:
        out.append(f'<h3>The {min(WORST_ROWS, len(ious))} worst triplets</h3><table id="worst-triplets">')
        out.append('<tr><th>triplet</th><th class="num">IoU</th></tr>')
        for key, iou in _worst(ious)[:WORST_ROWS]:
            out.append(f'<tr data-key="{_e(key)}"><td class="mono">{_e(key)}</td><td class="num">{iou:.3f}</td></tr>')
        out.append('</table><div class="legend">report --order worst shows them first among the samples</div>')
    out.append("</div>")
    return "".join(out)


def _worst(ious: dict[str, float]) -> list[tuple[str, float]]:
    """(triplet key, IoU) from the lowest IoU up; ties by key."""
    return sorted(ious.items(), key=lambda item: (item[1], item[0]))


def _captions_quality(summary: dict[str, Any]) -> str:
    out: list[str] = []
    rates = summary.get("unknown_rates")
    if isinstance(rates, dict) and rates:
        out.append('<div class="quality" id="unknown-rates"><h3>Unknown attributes per modality</h3><div class="bars">')
        for m, rate in _in_order(rates):
            rate = rate if isinstance(rate, dict) else {}
            for when in ("before", "after"):
                value = rate.get(when)
                label = f"{MODALITY_NAMES.get(m, m)} {when} fusion"
                data = "" if value is None else f' data-value="{float(value):.4f}"'
                out.append(
                    f'<span>{_e(label)}</span>{_bar(value, f"c-{when}")}<span class="num"{data}>{_pct(value)}</span>'
                )
        out.append(
            '</div><div class="legend">lower is better<i class="c-before"></i>before<i class="c-after"></i>after '
            "fusion</div></div>"
        )
    long = summary.get("long_captions")
    if isinstance(long, dict) and isinstance(long.get("per_target"), dict):
        counts = ", ".join(
            f'<span data-target="{_e(t)}">{_e(MODALITY_NAMES.get(t, t))} {_num(n)}</span>'
            for t, n in _in_order(long["per_target"])
        )
        out.append(
            f'<div class="quality" id="long-captions"><h3>Captions over {_e(long.get("limit"))} CLIP tokens</h3>'
            f'<p>{counts}</p><div class="legend">kept whole; truncated at tokenisation, end-of-text kept</div></div>'
        )
    truth = summary.get("groundtruth")
    if isinstance(truth, dict) and truth:
        out.append('<div class="quality" id="attribute-accuracy"><h3>Attributes vs ground truth</h3><div class="bars">')
        for target, scores in _in_order(truth):
            scores = scores if isinstance(scores, dict) else {}
            name = MODALITY_NAMES.get(target, target)
            for key, label, css in (("mean_accuracy", "accuracy", "c-acc"), ("mean_coverage", "coverage", "c-cov")):
                value = scores.get(key)
                data = "" if value is None else f' data-value="{float(value):.4f}"'
                out.append(
                    f'<span>{_e(name)} {label}</span>{_bar(value, css)}<span class="num"{data}>{_pct(value)}</span>'
                )
        out.append(
            '</div><div class="legend"><i class="c-acc"></i>accuracy of the attributes stated'
            '<i class="c-cov"></i>share of attributes stated</div></div>'
        )
    return "".join(out)


def _quality_section(workdir: Path, stages: dict[str, dict[str, Any]], ious: dict[str, float] | None) -> str:
    wd = Workdir(workdir)
    blocks = []
    if stages.get("masks", {}).get("state", "not run") != "not run":
        summary = _read_json(wd.summary("masks"))
        if summary:
            blocks.append(_masks_quality(summary, ious))
    if stages.get("captions", {}).get("state", "not run") != "not run":
        summary = _read_json(wd.summary("captions"))
        if summary:
            blocks.append(_captions_quality(summary))
    blocks = [b for b in blocks if b]
    if not blocks:
        return ""
    return (
        '<section><h2>Quality</h2><div class="row">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div></section>"
    )


# ------------------------------------------------------------------------------------------------- samples
def _mask_for(row: dict[str, Any] | None, modality: str, shape: tuple[int, int]) -> np.ndarray | None:
    if row is None:
        return None
    own = row.get(f"{modality}_mask")
    data = own if own is not None else row.get("mask")
    if data is None:
        return None
    return resize_mask(decode_mask(data, row["height"], row["width"]), *shape)


def _image_cell(record: SampleRecord, modality: str, mask_row: dict[str, Any] | None) -> str:
    name = MODALITY_NAMES.get(modality, modality)
    try:
        image = load_modality(record, modality)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        return (
            f'<figure><div class="missing" title="{_e(exc)}">no image</div><figcaption>{_e(name)}</figcaption></figure>'
        )
    try:
        mask = _mask_for(mask_row, modality, image.shape[:2])
    except ValueError:
        mask = None
    if mask is not None:
        image = overlay(image, mask)
    url, width, height = _png_data_url(image)
    alt = f"{name} {record.triplet_key}" + (" with mask" if mask is not None else "")
    return (
        f'<figure><img src="{url}" width="{width}" height="{height}" alt="{_e(alt)}">'
        f"<figcaption>{_e(name)}</figcaption></figure>"
    )


def _attributes_block(merged: dict[str, Any], modality: str) -> str:
    known, unknown = [], []
    for name, entry in merged.items():
        entry = entry if isinstance(entry, dict) else {}
        if entry.get("value") is None:
            unknown.append(name)
            continue
        confidence = float(entry.get("confidence") or 0.0)
        source = entry.get("source")
        from_other = (
            f' <span class="src">from {_e(MODALITY_NAMES.get(source, source))}</span>'
            if source and source != modality
            else ""
        )
        known.append(
            f'<span class="n">{_e(name.replace("_", " "))}</span>'
            f'<span class="v" title="{_e(entry["value"])}">{_e(entry["value"])}{from_other}</span>'
            f'<div class="conf" title="confidence {confidence:.2f}"><span style="width:{100 * confidence:.0f}%"></span>'
            "</div>"
        )
    out = [f'<div class="attrs">{"".join(known)}</div>'] if known else ['<div class="none">no attribute known</div>']
    if unknown:
        out.append(f'<div class="unknown">unknown: {_e(", ".join(n.replace("_", " ") for n in unknown))}</div>')
    return "".join(out)


def _sample_block(
    record: SampleRecord, mask_row: dict[str, Any] | None, caption_row: dict[str, Any] | None, iou: float | None
) -> str:
    head = [f"<b>{_e(record.triplet_key)}</b>", f'<span class="sub">split {_e(record.split)}</span>']
    head.append(f'<span class="sub">id {_e(record.pid)}, camera {_e(record.camid)}</span>')
    if mask_row is not None:
        head.append(
            f'<span class="sub">mask {_e(mask_row.get("provider", "?"))} from {_e(mask_row.get("source", "?"))}, '
            f"score {float(mask_row.get('score') or 0.0):.2f}</span>"
        )
    if iou is not None:
        head.append(f'<span class="sub">IoU vs ground truth <b data-iou="{iou:.4f}">{iou:.3f}</b></span>')
    attributes: dict[str, Any] = {}
    if caption_row is not None and caption_row.get("attributes"):
        try:
            attributes = json.loads(caption_row["attributes"]) or {}
        except ValueError:
            attributes = {}
    out = [f'<div class="sample" data-key="{_e(record.triplet_key)}"><div class="sample-head">{"".join(head)}</div>']
    out.append('<div class="views">')
    for m in MODALITIES:
        text = []
        if caption_row is not None:
            text.append(f'<p class="caption">{_e(caption_row.get(f"caption_{m}") or "")}</p>')
            merged = attributes.get(m)
            if isinstance(merged, dict):
                text.append(_attributes_block(merged, m))
        out.append(f'<div class="view">{_image_cell(record, m, mask_row)}<div class="text">{"".join(text)}</div></div>')
    out.append("</div>")
    if caption_row is not None:
        out.append(f'<div class="fused"><b>Fused:</b> {_e(caption_row.get("caption_fused") or "")}</div>')
        try:
            notes = json.loads(caption_row.get("notes") or "[]")
        except ValueError:
            notes = [caption_row.get("notes")]
        if notes:
            out.append(f'<div class="notes">notes: {_e("; ".join(str(n) for n in notes))}</div>')
    out.append("</div>")
    return "".join(out)


def _samples_section(
    workdir: Path, stages: dict[str, dict[str, Any]], samples: int, ious: dict[str, float] | None, order: str
) -> str:
    wd = Workdir(workdir)
    if samples < 1 or stages.get("index", {}).get("state") != "complete":
        return ""
    try:
        records = read_manifest(wd.manifest)
    except (OSError, ValueError):
        return ""
    by_id = {r.sample_id: r for r in records}
    mask_rows = _stage_table_rows(workdir, "masks") if stages.get("masks", {}).get("state") != "not run" else None
    caption_rows = (
        _stage_table_rows(workdir, "captions") if stages.get("captions", {}).get("state") != "not run" else None
    )
    captions_by_key = {r["triplet_key"]: r for r in caption_rows or []}
    masks_by_key = {r["triplet_key"]: r for r in mask_rows or []}
    picks: list[tuple[SampleRecord, dict[str, Any] | None]] = []
    if mask_rows and order == "worst" and ious:
        for key, _ in _worst(ious)[:samples]:
            row = masks_by_key[key]
            if row["sample_id"] in by_id:
                picks.append((by_id[row["sample_id"]], row))
    elif mask_rows:
        for i in _spread(len(mask_rows), samples):
            row = mask_rows[i]
            if row["sample_id"] in by_id:
                picks.append((by_id[row["sample_id"]], row))
    else:
        units = work_units(records)
        picks = [(units[i].record, masks_by_key.get(units[i].key)) for i in _spread(len(units), samples)]
    if not picks:
        return ""
    source = "masks table" if mask_rows else "manifest"
    how = (
        "with the lowest mask IoU vs ground truth, worst first"
        if order == "worst" and ious
        else f"evenly spaced over the {source}"
    )
    out = [
        f'<section id="samples"><h2>Samples</h2><div class="sub" style="margin:-6px 0 12px">{len(picks)} triplets {how}'
    ]
    if mask_rows:
        out.append("; green tint and red outline: the mask")
    if caption_rows:
        out.append('; bars: attribute confidence; <span style="color:#7c3aed">from X</span>: filled from view X')
    out.append("</div>")
    out.extend(
        _sample_block(record, row, captions_by_key.get(record.triplet_key), (ious or {}).get(record.triplet_key))
        for record, row in picks
    )
    out.append("</section>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------- page
def _mask_ious(workdir: Path, stages: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """Per-triplet mask IoU vs ground truth (None: masks not run, or no ground truth, or unreadable)."""
    if stages.get("masks", {}).get("state", "not run") == "not run":
        return None
    try:
        return triplet_ious(workdir)
    except (OSError, ValueError, KeyError):
        return None


def render_report(workdir: Path, samples: int = 8, order: str = "spread") -> str:
    """The report page of ``workdir`` as an HTML string (see ``write_report``)."""
    if order not in ORDERS:
        raise ValueError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
    status = workdir_status(workdir)
    stages: dict[str, dict[str, Any]] = status["stages"]
    ious = _mask_ious(workdir, stages)
    if order == "worst" and not ious:
        raise ValueError(
            f"--order worst needs the masks step and ground-truth masks (DATASET/groundtruth/masks/); {workdir} has "
            "no mask IoU to order by: use --order spread"
        )
    index_summary = _read_json(Workdir(workdir).summary("index"))
    body: Iterable[str] = (
        _header(workdir, index_summary),
        _stages_section(workdir, stages),
        _quality_section(workdir, stages, ious),
        _samples_section(workdir, stages, samples, ious, order),
    )
    return page(f"ReID prep report: {workdir.resolve().name}", "".join(b for b in body if b), CSS)


def write_report(workdir: Path, out: Path | None = None, samples: int = 8, order: str = "spread") -> Path:
    """Write ``<workdir>/report.html`` (or ``out``): one self-contained HTML page about the workdir.

    Shows the dataset (index summary), every stage's state and counts with its failures (by type and the first
    rows), the quality figures where the summaries have them (mask IoU and the worst triplets, unknown-attribute
    rates, attribute accuracy) and ``samples`` triplets with their masks (and IoU vs ground truth), per-modality
    captions and merged attributes: evenly spaced (``order="spread"``) or the lowest IoU first (``"worst"``, needs
    ground-truth masks). A stage that has not run is shown as such and its sections are skipped.
    """
    workdir = Path(workdir)
    target = out or workdir / "report.html"
    html = render_report(workdir, samples, order)
    write_text(html, target)
    return target

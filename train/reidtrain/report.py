"""``reidtrain report RUN``: one self-contained HTML page about a training run.

The page shows the run's state, the loss, mAP and Rank-1 curves per epoch (matplotlib, Agg, embedded as PNG data
URLs), the last and best epochs (and validation figures with ``--val-ids``), every ``eval*.json`` (the
missing-modality table of ``eval --missing all`` among them), the rank lists with their labels, the resolved
configuration and the provenance. Like ``reidprep report`` it has no scripts or external resources, escapes every
text, is deterministic for a run folder and leaves out (or says so) what is missing instead of failing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from reidschemas.htmlpage import data_url, esc, page
from reidschemas.safeio import atomic_write_text
from reidtrain.runs import RunStatus, best_record, read_metrics, run_status

__all__ = ["render_run_report", "write_run_report"]

FIGURES = ("mAP", "R1", "R5", "R10", "mINP")
STATE_CLASS = {"finished": "ok", "running": "warn", "stopped": "off", "incomplete": "warn", "unreadable": "err"}
CSS = """
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 12px; color: #6b7280; margin-top: 4px; }
pre { background: #f9fafb; border: 1px solid #eceef1; border-radius: 6px; padding: 10px; font-size: 12px;
  overflow-x: auto; }
.ok-mark { color: #166534; font-weight: 700; } .wrong-mark { color: #991b1b; font-weight: 700; }
details summary { cursor: pointer; color: #374151; font-weight: 600; margin: 8px 0; }
"""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, int | float) else ""


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})  # no version stamp: deterministic
    return data_url(buffer.getvalue())


# ------------------------------------------------------------------------------------------------- sections
def _header(run: Path, status: RunStatus, config: dict[str, Any]) -> str:
    epochs = f"{status.done} of {status.target if status.target is not None else '?'}"
    if status.total is not None and status.total != status.target:
        epochs += f" (schedule {status.total})"
    rows = [
        ("model", status.model),
        ("backbone", status.backbone),
        ("recipe", status.recipe),
        ("epochs done", epochs),
        ("shards", config.get("shards")),
        ("seed", config.get("seed")),
        ("device", config.get("device")),
        ("validation ids", config.get("val_ids")),
    ]
    state = f'<span class="badge {STATE_CLASS.get(status.state, "warn")}" id="state">{esc(status.state)}</span>'
    if status.holder:
        state += f' <span class="sub">pid {esc(status.holder.get("pid"))} on {esc(status.holder.get("host"))}</span>'
    out = ['<section class="head"><h1>ReID training report</h1>', f'<div class="sub">run {esc(run.resolve())}</div>']
    out.append(f"<p>state {state}{' <span class=sub>' + esc(status.note) + '</span>' if status.note else ''}</p>")
    out.append("<table>")
    out += [f'<tr><th>{esc(k)}</th><td class="mono">{esc(v)}</td></tr>' for k, v in rows if v is not None]
    out.append("</table></section>")
    return "".join(out)


def _curves(metrics: list[dict[str, Any]]) -> str:
    """Loss terms, then mAP and Rank-1 (test; validation dashed) per epoch, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the figure is written to memory
    from matplotlib.figure import Figure

    epochs = [m["epoch"] for m in metrics]
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    loss_ax, rank_ax = figure.subplots(1, 2)
    loss_keys = ["loss", *sorted({k for m in metrics for k in m if k.startswith("loss_")})]
    for key in loss_keys:
        values = [m.get(key) for m in metrics]
        if any(isinstance(v, int | float) for v in values):
            loss_ax.plot(epochs, values, marker="o", markersize=3, label=key, linewidth=2 if key == "loss" else 1)
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
    loss_ax.legend(fontsize=8)
    for key, colour in (("mAP", "C0"), ("R1", "C1")):
        rank_ax.plot(
            epochs, [100 * m[key] for m in metrics], marker="o", markersize=3, color=colour, label=f"test {key}"
        )
        if any(f"val_{key}" in m for m in metrics):
            values = [100 * m[f"val_{key}"] if f"val_{key}" in m else None for m in metrics]
            rank_ax.plot(epochs, values, linestyle="--", color=colour, label=f"val {key}")
    best = best_record(metrics)
    if best is not None:
        rank_ax.axvline(best["epoch"], color="0.6", linewidth=1, linestyle=":", label=f"best (epoch {best['epoch']})")
    rank_ax.set(title="retrieval", xlabel="epoch", ylabel="%")
    rank_ax.legend(fontsize=8)
    for ax in (loss_ax, rank_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return (
        f'<figure id="curves"><img src="{_figure_png(figure)}" alt="loss, mAP and Rank-1 per epoch">'
        "<figcaption>left: loss terms per epoch; right: mAP and Rank-1 (%) on test, on validation dashed; "
        "the dotted line marks the best epoch</figcaption></figure>"
    )


def _epoch_table(metrics: list[dict[str, Any]]) -> str:
    val = any("val_mAP" in m for m in metrics)
    head = ["epoch", "loss", *FIGURES, *(("val mAP", "val R1") if val else ())]
    out = ['<details><summary>every epoch</summary><table id="epochs"><tr>']
    out += [f'<th class="num">{esc(h)}</th>' for h in head]
    out.append("</tr>")
    for m in metrics:
        cells = [str(m["epoch"]), f"{m['loss']:.4f}" if isinstance(m.get("loss"), int | float) else ""]
        cells += [_pct(m.get(k)) for k in FIGURES]
        cells += [_pct(m.get("val_mAP")), _pct(m.get("val_R1"))] if val else []
        out.append(f'<tr data-epoch="{m["epoch"]}">' + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    out.append("</table></details>")
    return "".join(out)


def _results_section(metrics: list[dict[str, Any]], skipped: int) -> str:
    out = ['<section id="training"><h2>Training</h2>']
    if not metrics:
        out.append('<p class="none">No finished epoch yet (metrics.jsonl is empty or missing).</p></section>')
        return "".join(out)
    best = best_record(metrics)
    val = any("val_mAP" in m for m in metrics)
    head = ["", "epoch", *FIGURES, *(("val mAP", "val R1") if val else ())]
    out.append('<table id="results"><tr>' + "".join(f'<th class="num">{esc(h)}</th>' for h in head) + "</tr>")
    chosen = "best on val" if val else "best on test"
    for label, m in (("last", metrics[-1]), (chosen, best)):
        if m is None:
            continue
        cells = [str(m["epoch"]), *(_pct(m.get(k)) for k in FIGURES)]
        cells += [_pct(m.get("val_mAP")), _pct(m.get("val_R1"))] if val else []
        out.append(
            f'<tr data-row="{esc(label)}"><td><b>{esc(label)}</b></td>'
            + "".join(f'<td class="num">{c}</td>' for c in cells)
            + "</tr>"
        )
    out.append("</table>")
    if not val:
        out.append('<p class="sub">no validation split: "best" is chosen on test, not a fair estimate</p>')
    if skipped:
        out.append(f'<p class="sub">{skipped} unreadable line(s) of metrics.jsonl left out</p>')
    out.append(_curves(metrics))
    out.append(_epoch_table(metrics))
    out.append("</section>")
    return "".join(out)


def _missing_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "none" if not value else "no " + ", ".join(str(v).upper() for v in value)


def _eval_table(rows: list[dict[str, Any]], table_id: str, with_missing: bool) -> str:
    head = ["checkpoint", *(("missing",) if with_missing else ()), "epoch", *FIGURES]
    out = [f'<table id="{esc(table_id)}"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        if not isinstance(r, dict):
            continue
        cells = [f"<td>{esc(r.get('checkpoint', '?'))}</td>"]
        if with_missing:
            cells.append(f"<td>{esc(_missing_name(r.get('missing')))}</td>")
        cells.append(f'<td class="num">{esc(r.get("epoch", ""))}</td>')
        cells += [f'<td class="num">{_pct(r.get(k))}</td>' for k in FIGURES]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _evaluations_section(run: Path) -> str:
    files = sorted(run.glob("eval*.json"))
    if not files:
        return ""
    out = ['<section id="evaluations"><h2>Evaluations</h2>']
    for path in files:
        data = _read_json(path)
        if data is None or not isinstance(data.get("results"), list):
            out.append(f'<p class="none">{esc(path.name)} is unreadable and left out.</p>')
            continue
        every = data.get("missing") == "all"
        title = "missing modalities (every setting and their average)" if every else _missing_name(data["missing"])
        out.append(f"<h3>{esc(path.name)}: {esc(title if every else 'modalities: ' + title)}</h3>")
        out.append(_eval_table(data["results"], path.stem, with_missing=every))
    out.append("</section>")
    return "".join(out)


def _rank_list_block(png: Path, shown: dict[str, Any] | None) -> str:
    out = [f'<div class="ranklist" data-file="{esc(png.name)}"><h3>{esc(png.name)}</h3>']
    try:
        out.append(f'<figure><img src="{data_url(png.read_bytes())}" alt="rank list {esc(png.name)}"></figure>')
    except OSError:
        out.append('<p class="none">the image is unreadable</p>')
    if shown and isinstance(shown.get("queries"), list):
        out.append(f'<p class="sub">checkpoint {esc(shown.get("checkpoint") or "?")}, top-{esc(shown.get("k"))}</p>')
        out.append('<table class="ranks"><tr><th>query</th><th>rank</th><th>id</th><th>camera</th>')
        out.append('<th class="num">distance</th><th>match</th><th>gallery item</th></tr>')
        for q in shown["queries"]:
            ranked = q.get("ranked") or []
            who = f"id {q.get('query_pid', '?')} cam {q.get('query_camid', '?')}"
            out.append(
                f'<tr><td rowspan="{max(1, len(ranked))}"><b>{esc(who)}</b><br>'
                f'<span class="mono">{esc(q.get("query"))}</span></td>'
            )
            for i, item in enumerate(ranked):
                mark = (
                    '<span class="ok-mark">same id</span>'
                    if item.get("correct")
                    else '<span class="wrong-mark">other id</span>'
                )
                out.append(
                    ("" if i == 0 else "<tr>")
                    + f'<td class="num">{esc(item.get("rank"))}</td><td>{esc(item.get("pid"))}</td>'
                    f'<td>{esc(item.get("camid"))}</td><td class="num">{float(item.get("distance", 0.0)):.3f}</td>'
                    f'<td>{mark}</td><td class="mono">{esc(item.get("sample_id"))}</td></tr>'
                )
            if not ranked:
                out.append('<td colspan="6" class="none">no labels recorded (drawn by an older version)</td></tr>')
        out.append("</table>")
    out.append("</div>")
    return "".join(out)


def _rank_lists_section(run: Path) -> str:
    pngs = sorted(run.glob("rank_list*.png"))
    if not pngs:
        return ""
    drawn: dict[str, dict[str, Any]] = {}
    for path in sorted(run.glob("eval*.json")):
        shown = (_read_json(path) or {}).get("rank_list")
        if isinstance(shown, dict) and shown.get("path"):
            drawn[Path(str(shown["path"])).name] = shown
    blocks = "".join(_rank_list_block(png, drawn.get(png.name)) for png in pngs)
    return (
        '<section id="rank-lists"><h2>Rank lists</h2><p class="sub">blue: query; green: same id; red: other id; '
        f"distance: squared distance of unit features</p>{blocks}</section>"
    )


def _config_section(config: dict[str, Any]) -> str:
    resolved = {k: v for k, v in config.items() if k != "provenance"}
    provenance = config.get("provenance") if isinstance(config.get("provenance"), dict) else None
    out = ['<section id="config"><h2>Configuration and provenance</h2>']
    if provenance:
        out.append('<table id="provenance">')
        out += [f'<tr><th>{esc(k)}</th><td class="mono">{esc(v)}</td></tr>' for k, v in provenance.items()]
        out.append("</table>")
    else:
        out.append('<p class="none">No provenance recorded in config.json.</p>')
    out.append("<h3>resolved configuration (config.json)</h3>")
    out.append(f'<pre id="resolved">{esc(json.dumps(resolved, indent=2, sort_keys=True))}</pre></section>')
    return "".join(out)


# ------------------------------------------------------------------------------------------------- page
def render_run_report(run: Path) -> str:
    """The report page of run folder ``run`` as an HTML string (see ``write_run_report``)."""
    run = Path(run)
    status = run_status(run)  # ValueError: not a run folder
    config = _read_json(run / "config.json") or {}
    metrics, skipped = read_metrics(run / "metrics.jsonl")
    body = (
        _header(run, status, config),
        _results_section(metrics, skipped),
        _evaluations_section(run),
        _rank_lists_section(run),
        _config_section(config),
    )
    return page(f"ReID training report: {run.resolve().name}", "".join(b for b in body if b), CSS)


def write_run_report(run: Path, out: Path | None = None) -> Path:
    """Write ``RUN/report.html`` (or ``out``): one self-contained HTML page about run folder ``run``."""
    target = Path(out) if out is not None else Path(run) / "report.html"
    atomic_write_text(render_run_report(run), target)
    return target

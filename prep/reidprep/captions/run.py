"""``run_captions``: the captions step for a pipeline config: read the complete masks run, run the stage (after
the Batch API phase when asked), then add the long-caption counts, unknown-attribute rates and ground-truth
accuracy to the summary."""

from __future__ import annotations

import json
from typing import Any

from reidprep.atomic import write_json
from reidprep.step import StepFailed, StepOptions, StepResult
from reidprep.workdir import Workdir
from reidschemas import PipelineConfig
from reidschemas.config import CaptionsConfig

CHUNK_SIZE = 32
"""Triplets per part for model providers: a killed run loses at most this many triplets' requests."""
IMPORT_CHUNK_SIZE = 1024
"""Triplets per part for the import provider: a lookup, so per-part writes (fsynced) would dominate at 32
(``bench/prep_scaling.py``)."""


def chunk_size(config: CaptionsConfig) -> int:
    """``captions.chunk_size``, or the default for the configured providers."""
    if config.chunk_size is not None:
        return config.chunk_size
    return IMPORT_CHUNK_SIZE if "import" in config.providers else CHUNK_SIZE


def _quality_lines(config: PipelineConfig, report: dict[str, Any]) -> list[str]:
    """Fill ``report`` with the unknown rates and ground-truth accuracy; the lines that say them."""
    from reidprep.captions.summary import groundtruth_accuracy, unknown_rates

    lines = []
    report["unknown_rates"] = rates = unknown_rates(config.workdir)
    for m, r in rates.items():
        if r["after"] is None:
            continue  # no triplet succeeded
        before = "n/a" if r["before"] is None else f"{100 * r['before']:.1f}%"
        lines.append(f"  unknown attributes {m}: {before} before fusion, {100 * r['after']:.1f}% after")
    accuracy = groundtruth_accuracy(config.workdir)
    if accuracy is not None:
        report["groundtruth"] = accuracy
        for target, a in accuracy.items():
            if a["mean_accuracy"] is not None:
                lines.append(
                    f"  attribute accuracy vs ground truth ({target}): {100 * a['mean_accuracy']:.1f}% "
                    f"of the {100 * a['mean_coverage']:.1f}% of attributes it states"
                )
    return lines


def _long_caption_line(config: PipelineConfig, report: dict[str, Any]) -> str:
    """Fill ``report["long_captions"]`` (per target, captions over CLIP's context); the line that says it."""
    from reidprep.captions.summary import long_captions
    from reidprep.captions.validate import CLIP_CONTEXT

    counts = long_captions(config.workdir, CLIP_CONTEXT)
    report["long_captions"] = {"limit": CLIP_CONTEXT, "per_target": counts}
    return (
        f"  captions over {CLIP_CONTEXT} CLIP tokens (kept, truncated at tokenisation with end-of-text kept): "
        + ", ".join(f"{t} {n}" for t, n in counts.items())
    )


def run_captions(config: PipelineConfig, options: StepOptions) -> StepResult:
    """Describe every triplet (``captions`` section), using the current masks run when it is complete."""
    from reidprep.captions.providers import Providers
    from reidprep.captions.stage import CaptionsTask
    from reidprep.pool import resolve_workers
    from reidprep.stage import StageAbort, StageFailure, complete_run, read_stage_table, run_stage, stage_workers

    c, workdir = config.captions, config.workdir
    stage_options = options.stage_options(chunk_size(c), workers=resolve_workers(c.workers))
    masks, masks_fp = None, complete_run(workdir, "masks")
    if masks_fp is not None:
        table = read_stage_table(workdir, "masks", columns=["triplet_key", "height", "width", "mask"])
        masks = {r["triplet_key"]: (r["height"], r["width"], r["mask"]) for r in table.to_pylist()}
    lines: list[str] = []
    try:
        providers = Providers(c, Workdir(workdir).stage_dir("captions") / "requests.sqlite")
        task = CaptionsTask(providers, c, masks, masks_fp)
        if c.batch_api:
            from reidprep.captions.batch_run import run_batch_phase

            phase = run_batch_phase(task, workdir, stage_options)
            lines.append(phase.message)
            if not phase.ready:
                return StepResult("captions", lines, complete=False)
        summary = run_stage(task, workdir, stage_options)
    except StageAbort as exc:  # FatalBackendError too
        raise StepFailed(f"captions stopped: {exc}") from exc
    except StageFailure as exc:
        raise StepFailed(str(exc)) from exc
    parts = f"{stage_options.chunk_size} triplets per part, {stage_workers(task, stage_options)} worker(s)"
    lines.append(f"{summary.line()} [providers {', '.join(c.providers)}, fusion {c.fusion}, {parts}]")
    if masks is None and providers.imported is None:
        lines.append("  no complete masks stage: providers estimated the foreground themselves")
    counters = [(p.name, getattr(p, "usage", None)) for p in providers.attribute]
    counters.append(("fusion", task.fusion_usage if providers.fusion is not None else None))
    for name, usage in counters:
        if usage is None:
            continue
        cost = "" if usage.estimated_usd is None else f", about {usage.estimated_usd:.4f} USD"
        lines.append(
            f"  {name}: {usage.requests} requests, {usage.cached} from cache, {usage.failed} failed, "
            f"{usage.input_tokens} input + {usage.output_tokens} output tokens{cost}"
        )
    details = summary.to_json()
    skipped = summary.done == 0 and summary.failed == 0 and summary.complete
    if summary.complete:
        report: dict[str, Any] = {}
        lines.append(_long_caption_line(config, report))
        if providers.imported is None:
            lines += _quality_lines(config, report)
        summary_path = Workdir(workdir).summary("captions")
        write_json({**json.loads(summary_path.read_text()), **report}, summary_path)
        details.update(report)
    return StepResult("captions", lines, summary.complete, skipped, details)

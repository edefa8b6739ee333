"""``run_masks``: the masks step for a pipeline config: the stage run, then its ground-truth IoU and preview."""

from __future__ import annotations

import json

from reidprep.atomic import write_json
from reidprep.step import StepFailed, StepOptions, StepResult
from reidprep.workdir import Workdir
from reidschemas import PipelineConfig


def run_masks(config: PipelineConfig, options: StepOptions, preview: int = 0) -> StepResult:
    """Segment every triplet (``masks`` section); once the stage is complete, add the IoU against ground-truth
    masks (synthetic data) to ``masks/summary.json``; ``preview`` > 0 writes ``masks/preview.png``."""
    from reidprep.masks.preview import write_preview
    from reidprep.masks.providers import make_provider, provider_name, resolve_source
    from reidprep.masks.quality import groundtruth_iou
    from reidprep.masks.stage import MasksTask
    from reidprep.pool import resolve_workers
    from reidprep.stage import StageFailure, run_stage, stage_workers

    m = config.masks
    stage_options = options.stage_options(m.chunk_size, workers=resolve_workers(m.workers))
    task = MasksTask(make_provider(m), resolve_source(m), m.fusion, m.keep_modality_masks)
    try:
        summary = run_stage(task, config.workdir, stage_options)
    except StageFailure as exc:
        raise StepFailed(str(exc)) from exc
    workers = stage_workers(task, stage_options)
    lines = [f"{summary.line()} [provider {provider_name(m)}, source {task.source}, {workers} worker(s)]"]
    if summary.stale_runs:
        lines.append(f"  {summary.stale_runs} earlier run(s) with other parameters kept as stale under masks/runs/")
    details = summary.to_json()
    if summary.complete:
        quality = groundtruth_iou(config.workdir)
        if quality is not None:
            summary_path = Workdir(config.workdir).summary("masks")
            write_json({**json.loads(summary_path.read_text()), "groundtruth": quality}, summary_path)
            details["groundtruth"] = quality
            lines.append(
                f"  mask IoU vs ground truth: mean {quality['mean_iou']:.3f}, min {quality['min_iou']:.3f} "
                f"over {quality['compared']} triplets"
            )
    if preview:
        lines.append(f"  preview: {write_preview(config.workdir, preview)}")
    skipped = summary.done == 0 and summary.failed == 0 and summary.complete
    return StepResult("masks", lines, summary.complete, skipped, details)

"""``reidprep``: the command-line entry point. Thin: options -> config -> the stage functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from reidprep import __version__
from reidschemas import DATASETS, SPLITS, ConfigError, PipelineConfig, load_config

if TYPE_CHECKING:
    from reidprep.stage import StageOptions

app = typer.Typer(
    name="reidprep",
    help="Prepare multi-modal (RGB / NIR / TIR) ReID datasets: index, masks, captions, Parquet shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="pipeline.yaml; command-line options override it.")
]
WorkdirOption = Annotated[Path | None, typer.Option("--workdir", "-w", help="Folder for every stage's outputs.")]
ProgressOption = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config(path: Path | None, overrides: dict[str, Any]) -> PipelineConfig:
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _stage_options(
    chunk_size: int, num_shards: int, shard_index: int, force: bool, retry_failed: bool, fail_fast: bool, progress
) -> StageOptions:
    """The per-triplet stage options every stage command shares (raises ValueError for a bad shard)."""
    from reidprep.stage import StageOptions

    return StageOptions(
        chunk_size=chunk_size,
        num_shards=num_shards,
        shard_index=shard_index,
        force=force,
        retry_failed=retry_failed,
        fail_fast=fail_fast,
        progress=_progress(progress),
    )


def _version(value: bool) -> None:
    if value:
        out.print(f"reidprep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Prepare multi-modal (RGB / NIR / TIR) ReID datasets: index, masks, captions, Parquet shards."""


@app.command()
def synth(
    out_dir: Annotated[Path | None, typer.Argument(help="Output folder (default: synth.out of the config).")] = None,
    kind: Annotated[str | None, typer.Option(help="person (RGBNT201 layout) or vehicle (MSVR310 layout).")] = None,
    ids: Annotated[int | None, typer.Option(help="Number of identities.")] = None,
    images_per_id: Annotated[int | None, typer.Option(help="Triplets per identity.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives identical files.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a synthetic dataset made with other arguments.")
    ] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Write the embedded synthetic dataset, with ground-truth masks and attributes."""
    from reidprep.synth import generate_dataset

    cfg = _config(
        config,
        {"synth.out": out_dir, "synth.kind": kind, "synth.ids": ids, "synth.images_per_id": images_per_id,
         "synth.seed": seed},
    )  # fmt: skip
    if cfg.synth.out is None:
        _fail("no output folder: give OUT or set synth.out in the config")
    s = cfg.synth
    try:
        summary = generate_dataset(
            cfg.synth.out,
            kind=s.kind,
            ids=s.ids,
            images_per_id=s.images_per_id,
            seed=s.seed,
            progress=_progress(progress),
        )
    except ValueError as exc:
        _fail(str(exc))
    out.print(summary.describe(), highlight=False)


@app.command()
def index(
    layout: Annotated[str | None, typer.Option(help=f"Dataset layout: {', '.join(DATASETS)}.")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset's top folder.")] = None,
    workdir: WorkdirOption = None,
    strict: Annotated[bool | None, typer.Option("--strict/--no-strict", help="Fail on any bad file.")] = None,
    drop_overlapping_ids: Annotated[
        bool | None,
        typer.Option("--drop-overlapping-ids/--keep-overlapping-ids", help="Drop from train the ids also in test."),
    ] = None,
    check_images: Annotated[
        bool | None, typer.Option("--check-images/--no-check-images", help="Open every image header.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo even if already indexed.")] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Index a dataset's triplets and splits into WORKDIR/index/manifest.parquet."""
    from reidprep.index import StrictIndexError, run_index

    cfg = _config(
        config,
        {"dataset.layout": layout, "dataset.root": root, "workdir": workdir, "index.strict": strict,
         "index.drop_overlapping_train_ids": drop_overlapping_ids, "index.check_images": check_images},
    )  # fmt: skip
    if cfg.dataset.root is None:
        _fail("no dataset root: pass --root or set dataset.root in the config")
    try:
        summary = run_index(
            cfg.workdir,
            cfg.dataset.layout,
            cfg.dataset.root,
            strict=cfg.index.strict,
            check_images=cfg.index.check_images,
            drop_overlapping_train_ids=cfg.index.drop_overlapping_train_ids,
            force=force,
            progress=_progress(progress),
        )
    except StrictIndexError as exc:
        _fail(str(exc), code=1)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _print_index_summary(summary, cfg.workdir)


def _print_index_summary(summary: dict[str, Any], workdir: Path) -> None:
    if summary["skipped"]:
        out.print(f"index: already done for these parameters in {workdir} (use --force to redo)")
    table = Table(title=f"{summary['params']['layout']} at {summary['dataset_dir']}")
    for column in ("split", "triplets", "ids", "cameras", "scenes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in (s for s in SPLITS if s in summary["splits"]):
        counts = summary["splits"][split]
        cams = ",".join(map(str, counts["cameras"]))
        table.add_row(split, str(counts["triplets"]), str(counts["ids"]), cams, str(counts["scenes"]))
    out.print(table)
    for key, count in summary["problems"].items():
        out.print(f"  {key}: {count}", highlight=False)
    ledger = Path(workdir) / "index" / "errors.parquet"
    out.print(
        f"index: {summary['records']} records, {summary['errors']} errors, {summary['seconds']:.1f}s; ledger {ledger}",
        highlight=False,
    )


ShardsOption = Annotated[int, typer.Option("--num-shards", min=1, help="Split the stage into N deterministic slices.")]
ShardIndexOption = Annotated[int, typer.Option("--shard-index", min=0, help="Which slice this process runs (0-based).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Recompute this slice even where outputs exist.")]
RetryOption = Annotated[bool, typer.Option("--retry-failed", help="Recompute the chunks that have failures.")]
FailFastOption = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed sample.")]


@app.command()
def masks(
    workdir: WorkdirOption = None,
    provider: Annotated[
        str | None, typer.Option(help="sam2, thermal (classical baseline) or auto (sam2 if a checkpoint is set).")
    ] = None,
    source: Annotated[str | None, typer.Option(help="rgb, nir, tir, or all (fuse the three).")] = None,
    fusion: Annotated[str | None, typer.Option(help="For --source all: majority, union or intersection.")] = None,
    keep_modality_masks: Annotated[
        bool | None, typer.Option("--keep-modality-masks/--no-modality-masks", help="Also store the three masks.")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="SAM2 checkpoint (local file).")] = None,
    sam2_model: Annotated[str | None, typer.Option(help="tiny, small, base+, large, or a sam2 Hydra name.")] = None,
    sam2_version: Annotated[str | None, typer.Option(help="2 or 2.1.")] = None,
    prompt: Annotated[str | None, typer.Option(help="SAM2 prompt strategy: box or box+center.")] = None,
    device: Annotated[str | None, typer.Option(help="cuda (default) or cpu.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per encoder batch.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Triplets per output part (the unit of resume).")] = None,
    num_shards: ShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    force: ForceOption = False,
    retry_failed: RetryOption = False,
    fail_fast: FailFastOption = False,
    preview: Annotated[int, typer.Option(help="Write masks/preview.png with N samples.")] = 0,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Segment the foreground of every triplet (SAM2, or the thermal baseline) into WORKDIR/masks/."""
    from reidprep.atomic import write_json
    from reidprep.masks.preview import write_preview
    from reidprep.masks.providers import make_provider, provider_name, resolve_source
    from reidprep.masks.quality import groundtruth_iou
    from reidprep.masks.stage import MasksTask
    from reidprep.stage import StageFailure, run_stage
    from reidprep.workdir import Workdir

    cfg = _config(
        config,
        {"workdir": workdir, "masks.provider": provider, "masks.source": source, "masks.fusion": fusion,
         "masks.keep_modality_masks": keep_modality_masks, "masks.sam2.checkpoint": checkpoint,
         "masks.sam2.model": sam2_model, "masks.sam2.version": sam2_version, "masks.sam2.prompt": prompt,
         "masks.device": device, "masks.batch_size": batch_size, "masks.chunk_size": chunk_size},
    )  # fmt: skip
    m = cfg.masks
    try:
        options = _stage_options(m.chunk_size, num_shards, shard_index, force, retry_failed, fail_fast, progress)
        task = MasksTask(make_provider(m), resolve_source(m), m.fusion, m.keep_modality_masks)
        summary = run_stage(task, cfg.workdir, options)
    except StageFailure as exc:
        _fail(str(exc), code=1)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    out.print(f"{summary.line()} [provider {provider_name(m)}, source {task.source}]", highlight=False, markup=False)
    if summary.stale_runs:
        out.print(f"  {summary.stale_runs} earlier run(s) with other parameters kept as stale under masks/runs/")
    if summary.complete:
        quality = groundtruth_iou(cfg.workdir)
        if quality is not None:
            summary_path = Workdir(cfg.workdir).summary("masks")
            write_json({**json.loads(summary_path.read_text()), "groundtruth": quality}, summary_path)
            out.print(
                f"  mask IoU vs ground truth: mean {quality['mean_iou']:.3f}, min {quality['min_iou']:.3f} "
                f"over {quality['compared']} triplets",
                highlight=False,
            )
    if preview:
        out.print(f"  preview: {write_preview(cfg.workdir, preview)}", highlight=False)


@app.command()
def captions(
    workdir: WorkdirOption = None,
    provider: Annotated[
        list[str] | None,
        typer.Option(help="heuristic (baseline), openai, qwen or import; repeat for several MLLMs."),
    ] = None,
    fusion: Annotated[str | None, typer.Option(help="template (deterministic) or llm.")] = None,
    model: Annotated[str | None, typer.Option(help="openai: the model (default gpt-4o).")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: an OpenAI-compatible server (vLLM, Ollama).")] = None,
    qwen_path: Annotated[Path | None, typer.Option(help="qwen: the local model folder.")] = None,
    device: Annotated[str | None, typer.Option(help="qwen: cuda (default) or cpu.")] = None,
    import_dir: Annotated[Path | None, typer.Option(help="import: folder of released caption JSON files.")] = None,
    batch_api: Annotated[bool, typer.Option("--batch-api", help="openai: use the Batch API (half price).")] = False,
    chunk_size: Annotated[int | None, typer.Option(help="Triplets per output part (the unit of resume).")] = None,
    num_shards: ShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    force: ForceOption = False,
    retry_failed: RetryOption = False,
    fail_fast: FailFastOption = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Describe every triplet with attributes and confidences, merge them, write captions to WORKDIR/captions/."""
    from reidprep.atomic import write_json
    from reidprep.captions.backends.base import FatalBackendError
    from reidprep.captions.providers import Providers
    from reidprep.captions.stage import CaptionsTask
    from reidprep.captions.summary import groundtruth_accuracy, unknown_rates
    from reidprep.stage import StageAbort, StageFailure, current_run_dir, read_stage_table, run_stage
    from reidprep.workdir import Workdir

    cfg = _config(
        config,
        {"workdir": workdir, "captions.providers": provider, "captions.fusion": fusion, "captions.openai.model": model,
         "captions.openai.base_url": base_url, "captions.qwen.model_path": qwen_path, "captions.qwen.device": device,
         "captions.import_dir": import_dir, "captions.batch_api": batch_api or None,
         "captions.chunk_size": chunk_size},
    )  # fmt: skip
    c = cfg.captions
    wd = Workdir(cfg.workdir)
    try:
        options = _stage_options(c.chunk_size, num_shards, shard_index, force, retry_failed, fail_fast, progress)
        masks, masks_fp = None, None
        masks_run = current_run_dir(cfg.workdir, "masks")
        if masks_run is not None and (masks_run / "_SUCCESS").is_file():
            table = read_stage_table(cfg.workdir, "masks", columns=["triplet_key", "height", "width", "mask"])
            masks = {r["triplet_key"]: (r["height"], r["width"], r["mask"]) for r in table.to_pylist()}
            masks_fp = masks_run.name
        providers = Providers(c, wd.stage_dir("captions") / "requests.sqlite")
        task = CaptionsTask(providers, c, masks, masks_fp)
        if c.batch_api:
            from reidprep.captions.batch_run import run_batch_phase

            phase = run_batch_phase(task, cfg.workdir, options)
            out.print(phase.message, highlight=False, markup=False)
            if not phase.ready:
                return
        summary = run_stage(task, cfg.workdir, options)
    except (StageAbort, FatalBackendError) as exc:
        _fail(f"captions stopped: {exc}", code=1)
    except StageFailure as exc:
        _fail(str(exc), code=1)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    names = ", ".join(c.providers)
    out.print(f"{summary.line()} [providers {names}, fusion {c.fusion}]", highlight=False, markup=False)
    if masks is None and providers.imported is None:
        out.print("  no complete masks stage: providers estimated the foreground themselves")
    counters = [(p.name, getattr(p, "usage", None)) for p in providers.attribute]
    counters.append(("fusion", task.fusion_usage if providers.fusion is not None else None))
    for name, usage in counters:
        if usage is None:
            continue
        cost = "" if usage.estimated_usd is None else f", about {usage.estimated_usd:.4f} USD"
        out.print(
            f"  {name}: {usage.requests} requests, {usage.cached} from cache, {usage.failed} failed, "
            f"{usage.input_tokens} input + {usage.output_tokens} output tokens{cost}",
            highlight=False,
        )
    if not summary.complete:
        return
    report: dict[str, Any] = {}
    if providers.imported is None:
        report["unknown_rates"] = rates = unknown_rates(cfg.workdir)
        for m, r in rates.items():
            if r["after"] is None:
                continue  # no triplet succeeded
            before = "n/a" if r["before"] is None else f"{100 * r['before']:.1f}%"
            out.print(
                f"  unknown attributes {m}: {before} before fusion, {100 * r['after']:.1f}% after", highlight=False
            )
        accuracy = groundtruth_accuracy(cfg.workdir)
        if accuracy is not None:
            report["groundtruth"] = accuracy
            for target, a in accuracy.items():
                if a["mean_accuracy"] is None:
                    continue
                out.print(
                    f"  attribute accuracy vs ground truth ({target}): {100 * a['mean_accuracy']:.1f}% "
                    f"of the {100 * a['mean_coverage']:.1f}% of attributes it states",
                    highlight=False,
                )
    summary_path = wd.summary("captions")
    write_json({**json.loads(summary_path.read_text()), **report}, summary_path)


@app.command("build-shards")
def build_shards_command(
    workdir: WorkdirOption = None,
    image_format: Annotated[str | None, typer.Option(help="jpeg, png, or raw (fastest to read, 5x bytes).")] = None,
    size: Annotated[str | None, typer.Option(help="model (resize to the model input) or original.")] = None,
    missing: Annotated[str | None, typer.Option(help="A sample without mask or caption: exclude or null.")] = None,
    target_shard_mb: Annotated[float | None, typer.Option(help="Close a shard at this size (MB).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if built from the same inputs.")] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Join manifest, masks and captions into Parquet shards and dataset.json under WORKDIR/shards/."""
    from reidprep.shards.build import build_shards

    cfg = _config(
        config,
        {"workdir": workdir, "shards.image_format": image_format, "shards.size": size, "shards.missing": missing,
         "shards.target_shard_mb": target_shard_mb},
    )  # fmt: skip
    try:
        summary = build_shards(cfg.workdir, cfg.shards, force=force, progress=_progress(progress))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    out.print(summary.line(), highlight=False, markup=False)
    if summary.excluded:
        out.print(f"  excluded samples are listed in {summary.out_dir / 'errors.parquet'}", highlight=False)


@app.command("validate-shards")
def validate_shards_command(
    shards_dir: Annotated[Path, typer.Argument(help="The shards folder (WORKDIR/shards) or a workdir.")],
    progress: ProgressOption = None,
) -> None:
    """Check the shards: schema, checksums, row counts, and decode every image; name each corrupt shard."""
    from reidprep.shards.validate import validate_shards

    folder = shards_dir / "shards" if (shards_dir / "shards" / "dataset.json").is_file() else shards_dir
    report = validate_shards(folder, progress=_progress(progress))
    if not report:
        out.print(f"validate-shards: {folder} is valid", highlight=False)
        return
    for name, problems in report.items():
        for problem in problems:
            console.print(f"{name}: {problem}", highlight=False, markup=False)
    _fail(f"{len(report)} shard(s) or index entries have problems in {folder}", code=1)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="pipeline.yaml")] = Path("pipeline.yaml"),
    workdir: WorkdirOption = None,
    progress: ProgressOption = None,
) -> None:
    """Run synth (if synth.out is set), index, masks, captions and build-shards, skipping work already done."""
    cfg = _config(config, {"workdir": workdir})
    steps: list[tuple[str, Any]] = []
    if cfg.synth.out is not None:
        steps.append(("synth", lambda: synth(config=config, progress=progress)))
    steps += [
        ("index", lambda: index(config=config, workdir=workdir, progress=progress)),
        ("masks", lambda: masks(config=config, workdir=workdir, progress=progress)),
        ("captions", lambda: captions(config=config, workdir=workdir, progress=progress)),
        ("build-shards", lambda: build_shards_command(config=config, workdir=workdir, progress=progress)),
    ]
    for name, step in steps:
        console.rule(f"reidprep {name}")
        step()
    out.print(f"run: done; shards in {cfg.workdir / 'shards'}", highlight=False)


@app.command()
def report(
    workdir: Annotated[Path | None, typer.Argument(help="The workdir (default: workdir of the config).")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Where to write (default WORKDIR/report.html).")
    ] = None,
    samples: Annotated[int, typer.Option(help="Triplets shown with masks, attributes and captions.")] = 8,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML report: stage counts and failures, mask overlays, attributes and captions."""
    from reidprep.report import write_report

    cfg = _config(config, {"workdir": workdir})
    try:
        path = write_report(cfg.workdir, out_file, samples)
    except FileNotFoundError as exc:
        _fail(str(exc))
    out.print(f"report: {path}", highlight=False)


@app.command()
def status(
    workdir: WorkdirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show, for every stage, how many samples are done, failed and pending."""
    from reidprep.status import workdir_status

    cfg = _config(config, {"workdir": workdir})
    try:
        report = workdir_status(cfg.workdir)
    except FileNotFoundError as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"workdir {report['workdir']}")
    for column in ("stage", "state", "done", "failed", "warnings", "pending"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right")
    for name, row in report["stages"].items():
        pending = "?" if row["pending"] is None else str(row["pending"])
        state = row["state"] + (f" (+{row['stale_runs']} stale)" if row.get("stale_runs") else "")
        table.add_row(name, state, str(row["done"]), str(row["failed"]), str(row["warnings"]), pending)
    out.print(table)


def main() -> None:
    app()

"""``reidprep``: the command-line entry point. Thin: each command parses its options into the typed
``PipelineConfig`` (``--config`` file, then the options as dotted overrides) and calls one library function.

Exit codes: 0 done; 1 the work failed (``StepFailed``: a bad sample with ``--fail-fast``, a dead backend,
``--strict`` problems, corrupt shards; a full disk, one line naming the file and the bytes needed); 2 a precondition
(bad option or config key, missing workdir or input, another process writing the same step of the workdir, a stage
part that fails its checksum).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.core import Context  # typer >= 0.26 vendors click as typer._click (pyproject pins it)
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from reidprep import __version__
from reidprep.step import StepFailed, StepOptions, StepResult
from reidschemas import DATASETS, PipelineConfig, load_config
from reidschemas.safeio import DiskFull, is_disk_full

T = TypeVar("T")
DEFAULTS = PipelineConfig()


class _Group(TyperGroup):
    """Adds the way out to click's "unexpected extra argument": workdirs are given by option."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if "unexpected extra argument" not in exc.message:
                raise
            hint = "; give the workdir as --workdir W (or the config as --config FILE)"
            raise UsageError(exc.message + hint, ctx=exc.ctx) from None


app = typer.Typer(
    name="reidprep",
    cls=_Group,
    help="Prepare multi-modal (RGB / NIR / TIR) ReID datasets: index, masks, captions, Parquet shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _default(key: str) -> str:
    """``key=value`` of the built-in config default, shown as the option's default in ``--help``."""
    value = reduce(getattr, key.split("."), DEFAULTS)
    if isinstance(value, list | tuple):
        value = ",".join(map(str, value))
    return f"{key}={value}"


def _opt(key: str, *names: str, help: str) -> Any:
    """An option that overrides config ``key``; its help shows the key and the built-in default."""
    return typer.Option(*names, help=help, show_default=_default(key))


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="pipeline.yaml; command-line options override it.", show_default="built-in defaults"
    ),
]
WorkdirOption = Annotated[Path | None, _opt("workdir", "--workdir", "-w", help="Folder for every stage's outputs.")]
ProgressOption = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Progress bar.", show_default="on when stderr is a terminal"),
]
ShardsOption = Annotated[int, typer.Option("--num-shards", min=1, help="Split the stage into N deterministic slices.")]
ShardIndexOption = Annotated[int, typer.Option("--shard-index", min=0, help="Which slice this process runs (0-based).")]
RetryOption = Annotated[
    bool, typer.Option("--retry-failed", help="Recompute the chunks that have failures.", show_default="off")
]
FailFastOption = Annotated[
    bool, typer.Option("--fail-fast", help="Stop at the first failed sample.", show_default="off")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the library; a failure of the work (or a full disk) exits 1, any other error (a precondition) exits 2."""
    try:
        return function(*args, **kwargs)
    except StepFailed as exc:
        _fail(str(exc), code=1)
    except OSError as exc:
        if is_disk_full(exc):  # a write not made through reidschemas.safeio still gets the one line
            _fail(str(exc if isinstance(exc, DiskFull) else DiskFull(Path(exc.filename or "."))), code=1)
        if not isinstance(exc, FileNotFoundError):
            raise
        _fail(str(exc))
    except (ValueError, RuntimeError) as exc:  # ConfigError is a ValueError; LockHeld a RuntimeError
        _fail(str(exc))


def _config(path: Path | None, overrides: dict[str, Any]) -> PipelineConfig:
    return _call(load_config, path, overrides)


def _options(progress: bool | None, **kwargs: Any) -> StepOptions:
    return StepOptions(progress=sys.stderr.isatty() if progress is None else progress, **kwargs)


def _print(result: StepResult) -> None:
    for line in result.lines:
        out.print(line, highlight=False, markup=False)


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
    out_dir: Annotated[Path | None, typer.Argument(help="Output folder.", show_default=_default("synth.out"))] = None,
    kind: Annotated[
        str | None, _opt("synth.kind", help="person (RGBNT201 layout) or vehicle (MSVR310 layout).")
    ] = None,
    ids: Annotated[int | None, _opt("synth.ids", help="Number of identities.")] = None,
    images_per_id: Annotated[int | None, _opt("synth.images_per_id", help="Triplets per identity.")] = None,
    seed: Annotated[int | None, _opt("synth.seed", help="Random seed; the same seed gives identical files.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a synthetic dataset made with other arguments.", show_default="off")
    ] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Write the embedded synthetic dataset, with ground-truth masks and attributes."""
    from reidprep.steps import run_synth

    cfg = _config(
        config,
        {"synth.out": out_dir, "synth.kind": kind, "synth.ids": ids, "synth.images_per_id": images_per_id,
         "synth.seed": seed},
    )  # fmt: skip
    _print(_call(run_synth, cfg, _options(progress, force=force)))


@app.command()
def index(
    layout: Annotated[str | None, _opt("dataset.layout", help=f"Dataset layout: {', '.join(DATASETS)}.")] = None,
    root: Annotated[
        Path | None,
        _opt("dataset.root", help="Folder holding the dataset's top folder; generic: the manifest CSV/Parquet."),
    ] = None,
    kind: Annotated[str | None, _opt("dataset.kind", help="generic layout: person or vehicle (required).")] = None,
    protocol: Annotated[
        str | None, _opt("dataset.protocol", help="generic layout: camera or scene evaluation rule (required).")
    ] = None,
    workdir: WorkdirOption = None,
    strict: Annotated[bool | None, _opt("index.strict", "--strict/--no-strict", help="Fail on any bad file.")] = None,
    drop_overlapping_ids: Annotated[
        bool | None,
        _opt(
            "index.drop_overlapping_train_ids",
            "--drop-overlapping-ids/--keep-overlapping-ids",
            help="Drop from train the ids also in test.",
        ),
    ] = None,
    check_images: Annotated[
        bool | None, _opt("index.check_images", "--check-images/--no-check-images", help="Open every image header.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo even if already indexed.", show_default="off")] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Index a dataset's triplets and splits into WORKDIR/index/manifest.parquet."""
    from reidprep.steps import get_step

    cfg = _config(
        config,
        {"dataset.layout": layout, "dataset.root": root, "dataset.kind": kind, "dataset.protocol": protocol,
         "workdir": workdir, "index.strict": strict,
         "index.drop_overlapping_train_ids": drop_overlapping_ids, "index.check_images": check_images},
    )  # fmt: skip
    _print(_call(get_step("index").run, cfg, _options(progress, force=force)))


@app.command()
def masks(
    workdir: WorkdirOption = None,
    provider: Annotated[
        str | None,
        _opt("masks.provider", help="sam2, thermal (classical baseline) or auto (sam2 if a checkpoint is set)."),
    ] = None,
    source: Annotated[str | None, _opt("masks.source", help="rgb, nir, tir, or all (fuse the three).")] = None,
    fusion: Annotated[
        str | None, _opt("masks.fusion", help="For --source all: majority, union or intersection.")
    ] = None,
    keep_modality_masks: Annotated[
        bool | None,
        _opt(
            "masks.keep_modality_masks",
            "--keep-modality-masks/--no-modality-masks",
            help="Also store the three masks.",
        ),
    ] = None,
    checkpoint: Annotated[Path | None, _opt("masks.sam2.checkpoint", help="SAM2 checkpoint (local file).")] = None,
    sam2_model: Annotated[
        str | None, _opt("masks.sam2.model", help="tiny, small, base+, large, or a sam2 Hydra name.")
    ] = None,
    sam2_version: Annotated[str | None, _opt("masks.sam2.version", help="2 or 2.1.")] = None,
    prompt: Annotated[str | None, _opt("masks.sam2.prompt", help="SAM2 prompt strategy: box or box+center.")] = None,
    device: Annotated[str | None, _opt("masks.device", help="cuda or cpu.")] = None,
    batch_size: Annotated[int | None, _opt("masks.batch_size", help="Images per encoder batch.")] = None,
    chunk_size: Annotated[
        int | None, _opt("masks.chunk_size", help="Triplets per output part (the unit of resume).")
    ] = None,
    num_shards: ShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute this slice even where outputs exist.", show_default="off")
    ] = False,
    retry_failed: RetryOption = False,
    fail_fast: FailFastOption = False,
    preview: Annotated[int, typer.Option(help="Write masks/preview.png with N samples (0: none).")] = 0,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Segment the foreground of every triplet (SAM2, or the thermal baseline) into WORKDIR/masks/."""
    from reidprep.steps import get_step

    cfg = _config(
        config,
        {"workdir": workdir, "masks.provider": provider, "masks.source": source, "masks.fusion": fusion,
         "masks.keep_modality_masks": keep_modality_masks, "masks.sam2.checkpoint": checkpoint,
         "masks.sam2.model": sam2_model, "masks.sam2.version": sam2_version, "masks.sam2.prompt": prompt,
         "masks.device": device, "masks.batch_size": batch_size, "masks.chunk_size": chunk_size},
    )  # fmt: skip
    options = _call(
        _options, progress, num_shards=num_shards, shard_index=shard_index, force=force,
        retry_failed=retry_failed, fail_fast=fail_fast, preview=preview,
    )  # fmt: skip
    _print(_call(get_step("masks").run, cfg, options))


@app.command()
def captions(
    workdir: WorkdirOption = None,
    provider: Annotated[
        list[str] | None,
        _opt("captions.providers", help="heuristic (baseline), openai, qwen or import; repeat for several MLLMs."),
    ] = None,
    fusion: Annotated[str | None, _opt("captions.fusion", help="template (deterministic) or llm.")] = None,
    model: Annotated[str | None, _opt("captions.openai.model", help="openai: the model.")] = None,
    base_url: Annotated[
        str | None, _opt("captions.openai.base_url", help="openai: an OpenAI-compatible server (vLLM, Ollama).")
    ] = None,
    qwen_path: Annotated[Path | None, _opt("captions.qwen.model_path", help="qwen: the local model folder.")] = None,
    device: Annotated[str | None, _opt("captions.qwen.device", help="qwen: cuda or cpu.")] = None,
    import_dir: Annotated[
        Path | None, _opt("captions.import_dir", help="import: folder of released caption JSON files.")
    ] = None,
    batch_api: Annotated[
        bool, _opt("captions.batch_api", "--batch-api", help="openai: use the Batch API (half price).")
    ] = False,
    chunk_size: Annotated[
        int | None, _opt("captions.chunk_size", help="Triplets per output part (the unit of resume).")
    ] = None,
    num_shards: ShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute this slice even where outputs exist.", show_default="off")
    ] = False,
    retry_failed: RetryOption = False,
    fail_fast: FailFastOption = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Describe every triplet with attributes and confidences, merge them, write captions to WORKDIR/captions/."""
    from reidprep.steps import get_step

    cfg = _config(
        config,
        {"workdir": workdir, "captions.providers": provider, "captions.fusion": fusion, "captions.openai.model": model,
         "captions.openai.base_url": base_url, "captions.qwen.model_path": qwen_path, "captions.qwen.device": device,
         "captions.import_dir": import_dir, "captions.batch_api": batch_api or None,
         "captions.chunk_size": chunk_size},
    )  # fmt: skip
    options = _call(
        _options, progress, num_shards=num_shards, shard_index=shard_index, force=force,
        retry_failed=retry_failed, fail_fast=fail_fast,
    )  # fmt: skip
    _print(_call(get_step("captions").run, cfg, options))


@app.command("build-shards")
def build_shards(
    workdir: WorkdirOption = None,
    image_format: Annotated[
        str | None, _opt("shards.image_format", help="jpeg, png, or raw (fastest to read, 5x bytes).")
    ] = None,
    size: Annotated[str | None, _opt("shards.size", help="model (resize to the model input) or original.")] = None,
    missing: Annotated[
        str | None, _opt("shards.missing", help="A sample without mask or caption: exclude or null.")
    ] = None,
    target_shard_mb: Annotated[
        float | None, _opt("shards.target_shard_mb", help="Close a shard at this size (MB).")
    ] = None,
    allow_test_exclusions: Annotated[
        bool,
        typer.Option(
            "--allow-test-exclusions",
            help="Exclude query/gallery samples that lack an input (refused by default: exit 1, naming them).",
            show_default=_default("shards.allow_test_exclusions"),
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if built from the same inputs.", show_default="off")
    ] = False,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Join manifest, masks and captions into Parquet shards and dataset.json under WORKDIR/shards/."""
    from reidprep.steps import get_step

    cfg = _config(
        config,
        {"workdir": workdir, "shards.image_format": image_format, "shards.size": size, "shards.missing": missing,
         "shards.target_shard_mb": target_shard_mb, "shards.allow_test_exclusions": allow_test_exclusions or None},
    )  # fmt: skip
    _print(_call(get_step("shards").run, cfg, _options(progress, force=force)))


@app.command("validate-shards")
def validate_shards(
    workdir: WorkdirOption = None,
    shards: Annotated[
        Path | None, typer.Option("--shards", help="A shards folder elsewhere.", show_default="WORKDIR/shards")
    ] = None,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Check the shards: schema, checksums, row counts, and decode every image; name each corrupt shard."""
    from reidprep.shards.validate import check_shards

    cfg = _config(config, {"workdir": workdir})
    _print(_call(check_shards, shards or cfg.workdir / "shards", progress=_options(progress).progress))


@app.command()
def run(
    workdir: WorkdirOption = None,
    config: ConfigOption = None,
    progress: ProgressOption = None,
) -> None:
    """Run synth (if synth.out is set), index, masks, captions and build-shards; each step skips work already
    done for its fingerprint, so only what changed (and what depends on it) is redone."""
    from reidprep.steps import run_pipeline

    cfg = _config(config, {"workdir": workdir})
    steps = run_pipeline(cfg, _options(progress))
    while True:
        result = _call(next, steps, None)
        if result is None:
            break
        console.rule(f"reidprep {result.step}")
        _print(result)
        if not result.complete:
            out.print(f"run: stopped after {result.step} (not complete); run again to go on", highlight=False)
            return
    out.print(f"run: done; shards in {cfg.workdir / 'shards'}", highlight=False)


@app.command()
def report(
    workdir: WorkdirOption = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Where to write.", show_default="WORKDIR/report.html")
    ] = None,
    samples: Annotated[int, typer.Option(help="Triplets shown with masks, attributes and captions.")] = 8,
    order: Annotated[
        str, typer.Option(help="spread: samples evenly spaced; worst: lowest mask IoU vs ground truth first.")
    ] = "spread",
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML report: stage counts, staleness and failures, mask overlays, captions."""
    from reidprep.report import write_report

    cfg = _config(config, {"workdir": workdir})
    out.print(f"report: {_call(write_report, cfg.workdir, out_file, samples, order)}", highlight=False)


@app.command()
def status(
    workdir: WorkdirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", show_default="off")] = False,
    config: ConfigOption = None,
) -> None:
    """Show, for every step, its state (complete, incomplete, corrupt, stale, not run) and done / failed / pending
    counts; name each stage part that fails its checksum."""
    from reidprep.steps import get_step, workdir_status

    cfg = _config(config, {"workdir": workdir})
    report = _call(workdir_status, cfg.workdir)
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"workdir {report['workdir']}")
    for column in ("stage", "state", "done", "failed", "warnings", "pending"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right")
    for name, row in report["stages"].items():
        pending = "?" if row["pending"] is None else str(row["pending"])
        state = row["state"] + (f" (+{row['stale_runs']} stale runs)" if row.get("stale_runs") else "")
        table.add_row(name, state, str(row["done"]), str(row["failed"]), str(row["warnings"]), pending)
    out.print(table)
    excluded = report["stages"].get("shards", {}).get("excluded_per_split")
    if excluded:
        counts = ", ".join(f"{split} {n}" for split, n in excluded.items())
        ledger = cfg.workdir / "shards" / "errors.parquet"
        out.print(f"shards excluded per split: {counts} (ledger {ledger})", highlight=False)
    for name, row in report["stages"].items():
        if row["stale"]:
            out.print(f"{name} is stale: {row['stale']}; rerun it (`reidprep run` redoes it)", highlight=False)
        for problem in row.get("corrupt", []):
            command = get_step(name).command
            out.print(f"{name}: {problem}; rerun `reidprep {command}` to recompute it", highlight=False, markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

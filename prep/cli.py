"""``reidprep``: the command-line entry point. Thin: options -> config -> the stage functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from reidprep import __version__
from reidschemas import DATASETS, SPLITS, ConfigError, PipelineConfig, load_config

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
            s.out,
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
        import json

        out.print_json(json.dumps(report))
        return
    table = Table(title=f"workdir {report['workdir']}")
    for column in ("stage", "state", "done", "failed", "warnings", "pending"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right")
    for name, row in report["stages"].items():
        pending = "?" if row["pending"] is None else str(row["pending"])
        table.add_row(name, row["state"], str(row["done"]), str(row["failed"]), str(row["warnings"]), pending)
    out.print(table)


def main() -> None:
    app()

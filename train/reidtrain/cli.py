"""``reidtrain``: the command-line entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from reidtrain import __version__

if TYPE_CHECKING:
    from reidschemas.config import TrainConfig

app = typer.Typer(
    name="reidtrain",
    help="Train and evaluate multi-modal (RGB / NIR / TIR) ReID models on reidprep's shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

_RANK_ARRAYS = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")


def _version(value: bool) -> None:
    if value:
        out.print(f"reidtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train and evaluate multi-modal (RGB / NIR / TIR) ReID models on reidprep's shards."""


@app.command()
def rank(
    arrays: Annotated[Path, typer.Argument(help=f".npz with {', '.join(_RANK_ARRAYS)} [, q_sceneids, g_sceneids].")],
    max_rank: Annotated[int, typer.Option(help="Length of the CMC curve.")] = 50,
) -> None:
    """Score a saved query x gallery distance matrix with the standard ReID protocol (CMC, mAP, mINP)."""
    import numpy as np

    from reidtrain.metrics import evaluate_rank

    if not arrays.is_file():
        err.print(f"[bold red]error:[/] {arrays} not found")
        raise typer.Exit(2)
    data = np.load(arrays)
    missing = [name for name in _RANK_ARRAYS if name not in data]
    if missing:
        err.print(f"[bold red]error:[/] {arrays} lacks the arrays {', '.join(missing)}")
        raise typer.Exit(2)
    q_scenes, g_scenes = (data.get(k) for k in ("q_sceneids", "g_sceneids"))
    try:
        distmat, q_pids, g_pids, q_camids, g_camids = (data[name] for name in _RANK_ARRAYS)
        result = evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, max_rank, q_sceneids=q_scenes, g_sceneids=g_scenes
        )
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {arrays}: {exc}")
        raise typer.Exit(2) from None
    rule = (
        "same id and scene removed" if q_scenes is not None and g_scenes is not None else "same id and camera removed"
    )
    out.print(
        f"mAP {100 * result.mAP:.2f}  mINP {100 * result.mINP:.2f}  "
        + "  ".join(f"R{k} {100 * result.cmc[k - 1]:.2f}" for k in (1, 5, 10) if k <= max_rank)
        + f"  ({result.num_valid_queries} queries, {result.num_skipped_queries} without a match skipped; {rule})",
        highlight=False,
    )


def _fail(message: object) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _parse_overrides(items: list[str]) -> dict[str, object]:
    import yaml

    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE (YAML value, dotted key for nesting), got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="pipeline.yaml: its train section gives the defaults of every option."),
]


def _train_config(config: Path | None, given: Mapping[str, object]) -> tuple[TrainConfig, Path]:
    """(the train section with the given options applied, the workdir) from ``config`` or the built-in defaults."""
    from reidschemas.config import load_config

    cfg = load_config(config, {f"train.{key}": value for key, value in given.items()})
    return cfg.train, cfg.workdir


@app.command()
def fit(
    config: ConfigOption = None,
    shards: Annotated[
        Path | None, typer.Option(help="Shards folder of `reidprep build-shards` (config: <workdir>/shards).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Run folder: config.json, metrics.jsonl, last.pt, best.pt (config: train.output)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Registered model name [default: baseline].")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="CLIP backbone: ViT-B-16, ViT-B-16-quickgelu, tiny, ... [default: ViT-B-16].")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Local CLIP weights file.")] = None,
    random_init: Annotated[bool | None, typer.Option(help="Start from random weights (no --weights).")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe name, data/recipes/NAME.yaml [default: baseline-tiny-demo].")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe key: KEY=VALUE (e.g. image_size=[64,32]).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Stop after this epoch (default: the recipe's epochs, the schedule length).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (the recipe's AMP on cuda) [default: cpu].")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of model init, PK order and augmentation [default: 0].")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes [default: 0].")] = None,
    resume: Annotated[
        bool, typer.Option(help="Require continuing from OUTPUT/last.pt (done anyway when present).")
    ] = False,
    progress: Annotated[bool | None, typer.Option(help="Progress bar (default: when stderr is a terminal).")] = None,
) -> None:
    """Train a model on the train split, evaluating on query/gallery after every epoch; resumes from OUTPUT/last.pt.

    Options not given come from the config's train section (with --config), else from the defaults shown.
    """
    from reidtrain.trainer import FitOptions
    from reidtrain.trainer import fit as run_fit

    given = {
        "shards": shards,
        "output": output,
        "model": model,
        "backbone": backbone,
        "weights": weights,
        "random_init": random_init,
        "recipe": recipe,
        "epochs": epochs,
        "device": device,
        "seed": seed,
        "workers": workers,
    }
    try:
        train, workdir = _train_config(config, given)
        if train.weights is not None and train.random_init:
            raise ValueError("--weights and --random-init exclude each other")
        shards_dir = train.shards if train.shards is not None else (workdir / "shards" if config else None)
        run_dir = train.output if train.output is not None else (workdir / "train" / train.model if config else None)
        if shards_dir is None or run_dir is None:
            raise ValueError("pass --shards and --output, or --config pipeline.yaml (its workdir and train section)")
        options = FitOptions(
            shards=shards_dir,
            output=run_dir,
            recipe=train.recipe,
            overrides={**train.set, **_parse_overrides(set_ or [])},
            model=train.model,
            backbone=train.backbone,
            weights=train.weights,
            random_init=train.random_init,
            epochs=train.epochs,
            seed=train.seed,
            device=train.device,
            num_workers=train.workers,
            resume=resume,
            progress=progress,
        )
        summary = run_fit(options, echo=lambda line: out.print(line, highlight=False, soft_wrap=True))
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    from reidtrain.distributed import dist_env

    if dist_env().is_main:
        out.print(str(summary), highlight=False, soft_wrap=True)


@app.command("eval")
def eval_(
    run: Annotated[
        Path | None, typer.Option(help="Run folder written by `reidtrain fit` (config: train.output).")
    ] = None,
    config: ConfigOption = None,
    checkpoint: Annotated[
        str, typer.Option(help="both (last and best, each with its epoch), last, best, or a checkpoint file.")
    ] = "both",
    missing: Annotated[str, typer.Option(help="Modalities to zero at test time, comma-separated (e.g. rgb,nir).")] = "",
    shards: Annotated[Path | None, typer.Option(help="Shards folder (default: the run's).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    rank_list: Annotated[
        int, typer.Option(help="Write RUN/rank_list.png with the top-k retrievals of this many queries (0: none).")
    ] = 0,
    top_k: Annotated[int, typer.Option(help="Retrievals per query in the rank list.")] = 10,
) -> None:
    """Evaluate a run on query/gallery: mAP, R1, R5, R10, mINP per checkpoint, as a table and RUN/eval*.json."""
    from rich.table import Table

    from reidtrain.run_eval import evaluate_run, parse_missing

    try:
        if run is None:
            if config is None:
                raise ValueError("pass --run RUN, or --config pipeline.yaml (its train section names the run)")
            train, workdir = _train_config(config, {})
            run = train.output if train.output is not None else workdir / "train" / train.model
        absent = parse_missing(missing)
        result = evaluate_run(run, checkpoint, absent, shards, device, workers, rank_list, top_k)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    what = f"missing {','.join(absent)}" if absent else "all modalities"
    first = result.records[0]
    table = Table(
        title=f"{run} ({what}, {first['rule']} rule, {first['num_query']} queries, {first['num_gallery']} gallery)"
    )
    for column in ("checkpoint", "epoch", "mAP", "R1", "R5", "R10", "mINP"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    for record in result.records:
        figures = [f"{100 * record[k]:.2f}" for k in ("mAP", "R1", "R5", "R10", "mINP")]
        table.add_row(record["checkpoint"], str(record["epoch"]), *figures)
    out.print(table)
    out.print(f"results: {result.path}", highlight=False)
    if result.rank_list is not None:
        out.print(f"rank list: {result.rank_list['path']}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

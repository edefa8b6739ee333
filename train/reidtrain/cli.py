"""``reidtrain``: the command-line entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reidschemas.config import TrainConfig
from reidtrain import __version__
from reidtrain.recipes import DEFAULT_RECIPE

app = typer.Typer(
    name="reidtrain",
    help="Train and evaluate multi-modal (RGB / NIR / TIR) ReID models on reidprep's shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: brackets such as [default: ...] are shown, not read as markup
    context_settings={"help_option_names": ["-h", "--help"]},
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
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(2)


_TRAIN_DEFAULTS = TrainConfig()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="pipeline.yaml: its workdir and train section give the defaults of every option; the command line wins.",
        show_default="none",
    ),
]
WorkdirOption = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        "-w",
        help="Pipeline workdir (overrides the config's): shards in WORKDIR/shards, runs in WORKDIR/train/MODEL.",
        show_default="the config's workdir, with --config",
    ),
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu or cuda.", show_default=_TRAIN_DEFAULTS.device)]
WorkersOption = Annotated[
    int | None, typer.Option(help="DataLoader worker processes.", show_default=str(_TRAIN_DEFAULTS.workers))
]


def _train_config(
    config: Path | None, workdir: Path | None, given: Mapping[str, object]
) -> tuple[TrainConfig, Path | None]:
    """(pipeline.yaml's train section with the given options applied, the workdir when --config or --workdir)."""
    from reidschemas.config import load_config

    cfg = load_config(config, {"workdir": workdir, **{f"train.{key}": value for key, value in given.items()}})
    return cfg.train, cfg.workdir if config is not None or workdir is not None else None


@app.command()
def fit(
    config: ConfigOption = None,
    workdir: WorkdirOption = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Recipe: a shipped name (data/recipes/NAME.yaml) or a YAML file. It names the model and backbone.",
            show_default=f"{DEFAULT_RECIPE}",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Train this registered model instead of the recipe's (its model_options must fit).",
            show_default="the recipe's model",
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="CLIP backbone instead of the recipe's: ViT-B-16, ViT-B-16-quickgelu, tiny, ...",
            show_default="the recipe's backbone",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a recipe key: KEY=VALUE, YAML value, dotted key for nesting (e.g. image_size=[64,32], "
            "model_options.fusion=concat); repeatable; after the config's train.set.",
            show_default="none",
        ),
    ] = None,
    shards: Annotated[
        Path | None, typer.Option(help="Shards folder of `reidprep build-shards`.", show_default="WORKDIR/shards")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Run folder: config.json, metrics.jsonl, last.pt, best.pt.", show_default="WORKDIR/train/MODEL"
        ),
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Local CLIP weights file.", show_default="none")] = None,
    random_init: Annotated[
        bool | None,
        typer.Option(help="Start from random weights (no --weights).", show_default="no-random-init"),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Stop after this epoch; the lr schedule always spans the recipe's epochs.",
            show_default="the recipe's epochs",
        ),
    ] = None,
    device: DeviceOption = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of model init, PK order and augmentation.", show_default=str(_TRAIN_DEFAULTS.seed)),
    ] = None,
    workers: WorkersOption = None,
    val_ids: Annotated[
        int | None,
        typer.Option(
            help="Hold this many training ids out as a validation split that chooses best.pt (0: none, best on test).",
            show_default=str(_TRAIN_DEFAULTS.val_ids),
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Require continuing from OUTPUT/last.pt (done anyway when present).")
    ] = False,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar.", show_default="when stderr is a terminal")
    ] = None,
) -> None:
    """Train a model on the train split, evaluating on query/gallery after every epoch; resumes from OUTPUT/last.pt.

    The run's configuration is resolved once: the recipe <- the config's train section <- these options and --set;
    OUTPUT/config.json records it. Options not given come from the config's train section (with --config), else from
    the defaults shown.
    """
    from reidschemas.overrides import parse_assignments
    from reidtrain.distributed import dist_env
    from reidtrain.trainer import fit as run_fit

    given = {
        "recipe": recipe,
        "model": model,
        "backbone": backbone,
        "shards": shards,
        "output": output,
        "weights": weights,
        "random_init": random_init,
        "epochs": epochs,
        "device": device,
        "seed": seed,
        "workers": workers,
        "val_ids": val_ids,
    }
    try:
        overrides = parse_assignments(set_ or [])
        train, root = _train_config(config, workdir, given)
        train = train.model_copy(update={"set": {**train.set, **overrides}})
        echo = lambda line: out.print(line, highlight=False, soft_wrap=True)  # noqa: E731
        summary = run_fit(train, root, resume=resume, progress=progress, echo=echo)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    if dist_env().is_main:
        out.print(str(summary), highlight=False, soft_wrap=True)


@app.command("eval")
def eval_(
    run: Annotated[
        Path | None, typer.Option(help="Run folder written by `reidtrain fit`.", show_default="the config's run folder")
    ] = None,
    config: ConfigOption = None,
    workdir: WorkdirOption = None,
    checkpoint: Annotated[
        str, typer.Option(help="both (last and best, each with its epoch), last, best, or a checkpoint file.")
    ] = "both",
    missing: Annotated[
        str, typer.Option(help="Modalities to zero at test time, comma-separated (e.g. rgb,nir).", show_default="none")
    ] = "",
    shards: Annotated[Path | None, typer.Option(help="Shards folder.", show_default="the run's")] = None,
    device: DeviceOption = None,
    workers: WorkersOption = None,
    rank_list: Annotated[
        int, typer.Option(help="Write RUN/rank_list.png with the top-k retrievals of this many queries (0: none).")
    ] = 0,
    top_k: Annotated[int, typer.Option(help="Retrievals per query in the rank list.")] = 10,
) -> None:
    """Evaluate a run on query/gallery: mAP, R1, R5, R10, mINP per checkpoint, as a table and RUN/eval*.json.

    Without --run, the run folder is the one `reidtrain fit` writes for the same --config / --workdir.
    """
    from rich.table import Table

    from reidtrain.run_eval import evaluate_run, parse_missing, run_folder

    try:
        train, root = _train_config(config, workdir, {"device": device, "workers": workers})
        if run is None:
            if root is None:
                raise ValueError("pass --run RUN, or --config pipeline.yaml / --workdir W (the run fit writes there)")
            run = run_folder(train, root)
        absent = parse_missing(missing)
        result = evaluate_run(run, checkpoint, absent, shards, train.device, train.workers, rank_list, top_k)
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

"""``reidtrain``: the command-line entry point.

Exit codes: 0 done; 1 the disk is full (one line naming the file and the bytes needed; finished work is kept);
2 a precondition (a bad option, file or run folder, or another process writing the run folder).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape

from reidschemas import Protocol
from reidschemas.config import TrainConfig
from reidschemas.locks import LockHeld
from reidschemas.safeio import DiskFull, is_disk_full
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


def _rank_protocol(data: Mapping[str, object], option: str | None, arrays: Path) -> tuple[Protocol, str]:
    """(protocol, why) for ``rank``: --protocol, else the npz's ``protocol`` entry; never guessed from scene arrays."""
    from reidschemas import PROTOCOLS

    stored = str(data["protocol"]) if "protocol" in data else None
    for given, where in ((option, "--protocol"), (stored, f"{arrays}'s protocol entry")):
        if given is not None and given not in PROTOCOLS:
            raise ValueError(f"{where} is {given!r}; choose one of {', '.join(PROTOCOLS)}")
    if option is not None and stored is not None and option != stored:
        raise ValueError(f"--protocol {option} contradicts {arrays}'s protocol entry {stored!r}")
    has_scenes = "q_sceneids" in data or "g_sceneids" in data
    if option is None and stored is None:
        if has_scenes:
            raise ValueError(
                f"{arrays} has scene ids but no protocol entry: pass --protocol scene (MSVR310: same id and same "
                "scene removed) or --protocol camera (same id and camera removed); the rule is not guessed"
            )
        return "camera", "no protocol given and no scene ids"
    protocol = cast(Protocol, option or stored)
    if protocol == "scene" and not ("q_sceneids" in data and "g_sceneids" in data):
        raise ValueError(f"the scene rule needs both q_sceneids and g_sceneids, and {arrays} lacks one")
    why = "--protocol" if option is not None else "the npz's protocol entry"
    if protocol == "camera" and has_scenes:
        why += "; its scene ids are ignored"
    return protocol, why


@app.command()
def rank(
    arrays: Annotated[
        Path,
        typer.Argument(help=f".npz with {', '.join(_RANK_ARRAYS)} [, q_sceneids, g_sceneids, protocol]."),
    ],
    protocol: Annotated[
        str | None,
        typer.Option(
            help="camera (same id and camera removed) or scene (MSVR310: same id and scene removed); needed when the "
            "npz has scene ids and no protocol entry.",
            show_default="the npz's protocol entry; camera when it has no scene ids",
        ),
    ] = None,
    max_rank: Annotated[int, typer.Option(help="Length of the CMC curve.")] = 50,
) -> None:
    """Score a saved query x gallery distance matrix with the standard ReID protocol (CMC, mAP, mINP)."""
    import numpy as np

    from reidschemas import PROTOCOL_RULES, describe_protocol
    from reidtrain.metrics import evaluate_rank

    if not arrays.is_file():
        err.print(f"[bold red]error:[/] {arrays} not found")
        raise typer.Exit(2)
    data = np.load(arrays)
    missing = [name for name in _RANK_ARRAYS if name not in data]
    if missing:
        err.print(f"[bold red]error:[/] {arrays} lacks the arrays {', '.join(missing)}")
        raise typer.Exit(2)
    with _errors():
        rule, why = _rank_protocol(data, protocol, arrays)
        scenes = {"q_sceneids": data["q_sceneids"], "g_sceneids": data["g_sceneids"]} if rule == "scene" else {}
        distmat, q_pids, g_pids, q_camids, g_camids = (data[name] for name in _RANK_ARRAYS)
        result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, **scenes)
    out.print(f"evaluation protocol: {describe_protocol(rule, why)}", highlight=False)
    out.print(
        f"mAP {100 * result.mAP:.2f}  mINP {100 * result.mINP:.2f}  "
        + "  ".join(f"R{k} {100 * result.cmc[k - 1]:.2f}" for k in (1, 5, 10) if k <= max_rank)
        + f"  ({result.num_valid_queries} queries, {result.num_skipped_queries} without a match skipped; "
        + f"{PROTOCOL_RULES[rule]})",
        highlight=False,
    )


def _fail(message: object, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Each command's failures as one line: a full disk exits 1; a bad input, a missing file or a run folder another
    process writes (``LockHeld``) exit 2. Other errors keep their traceback (they are bugs)."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            full = exc if isinstance(exc, DiskFull) else DiskFull(Path(exc.filename or "."))
            raise _fail(full, code=1) from None
        if isinstance(exc, FileNotFoundError):
            raise _fail(exc) from None
        raise
    except (ValueError, LockHeld) as exc:
        raise _fail(exc) from None


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
    int | None,
    typer.Option(help="DataLoader worker processes.", show_default="0 on CPU; on CUDA one per core but one, at most 8"),
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
    allow_orientation_mismatch: Annotated[
        bool | None,
        typer.Option(
            "--allow-orientation-mismatch",
            help="Train although the image size is portrait and the shards landscape, or the reverse.",
            show_default="refused",
        ),
    ] = None,
    allow_missing_inputs: Annotated[
        bool | None,
        typer.Option(
            "--allow-missing-inputs",
            help="Train although a mask or caption the model reads is missing on more than 1% of train rows.",
            show_default="refused",
        ),
    ] = None,
    allow_stale_shards: Annotated[
        bool | None,
        typer.Option(
            "--allow-stale-shards",
            help="Train on shards built from other index/masks/captions outputs than the workdir's current ones.",
            show_default="refused",
        ),
    ] = None,
) -> None:
    """Train a model on the train split, evaluating on query/gallery after every epoch; resumes from OUTPUT/last.pt.

    The run's configuration is resolved once: the recipe <- the config's train section <- these options and --set;
    OUTPUT/config.json records it. Options not given come from the config's train section (with --config), else from
    the defaults shown. Before the first step it prints what it trains and refuses (exit 2) a contradicting image
    orientation, missing inputs and stale shards unless the matching --allow-* option is given.
    """
    from reidschemas.overrides import parse_assignments
    from reidtrain.distributed import dist_env
    from reidtrain.trainer import FitInterrupted
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
        "allow_orientation_mismatch": allow_orientation_mismatch,
        "allow_missing_inputs": allow_missing_inputs,
        "allow_stale_shards": allow_stale_shards,
        "val_ids": val_ids,
    }
    with _errors():
        overrides = parse_assignments(set_ or [])
        train, root = _train_config(config, workdir, given)
        train = train.model_copy(update={"set": {**train.set, **overrides}})
        echo = lambda line: out.print(line, highlight=False, soft_wrap=True)  # noqa: E731
        try:
            summary = run_fit(train, root, resume=resume, progress=progress, echo=echo)
        except FitInterrupted as stopped:  # Ctrl-C: where it stopped and how to go on; 130 as for SIGINT
            err.print(f"{stopped}", highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(130) from None
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
        str,
        typer.Option(
            help="both (last and best, each with its epoch), last, best, or a checkpoint file (it loads on its own: "
            "results go beside it unless a run folder is given)."
        ),
    ] = "both",
    missing: Annotated[
        str,
        typer.Option(
            help="Modalities to zero at test time, comma-separated (e.g. rgb,nir); 'all': the seven settings of "
            "DeMo's Tables 3-4 (none, each modality, each pair) and their average, in RUN/eval-missing-all.json.",
            show_default="none",
        ),
    ] = "",
    shards: Annotated[Path | None, typer.Option(help="Shards folder.", show_default="the run's")] = None,
    device: DeviceOption = None,
    workers: WorkersOption = None,
    rank_list: Annotated[
        int, typer.Option(help="Write RUN/rank_list.png with the top-k retrievals of this many queries (0: none).")
    ] = 0,
    top_k: Annotated[int, typer.Option(help="Retrievals per query in the rank list.")] = 10,
    save_features: Annotated[
        bool,
        typer.Option(
            "--save-features",
            help="Also write each checkpoint's query and gallery features (L2-normalised, with sample ids, pids, "
            "camids, sceneids) to RUN/features-<last|best>[-missing-...].parquet.",
            show_default="off",
        ),
    ] = False,
    save_distances: Annotated[
        bool,
        typer.Option(
            "--save-distances",
            help="Also write each checkpoint's query x gallery distances with ids and protocol to "
            "RUN/dist-<last|best>[-missing-...].npz, which `reidtrain rank` scores.",
            show_default="off",
        ),
    ] = False,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bars of feature extraction.", show_default="when stderr is a terminal")
    ] = None,
) -> None:
    """Evaluate a run on query/gallery: mAP, R1, R5, R10, mINP per checkpoint, as a table and RUN/eval*.json.

    Without --run, the run folder is the one `reidtrain fit` writes for the same --config / --workdir, or the folder
    of a --checkpoint FILE (a checkpoint records its configuration: it evaluates outside its run folder).
    """
    from rich.table import Table

    from reidtrain.run_eval import evaluate_missing_all, evaluate_run, parse_missing, run_folder

    with _errors():
        train, root = _train_config(config, workdir, {"device": device, "workers": workers})
        if run is None and checkpoint not in ("both", "last", "best"):
            run = Path(checkpoint).parent  # a checkpoint file loads on its own; results go beside it
        if run is None:
            if root is None:
                raise ValueError("pass --run RUN, or --config pipeline.yaml / --workdir W (the run fit writes there)")
            run = run_folder(train, root)
        every_setting = missing.strip().lower() == "all"
        absent = () if every_setting else parse_missing(missing)
        if every_setting and rank_list:
            raise ValueError("--rank-list draws one setting: pass --missing none, one or two modalities with it")
        if every_setting and (save_features or save_distances):
            raise ValueError("--save-features/--save-distances save one setting: pass --missing none, one or two")
        if every_setting:
            result = evaluate_missing_all(run, checkpoint, shards, train.device, train.workers or 0, progress=progress)
        else:
            result = evaluate_run(
                run, checkpoint, absent, shards, train.device, train.workers or 0, rank_list, top_k,
                save_features=save_features, save_distances=save_distances, progress=progress,
            )  # fmt: skip
    from reidschemas import describe_protocol

    what = (
        "every missing-modality setting"
        if every_setting
        else f"missing {','.join(absent)}"
        if absent
        else "all modalities"
    )
    first = result.records[0]
    out.print(f"evaluation protocol: {describe_protocol(first['rule'], first['dataset'] + ' layout')}", highlight=False)
    table = Table(
        title=f"{run} ({what}, {first['rule']} rule, {first['num_query']} queries, {first['num_gallery']} gallery)"
    )
    columns = ("checkpoint", "missing", "epoch", "mAP", "R1", "R5", "R10", "mINP")
    for column in columns if every_setting else tuple(c for c in columns if c != "missing"):
        table.add_column(column, justify="left" if column in ("checkpoint", "missing") else "right")
    for record in result.records:
        figures = [f"{100 * record[k]:.2f}" for k in ("mAP", "R1", "R5", "R10", "mINP")]
        if every_setting:
            absent_names = record["missing"]
            shown = absent_names if isinstance(absent_names, str) else ",".join(absent_names) or "none"
            table.add_row(record["checkpoint"], shown, str(record["epoch"]), *figures)
        else:
            table.add_row(record["checkpoint"], str(record["epoch"]), *figures)
    out.print(table)
    out.print(f"results: {result.path}", highlight=False)
    if result.rank_list is not None:
        out.print(f"rank list: {result.rank_list['path']}", highlight=False)
    for saved in result.saved:
        kind = "features" if saved.suffix == ".parquet" else "distances"
        out.print(f"{kind}: {saved}", highlight=False, soft_wrap=True)


@app.command()
def embed(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Parquet file to write: sample_id, split, pid, camid, sceneid and the L2-normalised feature.",
        ),
    ],
    run: Annotated[
        Path | None, typer.Option(help="Run folder written by `reidtrain fit`.", show_default="none")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last, or a checkpoint file (which needs no --run).")] = "best",
    shards: Annotated[Path | None, typer.Option(help="Shards folder.", show_default="the run's")] = None,
    split: Annotated[
        str, typer.Option(help="Splits to embed, comma-separated: query, gallery, train.")
    ] = "query,gallery",
    missing: Annotated[
        str, typer.Option(help="Modalities to zero, comma-separated (as eval --missing).", show_default="none")
    ] = "",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
) -> None:
    """Embed shard rows with a trained model into a Parquet file (the features eval ranks, one row per sample).

    Cameras the checkpoint was not trained with use the first camera's embedding, as DeMo's code does without a
    camera (printed).
    """
    from reidtrain.features import embed_run
    from reidtrain.run_eval import parse_missing

    echo = lambda line: err.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    with _errors():
        splits = [name.strip() for name in split.split(",") if name.strip()]
        if not splits:
            raise ValueError("--split names no split: pass e.g. query,gallery")
        result = embed_run(
            out_file, run, checkpoint, shards, splits, parse_missing(missing), device, workers, echo=echo
        )
    rows = ", ".join(f"{name} {count}" for name, count in result.rows.items())
    dim = result.table.schema.field("feature").type.list_size
    out.print(f"features: {out_file} ({rows} rows, {dim} dimensions, L2-normalised)", highlight=False, soft_wrap=True)


@app.command("import-checkpoint")
def import_checkpoint(
    file: Annotated[Path, typer.Argument(help="The authors' released checkpoint (their model.state_dict()).")],
    format_: Annotated[str, typer.Option("--format", help="Whose checkpoint: demo or mambapro.")],
    output: Annotated[Path, typer.Option(help="Run folder to write: config.json and last.pt.")],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="rgbnt201, rgbnt100 or msvr310: picks the recipe FORMAT-DATASET and the authors' camera numbering.",
            show_default="from --recipe's name or the shards",
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Recipe (shipped name or YAML file) whose model settings match the checkpoint's.",
            show_default="FORMAT-DATASET",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe key: KEY=VALUE, as fit --set; repeatable.", show_default="none"),
    ] = None,
    shards: Annotated[
        Path | None,
        typer.Option(
            help="Shards to evaluate on: their cameras must be numbered as the file's; eval's default shards.",
            show_default="none (eval then needs --shards)",
        ),
    ] = None,
    cameras: Annotated[
        int | None,
        typer.Option(help="Expected camera count (checked against the file).", show_default="the file's"),
    ] = None,
) -> None:
    """Import the DeMo or MambaPro authors' released weights as a run folder that `reidtrain eval --run` scores.

    Their parameter names are mapped onto our model built by the recipe (default FORMAT-DATASET: the authors'
    settings); a file that does not fit is refused (exit 2) naming the keys not placed, the keys left empty and the
    shape mismatches.
    """
    from reidschemas.overrides import parse_assignments
    from reidtrain.importers import import_checkpoint as run_import

    echo = lambda line: out.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    with _errors():
        summary = run_import(
            file, format_, output, dataset, recipe, parse_assignments(set_ or []), shards, cameras, echo=echo
        )
    echo(
        f"imported {summary.placed} tensors into {summary.run} ({summary.num_classes} classes, {summary.num_cameras} "
        f"cameras); score it with: reidtrain eval --run {summary.run}" + ("" if shards else " --shards SHARDS")
    )


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder written by `reidtrain fit`.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Where to write.", show_default="RUN/report.html")
    ] = None,
) -> None:
    """Write a self-contained HTML page about a run: curves, last/best and eval results, rank lists, config."""
    from reidtrain.report import write_run_report

    try:
        path = write_run_report(run, out_file)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    out.print(f"report: {path}", highlight=False)


@app.command()
def status(
    config: ConfigOption = None,
    workdir: WorkdirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", show_default="off")] = False,
) -> None:
    """List the training runs in WORKDIR/train: model, recipe, epochs done, state, last and best test mAP."""
    import json

    from rich.table import Table

    from reidtrain.runs import list_runs

    try:
        _, root = _train_config(config, workdir, {})
        if root is None:
            raise ValueError("pass --workdir W or --config pipeline.yaml (runs are listed from W/train)")
        runs = list_runs(root)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in runs]))
        return
    table = Table(title=f"training runs in {root / 'train'}")
    for column in ("run", "model", "recipe", "epochs", "state", "last mAP", "best mAP"):
        table.add_column(column, justify="right" if "mAP" in column or column == "epochs" else "left")
    for r in runs:
        epochs = f"{r.done}/{r.target if r.target is not None else '?'}"
        epochs += f" of {r.total}" if r.total is not None and r.total != r.target else ""
        state = r.state + (f" (pid {r.holder.get('pid')})" if r.holder else "") + (f"; {r.note}" if r.note else "")
        best = "" if r.best_map is None else f"{100 * r.best_map:.2f} (epoch {r.best_epoch}, on {r.best_on})"
        last = "" if r.last_map is None else f"{100 * r.last_map:.2f}"
        table.add_row(r.run.name, r.model or "?", r.recipe or "?", epochs, state, last, best)
    out.print(table)
    if not runs:
        out.print(f"no run folders in {root / 'train'}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``reidtrain``: the command-line entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reidtrain import __version__

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
    scenes = {k: data[k] for k in ("q_sceneids", "g_sceneids") if k in data}
    try:
        result = evaluate_rank(*(data[name] for name in _RANK_ARRAYS), max_rank=max_rank, **scenes)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {arrays}: {exc}")
        raise typer.Exit(2) from None
    rule = "same id and scene removed" if scenes else "same id and camera removed"
    out.print(
        f"mAP {100 * result.mAP:.2f}  mINP {100 * result.mINP:.2f}  "
        + "  ".join(f"R{k} {100 * result.cmc[k - 1]:.2f}" for k in (1, 5, 10) if k <= max_rank)
        + f"  ({result.num_valid_queries} queries, {result.num_skipped_queries} without a match skipped; {rule})",
        highlight=False,
    )


def main() -> None:
    app()

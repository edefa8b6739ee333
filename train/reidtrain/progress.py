"""Progress bars of long work (training epochs, feature extraction): tqdm, shown only on a terminal by default."""

from __future__ import annotations

import sys
from typing import Any

from torch import optim

__all__ = ["progress_bar", "reported_lr"]


def progress_bar(total: int, desc: str, enabled: bool | None, unit: str = "batch") -> Any:
    """A tqdm bar over ``total`` steps; ``enabled`` None shows it only when stderr is a terminal."""
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


def reported_lr(optimizer: optim.Optimizer) -> float:
    """The lr a user is shown (progress bar, epoch line, ``metrics.jsonl``'s ``lr``): that of the new modules'
    group (``"new"``), else the first group's. Every group's lr is in ``metrics.jsonl``'s ``lrs``."""
    groups = optimizer.param_groups
    return float(next((g["lr"] for g in groups if g.get("name") == "new"), groups[0]["lr"]))

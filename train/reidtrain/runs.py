"""``reidtrain status``: the state of a run folder (running, finished, stopped, incomplete) and its figures.

A run folder (``reidtrain.trainer``) holds config.json and metrics.jsonl; ``fit`` holds ``RUN/.lock``
(``reidschemas.locks``) while it trains. Epochs: ``done`` (lines of metrics.jsonl), ``target`` (where this fit stops,
``--epochs``) and ``total`` (the recipe's schedule). States:

- running: a live process holds RUN/.lock
- finished: ``done`` reached the schedule's ``total``
- stopped: ``done`` reached ``target`` < ``total`` (``fit --epochs``): run fit again with a larger --epochs to go on
- incomplete: ``done`` < ``target`` and nobody trains it (interrupted): ``fit`` resumes from last.pt
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reidschemas.locks import read_holder

__all__ = ["RunStatus", "best_record", "list_runs", "lock_holder", "read_metrics", "run_status"]

LOCK = ".lock"


def lock_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in the lock file ``path`` when a live process holds it, else None.

    Only a lock whose record says it is held is probed (a shared flock taken and released at once), so a status
    call never touches the lock of a run that is not training.
    """
    holder = read_holder(path)
    if not holder.get("pid") or holder.get("released"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder  # held by a live process
    except OSError:
        return None  # no flock on this file system: cannot tell
    finally:
        os.close(fd)  # also releases the probe's lock
    return None  # the recorded holder is gone: a stale lock


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the epochs of metrics.jsonl, the number of unreadable lines skipped: a line cut by a killed writer)."""
    records, skipped = [], 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return [], 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def best_record(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch ``fit`` saved as best.pt: the first highest ``val_mAP`` when validated, else the first highest
    test ``mAP``."""
    key = "val_mAP" if any("val_mAP" in m for m in metrics) else "mAP"
    scored = [m for m in metrics if isinstance(m.get(key), int | float)]
    return max(scored, key=lambda m: m[key]) if scored else None  # max keeps the first of equal maxima


@dataclass(frozen=True)
class RunStatus:
    """One run folder at a glance."""

    run: Path
    state: str  # running | finished | stopped | incomplete | unreadable
    model: str | None = None
    recipe: str | None = None
    backbone: str | None = None
    done: int = 0  # epochs in metrics.jsonl
    target: int | None = None  # the epoch this fit stops after (--epochs)
    total: int | None = None  # the recipe's schedule
    last_map: float | None = None  # test mAP of the last epoch
    best_map: float | None = None  # test mAP of the best epoch
    best_epoch: int | None = None
    best_on: str | None = None  # "val" or "test": what chose the best epoch
    holder: dict[str, Any] = field(default_factory=dict)  # the lock holder while running
    note: str = ""  # why unreadable, skipped metrics lines

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run": str(self.run)}


def run_status(run: Path) -> RunStatus:
    """The state and figures of run folder ``run`` (ValueError when it has neither config.json nor a lock)."""
    run = Path(run)
    holder = lock_holder(run / LOCK)
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        if holder is not None:  # fit has taken the lock and not written its config yet
            return RunStatus(run, "running", holder=holder)
        raise ValueError(f"{run} is not a run folder written by `reidtrain fit` (no config.json)") from None
    except (OSError, ValueError) as exc:
        return RunStatus(run, "unreadable", note=f"{run / 'config.json'}: {exc}")
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    metrics, skipped = read_metrics(run / "metrics.jsonl")
    done = max((m["epoch"] for m in metrics), default=0)
    target, total = config.get("epochs"), recipe.get("epochs")
    if holder is not None:
        state = "running"
    elif isinstance(total, int) and done >= total:
        state = "finished"
    elif isinstance(target, int) and done >= target:
        state = "stopped"
    else:
        state = "incomplete"
    best = best_record(metrics)
    return RunStatus(
        run=run,
        state=state,
        model=config.get("model") or recipe.get("model"),
        recipe=config.get("recipe_name"),
        backbone=config.get("backbone") or recipe.get("backbone"),
        done=done,
        target=target if isinstance(target, int) else None,
        total=total if isinstance(total, int) else None,
        last_map=metrics[-1].get("mAP") if metrics else None,
        best_map=best.get("mAP") if best else None,
        best_epoch=best.get("epoch") if best else None,
        best_on=("val" if "val_mAP" in best else "test") if best else None,
        holder=holder or {},
        note=f"{skipped} unreadable line(s) in metrics.jsonl skipped" if skipped else "",
    )


def list_runs(workdir: Path) -> list[RunStatus]:
    """Every run folder under ``workdir/train`` (a folder with config.json or a lock), by name."""
    root = Path(workdir) / "train"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: no training run in {workdir} yet (`reidtrain fit`)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and ((p / "config.json").exists() or (p / LOCK).exists()))
    out = []
    for folder in folders:
        try:
            out.append(run_status(folder))
        except ValueError:
            continue  # a lock file left with no config: a fit that stopped before writing one
    return out

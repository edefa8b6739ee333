"""A progress bar with rate and ETA for long loops (rich), silent when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class Counter:
    """A progress bar advanced by amounts (fractions allowed): ``advance(0.25)``, ``set_completed(32)``."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress, self._task = progress, task

    def advance(self, amount: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=amount)
            self._rate()

    def set_completed(self, completed: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed)
            self._rate()

    def _rate(self) -> None:
        assert self._progress is not None and self._task is not None
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate="" if speed is None else f"{speed:,.1f}/s")


@contextlib.contextmanager
def counter(total: int, description: str, enabled: bool = True, unit: str = "") -> Iterator[Counter]:
    """A :class:`Counter` over ``total`` items (a silent one when disabled), with rate, elapsed time and ETA."""
    if not enabled:
        yield Counter()
        return
    with Progress(*_columns(unit), transient=False) as progress:
        yield Counter(progress, progress.add_task(description, total=total, rate=""))


def _columns(unit: str = "") -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *((TextColumn(unit),) if unit else ()),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def track(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing done/total, percent, items per second, elapsed time and ETA."""
    if not enabled:
        yield from items
        return
    with Progress(*_columns(), transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")
        for item in items:
            yield item
            speed = progress.tasks[0].speed
            progress.update(task, advance=1, rate="" if speed is None else f"{speed:,.1f}/s")

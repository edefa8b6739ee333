"""CPU-bound prep work on every core: an ordered map over worker processes.

Threads do not scale the prep stages: the thermal masker and the per-row work of build-shards (PIL's JPEG plugin
parsing, mask resizing, token fractions) hold the GIL most of the time, so two threads ran no faster than one
(``bench/prep_scaling.py``). Worker processes are started with ``forkserver`` (a fresh interpreter, never a fork of
this possibly threaded process; ``spawn`` where there is no forkserver), and results come back in input order, so
whoever writes them writes the same bytes as with one process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a container's or ``taskset``'s share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """A ``workers`` setting as a process count: 0 means one per available core."""
    return workers if workers > 0 else available_cores()


def ordered_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    started: Callable[[T], None] | None = None,
    in_flight: int = 2,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Generator[R, None, None]:
    """``function(item)`` for each item, in order. ``workers`` <= 1: in this process. Otherwise in that many worker
    processes, at most ``in_flight`` items per worker submitted ahead of the one being consumed (memory stays
    bounded), so the consumer's own work (writing) overlaps theirs. ``function`` and the items must pickle.

    ``started(item)`` is called when an item's computation is submitted (in this process). ``initializer(*initargs)``
    runs once in each worker (state every item needs, pickled once per worker instead of once per item). An
    exception in a worker is raised here; closing the iterator early cancels what was not started and waits for the
    rest.
    """
    if workers <= 1:
        for item in items:
            if started is not None:
                started(item)
            yield function(item)
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)
    pending: deque[Future[R]] = deque()
    queue = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < in_flight * workers:
                try:
                    item = next(queue)
                except StopIteration:
                    exhausted = True
                    break
                if started is not None:
                    started(item)
                pending.append(pool.submit(function, item))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

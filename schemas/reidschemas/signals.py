"""Signals at safe moments: SIGTERM as an exception, and Ctrl-C held back while a write must finish.

Python's default SIGTERM ends the process at once, leaving its temporary files behind; SIGINT already raises
KeyboardInterrupt. Inside :func:`sigterm_raises` a SIGTERM raises ``SystemExit(143)`` (128 + 15, the shell's code
for it) in the main thread: cleanup runs and the process still exits as terminated. SIGKILL cannot be caught; the
next run removes a killed process's temporaries (``reidschemas.safeio.remove_dead_temporaries``).

A KeyboardInterrupt raised inside ``torch.save`` does not even surface as one: the zip writer's cleanup then fails
with ``RuntimeError: unexpected pos``, and a run's checkpoint and its ``metrics.jsonl`` could disagree. Inside
:func:`interrupts_deferred` SIGINT and SIGTERM are recorded and delivered when the block ends, so the block's writes
finish together; a second signal is delivered at once (a user who presses Ctrl-C twice means it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["interrupts_deferred", "sigterm_raises"]


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises ``SystemExit(143)``; the previous handler is restored after. A no-op outside
    the main thread (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred(on_hold: Callable[[int], None] | None = None) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then deliver the first one to the handler that was in place
    (so Ctrl-C still raises KeyboardInterrupt, after the block). A second signal inside the block restores the
    handlers and is delivered at once. ``on_hold(signum)`` is called when a signal is held (e.g. to say so). A no-op
    outside the main thread (only it receives signals in Python)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    for signum in _DEFERRED:
        handler = signal.getsignal(signum)
        if handler is not None and handler != signal.SIG_IGN:  # None: set outside Python, left alone
            previous[signum] = handler
    held: list[int] = []

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def hold(signum: int, frame: FrameType | None) -> None:
        if held:  # the second one: stop now
            restore()
            signal.raise_signal(signum)
            return
        held.append(signum)
        if on_hold is not None:
            on_hold(signum)

    for deferred in previous:
        signal.signal(deferred, hold)
    try:
        yield
    finally:
        restore()
    if held:  # the block finished; an exception from it propagates instead (its message is the one to see)
        signal.raise_signal(held[0])

"""SIGTERM as an exception, so that ``finally`` blocks clean up as they do on Ctrl-C.

Python's default SIGTERM ends the process at once, leaving its temporary files behind; SIGINT already raises
KeyboardInterrupt. Inside :func:`sigterm_raises` a SIGTERM raises ``SystemExit(143)`` (128 + 15, the shell's code
for it) in the main thread: cleanup runs and the process still exits as terminated. SIGKILL cannot be caught; the
next run removes a killed process's temporaries (``reidschemas.safeio.remove_dead_temporaries``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["sigterm_raises"]


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

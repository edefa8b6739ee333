"""Ctrl-C as a terminal user has it, for the tests that send SIGINT.

A shell that starts a command in the background without job control (``pytest &`` in a script, some CI runners)
sets SIGINT to "ignore", children inherit that, and Python then installs no KeyboardInterrupt handler: a test that
sends Ctrl-C would see it ignored. These put the terminal's behaviour back.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


def ctrl_c_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child process: SIGINT back to its default, so Python raises KeyboardInterrupt on it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """In this process, SIGINT raises KeyboardInterrupt during the test, whatever it was set to before."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""``interrupts_deferred``: Ctrl-C and SIGTERM wait for the block, a second one does not, errors win."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import pytest

from reidschemas.signals import interrupts_deferred

pytestmark = pytest.mark.usefixtures("ctrl_c_raises")  # SIGINT raises, even under a runner that ignores it


def _send(signum: int) -> None:
    """Deliver ``signum`` to this process; its Python handler runs before the next line."""
    os.kill(os.getpid(), signum)


def test_ctrl_c_inside_the_block_is_raised_when_the_block_ends() -> None:
    held: list[int] = []
    finished = False
    with pytest.raises(KeyboardInterrupt), interrupts_deferred(held.append):
        _send(signal.SIGINT)
        finished = True  # not reached if the interrupt were raised at once
    assert finished and held == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_second_ctrl_c_stops_at_once() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        _send(signal.SIGINT)
        reached.append("after the first")
        _send(signal.SIGINT)
        reached.append("after the second")
    assert reached == ["after the first"]


def test_sigterm_goes_to_the_handler_that_was_in_place_after_the_block() -> None:
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with interrupts_deferred():
            _send(signal.SIGTERM)
            assert received == []  # held
        assert received == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_error_in_the_block_propagates_rather_than_the_held_signal() -> None:
    with pytest.raises(OSError, match="disk"), interrupts_deferred():
        _send(signal.SIGINT)
        raise OSError("disk")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        held: list[int] = []
        with interrupts_deferred(held.append):
            _send(signal.SIGINT)
        assert held == []  # nothing held, nothing raised
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_it_changes_no_handler() -> None:
    seen = []

    def body() -> None:
        with interrupts_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]

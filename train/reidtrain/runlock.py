"""One writer per run folder: ``fit`` holds ``RUN/.lock`` (:func:`reidschemas.locks.hold_lock`) while it may write.

A second ``fit`` on the same folder is refused (``LockHeld``: the CLI exits 2) naming the holder's pid, host and
command; the lock of a killed fit is taken over with a note, and the temporary files of dead writers in the folder
are removed (a live writer's never are). The lock is taken as soon as ``fit`` starts when the folder exists, so a
second fit is refused before it builds a model, and else just before the first write, so a fit its checks refuse
creates nothing. Under ``torchrun`` only rank 0 takes it: rank 0 alone writes the run folder; when it is refused it
exits and torchrun stops the other ranks.

``reidtrain eval`` takes no lock and may run while a run trains: it only reads checkpoints, which fit replaces
atomically (it reads a whole ``last.pt``, the one of the last finished epoch, whose epoch the result names), and it
writes ``eval*.json`` / ``rank_list*.png`` atomically under per-process temporary names, so two evals cannot mix
their files (the later one wins).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from reidschemas.locks import hold_lock
from reidschemas.safeio import remove_dead_temporaries
from reidtrain.distributed import DistEnv

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(run, env, note) as lock: ... lock.take() ...``: the run folder's lock, taken once by rank 0 and
    released when the block ends. ``note`` receives a line for a stale lock taken over and for removed temporaries."""

    def __init__(self, run: Path, env: DistEnv, note: Callable[[str], None]) -> None:
        self.run, self._env, self._note = Path(run), env, note
        self._stack = contextlib.ExitStack()
        self.held = False

    def take(self) -> None:
        """Hold the lock from now on (no-op when held or on ranks other than 0); ``LockHeld`` when another has it."""
        if self.held or not self._env.is_main:
            return
        self._stack.enter_context(hold_lock(self.run / LOCK_NAME, f"reidtrain fit on {self.run}", note=self._note))
        self.held = True
        removed = remove_dead_temporaries(self.run.glob(".*.tmp-*"))
        if removed:
            names = ", ".join(sorted(path.name for path in removed))
            self._note(f"removed {len(removed)} temporary file(s) of writers that are gone: {names}")

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

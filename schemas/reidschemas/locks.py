"""One writer at a time: an advisory lock file per stage and workdir, and per training run folder.

``with hold_lock(folder / ".lock", "reidprep masks"): ...`` takes an exclusive ``fcntl.flock`` on the lock file and
writes the holder (pid, host, command, start time) into it. A second process that asks for the same lock gets
:class:`LockHeld` at once, whose message names the holder and the way out; the CLIs print it and exit 2.

The kernel releases a flock when its process dies (even by ``kill -9``), so a lock left by a dead process is
detected as stale and taken over, with a note naming the dead holder. ``shared=True`` takes the lock shared:
the shards of a sharded stage (``--shard-index``) hold the stage lock shared and their own shard's lock exclusive,
so they run side by side, while an unsharded run (exclusive) waits for none of them and is refused while any runs.

Written on ``fcntl`` rather than ``filelock``: that library does not record or report the holder, which is the
point of the message. On file systems without flock (some NFS mounts) the lock is a no-op with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["LockHeld", "hold_lock", "read_holder"]


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it and the way out."""

    def __init__(self, path: Path, what: str, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else "")
            + (f", since {holder['started']}" if holder.get("started") else "")
        )
        super().__init__(
            f"{what}: another process holds {path}: {who}. Wait for it to finish (or stop it); "
            "two writers at once would corrupt each other's files"
        )


def read_holder(path: Path) -> dict[str, Any]:
    """The holder recorded in a lock file ({} when empty or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else ""


@contextlib.contextmanager
def hold_lock(
    path: Path, what: str, *, shared: bool = False, note: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the advisory lock ``path`` for the block; raise :class:`LockHeld` when another process has it.

    ``what`` names the work in the message ("reidprep masks on WORKDIR"). ``note`` receives one line when a stale
    lock of a dead process is taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        previous = read_holder(path)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, what, read_holder(path)) from None
        except OSError as exc:  # no flock on this file system
            print(f"warning: cannot lock {path} ({exc}); not guarding against a second writer", file=sys.stderr)
        stale = previous.get("pid") and not previous.get("released") and not previous.get("shared")
        if stale and not shared and note is not None:
            note(
                f"{path}: taking over a stale lock of pid {previous['pid']} on {previous.get('host', '?')} "
                "(that process is gone)"
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        elif not previous.get("pid") or previous.get("released"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({**holder, "shared": True}).encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({**holder, "released": True}).encode(), 0)
    finally:
        os.close(fd)  # releases the flock

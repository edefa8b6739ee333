"""Durable writes both sides share: atomic replace with fsync, per-process temporary names, a full disk in one line.

Every file a stage or the trainer writes goes through :func:`atomic_write`: the bytes go to a temporary name
beside the target that is unique to the writing process (``.NAME.tmp-HOST-PID``), the file is fsynced, renamed
over the target and the folder is fsynced, so a reader (or a process killed at any moment, or a power cut) sees
the old file or the new one, never half of one. A process cleans up only the temporary files of processes that
are gone (:func:`remove_dead_temporaries`): a live writer's files are never touched.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) becomes :class:`DiskFull`, whose message is one line naming the
path, about how many bytes were needed and how many are free. The CLIs print it and exit 1.

Written by hand rather than with a library: ``atomicwrites`` is unmaintained, and none of the kept ones clean up
only dead processes' files or report the bytes a write needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "DiskFull",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_guard",
    "fsync_dir",
    "is_disk_full",
    "process_alive",
    "remove_dead_temporaries",
    "temporary_path",
]

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
_TMP = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)$")


class DiskFull(OSError):
    """No space left (or over quota) while writing ``path``; the message is one line with the way out."""

    def __init__(self, path: Path, needed: int | None = None) -> None:
        self.path = Path(path)
        self.needed = needed
        try:
            free: int | None = shutil.disk_usage(_existing_parent(self.path)).free
        except OSError:
            free = None
        self.free = free
        need = f"about {human_bytes(needed)} needed" if needed else "more space needed"
        have = f", {human_bytes(free)} free" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"no space left on the device writing {self.path} ({need}{have}): free some space or point the "
            "workdir/output elsewhere, then rerun; finished work is kept",
        )

    def __str__(self) -> str:
        return str(self.strerror)


def human_bytes(size: int | None) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OS error for a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


@contextlib.contextmanager
def disk_full_guard(path: Path, needed: int | None = None) -> Iterator[None]:
    """``with disk_full_guard(path, needed): ...`` turns ENOSPC/EDQUOT raised inside into :class:`DiskFull`."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(Path(path), needed) from exc
        raise


def temporary_path(path: Path) -> Path:
    """The temporary name this process writes ``path`` under: ``.NAME.tmp-HOST-PID`` in the same folder."""
    return path.parent / f".{path.name}.tmp-{_HOST}-{os.getpid()}"


def process_alive(pid: int, host: str | None = None) -> bool:
    """Whether process ``pid`` runs on this host. Another host's process is assumed alive (it cannot be checked)."""
    if host is not None and host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_temporaries(paths: Iterable[Path]) -> list[Path]:
    """Delete the temporary files among ``paths`` whose writing process is gone; return them.

    Names that do not carry a host and pid (``.tmp-PID`` of earlier versions) count as dead when the pid is.
    """
    removed = []
    for path in paths:
        match = _TMP.search(path.name)
        if match is not None:
            alive = process_alive(int(match["pid"]), match["host"])
        else:
            legacy = re.search(r"\.tmp-(\d+)$", path.name)
            if legacy is None:
                continue
            alive = process_alive(int(legacy[1]))
        if not alive:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object], needed: int | None = None) -> None:
    """Write ``path`` atomically and durably: ``write(tmp)`` fills a per-process temporary file, which is fsynced
    and renamed over ``path``; then the folder is fsynced. A full disk raises :class:`DiskFull` (``needed``: the
    expected size, for its message) and leaves no temporary file behind."""
    path = Path(path)
    with disk_full_guard(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(path.parent.glob(f".{path.name}.tmp-*"))
        tmp = temporary_path(path)
        try:
            write(tmp)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), needed=len(data))


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)

"""The run folder's files: atomic, durable writes and checked reads.

Writes (see :mod:`reidschemas.safeio`) go to a per-process temporary name beside the target, are fsynced, renamed
over it with ``os.replace`` and the folder is fsynced: a reader (or a process killed mid-write) sees the old file or
the new one, never half of one. A full disk raises ``DiskFull`` naming the file and about how many bytes it needed.
``torch.save`` writes through a Python file object: given a path, its C++ writer reports a full disk as a
``RuntimeError`` without an errno, which could not be told apart from other failures.

Reads check before they trust: a zero-byte, truncated or foreign ``last.pt`` / ``best.pt`` or a truncated
``config.json`` is :class:`UnreadableRunFile`, one line naming the file, its size and the way out (``torch.load`` would
print a miniz traceback or "Ran out of input").
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from reidschemas.safeio import atomic_write, atomic_write_text, disk_full_guard

__all__ = ["UnreadableRunFile", "append_line", "atomic_save", "atomic_write_text", "read_checkpoint", "read_json"]

RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "best_map", "best_epoch", "last_map")
"""What ``last.pt`` must hold for ``fit`` to continue a run."""


class UnreadableRunFile(ValueError):
    """A run file (checkpoint, config.json) is empty, truncated or not what it should be; one line with the way out."""


def _tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor inside ``obj`` (dicts, lists, tuples): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically; a full disk raises ``DiskFull`` with the tensors' size."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            try:
                torch.save(obj, handle)
            except RuntimeError as exc:  # Ctrl-C inside the zip writer surfaces as "unexpected pos": it was Ctrl-C
                if isinstance(exc.__context__, KeyboardInterrupt):
                    raise exc.__context__ from None
                raise

    atomic_write(path, write, needed=_tensor_bytes(obj))


def append_line(line: str, path: Path) -> None:
    """Append ``line`` and a newline to ``path``, durably; a failed append (a full disk: ``DiskFull``) is undone, so
    the file never ends in half a line."""
    data = (line + "\n").encode("utf-8")
    with disk_full_guard(path, len(data)), path.open("ab") as handle:
        size = handle.tell()
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # the write's error is the one to report
                handle.truncate(size)
            raise


def _way_out(path: Path, resume: bool) -> str:
    if resume:
        return (
            "delete it to start the run over from epoch 1 (fit then rewrites metrics.jsonl and best.pt), or restore "
            "a copy of it; best.pt cannot continue the run (it holds the model only, no optimizer or schedule)"
        )
    if path.name == "last.pt":
        return (
            "restore a copy of it, or evaluate best.pt (--checkpoint best); once it is deleted `reidtrain fit` "
            "starts the run over"
        )
    if path.name == "best.pt":
        return (
            "restore a copy of it, or evaluate last.pt (--checkpoint last); fit writes a new best.pt only when a "
            "later epoch beats the best mAP so far"
        )
    return "pass a checkpoint file written by `reidtrain fit`"


def read_checkpoint(
    path: Path, *, resume: bool = False, keys: Iterable[str] = ("model",), mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint at ``path`` (on the CPU), checked: a file ``torch.save`` completed, a dict holding ``keys``
    (``resume``: :data:`RESUME_KEYS`). Anything else is :class:`UnreadableRunFile` naming the file, its size and the
    way out (which differs for fit's resume, ``last.pt``, ``best.pt`` and other files). ``mmap`` maps the tensors
    instead of reading them (to look at the epoch of a large checkpoint)."""
    path = Path(path)
    size = path.stat().st_size
    way_out = _way_out(path, resume)
    # torch.save writes a zip whose directory comes last: a file cut short at any point has none. Checked here
    # because torch.load on such a file fails with an internal miniz message ("Ran out of input" when empty).
    if size == 0 or not zipfile.is_zipfile(path):
        raise UnreadableRunFile(f"{path} is truncated or not a checkpoint ({size} bytes): {way_out}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch.load raises RuntimeError, UnpicklingError, KeyError, ... for a foreign file
        raise UnreadableRunFile(
            f"{path} is damaged or not a checkpoint ({size} bytes, {type(exc).__name__}): {way_out}"
        ) from exc
    needed = RESUME_KEYS if resume else tuple(keys)
    lacking = [key for key in needed if not isinstance(state, dict) or key not in state]
    if lacking:
        what = "cannot continue a run" if resume else "is not a checkpoint of `reidtrain fit`"
        raise UnreadableRunFile(f"{path} {what}: it lacks {', '.join(lacking)} ({size} bytes): {way_out}")
    return state


def read_json(path: Path, way_out: str) -> Any:
    """The JSON document at ``path``; a truncated or invalid one is :class:`UnreadableRunFile` naming it."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UnreadableRunFile(
            f"{path} is truncated or not valid JSON ({len(text.encode())} bytes; {exc}): {way_out}"
        ) from exc

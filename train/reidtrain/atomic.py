"""Atomic, durable writes of the run folder's files (see :mod:`reidschemas.safeio`): a per-process temporary
name beside the target, fsync, ``os.replace``, fsync the folder.

A reader (or a process killed mid-write) sees the old file or the new one, never half of one. A full disk raises
``DiskFull`` naming the file and the bytes needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reidschemas.safeio import atomic_write, atomic_write_text

__all__ = ["atomic_save", "atomic_write_text"]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))

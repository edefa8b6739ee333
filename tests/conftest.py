"""Shared test helpers: tiny real image files with the benchmarks' file names."""

from __future__ import annotations

from pathlib import Path

import pytest
from interrupts import ctrl_c_raises  # noqa: F401  (a fixture for the tests that send Ctrl-C)
from PIL import Image


def write_jpeg(path: Path, size: tuple[int, int] = (16, 32), value: int = 128) -> Path:
    """A small solid JPEG at ``path`` (parents created); size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path, quality=90)
    return path


@pytest.fixture
def jpeg():
    return write_jpeg


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch):
    """``disk_full("last.pt")``: from now on, making a write of a file of that name durable fails with ENOSPC.

    The fake sits at the last OS call of every durable write, ``os.fsync`` (where a full disk with delayed
    allocation, or NFS, reports it); the written file is found from the descriptor. Other files are fsynced as usual.
    """
    import errno
    import os

    real = os.fsync

    def fail_for(name: str) -> None:
        def fsync(fd: int) -> None:
            target = Path(os.readlink(f"/proc/self/fd/{fd}")).name
            if target == name or target.startswith(f".{name}.tmp-"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd (Linux) to tell which file a descriptor writes")
    return fail_for

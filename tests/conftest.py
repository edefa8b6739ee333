"""Shared test helpers: tiny real image files with the benchmarks' file names."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def write_jpeg(path: Path, size: tuple[int, int] = (16, 32), value: int = 128) -> Path:
    """A small solid JPEG at ``path`` (parents created); size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path, quality=90)
    return path


@pytest.fixture
def jpeg():
    return write_jpeg

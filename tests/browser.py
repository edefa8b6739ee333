"""Headless Chromium for the HTML report tests: a screenshot of a page, or a clean skip where it is not installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)


def screenshot(page: Path, folder: Path, size: tuple[int, int]) -> Path:
    """Render ``page`` in headless Chromium at ``size`` (width, height); the PNG's path (asserted to exist)."""
    shot = folder / "shot.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / 'profile'}",
        f"--screenshot={shot}",
        f"--window-size={size[0]},{size[1]}",
        f"file://{page.resolve()}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder)
    assert shot.is_file(), result.stderr[-2000:]
    return shot

"""Locate the project's data files (templates), installed as the package ``reidschemas.data``."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path


def data_root() -> Traversable:
    """The ``data/`` folder: the installed ``reidschemas.data`` package, else the source tree's folder."""
    try:
        root = resources.files("reidschemas.data")
        if root.joinpath("templates").is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "data"


def read_text(relative: str) -> str:
    """Read a data file, e.g. ``read_text("templates/attributes_pedestrian.json")``."""
    path = data_root()
    for part in relative.split("/"):  # one part at a time: Python 3.11's namespace paths take one argument
        path = path.joinpath(part)
    if not path.is_file():
        raise FileNotFoundError(f"data file {relative!r} is missing from {data_root()}")
    return path.read_text(encoding="utf-8")

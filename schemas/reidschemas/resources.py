"""Locate the project's data files (templates, recipes), shipped as the package data ``reidschemas/data``."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable


def data_root() -> Traversable:
    """The ``reidschemas/data`` folder (the repository's top-level ``data/`` links to it)."""
    return resources.files("reidschemas").joinpath("data")


def read_text(relative: str) -> str:
    """Read a data file, e.g. ``read_text("templates/attributes_pedestrian.json")``."""
    path = data_root()
    for part in relative.split("/"):  # one part at a time: Python 3.11's namespace paths take one argument
        path = path.joinpath(part)
    if not path.is_file():
        raise FileNotFoundError(f"data file {relative!r} is missing from {data_root()}")
    return path.read_text(encoding="utf-8")

"""Dataset layout adapters: each turns a benchmark's folders (or the user's manifest) into candidate triplets."""

from reidprep.layouts.base import Candidate, FolderLayout, Layout, ScanResult
from reidprep.layouts.generic import GenericLayout
from reidprep.layouts.msvr310 import MSVR310
from reidprep.layouts.rgbnt100 import RGBNT100
from reidprep.layouts.rgbnt201 import RGBNT201
from reidprep.layouts.wmveid863 import WMVEID863
from reidschemas import Protocol

LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (RGBNT201, RGBNT100, MSVR310, WMVEID863, GenericLayout)}


def get_layout(name: str, kind: str | None = None, protocol: Protocol | None = None) -> Layout:
    """The named layout; ``kind`` and ``protocol`` are the generic layout's (required there, refused elsewhere)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    if name == GenericLayout.name:
        return GenericLayout(kind, protocol)
    layout = LAYOUTS[name]()
    given = [f"dataset.{key} ({value})" for key, value in (("kind", kind), ("protocol", protocol)) if value]
    if given:
        raise ValueError(
            f"{' and '.join(given)} apply to the generic layout only: {name} fixes its own "
            f"({layout.protocol} protocol); leave them out"
        )
    return layout


__all__ = ["LAYOUTS", "Candidate", "FolderLayout", "GenericLayout", "Layout", "ScanResult", "get_layout"]

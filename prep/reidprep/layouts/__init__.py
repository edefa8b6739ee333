"""Dataset layout adapters: each turns a benchmark's folders into candidate triplets."""

from reidprep.layouts.base import Candidate, Layout, ScanResult
from reidprep.layouts.msvr310 import MSVR310
from reidprep.layouts.rgbnt100 import RGBNT100
from reidprep.layouts.rgbnt201 import RGBNT201
from reidprep.layouts.wmveid863 import WMVEID863

LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (RGBNT201, RGBNT100, MSVR310, WMVEID863)}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]()
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None


__all__ = ["LAYOUTS", "Candidate", "Layout", "ScanResult", "get_layout"]

"""``reidtrain``: trains and evaluates multi-modal ReID models on the shards that ``reidprep`` writes.

``reidtrain.load(checkpoint)`` returns a trained model ready to embed triplets (``reidtrain.api``); it is imported on
first use, so ``import reidtrain`` stays light (no torch).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reidtrain.api import ReidModel, load

try:
    __version__ = version("reid-mm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ReidModel", "__version__", "load"]


def __getattr__(name: str) -> Any:
    """``load`` and ``ReidModel`` from ``reidtrain.api``, imported when first asked for (PEP 562)."""
    if name in ("load", "ReidModel"):
        from reidtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'reidtrain' has no attribute {name!r}")

"""``reidprep``: the offline data-preparation pipeline (index, masks, captions, shards)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reid-mm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

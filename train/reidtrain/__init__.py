"""``reidtrain``: trains and evaluates multi-modal ReID models on the shards that ``reidprep`` writes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reid-mm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

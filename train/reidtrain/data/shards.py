"""Random access to the Parquet shards that ``reidprep build-shards`` writes (contract: ``reidschemas.shards``).

``ShardIndex.load`` checks ``dataset.json`` and verifies every shard's size and SHA-256 before anything is read
(once per process and file); readers then only check that a file is unchanged when they open it.
A sample is addressed by (row group, row). The index of a split is built from the Parquet metadata and the
``split`` column only; items are decoded from whole row groups kept in a small LRU cache, so sequential or PK
access reads each row group once while it stays hot. Files are opened lazily in the process that reads them, so a
dataset can be handed to DataLoader workers (no open handle is pickled).
"""

from __future__ import annotations

import copy
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import Dataset

from reidschemas.maskcodec import decode_mask
from reidschemas.shards import (
    INDEX_NAME,
    SHARD_SCHEMA,
    SHARD_SCHEMA_VERSION,
    ShardEntry,
    decode_image,
    read_index,
    shard_file_problem,
)

__all__ = ["DEFAULT_COLUMNS", "INDEX_NAME", "LabelMap", "RowGroup", "ShardDataset", "ShardIndex"]
MODALITIES = ("rgb", "nir", "tir")
CAPTION_TARGETS = ("rgb", "nir", "tir", "fused")
_KEY_COLUMNS = ("sample_id", "pid", "camid", "sceneid", "image_format", "height", "width")
DEFAULT_COLUMNS: tuple[str, ...] = (*MODALITIES, "mask", *(f"caption_{t}" for t in CAPTION_TARGETS))
"""Columns an item carries by default; the id and size columns are always read."""


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit of reading and caching."""

    file: str  # shard file name, relative to the shards folder
    row_group: int  # row group number inside the file
    rows: int
    split_counts: dict[str, int]
    splits: tuple[str, ...] = field(repr=False)  # the split of every row, in row order


@dataclass(frozen=True)
class ShardIndex:
    """``dataset.json`` plus the row groups of every shard, in shard order."""

    root: Path
    info: dict[str, Any] = field(repr=False)  # dataset.json as written by build-shards
    row_groups: tuple[RowGroup, ...]

    stats: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # file -> (size, mtime_ns) verified

    @classmethod
    def load(cls, shards_dir: Path) -> ShardIndex:
        """Read and check ``dataset.json``, verify every shard's size and SHA-256, and read each shard's metadata
        and ``split`` column (never the images).

        A shard is hashed once per process (``_verify``); DataLoader workers get the verified index with the
        dataset and only compare each file's size and mtime when they open it (``ShardDataset``). Raises
        FileNotFoundError when the folder has no ``dataset.json`` or a listed shard is missing, ValueError
        (naming the file and the way out) when ``dataset.json`` is malformed or does not add up, or a shard is
        not the file it lists (changed, corrupt, swapped) or disagrees with it in rows or rows per split.
        """
        root = Path(shards_dir)
        path = root / INDEX_NAME
        info, index = read_index(root)
        for shard in index.shards:
            if not (root / shard.file).is_file():
                raise FileNotFoundError(f"{root / shard.file} is listed in {path} but missing: rebuild with "
                                        "`reidprep build-shards`")  # fmt: skip
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
            stats = {
                s.file: stat
                for s, stat in zip(index.shards, pool.map(lambda s: _verify(root, s), index.shards), strict=True)
            }
        groups: list[RowGroup] = []
        for shard in index.shards:
            file = root / shard.file
            with pq.ParquetFile(file) as parquet:
                metadata = parquet.schema_arrow.metadata or {}
                file_version = metadata.get(b"reid.shard_schema_version", b"").decode()
                if file_version != SHARD_SCHEMA_VERSION:
                    raise ValueError(
                        f"{file} has shard schema version {file_version!r}, expected {SHARD_SCHEMA_VERSION}"
                    )
                counts: Counter[str] = Counter()
                for number in range(parquet.num_row_groups):
                    splits = tuple(parquet.read_row_group(number, columns=["split"]).column("split").to_pylist())
                    groups.append(RowGroup(shard.file, number, len(splits), dict(Counter(splits)), splits))
                    counts.update(splits)
            if sum(counts.values()) != shard.rows or dict(sorted(counts.items())) != _nonzero(shard.rows_per_split):
                raise ValueError(f"{file} does not match {path} (rows or rows per split differ): rebuild the shards")
        return cls(root, info, tuple(groups), stats)

    @property
    def rows_per_split(self) -> dict[str, int]:
        return dict(self.info["rows_per_split"])


_VERIFIED: dict[tuple[str, int, int, int, str], tuple[int, int]] = {}
"""Shards this process has hashed: (resolved path, inode, size, mtime_ns, sha256) -> (size, mtime_ns)."""


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v}


def _verify(root: Path, shard: ShardEntry) -> tuple[int, int]:
    """(size, mtime_ns) of a shard whose bytes match ``dataset.json``; hashed once per process while the file's
    inode, size and mtime stay the same. ValueError naming the file when it does not match."""
    file = root / shard.file
    stat = file.stat()
    key = (str(file.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, shard.sha256)
    if key not in _VERIFIED:
        problem = shard_file_problem(file, shard)
        if problem is not None:
            raise ValueError(f"{file}: {problem}: restore it, or rebuild with `reidprep build-shards --force`")
        _VERIFIED[key] = (stat.st_size, stat.st_mtime_ns)
    return _VERIFIED[key]


@dataclass(frozen=True)
class LabelMap:
    """Contiguous labels for the classifier and the camera embedding."""

    pid_to_label: dict[int, int]  # training pids, sorted, -> 0..n_ids-1
    camid_to_index: dict[int, int]  # every camid of the shard set (all splits), sorted, -> 0..n_cams-1

    @property
    def num_classes(self) -> int:
        return len(self.pid_to_label)

    @property
    def num_cameras(self) -> int:
        return len(self.camid_to_index)


class ShardDataset(Dataset):
    """The rows of one or more splits of a shard set, with random access.

    An item is a dict: ``images`` (3, H, W, 3) uint8 in rgb, nir, tir order; ``mask`` (H, W) bool or None;
    ``pid``, ``camid``, ``sceneid`` (int or None), ``sample_id``; ``captions`` {rgb, nir, tir, fused: str or None};
    and any other requested column under its own name. Leaving the images, mask or captions out of ``columns``
    makes the entry None (cheaper when only ids are needed). Items come in shard order.
    """

    def __init__(
        self,
        shards_dir: Path,
        split: str | tuple[str, ...],
        columns: Iterable[str] = DEFAULT_COLUMNS,
        cache_row_groups: int = 4,
        index: ShardIndex | None = None,
    ) -> None:
        self.index = index if index is not None else ShardIndex.load(shards_dir)
        self.splits = (split,) if isinstance(split, str) else tuple(split)
        known = set(self.index.rows_per_split)
        unknown = [s for s in self.splits if s not in known]
        if not self.splits or unknown:
            raise ValueError(f"unknown split(s) {unknown or self.splits}; {self.index.root} has {sorted(known)}")
        requested = list(dict.fromkeys(columns))
        bad = [c for c in requested if c not in SHARD_SCHEMA.names]
        if bad:
            raise ValueError(f"unknown column(s) {bad}; the shard schema has {SHARD_SCHEMA.names}")
        present = [m for m in MODALITIES if m in requested]
        if present and len(present) != len(MODALITIES):
            raise ValueError(f"columns must hold all of {MODALITIES} or none of them, got {present}")
        self.columns = tuple(dict.fromkeys([*_KEY_COLUMNS, *requested]))
        if cache_row_groups < 1:
            raise ValueError(f"cache_row_groups must be >= 1, got {cache_row_groups}")
        self.cache_row_groups = cache_row_groups
        wanted = set(self.splits)
        groups, rows = [], []
        for number, group in enumerate(self.index.row_groups):
            for row, name in enumerate(group.splits):
                if name in wanted:
                    groups.append(number)
                    rows.append(row)
        self._group = np.asarray(groups, dtype=np.int64)  # (N,) row group of each item
        self._row = np.asarray(rows, dtype=np.int64)  # (N,) row inside it
        self.reads = 0  # row groups read from disk by this process (cache misses)
        self._reset()

    # Per-process state: open files and the cache are never pickled, and are dropped after a fork.
    def _reset(self) -> None:
        self._owner = os.getpid()
        self._files: dict[str, pq.ParquetFile] = {}
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._columns_cache: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_files", "_cache", "_columns_cache"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self._group)

    def subset(self, positions: Iterable[int] | np.ndarray) -> ShardDataset:
        """The items at ``positions`` (in that order) as a dataset of their own, sharing the index and columns.

        Used to hold rows out (a validation split taken from train); the splits named stay those of this dataset.
        """
        pos = np.asarray(list(positions) if not isinstance(positions, np.ndarray) else positions, dtype=np.int64)
        if pos.ndim != 1 or (len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(self))):
            raise IndexError(f"subset positions must be 1-d and in [0, {len(self)})")
        view = copy.copy(self)  # through __getstate__ / __setstate__: fresh files and caches
        view._group, view._row = self._group[pos], self._row[pos]  # (M,) each
        view.reads = 0
        return view

    def _file(self, name: str) -> pq.ParquetFile:
        """Shard ``name``, opened once per process; refused when it changed since ``ShardIndex.load`` verified it
        (a stat, no hashing, so DataLoader workers do not hash the shards again)."""
        if self._owner != os.getpid():
            self._reset()
        if name not in self._files:
            path = self.index.root / name
            stat = path.stat()
            verified = self.index.stats.get(name)
            if verified is not None and verified != (stat.st_size, stat.st_mtime_ns):
                raise ValueError(
                    f"{path} changed after it was verified against {INDEX_NAME} (size or modification time differ): "
                    "a build replaced the shards mid-run; restart on a finished set"
                )
            self._files[name] = pq.ParquetFile(path)
        return self._files[name]

    def _table(self, number: int) -> pa.Table:
        """Row group ``number`` (global), read once while it stays among the ``cache_row_groups`` latest."""
        if self._owner != os.getpid():
            self._reset()
        table = self._cache.get(number)
        if table is not None:
            self._cache.move_to_end(number)
            return table
        group = self.index.row_groups[number]
        table = self._file(group.file).read_row_group(group.row_group, columns=list(self.columns))
        self.reads += 1
        self._cache[number] = table
        while len(self._cache) > self.cache_row_groups:
            self._cache.popitem(last=False)
        return table

    def row(self, i: int) -> dict[str, Any]:
        """Item ``i`` as stored: every requested column's value, the images as their encoded bytes, the mask packed.

        For readers that decode elsewhere (``reidtrain.data.items.TrainItems``: torchvision in the DataLoader
        workers, or nvJPEG on the GPU); ``dataset[i]`` is this row decoded.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        table = self._table(int(self._group[i]))
        row = int(self._row[i])
        return {name: table.column(name)[row].as_py() for name in self.columns}

    def __getitem__(self, i: int) -> dict[str, Any]:
        values = self.row(i)
        h, w, fmt = values.pop("height"), values.pop("width"), values.pop("image_format")
        images = None
        if MODALITIES[0] in values:
            images = np.stack([decode_image(values.pop(m), fmt, h, w) for m in MODALITIES])  # (3, H, W, 3)
        mask = values.pop("mask", None)
        if mask is not None:
            mask = decode_mask(mask, h, w)  # (H, W) bool
        captions = {t: values.pop(f"caption_{t}", None) for t in CAPTION_TARGETS}
        return {"images": images, "mask": mask, "captions": captions, **values}

    def column(self, name: str) -> np.ndarray:
        """A light column (not an image) for every item, in item order; read once per process."""
        if name in MODALITIES or name == "mask":
            raise ValueError(f"column() reads id columns, not {name!r}; use dataset[i]")
        if name not in self._columns_cache:
            full = self._full_column(name)
            offsets = np.cumsum([0] + [g.rows for g in self.index.row_groups])[:-1]
            self._columns_cache[name] = full[offsets[self._group] + self._row]
        return self._columns_cache[name]

    def _full_column(self, name: str) -> np.ndarray:
        """``name`` for every row of the shard set, in shard order."""
        parts = [
            self._file(g.file).read_row_group(g.row_group, columns=[name]).column(name).to_numpy(zero_copy_only=False)
            for g in self.index.row_groups
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    @property
    def pids(self) -> np.ndarray:
        """(N,) int64 pid of every item, for ``PKSampler``."""
        return self.column("pid").astype(np.int64)

    @property
    def camids(self) -> np.ndarray:
        """(N,) int64 camid of every item."""
        return self.column("camid").astype(np.int64)

    def label_map(self, train_split: str = "train") -> LabelMap:
        """pid -> label over the ``train_split`` rows of the shard set (sorted pids), camid -> index over all rows.

        Both are computed on the whole shard set, whatever splits this dataset holds, so that a query dataset
        maps cameras like the training one.
        """
        split = np.asarray([s for g in self.index.row_groups for s in g.splits])
        pids = self._full_column("pid")
        if not (split == train_split).any():
            raise ValueError(f"{self.index.root} has no {train_split!r} rows to label")
        train_pids = sorted({int(p) for p in pids[split == train_split]})
        camids = sorted({int(c) for c in self._full_column("camid")})
        return LabelMap({p: i for i, p in enumerate(train_pids)}, {c: i for i, c in enumerate(camids)})

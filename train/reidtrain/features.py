"""Feature and distance files: what ``reidtrain embed`` and ``reidtrain eval --save-features / --save-distances``
write, for use outside this package.

Features: Parquet, one row per shard row, in shard order per split: ``sample_id``, ``split``, ``pid``, ``camid``,
``sceneid`` (null: none), ``feature`` (``fixed_size_list<float32>[D]``, the model's retrieval feature,
L2-normalised: cosine similarity is a dot product). The schema metadata ``reidtrain`` (JSON) says which checkpoint
(path, label, epoch, model, backbone), which shards (folder, fingerprint, protocol) and which modalities were absent.
:func:`read_features` gives it back as arrays.

Distances: the ``.npz`` that ``reidtrain rank`` scores: ``distmat`` (n_q, n_g) squared distance of unit vectors,
``q_pids``, ``g_pids``, ``q_camids``, ``g_camids``, ``protocol`` (and ``q_sceneids`` / ``g_sceneids`` under the
scene rule), plus ``dataset``, ``q_sample_ids``, ``g_sample_ids``.

Both are written atomically (``reidschemas.safeio.atomic_write``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reidschemas.safeio import atomic_write
from reidtrain.batch import shard_columns
from reidtrain.data.items import ShardItems
from reidtrain.data.shards import LabelMap, ShardDataset, ShardIndex
from reidtrain.evaluate import Ranking, evaluation_protocol, extract_features

if TYPE_CHECKING:
    from reidtrain.api import ReidModel

__all__ = [
    "METADATA_KEY",
    "EmbedResult",
    "embed_shards",
    "features_table",
    "ranking_features",
    "read_features",
    "save_distances",
    "write_features",
]

METADATA_KEY = b"reidtrain"
ID_COLUMNS = ("sample_id", "split", "pid", "camid", "sceneid")


def features_table(feats: np.ndarray, ids: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> pa.Table:
    """(N, D) features and the (N,) ``ID_COLUMNS`` arrays (sceneid < 0: none) -> the Parquet table."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    n, dim = feats.shape
    lengths = {name: len(ids[name]) for name in ID_COLUMNS}
    if any(length != n for length in lengths.values()):
        raise ValueError(f"features_table: {n} features but id columns of lengths {lengths}")
    sceneids = np.asarray(ids["sceneid"], dtype=np.int64)
    columns = {
        "sample_id": pa.array(list(ids["sample_id"]), pa.string()),
        "split": pa.array(list(ids["split"]), pa.string()),
        "pid": pa.array(np.asarray(ids["pid"], dtype=np.int64)),
        "camid": pa.array(np.asarray(ids["camid"], dtype=np.int64)),
        "sceneid": pa.array(sceneids, mask=sceneids < 0),
        "feature": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), dim),  # (N,) lists of D
    }
    table = pa.table(columns)
    meta = {METADATA_KEY: json.dumps({**metadata, "dim": dim, "normalised": "L2"}).encode()}
    return table.replace_schema_metadata(meta)


def write_features(path: Path, table: pa.Table) -> Path:
    """Write ``table`` (:func:`features_table`) to ``path`` atomically (zstd)."""
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, compression="zstd"), needed=table.nbytes)
    return Path(path)


def read_features(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(``feature`` (N, D) float32 and the id columns as arrays, sceneid -1 where null; the metadata)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a features file of reidtrain (no {METADATA_KEY.decode()} metadata)")
    metadata = json.loads(raw)
    column = table.column("feature").combine_chunks()
    arrays = {
        "feature": column.flatten().to_numpy().reshape(len(table), metadata["dim"]),
        "sample_id": np.asarray(table.column("sample_id").to_pylist()),
        "split": np.asarray(table.column("split").to_pylist()),
        "pid": table.column("pid").to_numpy(),
        "camid": table.column("camid").to_numpy(),
        "sceneid": table.column("sceneid").fill_null(-1).to_numpy(),
    }
    return arrays, metadata


def _shards_metadata(index: ShardIndex) -> dict[str, Any]:
    protocol, dataset = evaluation_protocol(index)
    return {
        "shards": str(index.root),
        "dataset_fingerprint": index.info.get("fingerprint"),
        "protocol": protocol,
        "dataset": dataset,
    }


def ranking_features(ranking: Ranking, metadata: Mapping[str, Any]) -> pa.Table:
    """The query and gallery features of ``ranking`` (``rank_gallery``'s) as one table, query rows first."""
    if ranking.query_feats is None or ranking.gallery_feats is None:
        raise ValueError("this ranking holds no features (made before rank_gallery kept them)")
    parts = (("query", ranking.query, ranking.query_set), ("gallery", ranking.gallery, ranking.gallery_set))
    ids = {
        "sample_id": np.concatenate([rows.column("sample_id") for _, _, rows in parts]),
        "split": np.concatenate([np.full(len(arrays["pids"]), name) for name, arrays, _ in parts]),
        "pid": np.concatenate([arrays["pids"] for _, arrays, _ in parts]),
        "camid": np.concatenate([arrays["camids"] for _, arrays, _ in parts]),
        "sceneid": np.concatenate([arrays["sceneids"] for _, arrays, _ in parts]),
    }
    feats = np.concatenate([ranking.query_feats, ranking.gallery_feats])  # (n_q + n_g, D)
    return features_table(feats, ids, {**_shards_metadata(ranking.query_set.index), **metadata})


def save_distances(path: Path, ranking: Ranking) -> Path:
    """Write ``ranking``'s distances with the ids and protocol ``reidtrain rank`` reads, atomically."""
    q, g = ranking.query, ranking.gallery
    arrays: dict[str, Any] = {
        "distmat": ranking.distmat,
        "q_pids": q["pids"],
        "g_pids": g["pids"],
        "q_camids": q["camids"],
        "g_camids": g["camids"],
        **ranking.scene_arrays,  # q_sceneids / g_sceneids under the scene rule only
        "protocol": np.asarray(ranking.protocol),
        "dataset": np.asarray(ranking.dataset),
        "q_sample_ids": np.asarray(ranking.query_set.column("sample_id"), dtype=str),
        "g_sample_ids": np.asarray(ranking.gallery_set.column("sample_id"), dtype=str),
    }

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle: np.savez would append ".npz" to the temporary name
            np.savez(handle, **arrays)

    atomic_write(Path(path), write, needed=ranking.distmat.nbytes)
    return Path(path)


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_shards` computed."""

    table: pa.Table
    rows: dict[str, int]  # rows per split
    unseen_cameras: dict[int, int]  # camid -> rows embedded with the default camera (not seen in training)


def _camera_map(model: ReidModel, index: ShardIndex, echo: Callable[[str], None]) -> tuple[dict[int, int], dict]:
    """camid -> SIE index for every camid of the shard set: the checkpoint's numbering, unseen cameras on the
    default (:data:`reidtrain.api.DEFAULT_CAMERA_INDEX`); (map, the unseen camids)."""
    rows = ShardDataset(index.root, tuple(index.rows_per_split), columns=(), index=index)
    camids = sorted({int(c) for c in rows.camids})
    if model.camera_ids is None:
        echo(f"camera ids: the checkpoint does not record them; numbering {index.root}'s cameras {camids} in order")
        return {c: i for i, c in enumerate(camids)}, {}
    mapping = {c: model.camera_index(c)[0] for c in camids}
    unseen = {c for c in camids if c not in model.camera_ids}
    return mapping, {c: model.camera_index(c)[1] for c in unseen}


def embed_shards(
    model: ReidModel,
    shards: Path,
    splits: Sequence[str],
    missing: Sequence[str] = (),
    num_workers: int = 0,
    echo: Callable[[str], None] = print,
    metadata: Mapping[str, Any] | None = None,
) -> EmbedResult:
    """Features of every row of ``splits`` of ``shards`` with ``model`` (the eval transform and forward pass of
    ``reidtrain eval``), as a :func:`features_table`; ``metadata`` is added to the file's."""
    index = ShardIndex.load(Path(shards))
    cameras, unseen_notes = _camera_map(model, index, echo)
    labels = LabelMap({}, cameras)
    columns = shard_columns(model.inputs)
    feats, ids, rows, unseen = [], {name: [] for name in ID_COLUMNS}, {}, {}  # type: ignore[var-annotated]
    for split in dict.fromkeys(splits):
        dataset = ShardDataset(index.root, split, columns=columns, index=index)
        items = ShardItems(dataset, model.transform, labels, model.inputs)
        out = extract_features(model.network, items, model.device, missing, num_workers=num_workers)
        feats.append(out["feats"])
        ids["sample_id"].append(dataset.column("sample_id"))
        ids["split"].append(np.full(len(dataset), split))
        ids["pid"].append(out["pids"])
        ids["camid"].append(out["camids"])
        ids["sceneid"].append(out["sceneids"])
        rows[split] = len(dataset)
        for camid in out["camids"]:
            if int(camid) in unseen_notes:
                unseen[int(camid)] = unseen.get(int(camid), 0) + 1
    for camid, count in sorted(unseen.items()):
        echo(f"{count} rows: {unseen_notes[camid]}")
    record = {
        **_shards_metadata(index),
        "checkpoint": str(model.checkpoint),
        "epoch": model.epoch,
        "model": model.name,
        "backbone": model.config.get("backbone"),
        "missing": list(missing),
        "splits": list(rows),
        **(metadata or {}),
    }
    flat = {name: np.concatenate(parts) for name, parts in ids.items()}
    return EmbedResult(features_table(np.concatenate(feats), flat, record), rows, unseen)


def embed_run(
    out: Path,
    run: Path | None = None,
    checkpoint: str = "best",
    shards: Path | None = None,
    splits: Sequence[str] = ("query", "gallery"),
    missing: Sequence[str] = (),
    device: str = "cpu",
    num_workers: int = 0,
    echo: Callable[[str], None] = print,
) -> EmbedResult:
    """``reidtrain embed``: ``run``'s checkpoint (last, best or a file, which needs no run) embeds ``splits`` of
    ``shards`` (default: the run's) into the Parquet file ``out``."""
    from reidtrain.api import load
    from reidtrain.evaluate import resolve_checkpoint
    from reidtrain.run_eval import best_label

    if run is None and checkpoint in ("last", "best"):
        raise ValueError(f"--checkpoint {checkpoint} needs --run RUN (or pass --checkpoint FILE)")
    path = resolve_checkpoint(Path(run or "."), checkpoint)  # a file when there is no run
    label = best_label(path) if checkpoint == "best" else checkpoint
    model = load(path, device=device, echo=echo)
    shards_dir = Path(shards) if shards is not None else Path(model.config["shards"])
    if not shards_dir.is_dir():
        raise FileNotFoundError(f"shards folder {shards_dir} does not exist; pass --shards")
    result = embed_shards(model, shards_dir, splits, missing, num_workers, echo, {"checkpoint_label": label})
    write_features(out, result.table)
    return result

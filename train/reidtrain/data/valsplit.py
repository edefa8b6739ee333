"""A validation split held out of train: ``fit --val-ids N`` chooses ``best.pt`` on it instead of on the test set.

The rule (README, Trainer):

- *Which ids.* N training identities drawn uniformly, without replacement, by ``numpy.random.default_rng([seed,
  VAL_STREAM])`` from the *eligible* ids in ascending order: ids seen by at least two cameras and, when their rows
  carry a scene id, in at least two scenes, so every query has a true match under the camera rule and under the
  scene rule alike. The same (seed, N, shard set) always gives the same ids.
- *Query and gallery*, as RGBNT201's test protocol (query drawn from the gallery): the gallery is every row of the
  held-out ids; the queries are, per held-out id and camera, its first row in shard order. A query's own row is
  in the gallery and is removed by either removal rule (same id and camera, or same id and scene).
- *Train* keeps the rows of the other ids, and the classifier's classes are those ids only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidtrain.data.shards import LabelMap, ShardDataset

__all__ = ["VAL_STREAM", "ValSplit", "choose_val_ids", "split_val", "train_labels"]

VAL_STREAM = 0x7A1  # the seed stream of the held-out ids (distinct from model init and PK order)


@dataclass(frozen=True)
class ValSplit:
    """The held-out ids and the three datasets made from the train rows."""

    pids: tuple[int, ...]  # held-out ids, ascending
    train: ShardDataset  # train rows of the other ids
    query: ShardDataset  # per held-out id and camera, its first row
    gallery: ShardDataset  # every row of the held-out ids


def choose_val_ids(train_rows: ShardDataset, n: int, seed: int, min_train_ids: int = 1) -> tuple[int, ...]:
    """N eligible training ids (module docstring), ascending; ValueError when the data cannot give them.

    ``min_train_ids``: ids that must stay in train (a PK batch needs ``ids_per_batch`` distinct ids).
    """
    if n < 1:
        raise ValueError(f"--val-ids must be >= 1 to hold ids out, got {n}")
    pids = train_rows.pids  # (N_rows,)
    cams = train_rows.camids  # (N_rows,)
    scene_column = np.asarray(train_rows.column("sceneid"), dtype=np.float64)  # (N_rows,) NaN: no scene
    scenes = np.where(np.isnan(scene_column), -1, scene_column).astype(np.int64)  # (N_rows,) -1: no scene
    ids = sorted({int(p) for p in pids})
    eligible = []
    for pid in ids:
        mine = pids == pid
        seen = scenes[mine]
        enough_scenes = (seen < 0).any() or len(set(seen.tolist())) >= 2
        if len(set(cams[mine].tolist())) >= 2 and enough_scenes:
            eligible.append(pid)
    if len(ids) - n < min_train_ids:
        raise ValueError(
            f"--val-ids {n} leaves {len(ids) - n} of {len(ids)} training ids; a PK batch needs {min_train_ids}: "
            "hold out fewer ids"
        )
    if len(eligible) < n:
        raise ValueError(
            f"--val-ids {n}: only {len(eligible)} of {len(ids)} training ids are seen by two or more cameras "
            "(and scenes), which a validation query needs for a true match; hold out fewer ids"
        )
    rng = np.random.default_rng([seed, VAL_STREAM])
    return tuple(sorted(int(p) for p in rng.choice(eligible, n, replace=False)))


def split_val(train_rows: ShardDataset, val_pids: tuple[int, ...]) -> ValSplit:
    """``train_rows`` (the whole train split) cut into train / val query / val gallery for ``val_pids``."""
    pids, cams = train_rows.pids, train_rows.camids  # (N_rows,) each
    held = np.isin(pids, np.asarray(val_pids, dtype=np.int64))  # (N_rows,) bool
    first: dict[tuple[int, int], int] = {}
    for position in np.flatnonzero(held).tolist():
        first.setdefault((int(pids[position]), int(cams[position])), position)
    query = sorted(first.values())
    return ValSplit(
        tuple(sorted(val_pids)),
        train_rows.subset(np.flatnonzero(~held)),
        train_rows.subset(query),
        train_rows.subset(np.flatnonzero(held)),
    )


def train_labels(labels: LabelMap, val_pids: tuple[int, ...]) -> LabelMap:
    """``labels`` without the held-out ids: contiguous class labels over the remaining training ids."""
    held = set(val_pids)
    kept = sorted(p for p in labels.pid_to_label if p not in held)
    return LabelMap({p: i for i, p in enumerate(kept)}, dict(labels.camid_to_index))

"""The validation split of ``fit --val-ids``: which ids are held out, and how their rows become query and gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidtrain.data.shards import ShardDataset
from reidtrain.data.valsplit import choose_val_ids, split_val, train_labels


def _rows(full_shards: Path) -> ShardDataset:
    return ShardDataset(full_shards, "train", columns=())


def test_held_out_ids_are_seeded_eligible_training_ids(full_shards: Path) -> None:
    rows = _rows(full_shards)
    pids, cams = rows.pids, rows.camids
    ids = sorted(set(pids.tolist()))
    chosen = {seed: choose_val_ids(rows, 2, seed, min_train_ids=2) for seed in range(8)}
    for seed, held in chosen.items():
        assert held == choose_val_ids(_rows(full_shards), 2, seed, min_train_ids=2)  # deterministic
        assert len(held) == 2 and list(held) == sorted(set(held)) and set(held) <= set(ids)
        for pid in held:
            assert len(set(cams[pids == pid].tolist())) >= 2  # a query has a cross-camera match
    assert len(set(chosen.values())) > 1  # the seed chooses


def test_too_many_held_out_ids_are_refused(full_shards: Path) -> None:
    rows = _rows(full_shards)
    n_ids = len(set(rows.pids.tolist()))
    choose_val_ids(rows, n_ids - 4, 0, min_train_ids=4)
    with pytest.raises(ValueError, match="hold out fewer"):
        choose_val_ids(rows, n_ids - 3, 0, min_train_ids=4)
    with pytest.raises(ValueError, match=">= 1"):
        choose_val_ids(rows, 0, 0)


def test_split_rows_query_gallery_and_train(full_shards: Path) -> None:
    rows = _rows(full_shards)
    held = choose_val_ids(rows, 3, 1, min_train_ids=1)
    split = split_val(rows, held)
    sid, pids, cams = rows.column("sample_id").tolist(), rows.pids.tolist(), rows.camids.tolist()
    expected_gallery = [s for s, p in zip(sid, pids, strict=True) if p in held]
    expected_query, seen = [], set()
    for s, p, c in zip(sid, pids, cams, strict=True):  # the first row of every (held id, camera), in shard order
        if p in held and (p, c) not in seen:
            seen.add((p, c))
            expected_query.append(s)
    assert split.gallery.column("sample_id").tolist() == expected_gallery
    assert split.query.column("sample_id").tolist() == expected_query
    train_ids = split.train.column("sample_id").tolist()
    assert not set(split.train.pids.tolist()) & set(held)
    assert sorted(train_ids + expected_gallery) == sorted(sid)
    g_pids, g_cams = split.gallery.pids, split.gallery.camids
    for p, c in zip(split.query.pids, split.query.camids, strict=True):
        assert ((g_pids == p) & (g_cams != c)).any()  # every query keeps a true match under the camera rule
    labels = train_labels(rows.label_map(), held)
    assert sorted(labels.pid_to_label) == sorted(set(split.train.pids.tolist()))
    assert sorted(labels.pid_to_label.values()) == list(range(labels.num_classes))
    assert labels.camid_to_index == rows.label_map().camid_to_index


def test_subset_reads_the_same_items(full_shards: Path) -> None:
    rows = ShardDataset(full_shards, ("query", "gallery"), columns=("caption_fused",))
    positions = np.asarray([5, 0, len(rows) - 1, 5])
    part = rows.subset(positions)
    assert len(part) == 4 and part.splits == rows.splits
    for j, i in enumerate(positions.tolist()):
        a, b = part[j], rows[i]
        assert (a["sample_id"], a["pid"], a["captions"]) == (b["sample_id"], b["pid"], b["captions"])
    assert part.pids.tolist() == rows.pids[positions].tolist()
    with pytest.raises(IndexError):
        rows.subset([len(rows)])

"""``reidtrain.data.PKSampler``: batch structure, coverage, determinism per (seed, epoch), DDP splits, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reidtrain.data.sampler import PKSampler

# 9 identities with 1 to 13 samples each, interleaved in dataset order.
COUNTS = {10: 13, 11: 8, 12: 5, 13: 4, 14: 3, 15: 1, 16: 7, 17: 2, 18: 9}
PIDS = np.random.default_rng(0).permutation([pid for pid, n in COUNTS.items() for _ in range(n)])


def _check_batch(batch: np.ndarray, pids: np.ndarray, p: int, k: int) -> None:
    assert batch.shape == (p * k,)
    groups = batch.reshape(p, k)  # (P, K): one identity per row
    ids = [set(pids[g].tolist()) for g in groups]
    assert all(len(s) == 1 for s in ids), "each group of k holds one identity"
    assert len({s.pop() for s in ids}) == p, "p distinct identities"


@pytest.mark.parametrize(("p", "k"), [(3, 4), (4, 2), (9, 1), (2, 16)])
def test_batches_are_p_ids_by_k_and_cover_every_sample(p: int, k: int) -> None:
    sampler = PKSampler(PIDS, p=p, k=k, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        assert len(batches) == sampler.num_batches_epoch
        assert len(sampler) == len(batches) * p * k == len(list(sampler))
        for batch in batches:
            _check_batch(batch, PIDS, p, k)
        assert set(np.concatenate(batches).tolist()) == set(range(len(PIDS))), "every sample at least once"


def test_ids_with_fewer_than_k_samples_are_drawn_with_replacement() -> None:
    sampler = PKSampler(PIDS, p=3, k=4, seed=0)
    flat = np.concatenate(sampler.batches())
    single = int(np.flatnonzero(PIDS == 15)[0])  # the identity with one sample
    assert Counter(flat.tolist())[single] >= 4
    for batch in sampler.batches():
        for group in batch.reshape(3, 4):
            if PIDS[group[0]] == 15:
                assert (group == single).all()


def test_deterministic_per_seed_and_epoch() -> None:
    a = PKSampler(PIDS, p=3, k=4, seed=5)
    b = PKSampler(PIDS, p=3, k=4, seed=5)
    orders = {}
    for epoch in (0, 1, 2):
        a.set_epoch(epoch)
        orders[epoch] = list(a)
        assert list(a) == orders[epoch], "iterating twice gives the same order"
    for epoch in (2, 0, 1):  # call history does not matter
        b.set_epoch(epoch)
        assert list(b) == orders[epoch]
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert list(PKSampler(PIDS, p=3, k=4, seed=6)) != orders[0]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_ranks_are_disjoint_equal_and_cover_the_epoch(world_size: int, drop_last: bool) -> None:
    p, k = 3, 2
    ranks = [
        PKSampler(PIDS, p, k, seed=1, rank=r, world_size=world_size, drop_last=drop_last) for r in range(world_size)
    ]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [s.batches() for s in ranks]
        assert len({len(b) for b in per_rank}) == 1, "every rank the same number of batches"
        assert all(len(s) == len(per_rank[0]) * p * k == len(list(s)) for s in ranks)
        for batches in per_rank:
            for batch in batches:
                _check_batch(batch, PIDS, p, k)
        # Ranks take distinct batches of the same epoch: no batch is used twice.
        epoch_batches = ranks[0].epoch_batches()
        taken = [tuple(b.tolist()) for batches in per_rank for b in batches]
        positions = [
            next(i for i, e in enumerate(epoch_batches) if np.array_equal(e, b))
            for batches in per_rank
            for b in batches
        ]
        assert len(set(positions)) == len(taken)
        single = PKSampler(PIDS, p, k, seed=1, drop_last=drop_last)
        single.set_epoch(epoch)
        b = single.num_batches_epoch
        if drop_last:
            assert len(taken) == b // world_size * world_size
            assert len(single.epoch_batches()) == b
        else:
            assert len(taken) == -(-b // world_size) * world_size >= b
            union = set(np.concatenate([b for batches in per_rank for b in batches]).tolist())
            assert union == set(range(len(PIDS))), "the union of the ranks covers every sample"


def test_ddp_without_drop_last_builds_the_single_process_epoch_plus_padding() -> None:
    single = PKSampler(PIDS, p=3, k=2, seed=4, drop_last=False)
    two = [PKSampler(PIDS, p=3, k=2, seed=4, rank=r, world_size=2, drop_last=False) for r in range(2)]
    assert sum(len(s) for s in two) >= len(single)
    assert len(two[0]) == len(two[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 0}, "p and k must be >= 1"),
        ({"k": 0}, "p and k must be >= 1"),
        ({"p": 10}, "p=10 distinct identities, the data have 9"),
        ({"world_size": 0}, "world_size must be >= 1"),
        ({"rank": 2, "world_size": 2}, r"rank must be in \[0, 2\)"),
        ({"rank": -1}, "rank must be in"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"pids": []}, "non-empty"),
        ({"world_size": 1000}, "fewer than world_size=1000"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"pids": PIDS, "p": 3, "k": 4, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        PKSampler(**args)

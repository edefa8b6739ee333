"""PK sampling: batches of P identities x K instances, deterministic per (seed, epoch), split across DDP ranks.

Definitions.

- A *chunk* is K dataset indices of one identity. Each epoch, an identity's samples are shuffled and cut into
  ceil(n / K) chunks; a last partial chunk is completed with other samples of the same identity (drawn without
  replacement), and an identity with fewer than K samples gives one chunk holding all of them plus K - n drawn with
  replacement (as the reference repos' ``RandomIdentitySampler`` does).
- An *epoch* is every chunk of every identity placed once into batches of P chunks of P distinct identities. So
  each identity's samples are all covered at least once per epoch. The number of batches is
  B = max(ceil(C / P), max chunks of one identity), C the number of chunks: it depends on the labels, P and K only,
  not on the epoch. Slots left over in the last batches are filled with extra chunks of identities not already in
  the batch.
- Under DDP (``world_size`` > 1) every rank builds the same epoch and takes batches ``rank, rank + W, ...``: ranks
  get disjoint batches and the same number of them. With ``drop_last=False`` the epoch is first padded with extra
  batches (fresh chunks, as above) up to a multiple of W, so the union of the ranks covers every sample; with
  ``drop_last=True`` (default) the last B mod W batches of the shuffled epoch are dropped instead (different ones
  each epoch).
- ``set_epoch(e)`` and ``seed`` fully determine the order; call it before each epoch, as with ``DistributedSampler``.

The sampler yields flat indices; use ``DataLoader(dataset, batch_size=p * k, sampler=sampler)``, or
``batch_sampler=sampler.batch_sampler()`` to get the batches as lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["PKSampler"]


class PKSampler(Sampler[int]):
    """Dataset indices in batches of ``p`` identities x ``k`` instances (definitions in the module docstring)."""

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        labels = np.asarray(pids)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("pids must be a non-empty 1-d sequence (one pid per dataset index)")
        ids, inverse = np.unique(labels, return_inverse=True)
        if len(ids) < p:
            raise ValueError(f"a batch needs p={p} distinct identities, the data have {len(ids)}")
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        self._members = np.split(order, bounds)  # per identity: its dataset indices, ascending
        chunks = [max(1, math.ceil(len(m) / k)) for m in self._members]
        self.chunks_per_epoch = sum(chunks)
        self.num_batches_epoch = max(math.ceil(self.chunks_per_epoch / p), max(chunks))  # B, before DDP
        if drop_last:
            self.num_batches = self.num_batches_epoch // world_size
            if self.num_batches == 0:
                raise ValueError(
                    f"an epoch has {self.num_batches_epoch} batches, fewer than world_size={world_size}: "
                    "use drop_last=False or smaller p, k"
                )
        else:
            self.num_batches = math.ceil(self.num_batches_epoch / world_size)
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.p * self.k

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch.tolist()

    def batches(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch, each (p * k,) indices: k of one identity, then the next."""
        epoch = self.epoch_batches()
        return epoch[self.rank : self.num_batches * self.world_size : self.world_size]

    def batch_sampler(self) -> _Batches:
        """This rank's batches as lists, for ``DataLoader(batch_sampler=...)`` (one epoch per call)."""
        return _Batches(self)

    def epoch_batches(self) -> list[np.ndarray]:
        """All ranks' batches of the current epoch, in order (padded to a multiple of W unless ``drop_last``)."""
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self._build(self.epoch))
        return self._cached[1]

    def _chunk(self, rng: np.random.Generator, identity: int) -> np.ndarray:
        """One fresh chunk of ``identity``: (k,) indices."""
        members = self._members[identity]
        return rng.choice(members, self.k, replace=len(members) < self.k)

    def _build(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        p, k = self.p, self.k
        chunks: list[tuple[int, np.ndarray]] = []  # (identity, (k,) indices), identities in random order
        for identity in rng.permutation(len(self._members)):
            members = rng.permutation(self._members[identity])
            n = len(members)
            if n < k:
                chunks.append((identity, np.concatenate([members, rng.choice(members, k - n, replace=True)])))
                continue
            for start in range(0, n, k):
                part = members[start : start + k]
                if len(part) < k:
                    part = np.concatenate([part, rng.choice(members[:start], k - len(part), replace=False)])
                chunks.append((identity, part))
        total = self.num_batches_epoch
        if not self.drop_last:
            total = math.ceil(total / self.world_size) * self.world_size
        # Column-wise fill: an identity's chunks are consecutive and at most `total`, so they land in distinct batches.
        slots: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(total)]
        for position, chunk in enumerate(chunks):
            slots[position % total].append(chunk)
        everyone = np.arange(len(self._members))
        batches = []
        for slot in slots:
            if len(slot) < p:
                free = np.setdiff1d(everyone, [identity for identity, _ in slot])
                for identity in rng.choice(free, p - len(slot), replace=False):
                    slot.append((int(identity), self._chunk(rng, int(identity))))
            batches.append(np.concatenate([slot[j][1] for j in rng.permutation(p)]))  # (p * k,)
        return [batches[j] for j in rng.permutation(total)]


class _Batches:
    """``batch_sampler`` view of a PKSampler: lists of p * k indices."""

    def __init__(self, sampler: PKSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return self.sampler.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler.batches():
            yield batch.tolist()

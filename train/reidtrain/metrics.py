"""Retrieval metrics for re-identification: CMC, mAP and mINP from a query x gallery distance matrix.

The protocol is the one of torchreid's ``eval_market1501`` (used by DeMo, MambaPro, TOP-ReID), computed for all
queries at once instead of in a Python loop, plus mINP (Ye et al., "Deep learning for person re-identification:
a survey and outlook", 2021) and MSVR310's scene rule.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RankResult", "evaluate_rank", "expected_random_map"]

# Queries are scored in chunks of at most this many query x gallery cells, so that one chunk's int64 sort
# indices take at most 128 MB (its other per-cell arrays are int8 and bool, its sorted distances <= 8 bytes a cell).
_CHUNK_CELLS = 2**24


@dataclass(frozen=True, eq=False)
class RankResult:
    """What :func:`evaluate_rank` returns.

    ``cmc[k - 1]`` is the rank-k accuracy (fraction of valid queries with a true match in the top k). ``mAP`` and
    ``mINP`` are fractions in [0, 1], averaged over the valid queries. A query is valid when at least one true
    match survives the removal rule; the others are skipped and counted in ``num_skipped_queries``.

    Unpacks like a tuple of its fields, in order: ``cmc, mAP, mINP, n_valid, n_skipped = result``.
    ``str(result)`` is a one-line summary; ``to_dict()`` gives flat numbers for a metrics file.
    """

    cmc: np.ndarray  # (max_rank,) float64, read-only
    mAP: float
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.cmc, self.mAP, self.mINP, self.num_valid_queries, self.num_skipped_queries))

    def rank(self, k: int) -> float:
        """Rank-k accuracy, ``cmc[k - 1]`` (k is 1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank k must be in [1, {len(self.cmc)}], got {k}")
        return float(self.cmc[k - 1])

    def to_dict(self, ranks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float | int]:
        """Flat metrics: mAP, mINP, ``rank{k}`` for each k <= max_rank, and the two query counts."""
        out: dict[str, float | int] = {"mAP": self.mAP, "mINP": self.mINP}
        out.update({f"rank{k}": self.rank(k) for k in ranks if 1 <= k <= len(self.cmc)})
        out.update(num_valid_queries=self.num_valid_queries, num_skipped_queries=self.num_skipped_queries)
        return out

    def __str__(self) -> str:
        ranks = "  ".join(f"R{k} {100 * self.rank(k):.2f}" for k in (1, 5, 10) if k <= len(self.cmc))
        return (
            f"mAP {100 * self.mAP:.2f}  mINP {100 * self.mINP:.2f}  {ranks}  "
            f"({self.num_valid_queries} queries, {self.num_skipped_queries} skipped)"
        )


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of ``x``: a torch tensor is detached and moved to the CPU first."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _vector(x: Any, name: str, length: int, length_of: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1 or len(arr) != length:
        raise ValueError(f"{name} must be 1-D with one entry per {length_of} ({length}), got shape {arr.shape}")
    return arr


def _codes_in_rank_order(dist: np.ndarray, code: np.ndarray) -> np.ndarray:
    """``code`` with each row reordered by ascending ``dist``, ties broken by column (a stable sort).

    The result equals ``np.take_along_axis(code, np.argsort(dist, axis=1, kind="stable"), axis=1)``, about twice
    as fast: rows are sorted with numpy's faster unstable sort, which can only differ from the stable sort inside
    runs of equal distances; such a run changes the codes only if it mixes different codes, and only those rows
    are sorted again with the stable sort.
    """
    # dist, code: (c, n_g)
    order = np.argsort(dist, axis=1)  # (c, n_g) int64
    code_sorted = np.take_along_axis(code, order, axis=1)  # (c, n_g) int8
    dist_sorted = np.take_along_axis(dist, order, axis=1)  # (c, n_g)
    mixed_tie = (dist_sorted[:, 1:] == dist_sorted[:, :-1]) & (code_sorted[:, 1:] != code_sorted[:, :-1])
    redo = np.flatnonzero(mixed_tie.any(axis=1))
    if redo.size:
        order[redo] = np.argsort(dist[redo], axis=1, kind="stable")
        code_sorted[redo] = np.take_along_axis(code[redo], order[redo], axis=1)
    return code_sorted


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    q_sceneids: Any = None,
    g_sceneids: Any = None,
) -> RankResult:
    """CMC, mAP and mINP of a query x gallery distance matrix (smaller distance = more similar).

    Args:
        distmat: (n_q, n_g) real distances, numpy array or torch tensor; NaN is rejected.
        q_pids, g_pids: (n_q,), (n_g,) identity labels.
        q_camids, g_camids: (n_q,), (n_g,) camera labels.
        max_rank: length of the returned CMC curve.
        q_sceneids, g_sceneids: (n_q,), (n_g,) scene labels, both or neither. When given, the MSVR310 rule applies.

    For each query the gallery is sorted by ascending distance; **ties are broken by gallery order** (the result
    is that of ``np.argsort(kind="stable")``: of two equally distant items, the one with the lower gallery index
    ranks first). Then the gallery items with the query's id *and* camera are removed (with scene ids: the same
    id *and* scene, cameras ignored). A query with no true match left is skipped and counted.

    Per valid query, over the remaining ranked list with true matches at 1-based ranks r_1 < ... < r_m:
    CMC(k) = 1 if r_1 <= k else 0 (so a list shorter than ``max_rank`` is padded with its last value, 1);
    AP = (1/m) * sum_j j / r_j (precision at each true match); INP = m / r_m. All three are averaged over valid
    queries, which matches torchreid's ``eval_market1501`` (plus mINP, as in the AGW code).

    Raises:
        ValueError: on malformed inputs (shapes, NaN, non-numeric distances, one of the scene arrays only,
            ``max_rank < 1``) or when no query has a valid match.
    """
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {dist.shape}")
    if dist.dtype.kind not in "iuf":
        raise ValueError(f"distmat must hold real numbers, got dtype {dist.dtype}")
    if dist.dtype.kind == "f" and np.isnan(dist).any():
        raise ValueError(f"distmat contains {int(np.isnan(dist).sum())} NaN value(s)")
    n_q, n_g = dist.shape
    max_rank = operator.index(max_rank)
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    q_pids = _vector(q_pids, "q_pids", n_q, "query (distmat rows)")
    g_pids = _vector(g_pids, "g_pids", n_g, "gallery item (distmat columns)")
    q_cams = _vector(q_camids, "q_camids", n_q, "query (distmat rows)")
    g_cams = _vector(g_camids, "g_camids", n_g, "gallery item (distmat columns)")
    if (q_sceneids is None) != (g_sceneids is None):
        raise ValueError("give both q_sceneids and g_sceneids (MSVR310 rule) or neither (camera rule)")
    if q_sceneids is None:
        q_group, g_group = q_cams, g_cams
    else:
        q_group = _vector(q_sceneids, "q_sceneids", n_q, "query (distmat rows)")
        g_group = _vector(g_sceneids, "g_sceneids", n_g, "gallery item (distmat columns)")

    first_ranks, aps, inps = [], [], []
    step = max(1, _CHUNK_CELLS // max(n_g, 1))
    for start in range(0, n_q, step):  # chunks of queries, to bound memory
        rows = slice(start, start + step)
        same_id = q_pids[rows, None] == g_pids[None, :]  # (c, n_g)
        same_group = q_group[rows, None] == g_group[None, :]  # (c, n_g)
        # 0: other id, 1: true match, 2: removed (same id and same camera / scene)
        code = same_id.astype(np.int8) + (same_id & same_group)  # (c, n_g) int8
        code_sorted = _codes_in_rank_order(dist[rows], code)  # (c, n_g)
        # Rank of each true match within its query's list once removed items are taken out:
        # its sorted position + 1, minus the removed items sorted before it in the same row.
        m_row, m_col = np.nonzero(code_sorted == 1)  # (M,) each, row-major: rows ascending, columns within
        r_row, r_col = np.nonzero(code_sorted == 2)  # (R,)
        removed_key = r_row * n_g + r_col  # (R,) sorted ascending
        match_key = m_row * n_g + m_col  # (M,)
        removed_before = np.searchsorted(removed_key, match_key) - np.searchsorted(removed_key, m_row * n_g)
        ranks = m_col + 1 - removed_before  # (M,) 1-based ranks, ascending within each row

        num_rel = np.bincount(m_row, minlength=code_sorted.shape[0])  # (c,)
        valid = num_rel > 0
        first = np.cumsum(num_rel) - num_rel  # (c,) index into the M matches of each row's first match
        hits_so_far = np.arange(len(m_row)) - first[m_row] + 1  # (M,) j for the j-th match of its row
        ap_sum = np.bincount(m_row, weights=hits_so_far / ranks, minlength=len(num_rel))  # (c,)
        first_ranks.append(ranks[first[valid]])
        aps.append(ap_sum[valid] / num_rel[valid])
        inps.append(num_rel[valid] / ranks[first[valid] + num_rel[valid] - 1])

    first_rank = np.concatenate(first_ranks) if first_ranks else np.zeros(0, dtype=np.int64)  # (n_valid,)
    n_valid = len(first_rank)
    if n_valid == 0:
        rule = "id and scene" if q_sceneids is not None else "id and camera"
        raise ValueError(
            f"no valid query: none of the {n_q} queries has a true match in the {n_g}-item gallery "
            f"once items with the same {rule} are removed"
        )
    # CMC: the fraction of valid queries whose first true match is at rank <= k.
    hist = np.bincount(np.minimum(first_rank, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist) / n_valid  # (max_rank,)
    cmc.setflags(write=False)
    return RankResult(
        cmc=cmc,
        mAP=float(np.mean(np.concatenate(aps))),
        mINP=float(np.mean(np.concatenate(inps))),
        num_valid_queries=n_valid,
        num_skipped_queries=n_q - n_valid,
    )


def expected_random_map(
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    q_sceneids: Any = None,
    g_sceneids: Any = None,
) -> float:
    """The exact expected mAP of a uniformly random ranking under :func:`evaluate_rank`'s protocol (chance level).

    Per valid query with n gallery items left after the removal rule and m true matches among them, a true match
    at rank r (uniform on 1..n) has on average (r - 1)(m - 1)/(n - 1) other matches above it, so
    E[AP] = (1/n) * sum_r [1/r + (m - 1)/(n - 1) * (r - 1)/r] = (H_n + (m - 1)(n - H_n)/(n - 1)) / n,
    with H_n the n-th harmonic number (E[AP] = 1 when n = 1). Averaged over the valid queries, as the mAP is.
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    if (q_sceneids is None) != (g_sceneids is None):
        raise ValueError("give both q_sceneids and g_sceneids (MSVR310 rule) or neither (camera rule)")
    q_group = np.asarray(q_camids if q_sceneids is None else q_sceneids)
    g_group = np.asarray(g_camids if g_sceneids is None else g_sceneids)
    same_id = q_pids[:, None] == g_pids[None, :]  # (n_q, n_g)
    removed = same_id & (q_group[:, None] == g_group[None, :])  # (n_q, n_g)
    matches = (same_id & ~removed).sum(axis=1)  # (n_q,) m
    remaining = (~removed).sum(axis=1)  # (n_q,) n
    valid = matches > 0
    if not valid.any():
        raise ValueError("no valid query: no query has a true match once the removal rule is applied")
    m, n = matches[valid].astype(np.float64), remaining[valid]
    harmonic = np.cumsum(1.0 / np.arange(1, n.max() + 1))[n - 1]  # (n_valid,) H_n
    others = np.where(n > 1, (m - 1) * (n - harmonic) / np.maximum(n - 1, 1), 0.0)
    return float(np.mean((harmonic + others) / n))

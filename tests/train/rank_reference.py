"""A deliberately plain, one-query-at-a-time ReID evaluator: the oracle for ``reidtrain.metrics.evaluate_rank``.

It follows torchreid's ``eval_market1501`` algorithm step by step (sort, remove, cumulative sum, clip), written
anew, with two changes: the sort is stable (torchreid's default quicksort orders tied distances arbitrarily), and
it also returns mINP, the scene rule and the skipped-query count. Imported by tests/train/test_metrics.py and by
bench/bench_metrics.py; kept free of anything from ``reidtrain`` so that it checks, not repeats, the real code.
"""

from __future__ import annotations

import numpy as np


def reference_evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    q_sceneids: np.ndarray | None = None,
    g_sceneids: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float, int, int]:
    """``(cmc, mAP, mINP, num_valid_queries, num_skipped_queries)``; mAP and mINP are NaN if no query is valid."""
    distmat = np.asarray(distmat)
    use_scenes = q_sceneids is not None
    cmc_rows: list[np.ndarray] = []
    average_precisions: list[float] = []
    inverse_negative_penalties: list[float] = []
    skipped = 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")  # (n_g,) gallery indices, nearest first
        same_id = g_pids[order] == q_pids[i]
        if use_scenes:
            removed = same_id & (g_sceneids[order] == q_sceneids[i])
        else:
            removed = same_id & (g_camids[order] == q_camids[i])
        hits = same_id[~removed].astype(np.int64)  # 1 where the ranked, filtered list has a true match
        if hits.sum() == 0:
            skipped += 1
            continue

        found = np.cumsum(hits)  # true matches within the top k, k = 1..len
        curve = np.minimum(found, 1)[:max_rank].astype(np.float64)
        if len(curve) < max_rank:  # short list: repeat its last value (1 for a valid query)
            curve = np.concatenate([curve, np.full(max_rank - len(curve), curve[-1])])
        cmc_rows.append(curve)

        k = np.arange(1, len(hits) + 1)
        precision_at_k = found / k
        average_precisions.append(float((precision_at_k * hits).sum() / hits.sum()))

        hardest_rank = np.flatnonzero(hits)[-1] + 1  # 1-based rank of the last true match
        inverse_negative_penalties.append(float(hits.sum() / hardest_rank))

    valid = len(cmc_rows)
    if valid == 0:
        return np.zeros(max_rank), float("nan"), float("nan"), 0, skipped
    cmc = np.sum(cmc_rows, axis=0) / valid
    return cmc, float(np.mean(average_precisions)), float(np.mean(inverse_negative_penalties)), valid, skipped

"""Time ``reidtrain.metrics.evaluate_rank`` against a per-query loop evaluator on a random ReID case.

The loop evaluator is torchreid's ``eval_market1501`` (its Python path) when torchreid imports, or when
``--torchreid-rank`` names its ``rank.py`` (e.g. unpacked from ``pip download --no-deps torchreid==0.2.5``);
otherwise the stable-sort loop in ``tests/train/rank_reference.py``, which the tests also use.

    python bench/bench_metrics.py --queries 2000 --gallery 8000 --ids 500 --cams 6 --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reidtrain.metrics import evaluate_rank

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "tests" / "train"


def random_case(
    queries: int, gallery: int, ids: int, cams: int, dim: int, noise: float, seed: int
) -> dict[str, np.ndarray]:
    """Features = id centre + noise, L2-normalised; squared Euclidean float32 distances, as the models produce."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim)).astype(np.float32)  # (ids, dim)

    def features(n: int) -> tuple[np.ndarray, np.ndarray]:
        pids = rng.integers(0, ids, n)
        feats = centres[pids] + noise * rng.standard_normal((n, dim)).astype(np.float32)  # (n, dim)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True), pids

    q_feats, q_pids = features(queries)
    g_feats, g_pids = features(gallery)
    distmat = np.maximum(2.0 - 2.0 * q_feats @ g_feats.T, 0.0).astype(np.float32)  # (queries, gallery)
    return dict(
        distmat=distmat,
        q_pids=q_pids,
        g_pids=g_pids,
        q_camids=rng.integers(0, cams, queries),
        g_camids=rng.integers(0, cams, gallery),
    )


def loop_evaluator(torchreid_rank: Path | None) -> tuple[str, Callable[..., tuple[Any, ...]]]:
    """(name, fn) with ``fn(distmat, q_pids, g_pids, q_camids, g_camids, max_rank) -> (cmc, mAP[, mINP, ...])``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchreid warns that its Cython evaluator is missing
        if torchreid_rank is not None:
            spec = importlib.util.spec_from_file_location("torchreid_rank", torchreid_rank)
            if spec is None or spec.loader is None:
                raise SystemExit(f"cannot load {torchreid_rank}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return f"torchreid eval_market1501 ({torchreid_rank})", module.eval_market1501
        for name in ("torchreid.reid.metrics.rank", "torchreid.metrics.rank"):  # PyPI 0.2.5, upstream 1.4
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            return f"torchreid eval_market1501 ({name})", module.eval_market1501
    sys.path.insert(0, str(REFERENCE_DIR))
    from rank_reference import reference_evaluate_rank

    return "per-query loop (tests/train/rank_reference.py)", reference_evaluate_rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--gallery", type=int, default=8000)
    parser.add_argument("--ids", type=int, default=500)
    parser.add_argument("--cams", type=int, default=6)
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--noise", type=float, default=2.0, help="feature noise around each id's centre")
    parser.add_argument("--max-rank", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="evaluate_rank runs; the best time is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torchreid-rank", type=Path, help="torchreid's metrics/rank.py, loaded from this file")
    args = parser.parse_args()

    case = random_case(args.queries, args.gallery, args.ids, args.cams, args.dim, args.noise, args.seed)
    name, reference = loop_evaluator(args.torchreid_rank)
    print(
        f"case: {args.queries} queries x {args.gallery} gallery, {args.ids} ids, {args.cams} cameras, "
        f"max_rank {args.max_rank}, seed {args.seed}"
    )

    fast_s = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = evaluate_rank(**case, max_rank=args.max_rank)
        fast_s = min(fast_s, time.perf_counter() - start)
    start = time.perf_counter()
    expected = reference(*case.values(), args.max_rank)
    loop_s = time.perf_counter() - start

    diffs = {
        "cmc": float(np.max(np.abs(result.cmc - np.asarray(expected[0], dtype=np.float64)))),
        "mAP": abs(result.mAP - float(expected[1])),
    }
    if len(expected) > 2:  # torchreid returns no mINP
        diffs["mINP"] = abs(result.mINP - float(expected[2]))
    print(f"result: {result}")
    print(f"evaluate_rank  {fast_s:8.3f} s (best of {args.repeats})")
    print(f"{name}  {loop_s:8.3f} s")
    print(f"speed-up       {loop_s / fast_s:8.1f}x")
    print("max abs diff   " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()

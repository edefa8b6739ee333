"""reidtrain.metrics.evaluate_rank: hand-computed cases, agreement with a per-query loop, input checks."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from rank_reference import reference_evaluate_rank  # tests/train/ is on sys.path (rootdir-relative test module)

import reidtrain.metrics as metrics
from reidtrain.metrics import RankResult, evaluate_rank, expected_random_map

# One query (id 7, camera 0, scene 5) against six gallery items listed nearest first.
#   index:    0    1    2    3    4    5
#   distance: 0.1  0.2  0.3  0.4  0.5  0.6
#   id:       3    7    7    3    3    7
#   camera:   1    0    1    1    1    2
#   scene:    0    6    6    0    0    5
DIST = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
Q_PIDS, G_PIDS = np.array([7]), np.array([3, 7, 7, 3, 3, 7])
Q_CAMS, G_CAMS = np.array([0]), np.array([1, 0, 1, 1, 1, 2])
Q_SCENES, G_SCENES = np.array([5]), np.array([0, 6, 6, 0, 0, 5])


def assert_close(result: RankResult, cmc, mAP: float, mINP: float, valid: int, skipped: int) -> None:
    np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-6)
    assert result.mAP == pytest.approx(mAP, abs=1e-6)
    assert result.mINP == pytest.approx(mINP, abs=1e-6)
    assert (result.num_valid_queries, result.num_skipped_queries) == (valid, skipped)


# --- hand-computed cases -------------------------------------------------------------------------------------


def test_camera_rule_by_hand():
    # Gallery 1 (id 7, camera 0) is removed. Ranked list: 3, 7, 3, 3, 7 -> true matches at ranks 2 and 5.
    # AP = (1/2 + 2/5) / 2 = 0.45; INP = 2 / 5 = 0.4; CMC = 0 at rank 1, then 1.
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert_close(result, [0, 1, 1, 1, 1], mAP=0.45, mINP=0.4, valid=1, skipped=0)


def test_result_follows_distances_not_gallery_order_when_there_are_no_ties():
    perm = np.array([4, 2, 0, 5, 1, 3])
    result = evaluate_rank(DIST[:, perm], Q_PIDS, G_PIDS[perm], Q_CAMS, G_CAMS[perm], max_rank=5)
    assert_close(result, [0, 1, 1, 1, 1], mAP=0.45, mINP=0.4, valid=1, skipped=0)


def test_scene_rule_by_hand_ignores_cameras():
    # Scene rule: gallery 5 (id 7, scene 5) is removed; gallery 1 (id 7, same camera, scene 6) is kept.
    # Ranked list: 3, 7, 7, 3, 3 -> matches at ranks 2 and 3: AP = (1/2 + 2/3) / 2 = 7/12; INP = 2/3.
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, q_sceneids=Q_SCENES, g_sceneids=G_SCENES)
    assert_close(result, [0, 1, 1, 1, 1], mAP=7 / 12, mINP=2 / 3, valid=1, skipped=0)


def test_ties_are_broken_by_gallery_order():
    # Gallery 0 and 1 are equally distant: whichever comes first in the gallery ranks first.
    dist = np.array([[1.0, 1.0, 2.0]])
    cams = (np.array([0]), np.array([1, 1, 1]))
    wrong_first = evaluate_rank(dist, np.array([1]), np.array([2, 1, 1]), *cams, max_rank=3)
    assert_close(wrong_first, [0, 1, 1], mAP=(1 / 2 + 2 / 3) / 2, mINP=2 / 3, valid=1, skipped=0)
    right_first = evaluate_rank(dist, np.array([1]), np.array([1, 2, 1]), *cams, max_rank=3)
    assert_close(right_first, [1, 1, 1], mAP=(1 + 2 / 3) / 2, mINP=2 / 3, valid=1, skipped=0)


def test_a_long_run_of_ties_keeps_gallery_order():
    # 300 items at the same distance (long enough for numpy's unstable sorts to reorder them); the true matches
    # at gallery indices 10, 100 and 250 must rank 11, 101 and 251.
    g_pids = np.zeros(300, dtype=np.int64)
    g_pids[[10, 100, 250]] = 1
    result = evaluate_rank(np.zeros((1, 300), dtype=np.float32), [1], g_pids, [0], np.ones(300), max_rank=20)
    assert_close(
        result,
        np.r_[np.zeros(10), np.ones(10)],
        mAP=(1 / 11 + 2 / 101 + 3 / 251) / 3,
        mINP=3 / 251,
        valid=1,
        skipped=0,
    )


def test_queries_without_a_valid_match_are_skipped_and_counted():
    # Query 1 (id 99) is absent from the gallery; query 2 (id 3, camera 1) only has same-camera matches.
    dist = np.vstack([DIST, DIST[:, ::-1], DIST])
    result = evaluate_rank(dist, np.array([7, 99, 3]), G_PIDS, np.array([0, 0, 1]), G_CAMS, max_rank=5)
    assert_close(result, [0, 1, 1, 1, 1], mAP=0.45, mINP=0.4, valid=1, skipped=2)


def test_cmc_is_padded_when_the_gallery_is_shorter_than_max_rank():
    # Query 0: nearest first is id 2, then the two matches -> first match at rank 2, AP (1/2 + 2/3)/2, INP 2/3.
    # Query 1: the only match is at rank 1 -> AP 1, INP 1. CMC: rank 1 = 1/2, from rank 2 on = 1.
    dist = np.array([[0.3, 0.1, 0.2], [0.2, 0.1, 0.3]])
    result = evaluate_rank(dist, [1, 2], [1, 2, 1], [0, 0], [1, 1, 1], max_rank=10)
    assert result.cmc.shape == (10,)
    assert_close(
        result, np.r_[0.5, np.ones(9)], mAP=((1 / 2 + 2 / 3) / 2 + 1) / 2, mINP=(2 / 3 + 1) / 2, valid=2, skipped=0
    )


def test_no_valid_query_is_an_error():
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_rank(DIST, [99], G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="no valid query"):  # its only match shares its camera
        evaluate_rank(DIST[:, :2], [7], [3, 7], [0], [1, 0])
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_rank(np.zeros((0, 6)), [], G_PIDS, [], G_CAMS)


def test_torch_tensors_are_accepted():
    dist = torch.tensor(DIST, dtype=torch.float32, requires_grad=True)
    result = evaluate_rank(
        dist, torch.tensor(Q_PIDS), torch.tensor(G_PIDS), torch.tensor(Q_CAMS), torch.tensor(G_CAMS), max_rank=5
    )
    assert_close(result, [0, 1, 1, 1, 1], mAP=0.45, mINP=0.4, valid=1, skipped=0)
    result = evaluate_rank(
        dist.detach().to(torch.bfloat16),
        *map(torch.tensor, (Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)),
        max_rank=5,
        q_sceneids=torch.tensor(Q_SCENES),
        g_sceneids=torch.tensor(G_SCENES),
    )
    assert_close(result, [0, 1, 1, 1, 1], mAP=7 / 12, mINP=2 / 3, valid=1, skipped=0)


def test_integer_distances_are_accepted():
    result = evaluate_rank((DIST * 10).astype(np.int64), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert_close(result, [0, 1, 1, 1, 1], mAP=0.45, mINP=0.4, valid=1, skipped=0)


def test_rank_result_reads_and_unpacks():
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    cmc, mAP, mINP, valid, skipped = result
    assert (mAP, mINP, valid, skipped) == (result.mAP, result.mINP, 1, 0) and cmc is result.cmc
    assert result.rank(1) == 0.0 and result.rank(5) == 1.0
    with pytest.raises(ValueError, match="rank k"):
        result.rank(6)
    assert result.to_dict() == {
        "mAP": pytest.approx(0.45),
        "mINP": pytest.approx(0.4),
        "rank1": 0.0,
        "rank5": 1.0,
        "num_valid_queries": 1,
        "num_skipped_queries": 0,
    }
    assert str(result) == "mAP 45.00  mINP 40.00  R1 0.00  R5 100.00  (1 queries, 0 skipped)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mAP = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        result.cmc[0] = 1.0


# --- input checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"distmat": DIST[0]}, "distmat must be 2-D"),
        ({"distmat": DIST.astype(complex)}, "real numbers"),
        ({"distmat": DIST > 0.3}, "real numbers"),
        ({"distmat": np.where(DIST > 0.3, np.nan, DIST)}, "3 NaN"),
        ({"q_pids": np.array([7, 7])}, "q_pids must be 1-D"),
        ({"q_pids": np.array([[7]])}, "q_pids must be 1-D"),
        ({"g_pids": G_PIDS[:5]}, "g_pids must be 1-D"),
        ({"q_camids": np.array([], dtype=int)}, "q_camids must be 1-D"),
        ({"g_camids": G_CAMS[:, None]}, "g_camids must be 1-D"),
        ({"q_sceneids": Q_SCENES}, "both q_sceneids and g_sceneids"),
        ({"g_sceneids": G_SCENES}, "both q_sceneids and g_sceneids"),
        ({"q_sceneids": Q_SCENES, "g_sceneids": G_SCENES[1:]}, "g_sceneids must be 1-D"),
        ({"max_rank": 0}, "max_rank must be >= 1"),
    ],
)
def test_malformed_inputs_are_rejected(change, message):
    kwargs = dict(distmat=DIST, q_pids=Q_PIDS, g_pids=G_PIDS, q_camids=Q_CAMS, g_camids=G_CAMS) | change
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**kwargs)


# --- agreement with the per-query loop on random cases ------------------------------------------------------


def _random_case(rng: np.random.Generator, distances: str) -> dict:
    n_q, n_g = int(rng.integers(1, 13)), int(rng.integers(1, 70))
    n_ids, n_cams = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    if distances == "continuous":
        dist = rng.random((n_q, n_g))
    elif distances == "integer-valued":  # few distinct values: many ties
        dist = rng.integers(0, 4, (n_q, n_g)).astype(np.float32 if rng.random() < 0.5 else np.float64)
    else:  # "integer dtype"
        dist = rng.integers(-2, 3, (n_q, n_g))
    case = dict(
        distmat=dist,
        q_pids=rng.integers(0, n_ids, n_q),
        g_pids=rng.integers(0, n_ids, n_g),
        q_camids=rng.integers(0, n_cams, n_q),
        g_camids=rng.integers(0, n_cams, n_g),
        max_rank=int(rng.choice([1, 3, 10, 50])),
    )
    if rng.random() < 0.4:
        case.update(q_sceneids=rng.integers(0, 3, n_q), g_sceneids=rng.integers(0, 3, n_g))
    return case


def _check_against_reference(case: dict) -> tuple[np.ndarray, float, float, int, int]:
    expected = reference_evaluate_rank(**case)
    if expected[3] == 0:
        with pytest.raises(ValueError, match="no valid query"):
            evaluate_rank(**case)
        return expected
    result = evaluate_rank(**case)
    assert result.cmc.shape == (case["max_rank"],)
    np.testing.assert_allclose(result.cmc, expected[0], rtol=0, atol=1e-6)
    assert result.mAP == pytest.approx(expected[1], abs=1e-6)
    assert result.mINP == pytest.approx(expected[2], abs=1e-6)
    assert (result.num_valid_queries, result.num_skipped_queries) == expected[3:]
    return expected


def _differ(a: tuple, b: tuple) -> bool:
    """Whether two reference results differ (counts, or metrics when there is a valid query)."""
    return a[3:] != b[3:] or (a[3] > 0 and (a[1:3] != b[1:3] or not np.array_equal(a[0], b[0])))


@pytest.mark.parametrize("distances", ["continuous", "integer-valued", "integer dtype"])
def test_agrees_with_the_per_query_loop_on_random_cases(distances):
    rng = np.random.default_rng(["continuous", "integer-valued", "integer dtype"].index(distances))
    seen = dict.fromkeys(["skipped", "no valid query", "gallery < max_rank", "scene rule changes", "ties"], 0)
    for _ in range(250):
        case = _random_case(rng, distances)
        expected = _check_against_reference(case)
        n_g = case["distmat"].shape[1]
        seen["skipped"] += expected[3] > 0 and expected[4] > 0
        seen["no valid query"] += expected[3] == 0
        seen["gallery < max_rank"] += expected[3] > 0 and n_g < case["max_rank"]
        if "q_sceneids" in case:
            camera_rule = {k: v for k, v in case.items() if not k.endswith("sceneids")}
            seen["scene rule changes"] += _differ(reference_evaluate_rank(**camera_rule), expected)
        # Ties matter when breaking them the other way (reversed gallery) changes the answer.
        flipped = reference_evaluate_rank(
            **{k: v[..., ::-1] if k.startswith("g_") or k == "distmat" else v for k, v in case.items()}
        )
        seen["ties"] += _differ(flipped, expected)
    assert all(seen[k] > 0 for k in ("skipped", "no valid query", "gallery < max_rank", "scene rule changes")), seen
    assert (seen["ties"] > 10) if distances != "continuous" else (seen["ties"] == 0), seen


@pytest.mark.parametrize("chunk_cells", [1, 40, 700])
def test_chunking_does_not_change_the_result(monkeypatch, chunk_cells):
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", chunk_cells)  # 1 query per chunk, a few, or all at once
    rng = np.random.default_rng(chunk_cells)
    for _ in range(60):
        _check_against_reference(_random_case(rng, str(rng.choice(["continuous", "integer-valued"]))))


def test_rank_order_codes_match_a_stable_argsort():
    rng = np.random.default_rng(7)
    for n_g in (5, 40, 300):
        dist = rng.integers(0, 6, (50, n_g)).astype(np.float32)
        code = rng.integers(0, 3, (50, n_g)).astype(np.int8)
        stable = np.take_along_axis(code, np.argsort(dist, axis=1, kind="stable"), axis=1)
        np.testing.assert_array_equal(metrics._codes_in_rank_order(dist, code), stable)


def _mean_map_over_every_ranking(q_pids, g_pids, q_cams, g_cams) -> float:
    """Oracle: the mAP averaged over all n_g! orderings of the gallery (each query ranks the gallery the same way)."""
    maps = []
    for order in itertools.permutations(range(len(g_pids))):
        dist = np.tile(np.argsort(order).astype(float), (len(q_pids), 1))  # gallery item i sits at rank order⁻¹(i)
        maps.append(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams).mAP)
    return float(np.mean(maps))


@pytest.mark.parametrize(
    ("q_pids", "g_pids", "q_cams", "g_cams"),
    [
        ([1], [1, 2, 3, 4, 5, 6], [0], [1, 1, 1, 1, 1, 1]),  # one match among six
        ([1, 2], [1, 1, 2, 3, 3, 1], [0, 0], [1, 2, 1, 1, 2, 0]),  # same-camera item removed for query 1
        ([1, 2, 3], [1, 1, 1, 2, 2, 3, 4], [5, 5, 5], [1, 2, 3, 1, 2, 1, 1]),  # 3, 2 and 1 matches of 7
    ],
)
def test_expected_random_map_is_the_mean_over_every_ordering(q_pids, g_pids, q_cams, g_cams):
    exact = expected_random_map(q_pids, g_pids, q_cams, g_cams)
    assert exact == pytest.approx(_mean_map_over_every_ranking(q_pids, g_pids, q_cams, g_cams), abs=1e-12)


def test_expected_random_map_follows_the_scene_rule():
    # Query 1 (scene 7) loses its two same-scene matches (cameras differ): one match among three items is left.
    exact = expected_random_map([1], [1, 1, 1, 2, 3], [0], [1, 2, 3, 4, 5], q_sceneids=[7], g_sceneids=[7, 7, 8, 8, 8])
    assert exact == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)

"""Rank-list PNG: labelled cells (query id and camera; rank, id, camera, distance), canvas sized to what is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image

from reidtrain.evaluate import Ranking
from reidtrain.ranklist import BACKGROUND, CORRECT, QUERY, WRONG, draw_rank_list


def _ranking(shape: tuple[int, int], q_pids: list[int], g_pids: list[int], seed: int = 0) -> Ranking:
    """A query x gallery ranking over dark random triplet images of ``shape`` (H, W), cameras 0.. in order."""
    rng = np.random.default_rng(seed)

    def items(prefix: str, n: int) -> list[dict[str, Any]]:
        return [
            {"sample_id": f"{prefix}{i}", "images": rng.integers(0, 30, (3, *shape, 3), dtype=np.uint8)}
            for i in range(n)
        ]

    nq, ng = len(q_pids), len(g_pids)
    ids = {
        "query": {"pids": np.array(q_pids), "camids": np.arange(nq) % 3, "sceneids": np.zeros(nq, dtype=np.int64)},
        "gallery": {"pids": np.array(g_pids), "camids": np.arange(ng) % 3, "sceneids": np.zeros(ng, dtype=np.int64)},
    }
    return Ranking(
        distmat=rng.random((nq, ng)),
        query=ids["query"],
        gallery=ids["gallery"],
        query_set=cast(Any, items("q", nq)),
        gallery_set=cast(Any, items("g", ng)),
        protocol="camera",
    )


def _colour(image: np.ndarray, *colours: tuple[int, int, int]) -> np.ndarray:
    """(H, W) bool: pixels of exactly one of ``colours`` (the images are darker than every frame colour)."""
    return np.logical_or.reduce([(image == np.array(c)).all(axis=2) for c in colours])


def _ink_bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels that are not background."""
    ys, xs = np.nonzero((image != np.array(BACKGROUND)).any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_labels_name_rank_id_camera_and_distance(tmp_path: Path) -> None:
    ranking = _ranking((64, 32), q_pids=[1, 2], g_pids=[1, 2, 1, 3, 2, 1, 4])
    shown = draw_rank_list(ranking, tmp_path / "r.png", num_queries=2, k=4, checkpoint="best on val")
    assert shown["checkpoint"] == "best on val"
    for q, row in enumerate(shown["queries"]):
        assert (row["query_pid"], row["query_camid"]) == (ranking.query["pids"][q], ranking.query["camids"][q])
        # oracle: sort by distance, drop same id and camera (the camera rule), keep four
        junk = (ranking.gallery["pids"] == row["query_pid"]) & (ranking.gallery["camids"] == row["query_camid"])
        order = [g for g in np.argsort(ranking.distmat[q], kind="stable") if not junk[g]][:4]
        assert [r["rank"] for r in row["ranked"]] == [1, 2, 3, 4]
        assert [r["pid"] for r in row["ranked"]] == ranking.gallery["pids"][order].tolist()
        assert [r["camid"] for r in row["ranked"]] == ranking.gallery["camids"][order].tolist()
        assert [r["distance"] for r in row["ranked"]] == pytest.approx(ranking.distmat[q, order].tolist())
        assert row["gallery"] == [f"g{g}" for g in order]
        assert row["correct"] == [bool(ranking.gallery["pids"][g] == row["query_pid"]) for g in order]
    image = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    # the title line and every label band under a row of cells carry text
    frames = _colour(image, QUERY, CORRECT, WRONG)
    frame_rows = np.flatnonzero(frames.any(axis=1))
    assert frame_rows.min() > 12, "a title line above the first row"
    assert (image[: frame_rows.min()] != np.array(BACKGROUND)).any()
    bottoms = [int(r) for r in frame_rows if r + 1 not in set(frame_rows.tolist())]  # last frame row of each row
    assert len(bottoms) == 2
    for bottom in bottoms:
        band = image[bottom + 1 : bottom + 30]
        assert (band.min(axis=2) < 100).sum() > 100, "text under the cells"


@pytest.mark.parametrize("shape", [(64, 128), (64, 32)], ids=["vehicle", "person"])
def test_canvas_is_sized_to_what_is_drawn(shape: tuple[int, int], tmp_path: Path) -> None:
    """Few retrievals (the junk rule leaves two per query) and k=10: no blank columns; vehicles stack their views."""
    ranking = _ranking(shape, q_pids=[1, 2, 1], g_pids=[1, 2, 5, 1, 2, 1])
    ranking.gallery["camids"] = np.array([0, 1, 2, 0, 1, 2])
    ranking.query["camids"] = np.array([0, 1, 2])
    shown = draw_rank_list(ranking, tmp_path / "r.png", num_queries=3, k=10, image_size=96, gap=8)
    counts = [len(q["gallery"]) for q in shown["queries"]]
    assert max(counts) < 10
    image = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    left, top, right, bottom = _ink_bbox(image)
    height, width = image.shape[:2]
    assert width - right <= 8 and height - bottom <= 8 and left <= 8 and top <= 8, (image.shape, (left, right))
    # one cell is three views: stacked (about 96 x 3*48) for landscape images, side by side for portrait ones
    query_frame = _colour(image, QUERY)
    ys, xs = np.nonzero(query_frame)
    cell_w = int(xs.max() - xs.min() + 1)
    edge = query_frame[:, xs.min()]  # the first query's left frame edge: its height
    cell_h = int(np.argmin(edge[ys.min() :]))
    if shape[1] > shape[0]:
        assert cell_w <= 96 + 2 * 4 and cell_h > 3 * 48
    else:
        assert cell_w >= 3 * 48 and cell_h <= 96 + 2 * 4
    # as wide as the widest row drawn: (1 + max retrievals) columns, not k + 1
    assert width < (2 + max(counts)) * (cell_w + 8) + 8

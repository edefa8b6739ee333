"""Rank-list figure: for a few queries, the top-k gallery retrievals, correct ones outlined green, wrong ones red.

Each row is one query followed by its k nearest gallery items under the evaluation protocol (items the protocol
removes, same id and camera, or same id and scene for MSVR310, are skipped as in scoring). Every cell shows the
triplet as its three modalities side by side (RGB | NIR | TIR) at the stored image size scaled to ``cell_height``.
Drawn with Pillow; no plotting library needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reidschemas.safeio import atomic_write
from reidtrain.evaluate import Ranking

__all__ = ["choose_queries", "draw_rank_list", "top_k"]

CORRECT, WRONG, QUERY = (40, 170, 60), (210, 40, 40), (60, 90, 200)


def choose_queries(num_queries: int, n: int) -> np.ndarray:
    """``n`` query indices spread evenly over ``num_queries`` (all of them when fewer)."""
    if n < 1:
        raise ValueError(f"--rank-list needs at least 1 query, got {n}")
    return np.unique(np.linspace(0, num_queries - 1, num=min(n, num_queries)).round().astype(np.int64))


def top_k(ranking: Ranking, q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices (<= k,), correct (<= k,) bool) of query ``q``, nearest first, junk removed."""
    order = np.argsort(ranking.distmat[q], kind="stable")  # (n_g,)
    order = order[~ranking.junk(q)[order]][:k]
    return order, ranking.gallery["pids"][order] == ranking.query["pids"][q]


def _cell(images: np.ndarray, height: int, border: tuple[int, int, int] | None, frame: int) -> Image.Image:
    """(3, H, W, 3) uint8 triplet -> one image: modalities side by side, scaled to ``height``, optionally framed."""
    strip = Image.fromarray(np.concatenate(list(images), axis=1))  # (H, 3W, 3)
    width = max(1, round(strip.width * height / strip.height))
    strip = strip.resize((width, height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width + 2 * frame, height + 2 * frame), border or (255, 255, 255))
    canvas.paste(strip, (frame, frame))
    return canvas


def draw_rank_list(
    ranking: Ranking,
    path: Path,
    num_queries: int,
    k: int = 10,
    cell_height: int = 96,
    frame: int = 4,
    gap: int = 6,
) -> dict[str, object]:
    """Write the PNG to ``path`` and return what it shows: queries, their top-k and correctness.

    The file is written atomically (``reidschemas.safeio``); a full disk is ``DiskFull``."""
    if k < 1:
        raise ValueError(f"--top-k must be >= 1, got {k}")
    rows: list[list[Image.Image]] = []
    shown = []
    for q in choose_queries(len(ranking.query["pids"]), num_queries):
        gallery, correct = top_k(ranking, int(q), k)
        cells = [_cell(ranking.query_set[int(q)]["images"], cell_height, QUERY, frame)]
        for g, ok in zip(gallery, correct, strict=True):
            cells.append(_cell(ranking.gallery_set[int(g)]["images"], cell_height, CORRECT if ok else WRONG, frame))
        rows.append(cells)
        shown.append(
            {
                "query": ranking.query_set[int(q)]["sample_id"],
                "gallery": [ranking.gallery_set[int(g)]["sample_id"] for g in gallery],
                "correct": [bool(c) for c in correct],
            }
        )
    cell_w = rows[0][0].width
    cell_h = rows[0][0].height
    width = (k + 1) * cell_w + (k + 1) * gap + gap  # an extra gap after the query column
    height = len(rows) * (cell_h + gap) + gap
    figure = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(figure)
    for r, cells in enumerate(rows):
        top = gap + r * (cell_h + gap)
        for c, cell in enumerate(cells):
            left = gap + c * (cell_w + gap) + (gap if c else 0)
            figure.paste(cell, (left, top))
        separator = gap + cell_w + gap
        draw.line([(separator + gap // 2, top), (separator + gap // 2, top + cell_h)], fill=(0, 0, 0), width=1)
    # the temporary name does not end in .png, so the format is named
    atomic_write(Path(path), lambda tmp: figure.save(tmp, format="PNG"), needed=width * height * 3)
    return {"path": str(path), "k": k, "queries": shown}

"""Rank-list figure: for a few queries, the top-k gallery retrievals, correct ones outlined green, wrong ones red.

Each row is one query followed by its k nearest gallery items under the evaluation protocol (items the protocol
removes, same id and camera, or same id and scene for MSVR310, are skipped as in scoring). Every cell shows the
triplet's three modalities (RGB, NIR, TIR): side by side for portrait images (persons), stacked for landscape ones
(vehicles), each scaled so that its longer side is ``image_size`` pixels. Under each cell: the query's id and camera,
or the gallery item's rank, id, camera and distance. A title line names the checkpoint, the rule and the colours.
The canvas is as wide as the widest row drawn (a query with fewer than k retrievals leaves no blank columns).
Drawn with Pillow: a grid of images with text needs no plotting library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reidschemas.safeio import atomic_write
from reidtrain.evaluate import Ranking

__all__ = ["choose_queries", "draw_rank_list", "top_k"]

CORRECT, WRONG, QUERY = (40, 170, 60), (210, 40, 40), (60, 90, 200)
INK, BACKGROUND = (20, 20, 20), (255, 255, 255)
FONT_SIZE = 12


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


def _across(images: np.ndarray) -> bool:
    """Whether a (3, H, W, 3) triplet is drawn side by side (portrait images) rather than stacked (landscape)."""
    return bool(images.shape[1] >= images.shape[2])


def _triplet(images: np.ndarray, image_size: int, sep: int = 2) -> Image.Image:
    """(3, H, W, 3) uint8 triplet -> one image: side by side when portrait, stacked when landscape, ``sep`` apart."""
    _, h, w, _ = images.shape
    scale = image_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    tiles = [Image.fromarray(m).resize(size, Image.Resampling.BILINEAR) for m in images]
    across = _across(images)
    step = (size[0] + sep, 0) if across else (0, size[1] + sep)
    out = Image.new("RGB", (3 * size[0] + 2 * sep, size[1]) if across else (size[0], 3 * size[1] + 2 * sep), BACKGROUND)
    for i, tile in enumerate(tiles):
        out.paste(tile, (i * step[0], i * step[1]))
    return out


@dataclass(frozen=True)
class _Cell:
    image: Image.Image  # the framed triplet
    lines: tuple[str, ...]  # the label under it

    def width(self, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
        return max(self.image.width, *(round(font.getlength(line)) for line in self.lines))


def _framed(triplet: Image.Image, colour: tuple[int, int, int], frame: int) -> Image.Image:
    canvas = Image.new("RGB", (triplet.width + 2 * frame, triplet.height + 2 * frame), colour)
    canvas.paste(triplet, (frame, frame))
    return canvas


def draw_rank_list(
    ranking: Ranking,
    path: Path,
    num_queries: int,
    k: int = 10,
    image_size: int = 96,
    frame: int = 4,
    gap: int = 8,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Write the PNG to ``path`` (atomically; a full disk is ``DiskFull``) and return what it shows: per query its id
    and camera, and its top-k gallery items with their rank, id, camera, distance and correctness (``gallery`` /
    ``correct`` as before)."""
    if k < 1:
        raise ValueError(f"--top-k must be >= 1, got {k}")
    font = ImageFont.load_default(size=FONT_SIZE)
    line_h = FONT_SIZE + 3
    rows: list[list[_Cell]] = []
    shown = []
    q_pids, q_cams, g_pids, g_cams = (
        ranking.query["pids"], ranking.query["camids"], ranking.gallery["pids"], ranking.gallery["camids"]
    )  # fmt: skip
    for q in (int(i) for i in choose_queries(len(q_pids), num_queries)):
        gallery, correct = top_k(ranking, q, k)
        query_cell = _Cell(
            _framed(_triplet(ranking.query_set[q]["images"], image_size), QUERY, frame),
            ("query", f"id {int(q_pids[q])} cam {int(q_cams[q])}"),
        )
        cells = [query_cell]
        items = []
        for rank, (g, ok) in enumerate(zip((int(i) for i in gallery), correct, strict=True), start=1):
            distance = float(ranking.distmat[q, g])
            cells.append(
                _Cell(
                    _framed(_triplet(ranking.gallery_set[g]["images"], image_size), CORRECT if ok else WRONG, frame),
                    (f"#{rank} id {int(g_pids[g])} cam {int(g_cams[g])}", f"d {distance:.3f}"),
                )
            )
            items.append(
                {
                    "rank": rank,
                    "sample_id": ranking.gallery_set[g]["sample_id"],
                    "pid": int(g_pids[g]),
                    "camid": int(g_cams[g]),
                    "distance": distance,
                    "correct": bool(ok),
                }
            )
        rows.append(cells)
        shown.append(
            {
                "query": ranking.query_set[q]["sample_id"],
                "query_pid": int(q_pids[q]),
                "query_camid": int(q_cams[q]),
                "gallery": [item["sample_id"] for item in items],
                "correct": [item["correct"] for item in items],
                "ranked": items,
            }
        )
    arranged = "side by side" if _across(ranking.query_set[0]["images"]) else "top to bottom"
    title = (
        f"{checkpoint or 'checkpoint'}: top-{k} of {len(rows)} queries ({ranking.protocol} rule); "
        f"RGB, NIR, TIR {arranged}; blue: query, green: same id, red: other id; d: squared distance"
    )
    # layout: a title line, then per row the cells (query, a wider gap, its retrievals), labels under each
    row_w = [sum(c.width(font) for c in cells) + gap * (len(cells) + 1) for cells in rows]
    row_h = [max(c.image.height for c in cells) + 2 * line_h for cells in rows]
    width = max([*row_w, round(font.getlength(title)) + 2 * gap])
    height = line_h + gap + sum(h + gap for h in row_h)
    figure = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    draw.text((gap, gap // 2), title, fill=INK, font=font)
    top = line_h + gap
    for cells, h in zip(rows, row_h, strict=True):
        left = gap
        for c, cell in enumerate(cells):
            figure.paste(cell.image, (left, top))
            for i, line in enumerate(cell.lines):
                draw.text((left, top + cell.image.height + 1 + i * line_h), line, fill=INK, font=font)
            left += cell.width(font) + gap
            if c == 0:
                draw.line([(left - gap // 2, top), (left - gap // 2, top + h)], fill=INK, width=1)
        top += h + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name does not end in .png, so the format is named
    atomic_write(path, lambda tmp: figure.save(tmp, format="PNG"), needed=width * height * 3)
    return {"path": str(path), "k": k, "checkpoint": checkpoint, "queries": shown}

"""Things between the camera and the target that hide part of it (never part of the ground-truth mask)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reidprep.synth.canvas import Painter, blob_points
from reidprep.synth.identity import PALETTE, PERSON_COLOURS, SKIN_TONES
from reidprep.synth.physics import Material, MaterialTable
from reidprep.synth.scene import FOLIAGE, FURNITURE, GLASS, PARKED_PAINTS, POLE

TYRE = Material(rgb=(0.09, 0.09, 0.1), nir=0.08, offset=6.0, solar=0.5)


def _unit(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _passer_by(p: Painter, t: MaterialTable, rng: np.random.Generator, cx: float, ground: float, height: float) -> None:
    """Part of another pedestrian centred at ``cx`` (warm in the thermal image)."""
    colour = PALETTE[str(rng.choice(PERSON_COLOURS))]
    skin = SKIN_TONES[str(rng.choice(list(SKIN_TONES)))]
    coat = t.add(Material(rgb=_unit(colour), nir=0.62, insulation=0.55, texture=1.5))
    legs = t.add(Material(rgb=(0.15, 0.15, 0.2), nir=0.5, insulation=0.45, texture=1.5))
    head = t.add(Material(rgb=_unit(skin), nir=0.55, insulation=0.05))
    top = ground - height
    half = 0.13 * height
    p.rect(cx - half * 0.8, top + 0.5 * height, cx + half * 0.8, ground, legs)
    p.polygon(
        [
            (cx - half, top + 0.17 * height),
            (cx + half, top + 0.17 * height),
            (cx + half * 0.9, top + 0.55 * height),
            (cx - half * 0.9, top + 0.55 * height),
        ],
        coat,
    )
    p.ellipse(cx, top + 0.07 * height, 0.055 * height, 0.07 * height, head, 16)


def draw_occluder(
    kind: str,
    layer: Image.Image,
    table: MaterialTable,
    target: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> None:
    """Draw occluder ``kind`` over part of the target box ``(x0, y0, x1, y1)`` (pixels) into ``layer``."""
    p = Painter(layer)
    x0, y0, x1, y1 = target
    w, h = x1 - x0, y1 - y0
    canvas_w, canvas_h = layer.size
    side = -1.0 if rng.random() < 0.5 else 1.0
    edge = x0 if side < 0 else x1
    if kind == "pole":
        x = float(rng.uniform(x0 + 0.2 * w, x1 - 0.2 * w))
        half = float(rng.uniform(0.012, 0.025) * max(w, h))
        pole = table.add(POLE)
        p.rect(x - half, 0, x + half, canvas_h, pole)
        if rng.random() < 0.5:
            sign = table.add(Material(rgb=(0.1, 0.3, 0.7), nir=0.35, solar=0.5))
            ys = float(rng.uniform(0.05, 0.3) * canvas_h)
            p.rect(x - 3 * half, ys, x + 3 * half, ys + 4 * half, sign)
    elif kind == "bin":
        bw, bh = float(rng.uniform(0.45, 0.7) * w), float(rng.uniform(0.2, 0.32) * h)
        x = float(rng.uniform(x0, x1 - bw))
        body = table.add(FURNITURE[int(rng.integers(len(FURNITURE)))])
        p.rect(x, y1 - bh + 2, x + bw, canvas_h, body)
        p.rect(x - 2, y1 - bh - 2, x + bw + 2, y1 - bh + 3, table.add(FURNITURE[1]))
    elif kind == "passer-by":
        height = float(rng.uniform(0.95, 1.15) * (h if h > w else 1.2 * h))
        inner = edge - side * float(rng.uniform(0.12, 0.3)) * w
        _passer_by(p, table, rng, inner + side * 0.1 * height, y1 + float(rng.uniform(2, 8)), height)
    elif kind in ("parked-car", "car-edge"):
        paint = table.add(PARKED_PAINTS[int(rng.integers(len(PARKED_PAINTS)))])
        cover = float(rng.uniform(0.3, 0.5) if kind == "parked-car" else rng.uniform(0.15, 0.3))
        inner = edge - side * cover * w
        outer = 0.0 if side < 0 else float(canvas_w)
        lo, hi = min(inner, outer), max(inner, outer)
        top = y1 - float(rng.uniform(0.3, 0.4) if kind == "parked-car" else rng.uniform(0.55, 0.75)) * h
        p.polygon([(lo, canvas_h), (lo, top + 6), (lo + 6, top), (hi - 6, top), (hi, top + 6), (hi, canvas_h)], paint)
        if kind == "car-edge":
            p.rect(lo + 4, top + 3, hi - 4, top + 0.3 * (y1 - top), table.add(GLASS))
        wheel_x = inner + side * min(18.0, (hi - lo) * 0.4)
        r = 0.15 * (y1 - top) + 4
        p.ellipse(wheel_x, min(y1, canvas_h - r), r, r, table.add(TYRE), 16)
    elif kind == "bush":
        bw, bh = float(rng.uniform(0.25, 0.4) * w), float(rng.uniform(0.25, 0.4) * h)
        x = edge - side * bw * 0.4
        pts = blob_points(
            x, y1 - bh * 0.3, bw / 2, bh * 0.7, int(rng.integers(7, 11)), 0.35, phase=float(rng.uniform(0, 3))
        )
        p.polygon(pts, table.add(FOLIAGE))
    else:
        raise ValueError(f"unknown occluder {kind!r}")

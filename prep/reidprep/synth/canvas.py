"""Drawing material indices into mode-L layers through an affine map from an object's local coordinates."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

Point = tuple[float, float]


def ellipse_points(
    cx: float, cy: float, rx: float, ry: float, n: int = 24, start: float = 0.0, end: float = 360.0
) -> list[Point]:
    """Points on an ellipse (angles in degrees, 0 = +x, 90 = +y i.e. downwards in image space)."""
    full = abs(end - start) >= 360.0
    count = n if full else max(2, round(n * abs(end - start) / 360.0) + 1)
    step = (end - start) / (count if full else count - 1)
    return [
        (cx + rx * math.cos(math.radians(start + i * step)), cy + ry * math.sin(math.radians(start + i * step)))
        for i in range(count)
    ]


def blob_points(
    cx: float, cy: float, rx: float, ry: float, bumps: int, amplitude: float, n: int = 48, phase: float = 0.0
) -> list[Point]:
    """A closed outline with ``bumps`` round lobes (curly hair, foliage): radius * (1 + amplitude * |sin|)."""
    pts = []
    for i in range(n):
        a = 2 * math.pi * i / n
        r = 1.0 + amplitude * (abs(math.sin(bumps * a / 2 + phase)) - 0.5)
        pts.append((cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)))
    return pts


class Painter:
    """Draws filled shapes of one material index into ``layer``; local (x, y) map to
    pixel (a*x + b*y + c, d*x + e*y + f)."""

    def __init__(self, layer: Image.Image, matrix: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) -> None:
        if layer.mode != "L":
            raise ValueError("material layers are mode-L images")
        self.layer = layer
        self.draw = ImageDraw.Draw(layer)
        self.matrix = tuple(float(v) for v in matrix)
        a, b, _, d, e, _ = self.matrix
        self.scale = math.sqrt(abs(a * e - b * d))

    def map(self, pts: Sequence[Point]) -> list[Point]:
        a, b, c, d, e, f = self.matrix
        return [(a * x + b * y + c, d * x + e * y + f) for x, y in pts]

    def polygon(self, pts: Sequence[Point], material: int) -> None:
        if len(pts) >= 3:
            self.draw.polygon(self.map(pts), fill=material)

    def rect(self, x0: float, y0: float, x1: float, y1: float, material: int) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], material)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, material: int, n: int = 24) -> None:
        self.polygon(ellipse_points(cx, cy, rx, ry, n), material)

    def line(self, pts: Sequence[Point], width: float, material: int) -> None:
        """A polyline ``width`` local units wide (at least one pixel)."""
        px = max(1, round(width * self.scale))
        self.draw.line(self.map(pts), fill=material, width=px, joint="curve" if len(pts) > 2 else None)

    def quad_strip(self, a: Point, b: Point, width_a: float, width_b: float, material: int) -> None:
        """A limb: a quadrilateral from ``a`` to ``b`` with the given full widths at each end."""
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length, dx / length
        self.polygon(
            [
                (a[0] + nx * width_a / 2, a[1] + ny * width_a / 2),
                (b[0] + nx * width_b / 2, b[1] + ny * width_b / 2),
                (b[0] - nx * width_b / 2, b[1] - ny * width_b / 2),
                (a[0] - nx * width_a / 2, a[1] - ny * width_a / 2),
            ],
            material,
        )

"""Drawing a vehicle whose shapes show its attributes (body type, paint, windows, lights, grille, roof, wheels...).

Local coordinates are metres with y up from the ground: x runs along the car (rear -L/2 to front +L/2) in the
side view and across it (-W/2 to +W/2) in the front and back views. The diagonal view joins a foreshortened side
to a foreshortened front or back face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reidprep.synth.canvas import Painter, blob_points, ellipse_points
from reidprep.synth.identity import VehicleIdentity
from reidprep.synth.physics import Material, MaterialTable

UV = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class BodyShape:
    """Dimensions (m) and the side profile in (u, v): u from rear (0) to front (1), v from ground (0) to roof (1)."""

    length: float
    height: float
    width: float
    profile: UV
    windows: UV
    pillars: tuple[float, ...]
    wheels: tuple[float, float]
    belt: float
    hood: float
    """u where the warm engine compartment starts."""
    boot_top: float
    """v of the rear deck (where a trunk spoiler sits)."""


SHAPES: dict[str, BodyShape] = {
    "sedan": BodyShape(
        4.7, 1.45, 1.8,
        [(0, 0.16), (0, 0.5), (0.02, 0.6), (0.2, 0.64), (0.33, 0.95), (0.4, 1.0), (0.58, 1.0), (0.7, 0.66),
         (0.96, 0.58), (1, 0.5), (1, 0.2), (0.97, 0.13), (0.03, 0.13)],
        [(0.23, 0.66), (0.345, 0.93), (0.41, 0.97), (0.575, 0.97), (0.68, 0.66)],
        (0.47,), (0.18, 0.8), 0.64, 0.72, 0.62,
    ),
    "hatchback": BodyShape(
        4.1, 1.5, 1.75,
        [(0, 0.16), (0, 0.55), (0.03, 0.85), (0.1, 0.98), (0.55, 1.0), (0.7, 0.66), (0.96, 0.58), (1, 0.5),
         (1, 0.2), (0.97, 0.13), (0.03, 0.13)],
        [(0.05, 0.67), (0.09, 0.9), (0.13, 0.96), (0.54, 0.97), (0.68, 0.67)],
        (0.22, 0.44), (0.17, 0.83), 0.66, 0.72, 0.9,
    ),
    "SUV": BodyShape(
        4.7, 1.75, 1.9,
        [(0, 0.18), (0, 0.6), (0.02, 0.95), (0.06, 1.0), (0.68, 1.0), (0.78, 0.63), (0.97, 0.57), (1, 0.5),
         (1, 0.22), (0.97, 0.15), (0.03, 0.15)],
        [(0.04, 0.64), (0.05, 0.94), (0.08, 0.97), (0.67, 0.97), (0.76, 0.64)],
        (0.2, 0.45), (0.18, 0.8), 0.63, 0.78, 0.95,
    ),
    "minivan": BodyShape(
        4.9, 1.8, 1.9,
        [(0, 0.16), (0, 0.62), (0.02, 0.96), (0.06, 1.0), (0.76, 1.0), (0.9, 0.62), (0.98, 0.55), (1, 0.48),
         (1, 0.2), (0.97, 0.13), (0.03, 0.13)],
        [(0.04, 0.63), (0.05, 0.94), (0.08, 0.96), (0.75, 0.96), (0.87, 0.63)],
        (0.22, 0.5), (0.16, 0.84), 0.62, 0.86, 0.96,
    ),
    "coupe": BodyShape(
        4.5, 1.32, 1.82,
        [(0, 0.16), (0, 0.48), (0.02, 0.58), (0.18, 0.62), (0.38, 0.97), (0.45, 1.0), (0.58, 1.0), (0.7, 0.64),
         (0.96, 0.55), (1, 0.46), (1, 0.2), (0.97, 0.13), (0.03, 0.13)],
        [(0.24, 0.64), (0.4, 0.95), (0.46, 0.97), (0.57, 0.97), (0.68, 0.64)],
        (), (0.18, 0.8), 0.62, 0.72, 0.6,
    ),
    "truck": BodyShape(
        5.3, 1.85, 1.95,
        [(0, 0.2), (0, 0.58), (0.4, 0.58), (0.42, 0.98), (0.45, 1.0), (0.66, 1.0), (0.74, 0.62), (0.97, 0.58),
         (1, 0.52), (1, 0.22), (0.97, 0.16), (0.03, 0.16)],
        [(0.44, 0.63), (0.455, 0.95), (0.47, 0.97), (0.65, 0.97), (0.72, 0.63)],
        (0.55,), (0.17, 0.81), 0.62, 0.75, 0.58,
    ),
}  # fmt: skip

WHEEL_RADIUS = {"small": 0.29, "medium": 0.33, "large": 0.38}
DIAGONAL_SIDE = 0.78
DIAGONAL_FACE = 0.6


def _srgb(rgb: tuple[int, int, int], factor: float = 1.0) -> tuple[float, float, float]:
    return (min(1.0, rgb[0] / 255 * factor), min(1.0, rgb[1] / 255 * factor), min(1.0, rgb[2] / 255 * factor))


@dataclass(frozen=True)
class VehicleMaterials:
    """Material indices of one vehicle in one image's table."""

    paint: int
    side_paint: int
    hood: int
    highlight: int
    wear: int
    damage: int
    glass: int
    interior: int
    sunroof: int
    tyre: int
    rim: int
    arch: int
    headlight: int
    taillight: int
    grille: int
    chrome: int
    trim: int
    plate: int
    plate_text: int
    exhaust: int
    rack: int

    @classmethod
    def build(cls, t: MaterialTable, car: VehicleIdentity, lights_on: bool) -> VehicleMaterials:
        tex = {"new": 0.5, "used": 1.0, "worn": 2.2, "damaged": 1.8}[car.exterior_condition]
        paint = lambda f, offset=7.0: Material(  # running: cabin and engine warm the body  # noqa: E731
            rgb=_srgb(car.paint_rgb, f), nir=car.paint_nir * min(f, 1.0), offset=offset, texture=tex
        )
        grey = np.mean(car.paint_rgb)
        r, g, b = (int(0.55 * c + 0.45 * grey * 0.8) for c in car.paint_rgb)
        worn_rgb = (r, g, b)
        glass = (0.08, 0.09, 0.11) if car.tinted else (0.34, 0.4, 0.46)
        return cls(
            paint=t.add(paint(1.0)),
            side_paint=t.add(paint(0.82)),
            hood=t.add(paint(1.0, offset=16.0)),
            highlight=t.add(paint(1.3)),
            wear=t.add(Material(rgb=_srgb(worn_rgb), nir=car.paint_nir * 0.8, offset=5.0, texture=2.5)),
            damage=t.add(Material(rgb=(0.14, 0.13, 0.12), nir=0.15, offset=4.0, texture=2.0)),
            glass=t.add(Material(rgb=glass, nir=0.1 if car.tinted else 0.16, offset=-7.0, solar=0.15, texture=0.3)),
            interior=t.add(Material(rgb=(0.1, 0.1, 0.11), nir=0.22, offset=-7.0, solar=0.15, texture=0.3)),
            sunroof=t.add(Material(rgb=(0.05, 0.06, 0.08), nir=0.08, offset=-8.0, solar=0.1, texture=0.2)),
            tyre=t.add(Material(rgb=(0.09, 0.09, 0.1), nir=0.08, offset=13.0, solar=0.5, texture=0.6)),
            rim=t.add(Material(rgb=(0.7, 0.71, 0.73), nir=0.5, offset=8.0, solar=0.2, texture=0.4)),
            arch=t.add(Material(rgb=(0.05, 0.05, 0.05), nir=0.05, offset=11.0, solar=0.0, texture=0.2)),
            headlight=t.add(
                Material(
                    rgb=(0.86, 0.87, 0.9),
                    nir=0.6,
                    offset=10.0,
                    emit=(2.8, 2.7, 2.3),
                    emit_nir=0.9,
                    light="head",
                    texture=0.1,
                )
                if lights_on
                else Material(rgb=(0.78, 0.8, 0.84), nir=0.55, offset=0.0, solar=0.2, texture=0.1)
            ),
            taillight=t.add(
                Material(
                    rgb=(0.75, 0.1, 0.08),
                    nir=0.5,
                    offset=5.0,
                    emit=(1.5, 0.06, 0.04),
                    emit_nir=0.2,
                    light="head",
                    texture=0.1,
                )
                if lights_on
                else Material(rgb=(0.6, 0.08, 0.07), nir=0.45, solar=0.3, texture=0.1)
            ),
            grille=t.add(Material(rgb=(0.07, 0.07, 0.08), nir=0.12, offset=20.0, solar=0.2, texture=0.3)),
            chrome=t.add(Material(rgb=(0.78, 0.78, 0.8), nir=0.6, offset=8.0, solar=0.2, texture=0.2)),
            trim=t.add(Material(rgb=(0.1, 0.1, 0.11), nir=0.15, offset=4.0, texture=0.5)),
            plate=t.add(Material(rgb=(0.1, 0.25, 0.68), nir=0.55, offset=1.0, solar=0.5, texture=0.1)),
            plate_text=t.add(Material(rgb=(0.95, 0.95, 0.95), nir=0.85, offset=1.0, solar=0.5, texture=0.1)),
            exhaust=t.add(Material(rgb=(0.16, 0.15, 0.15), nir=0.2, offset=45.0, solar=0.0, texture=0.2)),
            rack=t.add(Material(rgb=(0.12, 0.12, 0.13), nir=0.18, offset=0.0, solar=0.8, texture=0.3)),
        )


def _uv(shape: BodyShape, pts: UV, dx: float = 0.0) -> list[tuple[float, float]]:
    return [((u - 0.5) * shape.length + dx, v * shape.height) for u, v in pts]


def _lamp(p: Painter, shape_name: str, cx: float, cy: float, w: float, h: float, outer: float, mat: int) -> None:
    """A head- or taillight of the given shape centred at (cx, cy); ``outer`` = +1 or -1 (which side is outside)."""
    if shape_name == "round":
        r = min(w, h * 1.4) / 2
        p.ellipse(cx, cy, r, r, mat, 16)
    elif shape_name == "oval":
        p.ellipse(cx, cy, w / 2, h / 2 * 0.8, mat, 20)
    elif shape_name == "rectangular":
        p.rect(cx - w / 2, cy - h / 2 * 0.8, cx + w / 2, cy + h / 2 * 0.8, mat)
    else:  # angular: swept towards the outside and up
        xi, xo = cx - outer * w / 2, cx + outer * w / 2
        p.polygon(
            [(xi, cy - h * 0.35), (xo, cy + h * 0.55), (xo, cy - h * 0.15), (xi + outer * w * 0.25, cy - h * 0.55)], mat
        )


def _plate(p: Painter, m: VehicleMaterials, cx: float, y0: float, rng: np.random.Generator) -> None:
    p.rect(cx - 0.22, y0, cx + 0.22, y0 + 0.13, m.plate)
    for k in range(7):
        x = cx - 0.19 + k * 0.055 + (0.02 if k > 1 else 0.0)
        if rng.random() < 0.85:
            p.rect(x, y0 + 0.025, x + 0.03, y0 + 0.105, m.plate_text)


def _side(
    p: Painter, m: VehicleMaterials, car: VehicleIdentity, shape: BodyShape, rng: np.random.Generator, diagonal: bool
) -> None:
    """Side view facing +x."""
    r = WHEEL_RADIUS[car.tire_size] + (0.03 if car.vehicle_type in ("SUV", "truck") else 0.0)
    paint = m.side_paint if diagonal else m.paint
    p.polygon(_uv(shape, shape.profile), paint)
    belt = shape.belt
    # Warm engine compartment (same paint, warmer), lights, the truck bed.
    hood = [(u, v) for u, v in shape.profile if u >= shape.hood and v >= 0.3]
    p.polygon(_uv(shape, [(shape.hood, 0.3), *hood, (1.0, 0.3)]), m.hood if not diagonal else paint)
    p.polygon(
        _uv(shape, [(0.965, belt - 0.2), (1.0, belt - 0.16), (1.0, belt - 0.08), (0.955, belt - 0.07)]), m.headlight
    )
    p.polygon(
        _uv(shape, [(0.0, belt - 0.2), (0.035, belt - 0.18), (0.035, belt - 0.07), (0.0, belt - 0.05)]), m.taillight
    )
    if car.vehicle_type == "truck":
        p.line(_uv(shape, [(0.0, 0.585), (0.4, 0.585)]), 0.05, m.trim)
    # Windows with pillars; clear glass shows seats and headrests, tinted glass hides them.
    p.polygon(_uv(shape, shape.windows), m.glass)
    if not car.tinted:
        for u in (shape.windows[0][0] + 0.12, (shape.windows[-1][0] + shape.windows[0][0]) / 2 + 0.06):
            if shape.windows[0][0] < u < shape.windows[-1][0] - 0.05:
                p.polygon(
                    _uv(
                        shape,
                        [
                            (u - 0.04, belt + 0.02),
                            (u - 0.03, belt + 0.22),
                            (u + 0.01, belt + 0.24),
                            (u + 0.015, belt + 0.02),
                        ],
                    ),
                    m.interior,
                )
    for u in shape.pillars:
        p.polygon(_uv(shape, [(u - 0.012, belt), (u - 0.005, 0.99), (u + 0.012, 0.99), (u + 0.012, belt)]), paint)
        p.line(_uv(shape, [(u, belt), (u, 0.2)]), 0.015, m.trim)
        p.rect(
            (u + 0.02 - 0.5) * shape.length,
            (belt - 0.07) * shape.height,
            (u + 0.07 - 0.5) * shape.length,
            (belt - 0.05) * shape.height,
            m.trim,
        )
    if car.exterior_condition == "new":
        p.line(_uv(shape, [(0.06, belt - 0.06), (0.94, belt - 0.06)]), 0.035, m.highlight)
    elif car.exterior_condition == "worn":
        for _ in range(4):
            u, v = float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.25, belt - 0.05))
            p.polygon(
                [((u - 0.5) * shape.length + x, v * shape.height + y) for x, y in blob_points(0, 0, 0.25, 0.1, 5, 0.6)],
                m.wear,
            )
    elif car.exterior_condition == "damaged":
        u = float(rng.uniform(0.3, 0.7))
        x0, y0 = (u - 0.5) * shape.length, (belt - 0.22) * shape.height
        p.polygon(
            [(x0, y0), (x0 + 0.35, y0 + 0.12), (x0 + 0.6, y0 - 0.02), (x0 + 0.3, y0 - 0.1), (x0 + 0.1, y0 - 0.05)],
            m.damage,
        )
        p.line([(x0 - 0.3, y0 + 0.2), (x0 + 0.9, y0 + 0.05)], 0.02, m.damage)
    if car.side_mirror_condition == "intact":
        u = shape.windows[-1][0] - 0.02
        p.polygon(
            _uv(
                shape,
                [(u - 0.03, belt + 0.01), (u + 0.015, belt + 0.01), (u + 0.02, belt + 0.08), (u - 0.025, belt + 0.08)],
            ),
            paint,
        )
    roof = [u for u, v in shape.profile if v >= 0.99]
    if car.roof_rack and roof:
        r0, r1 = min(roof) + 0.03, max(roof) - 0.03
        p.rect((r0 - 0.5) * shape.length, shape.height, (r1 - 0.5) * shape.length, shape.height + 0.1, m.rack)
    if car.spoiler:
        if shape.boot_top < 0.8:
            y = shape.boot_top * shape.height
            x0 = -shape.length / 2
            p.polygon(
                [(x0 - 0.03, y + 0.1), (x0 + 0.4, y + 0.1), (x0 + 0.38, y + 0.14), (x0 - 0.02, y + 0.16)], m.paint
            )
            p.rect(x0 + 0.12, y - 0.02, x0 + 0.16, y + 0.11, m.trim)
        else:
            x0, y = -shape.length / 2, shape.height
            p.polygon([(x0 - 0.06, y - 0.04), (x0 + 0.45, y), (x0 + 0.4, y + 0.05), (x0 - 0.05, y + 0.02)], m.paint)
    if car.exhaust_type != "hidden":
        x0 = -shape.length / 2
        p.rect(x0 - 0.06, 0.1, x0 + 0.15, 0.17, m.exhaust)
    # Wheels: dark arch, tyre, rim, hub.
    for u in shape.wheels:
        x = (u - 0.5) * shape.length
        p.polygon(ellipse_points(x, r, r * 1.12, r * 1.12, 20, 180, 360), m.arch)
        p.ellipse(x, r, r, r, m.tyre, 20)
        p.ellipse(x, r, r * 0.6, r * 0.6, m.rim, 16)
        p.ellipse(x, r, r * 0.15, r * 0.15, m.trim, 8)


def _face(
    p: Painter, m: VehicleMaterials, car: VehicleIdentity, shape: BodyShape, front: bool, rng: np.random.Generator
) -> bool:
    """Front or back face; returns whether a license plate was drawn."""
    w, h, belt = shape.width, shape.height, shape.belt * shape.height
    clr = 0.15 if car.vehicle_type in ("SUV", "truck") else 0.12
    r = WHEEL_RADIUS[car.tire_size]
    for sx in (-1.0, 1.0):
        p.rect(sx * (w / 2 - 0.02), 0.0, sx * (w / 2 - 0.27), r * 0.9, m.tyre)
    body = [
        (-w / 2, clr + 0.05), (-w / 2, belt - 0.1), (-w / 2 + 0.08, belt), (w / 2 - 0.08, belt),
        (w / 2, belt - 0.1), (w / 2, clr + 0.05), (w / 2 - 0.08, clr), (-w / 2 + 0.08, clr),
    ]  # fmt: skip
    p.polygon(body, m.paint)
    top_w = 0.36 if car.vehicle_type not in ("SUV", "minivan", "truck") else 0.4
    p.polygon([(-0.45 * w, belt), (0.45 * w, belt), (top_w * w, h), (-top_w * w, h)], m.paint)
    inset = 0.04 if front else 0.08
    glass = [
        (-0.41 * w, belt + inset),
        (0.41 * w, belt + inset),
        ((top_w - 0.03) * w, h - 0.06),
        (-(top_w - 0.03) * w, h - 0.06),
    ]
    p.polygon(glass, m.glass)
    if front and not car.tinted:  # driver and passenger seen through the windscreen
        for sx in (-0.2 * w, 0.2 * w):
            p.ellipse(sx, belt + 0.26, 0.09, 0.1, m.interior, 12)
            p.rect(sx - 0.14, belt + inset, sx + 0.14, belt + 0.17, m.interior)
    p.polygon(
        [(-top_w * w, h), (top_w * w, h), ((top_w - 0.02) * w, h + 0.06), (-(top_w - 0.02) * w, h + 0.06)], m.paint
    )
    if car.sunroof:
        p.rect(-0.18 * w, h + 0.008, 0.18 * w, h + 0.05, m.sunroof)
    if car.roof_rack:
        for sx in (-1.0, 1.0):
            p.rect(sx * (top_w - 0.06) * w - 0.02, h, sx * (top_w - 0.06) * w + 0.02, h + 0.1, m.rack)
        p.rect(-(top_w - 0.02) * w, h + 0.08, (top_w - 0.02) * w, h + 0.12, m.rack)
    for sx in (-1.0, 1.0):
        if car.side_mirror_condition == "missing" and sx > 0:
            continue
        p.polygon(
            [
                (sx * 0.44 * w, belt + 0.03),
                (sx * (w / 2 + 0.1), belt + 0.05),
                (sx * (w / 2 + 0.1), belt + 0.15),
                (sx * 0.46 * w, belt + 0.13),
            ],
            m.paint,
        )
    if front:
        p.rect(-w / 2 + 0.1, belt - 0.07, w / 2 - 0.1, belt, m.hood)
        lamp_y = belt - 0.16
        for sx in (-1.0, 1.0):
            _lamp(p, car.headlights_shape, sx * 0.34 * w, lamp_y, 0.28 * w * 0.9, 0.13, sx, m.headlight)
        gw, gy0, gy1 = 0.17 * w, belt - 0.32, belt - 0.09
        shape_name = car.front_grille_shape
        if shape_name == "hexagonal":
            p.polygon(
                [
                    (-gw, gy1),
                    (gw, gy1),
                    (gw * 1.15, (gy0 + gy1) / 2),
                    (gw, gy0),
                    (-gw, gy0),
                    (-gw * 1.15, (gy0 + gy1) / 2),
                ],
                m.grille,
            )
        elif shape_name == "angular":
            p.polygon(
                [(-gw * 1.1, gy1), (gw * 1.1, gy1), (gw * 0.8, gy0 + 0.03), (0.0, gy0 - 0.03), (-gw * 0.8, gy0 + 0.03)],
                m.grille,
            )
        else:
            p.rect(-gw, gy0, gw, gy1, m.grille)
        if shape_name in ("horizontal", "hexagonal"):
            for k in range(1, 4):
                y = gy0 + k * (gy1 - gy0) / 4
                p.rect(-gw * 0.95, y - 0.01, gw * 0.95, y + 0.01, m.chrome)
        elif shape_name == "vertical":
            for k in range(1, 7):
                x = -gw + k * 2 * gw / 7
                p.rect(x - 0.012, gy0 + 0.01, x + 0.012, gy1 - 0.01, m.chrome)
        p.polygon(
            [(-0.3 * w, clr + 0.05), (0.3 * w, clr + 0.05), (0.27 * w, clr + 0.16), (-0.27 * w, clr + 0.16)], m.trim
        )
        plate_y = clr + 0.19
    else:
        lamp_y = belt - 0.13
        for sx in (-1.0, 1.0):
            _lamp(p, car.taillights_shape, sx * 0.37 * w, lamp_y, 0.22 * w, 0.14, sx, m.taillight)
        p.line([(-0.3 * w, belt - 0.02), (0.3 * w, belt - 0.02)], 0.015, m.trim)
        p.rect(-w / 2 + 0.05, clr, w / 2 - 0.05, clr + 0.1, m.trim)
        if car.exhaust_type != "hidden":
            for sx in (1.0, -1.0) if car.exhaust_type == "dual" else (1.0,):
                p.ellipse(sx * 0.3 * w, clr + 0.01, 0.05, 0.035, m.exhaust, 10)
        if car.spoiler:
            if shape.boot_top < 0.8:
                y = shape.boot_top * h + 0.03
                p.rect(-0.4 * w, y, 0.4 * w, y + 0.05, m.paint)
                for sx in (-0.3 * w, 0.3 * w):
                    p.rect(sx - 0.02, y - 0.04, sx + 0.02, y, m.trim)
            else:
                p.rect(-top_w * w, h - 0.04, top_w * w, h + 0.03, m.paint)
        plate_y = clr + 0.26
    if car.plate:
        _plate(p, m, 0.0, plate_y, rng)
    return car.plate


def draw_vehicle(
    layer: Image.Image,
    table: MaterialTable,
    car: VehicleIdentity,
    view: str,
    facing_left: bool,
    lights_on: bool,
    box: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> tuple[bool, int]:
    """Draw ``car`` into ``layer`` centred at ``box`` = (cx, ground y, max width px, max height px).

    Returns (whether a plate was drawn, the plate's material index).
    """
    shape = SHAPES[car.vehicle_type]
    m = VehicleMaterials.build(table, car, lights_on)
    cx, ground, max_w, max_h = box
    extent = {"side": shape.length, "diagonal": DIAGONAL_SIDE * shape.length + DIAGONAL_FACE * shape.width}.get(
        view, shape.width + 0.25
    )
    s = min(max_w / extent, max_h / (shape.height + 0.14))
    flip = -1.0 if facing_left else 1.0
    if view == "side":
        _side(Painter(layer, (flip * s, 0, cx, 0, -s, ground)), m, car, shape, rng, diagonal=False)
        return False, m.plate
    if view in ("front", "back"):
        return _face(Painter(layer, (s, 0, cx, 0, -s, ground)), m, car, shape, view == "front", rng), m.plate
    # Diagonal: the side, foreshortened, then the front (or, for some images, the back) face beside its end.
    front = bool(rng.random() < 0.65)
    side_len = DIAGONAL_SIDE * shape.length * s
    face_w = DIAGONAL_FACE * shape.width * s
    face_dir = flip if front else -flip
    side_cx = cx - face_dir * face_w / 2
    face_cx = side_cx + face_dir * (side_len / 2 + face_w / 2 - 0.02 * s)
    _side(Painter(layer, (flip * DIAGONAL_SIDE * s, 0, side_cx, 0, -s, ground)), m, car, shape, rng, diagonal=True)
    plate = _face(Painter(layer, (DIAGONAL_FACE * s, 0, face_cx, 0, -s, ground)), m, car, shape, front, rng)
    return plate, m.plate

"""Cameras (each with its own cluttered background), capture conditions per image, and MSVR310-like scenes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from reidprep.synth.canvas import Painter, blob_points
from reidprep.synth.physics import CameraOptics, Material, MaterialTable
from reidprep.synth.seeding import CAMERA, SCENE, SCENE_TABLE, rng_for

PAD = 2
"""Canvas margin for the per-modality registration shift (pixels)."""
BG_SHIFT = 6
"""Background margin for the per-image camera jitter (pixels)."""
VIEWS_PERSON = ("front", "back", "side")
VIEWS_VEHICLE = ("front", "back", "side", "diagonal")
OCCLUDERS_PERSON = ("pole", "bin", "passer-by", "parked-car")
OCCLUDERS_VEHICLE = ("pole", "passer-by", "car-edge", "bush")
NUM_SCENES = 30
NIGHT_SCENES = 10

SKY = Material(rgb=(0.62, 0.74, 0.88), nir=0.3, offset=-25.0, solar=0.0, texture=0.2)
ASPHALT = Material(rgb=(0.3, 0.3, 0.31), nir=0.12, offset=1.0, solar=1.3, texture=1.6)
PAVEMENT = Material(rgb=(0.64, 0.62, 0.58), nir=0.42, solar=0.9, texture=1.3)
JOINT = Material(rgb=(0.46, 0.45, 0.43), nir=0.3, solar=0.9)
KERB = Material(rgb=(0.74, 0.74, 0.72), nir=0.46, solar=0.7)
MARKING = Material(rgb=(0.92, 0.92, 0.88), nir=0.72, solar=0.3)
GLASS = Material(rgb=(0.24, 0.3, 0.36), nir=0.1, offset=-6.0, solar=0.1, texture=0.4)
LIT_WINDOW = Material(
    rgb=(0.3, 0.3, 0.28), nir=0.12, offset=-3.0, solar=0.1, emit=(0.5, 0.42, 0.26), emit_nir=0.15, light="street"
)
POLE = Material(rgb=(0.46, 0.48, 0.5), nir=0.36, offset=-2.0, solar=0.4, texture=0.5)
LAMP = Material(rgb=(0.85, 0.85, 0.8), nir=0.5, offset=20.0, emit=(1.6, 1.3, 0.8), emit_nir=0.6, light="street")
FOLIAGE = Material(rgb=(0.24, 0.44, 0.2), nir=0.76, offset=-2.0, solar=0.3, texture=2.5)
TRUNK = Material(rgb=(0.36, 0.26, 0.18), nir=0.36, solar=0.6)
GRASS = Material(rgb=(0.32, 0.52, 0.22), nir=0.7, offset=-1.0, solar=0.5, texture=2.0)
DOOR = Material(rgb=(0.3, 0.2, 0.14), nir=0.3, solar=0.5)
WALLS = (
    Material(rgb=(0.8, 0.74, 0.62), nir=0.55, offset=1.0, solar=0.6, texture=1.2),
    Material(rgb=(0.6, 0.6, 0.6), nir=0.45, offset=1.0, solar=0.6, texture=1.2),
    Material(rgb=(0.62, 0.32, 0.24), nir=0.56, offset=1.0, solar=0.6, texture=1.5),
    Material(rgb=(0.87, 0.87, 0.85), nir=0.6, offset=1.0, solar=0.6, texture=1.0),
    Material(rgb=(0.5, 0.56, 0.63), nir=0.4, offset=1.0, solar=0.6, texture=1.2),
)
SIGNS = (
    Material(rgb=(0.8, 0.15, 0.12), nir=0.6, emit=(0.6, 0.08, 0.05), light="street"),
    Material(rgb=(0.12, 0.3, 0.75), nir=0.3, emit=(0.08, 0.2, 0.6), light="street"),
    Material(rgb=(0.95, 0.8, 0.1), nir=0.7, emit=(0.5, 0.42, 0.05), light="street"),
)
FURNITURE = (
    Material(rgb=(0.16, 0.3, 0.2), nir=0.3, solar=0.8),
    Material(rgb=(0.3, 0.3, 0.32), nir=0.25, solar=0.8),
    Material(rgb=(0.5, 0.34, 0.2), nir=0.45, solar=0.8),
)
PARKED_PAINTS = (
    Material(rgb=(0.85, 0.85, 0.85), nir=0.75, solar=1.0),
    Material(rgb=(0.12, 0.12, 0.13), nir=0.1, solar=1.0),
    Material(rgb=(0.55, 0.1, 0.1), nir=0.6, solar=1.0),
    Material(rgb=(0.2, 0.3, 0.5), nir=0.35, solar=1.0),
)


DAY_AIR_C = (10.0, 24.0)
"""Daytime air temperature range: spring and autumn days, when people are warmer than their surroundings."""
NIGHT_AIR_C = (0.0, 14.0)


@dataclass(frozen=True)
class Camera:
    """A fixed camera: background material map, texture, optics and its preferred view of targets."""

    camid: int
    ids: np.ndarray
    """(Hb, Wb) uint8 material indices of the background, Hb = H + 2 * (PAD + BG_SHIFT)."""
    materials: tuple[Material, ...]
    """Material i is index i + 1 of ``ids``."""
    texture: np.ndarray
    """(Hb, Wb) float32 around 1: stains, bricks, foliage detail."""
    optics: CameraOptics
    ground: float
    """Fraction of the canvas height where targets stand (feet or tyres), before per-image jitter."""
    sun_dx: float
    """Direction and length of cast shadows along x (fraction of the target height)."""
    base_view: str


@dataclass(frozen=True)
class Capture:
    """Conditions of one image."""

    night: bool
    illumination: str
    ambient: float
    sun: float
    blurry: bool
    view: str
    facing_left: bool
    occluder: str | None
    headlights_on: bool
    shifts: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    """(dx, dy) of the RGB, NIR and TIR crops: small registration errors."""
    bg_offset: tuple[int, int]


@dataclass(frozen=True)
class SceneCondition:
    """A vehicle scene (time span): fixed day/night, weather and temperature."""

    night: bool
    illumination: str
    ambient: float
    sun: float


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 multiplicative texture: blotches plus fine grain."""
    coarse = rng.normal(0.0, 1.0, size=(h // 8 + 2, w // 8 + 2)).astype(np.float32)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
    fine = rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32)
    return np.clip(1.0 + 0.07 * np.asarray(img) + 0.035 * fine, 0.75, 1.25).astype(np.float32)


def _building_row(p: Painter, t: MaterialTable, rng: np.random.Generator, w: int, top: float, base: float) -> None:
    """Facades along the horizon with window grids (some lit at night), doors and shop signs."""
    x = -float(rng.integers(0, 12))
    while x < w:
        bw = float(rng.uniform(0.18, 0.45) * w)
        roof = float(rng.uniform(top, top + 0.45 * (base - top)))
        wall = t.add(WALLS[int(rng.integers(len(WALLS)))])
        p.rect(x, roof, x + bw, base, wall)
        win_w, win_h = float(rng.uniform(4, 8)), float(rng.uniform(6, 11))
        gap_x, gap_y = win_w + float(rng.uniform(3, 7)), win_h + float(rng.uniform(4, 8))
        yy = roof + 4
        while yy + win_h < base - 12:
            xx = x + 3
            while xx + win_w < x + bw - 2:
                lit = rng.random() < 0.3
                p.rect(xx, yy, xx + win_w, yy + win_h, t.add(LIT_WINDOW if lit else GLASS))
                xx += gap_x
            yy += gap_y
        if rng.random() < 0.5:
            dx = x + float(rng.uniform(0.1, 0.6)) * bw
            p.rect(dx, base - 14, dx + 8, base, t.add(DOOR))
        if rng.random() < 0.35:
            sx = x + float(rng.uniform(0.0, 0.5)) * bw
            p.rect(sx, base - 22, sx + bw * 0.4, base - 16, t.add(SIGNS[int(rng.integers(len(SIGNS)))]))
        x += bw + float(rng.uniform(0, 6))


def _tree(p: Painter, t: MaterialTable, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    p.rect(x - height * 0.04, base - height * 0.55, x + height * 0.04, base, t.add(TRUNK))
    cy, r = base - height * 0.7, height * float(rng.uniform(0.25, 0.35))
    p.polygon(
        blob_points(x, cy, r, r * 1.1, int(rng.integers(7, 12)), 0.3, phase=float(rng.uniform(0, 3))), t.add(FOLIAGE)
    )


def _lamp_post(p: Painter, t: MaterialTable, x: float, top: float, base: float, arm: float) -> tuple[float, float]:
    """A street lamp; returns the lamp head position."""
    pole = t.add(POLE)
    p.rect(x - 1.5, top, x + 1.5, base, pole)
    p.line([(x, top), (x + arm, top)], 2, pole)
    p.rect(x + arm - 5, top, x + arm + 5, top + 4, t.add(LAMP))
    return (x + arm, top + 4)


def _street(rng: np.random.Generator, w: int, h: int, vehicle: bool) -> tuple[np.ndarray, MaterialTable, float, tuple]:
    """Draw one camera's street into an (h, w) material map; returns ids, table, ground fraction, lamp."""
    layer = Image.new("L", (w, h), 0)
    t = MaterialTable()
    p = Painter(layer)
    p.rect(0, 0, w, h, t.add(SKY))
    horizon = float(rng.uniform(0.22, 0.4) if vehicle else rng.uniform(0.34, 0.5)) * h
    _building_row(p, t, rng, w, top=0.02 * h, base=horizon)
    for _ in range(int(rng.integers(0, 3))):
        _tree(p, t, rng, float(rng.uniform(0, w)), horizon + 3, float(rng.uniform(0.25, 0.5)) * h)
    # Ground: far pavement, kerb, road with markings; persons also get a near pavement with tiles.
    road_top = horizon + (4 if vehicle else 2)
    p.rect(0, horizon, w, road_top, t.add(PAVEMENT))
    road_bottom = float(h if vehicle else horizon + rng.uniform(0.08, 0.16) * h)
    p.rect(0, road_top, w, road_bottom, t.add(ASPHALT))
    p.rect(0, road_top, w, road_top + 2, t.add(KERB))
    marking = t.add(MARKING)
    lanes = (0.45, 0.8) if vehicle else (0.55,)
    for frac in lanes:
        y = road_top + frac * (road_bottom - road_top)
        dash, gap = float(rng.uniform(14, 24)), float(rng.uniform(10, 18))
        x = -float(rng.uniform(0, dash + gap))
        while x < w:
            p.rect(x, y, x + dash, y + (2 if vehicle else 1.5), marking)
            x += dash + gap
    if vehicle and rng.random() < 0.4:
        cx = float(rng.uniform(0.2, 0.8) * w)
        for i in range(5):
            p.rect(cx + i * 12, road_top + 6, cx + i * 12 + 6, h, marking)
    if not vehicle:
        p.rect(0, road_bottom, w, road_bottom + 3, t.add(KERB))
        p.rect(0, road_bottom + 3, w, h, t.add(PAVEMENT))
        joint = t.add(JOINT)
        y, step = road_bottom + 8, 6.0
        while y < h:
            p.line([(0, y), (w, y)], 1, joint)
            y += step
            step *= 1.25
        for x0 in np.linspace(-w, 2 * w, 7):
            p.line([(w / 2 + (x0 - w / 2) * 0.25, road_bottom + 3), (x0, h)], 1, joint)
    # Clutter along the far kerb: parked cars, bushes, bins, bollards.
    for _ in range(int(rng.integers(1, 4))):
        x, kind = float(rng.uniform(0, w)), int(rng.integers(3))
        if kind == 0:
            cw, ch = float(rng.uniform(0.18, 0.3) * w), float(rng.uniform(0.05, 0.09) * h)
            paint = t.add(PARKED_PAINTS[int(rng.integers(len(PARKED_PAINTS)))])
            p.rect(x, road_top - ch * 0.2, x + cw, road_top + ch * 0.7, paint)
            p.rect(x + cw * 0.2, road_top - ch * 0.8, x + cw * 0.75, road_top - ch * 0.2, t.add(GLASS))
        elif kind == 1:
            r = float(rng.uniform(5, 12))
            p.polygon(blob_points(x, horizon + 1, r * 1.6, r, 9, 0.35), t.add(GRASS))
        else:
            p.rect(x, horizon - 9, x + 6, horizon + 3, t.add(FURNITURE[int(rng.integers(len(FURNITURE)))]))
    lamp = _lamp_post(p, t, float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.03, 0.12) * h), road_top, 9.0)
    ground = float(rng.uniform(0.9, 0.95) if vehicle else rng.uniform(0.93, 0.97))
    return np.asarray(layer, dtype=np.uint8), t, ground, lamp


def make_camera(seed: int, camid: int, width: int, height: int, vehicle: bool) -> Camera:
    """Camera ``camid``'s fixed background for targets of ``width`` x ``height`` pixels."""
    rng = rng_for(seed, CAMERA, int(vehicle), camid)
    margin = PAD + BG_SHIFT
    wb, hb = width + 2 * margin, height + 2 * margin
    ids, table, ground, lamp = _street(rng, wb, hb, vehicle)
    tint = tuple(float(v) for v in 1.0 + rng.uniform(-0.07, 0.07, size=3))
    optics = CameraOptics(
        tint=(tint[0], tint[1], tint[2]),
        lamp=(lamp[0] - BG_SHIFT, lamp[1] - BG_SHIFT),
        column_noise=rng.normal(0.0, 0.008, size=width + 2 * PAD).astype(np.float32),
    )
    base_view = VIEWS_VEHICLE[camid % 4] if vehicle else VIEWS_PERSON[camid % 3]
    return Camera(
        camid=camid,
        ids=ids,
        materials=tuple(table.materials[1:]),
        texture=_texture(rng, hb, wb),
        optics=optics,
        ground=ground,
        sun_dx=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.5)),
        base_view=base_view,
    )


def scene_table(seed: int) -> dict[int, SceneCondition]:
    """Scene codes 1..30, each a fixed day or night time span (exactly ``NIGHT_SCENES`` at night)."""
    night = set(rng_for(seed, SCENE_TABLE).choice(np.arange(1, NUM_SCENES + 1), NIGHT_SCENES, replace=False).tolist())
    table = {}
    for code in range(1, NUM_SCENES + 1):
        rng = rng_for(seed, SCENE, code)
        if code in night:
            illumination = str(rng.choice(["normal", "dim"], p=[0.35, 0.65]))
            table[code] = SceneCondition(True, illumination, float(rng.uniform(*NIGHT_AIR_C)), 0.0)
        else:
            illumination = str(rng.choice(["bright", "normal", "dim"], p=[0.4, 0.4, 0.2]))
            sun = {"bright": rng.uniform(0.7, 1.0), "normal": rng.uniform(0.3, 0.6), "dim": rng.uniform(0.0, 0.2)}
            table[code] = SceneCondition(False, illumination, float(rng.uniform(*DAY_AIR_C)), float(sun[illumination]))
    return table


def _registration(rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    nir = (int(rng.integers(-PAD, PAD + 1)), int(rng.integers(-PAD, PAD + 1)))
    tir = (int(rng.integers(-PAD, PAD + 1)), int(rng.integers(-PAD, PAD + 1)))
    return ((0, 0), nir, tir)


def _bg_offset(rng: np.random.Generator) -> tuple[int, int]:
    return (int(rng.integers(0, 2 * BG_SHIFT + 1)), int(rng.integers(0, 2 * BG_SHIFT + 1)))


def person_capture(rng: np.random.Generator, camera: Camera) -> Capture:
    """Conditions of one pedestrian image (day or night drawn per image)."""
    night = bool(rng.random() < 0.3)
    if night:
        illumination = str(rng.choice(["normal", "dim"], p=[0.35, 0.65]))
        ambient, sun = float(rng.uniform(*NIGHT_AIR_C)), 0.0
    else:
        illumination = str(rng.choice(["bright", "normal", "dim"], p=[0.4, 0.4, 0.2]))
        ambient = float(rng.uniform(*DAY_AIR_C))
        sun = float(
            {"bright": rng.uniform(0.7, 1.0), "normal": rng.uniform(0.3, 0.6), "dim": rng.uniform(0, 0.2)}[illumination]
        )
    view = camera.base_view if rng.random() < 0.4 else str(rng.choice(VIEWS_PERSON, p=[0.4, 0.35, 0.25]))
    occluder = str(rng.choice(OCCLUDERS_PERSON)) if rng.random() < 0.25 else None
    return Capture(
        night=night,
        illumination=illumination,
        ambient=ambient,
        sun=sun,
        blurry=bool(rng.random() < 0.2),
        view=view,
        facing_left=bool(rng.random() < 0.5),
        occluder=occluder,
        headlights_on=False,
        shifts=_registration(rng),
        bg_offset=_bg_offset(rng),
    )


def vehicle_capture(rng: np.random.Generator, camera: Camera, scene: SceneCondition) -> Capture:
    """Conditions of one vehicle image: day/night, light and weather come from its scene."""
    view = camera.base_view if rng.random() < 0.65 else str(rng.choice(VIEWS_VEHICLE))
    occluder = str(rng.choice(OCCLUDERS_VEHICLE)) if rng.random() < 0.25 else None
    return Capture(
        night=scene.night,
        illumination=scene.illumination,
        ambient=scene.ambient + float(rng.normal(0, 0.5)),
        sun=float(np.clip(scene.sun + rng.normal(0, 0.05), 0.0, 1.0)) if not scene.night else 0.0,
        blurry=bool(rng.random() < 0.2),
        view=view,
        facing_left=bool(rng.random() < 0.5),
        occluder=occluder,
        headlights_on=bool(rng.random() < (0.92 if scene.night else 0.15)),
        shifts=_registration(rng),
        bg_offset=_bg_offset(rng),
    )

"""Drawing a pedestrian whose shapes show its attributes (clothing, hair, bags, age, view).

Local coordinates: unit = the person's height, y = 0 at the top of the head and 1 at the soles, x = 0 on the
body axis; in the side view the person faces +x (the caller's affine map mirrors and shears).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidprep.synth.canvas import Painter, blob_points, ellipse_points
from reidprep.synth.identity import FABRIC_OF_LOWER, FABRIC_OF_UPPER, INSULATION_OF_UPPER, RGB, PersonIdentity
from reidprep.synth.physics import Material, MaterialTable

HEIGHT_OF_AGE = {"child": 0.64, "teenager": 0.9, "adult": 1.0, "senior": 0.97}
_FABRIC_NIR = {"cotton": 0.7, "wool": 0.6, "nylon": 0.56, "polyester": 0.58, "denim": 0.64, "leather": 0.34}


def _srgb(rgb: RGB, factor: float = 1.0) -> tuple[float, float, float]:
    return (min(1.0, rgb[0] / 255 * factor), min(1.0, rgb[1] / 255 * factor), min(1.0, rgb[2] / 255 * factor))


def _scaled(rgb: RGB, factor: float) -> RGB:
    return (int(rgb[0] * factor), int(rgb[1] * factor), int(rgb[2] * factor))


def _luminance(rgb: RGB) -> float:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255


def fabric(rgb: RGB, kind: str, insulation: float, carbon_black: bool, factor: float = 1.0) -> Material:
    """Clothing: visible dye colour; NIR set by the fibre (most dyes are transparent there), except carbon black."""
    lum = _luminance(rgb)
    nir = _FABRIC_NIR[kind] * (0.8 + 0.25 * lum)
    if lum < 0.15 and kind != "denim":
        nir *= 0.15 if carbon_black and kind in ("nylon", "polyester", "wool") else 0.55
    return Material(rgb=_srgb(rgb, factor), nir=nir, insulation=insulation, texture=1.6)


@dataclass(frozen=True)
class PersonMaterials:
    """Material indices of one person in one image's table."""

    skin: int
    hair: int
    upper: int
    upper_trim: int
    inner: int
    lower: int
    shoe: int
    sole: int
    backpack: int
    backpack_dark: int
    handbag: int
    suitcase: int
    phone: int
    bottle: int
    glasses: int
    eye: int
    mouth: int
    zip: int

    @classmethod
    def build(cls, table: MaterialTable, who: PersonIdentity) -> PersonMaterials:
        upper_fabric, lower_fabric = FABRIC_OF_UPPER[who.upper_clothing], FABRIC_OF_LOWER[who.lower_clothing]
        ins = INSULATION_OF_UPPER[who.upper_clothing]
        skin_lum = _luminance(who.skin)
        shoe_kind = "leather" if who.footwear in ("leather shoes", "boots") else "nylon"
        bag = lambda rgb, kind: Material(  # noqa: E731
            rgb=_srgb(rgb), nir=_FABRIC_NIR[kind] * (0.3 if _luminance(rgb) < 0.15 else 0.9), offset=0.0, solar=0.8
        )
        return cls(
            skin=table.add(Material(rgb=_srgb(who.skin), nir=0.5 + 0.15 * skin_lum, insulation=0.04, texture=0.5)),
            hair=table.add(
                Material(
                    rgb=_srgb(who.hair_rgb), nir=0.25 + 0.4 * _luminance(who.hair_rgb), insulation=0.45, texture=2.0
                )
            ),
            upper=table.add(fabric(who.upper_rgb, upper_fabric, ins, who.carbon_black)),
            upper_trim=table.add(fabric(who.upper_rgb, upper_fabric, ins + 0.05, who.carbon_black, factor=0.72)),
            inner=table.add(fabric(who.inner_rgb, "cotton", 0.2, who.carbon_black)),
            lower=table.add(fabric(who.lower_rgb, lower_fabric, 0.3, who.carbon_black)),
            shoe=table.add(fabric(who.footwear_rgb, shoe_kind, 0.6, who.carbon_black)),
            sole=table.add(
                Material(
                    rgb=(0.9, 0.9, 0.88) if who.footwear == "sneakers" else (0.12, 0.1, 0.1), nir=0.5, insulation=0.8
                )
            ),
            backpack=table.add(bag(who.backpack_rgb, "nylon")),
            backpack_dark=table.add(bag(_scaled(who.backpack_rgb, 0.6), "nylon")),
            handbag=table.add(bag(who.handbag_rgb, "leather")),
            suitcase=table.add(
                Material(
                    rgb=_srgb(who.suitcase_rgb), nir=0.2 + 0.4 * _luminance(who.suitcase_rgb), offset=-1.0, solar=0.6
                )
            ),
            phone=table.add(Material(rgb=(0.08, 0.08, 0.1), nir=0.08, offset=6.0, solar=0.0)),
            bottle=table.add(Material(rgb=(0.55, 0.75, 0.85), nir=0.25, offset=-6.0, solar=0.0)),
            glasses=table.add(Material(rgb=(0.06, 0.06, 0.07), nir=0.08, insulation=0.5)),
            eye=table.add(Material(rgb=(0.1, 0.08, 0.08), nir=0.3, insulation=0.05)),
            mouth=table.add(Material(rgb=_srgb(who.skin, 0.7), nir=0.45, insulation=0.02)),
            zip=table.add(Material(rgb=(0.2, 0.2, 0.22), nir=0.3, insulation=0.7)),
        )


@dataclass(frozen=True)
class Body:
    """Landmark heights and half-widths (local units) for an age and gender."""

    head: float
    head_rx: float
    shoulder_y: float
    waist_y: float
    hip_y: float
    crotch_y: float
    knee_y: float
    ankle_y: float
    shoulder_w: float
    hip_w: float
    depth: float

    @classmethod
    def of(cls, who: PersonIdentity) -> Body:
        head = {"child": 0.17, "teenager": 0.138}.get(who.age, 0.13)
        t = lambda f: head + (1.0 - head) * f  # noqa: E731  (fraction of the chin-to-sole span)
        male = who.gender == "male"
        return cls(
            head=head,
            head_rx=head * 0.4,
            shoulder_y=t(0.04),
            waist_y=t(0.39),
            hip_y=t(0.45),
            crotch_y=t(0.48),
            knee_y=t(0.71),
            ankle_y=0.955,
            shoulder_w=(0.125 if male else 0.108) * (1.05 if who.age == "child" else 1.0),
            hip_w=0.095 if male else 0.106,
            depth=0.07,
        )


def _hem(who: PersonIdentity, b: Body) -> float:
    return {"coat": b.knee_y - 0.05, "jacket": b.hip_y + 0.035}.get(who.upper_clothing, b.hip_y + 0.01)


def _leg(
    p: Painter, m: PersonMaterials, who: PersonIdentity, b: Body, hip: tuple[float, float], ankle: tuple[float, float]
) -> None:
    """One leg from hip to ankle, dressed by the lower clothing (shorts and skirts show skin below)."""
    thigh, calf = b.hip_w * 0.95, 0.05
    knee = (hip[0] + (ankle[0] - hip[0]) * 0.55, b.knee_y)
    p.quad_strip(hip, knee, thigh, thigh * 0.72, m.skin)
    p.quad_strip(knee, ankle, thigh * 0.72, calf, m.skin)
    if who.lower_clothing in ("jeans", "trousers"):
        p.quad_strip(hip, knee, thigh + 0.006, thigh * 0.74 + 0.006, m.lower)
        p.quad_strip(knee, ankle, thigh * 0.74 + 0.006, calf + 0.01, m.lower)
    elif who.lower_clothing == "shorts":
        end = (hip[0] + (knee[0] - hip[0]) * 0.8, hip[1] + (knee[1] - hip[1]) * 0.8)
        p.quad_strip(hip, end, thigh + 0.01, thigh * 0.85 + 0.01, m.lower)


def _foot(p: Painter, m: PersonMaterials, who: PersonIdentity, ankle: tuple[float, float], side: bool) -> None:
    """Footwear; in the side view the foot points to +x."""
    x, y = ankle
    front, back = (x + 0.075, x - 0.025) if side else (x + 0.035, x - 0.035)
    if who.footwear == "boots":
        p.rect(back + 0.002, y - 0.09, front - (0.03 if side else 0.0), 1.0, m.shoe)
    if who.footwear == "sandals":
        p.polygon([(back, y), (front, 0.985), (front, 1.0), (back, 1.0)], m.skin)
        p.rect(back, 0.975, front, 0.985, m.shoe)
        p.rect(back, 0.993, front, 1.0, m.sole)
        return
    p.polygon([(back, y), (x + 0.01, y), (front, 0.975), (front, 1.0), (back, 1.0)], m.shoe)
    p.rect(back, 0.99, front, 1.0, m.sole)


def _torso(p: Painter, m: PersonMaterials, who: PersonIdentity, b: Body, view: str) -> None:
    hem = _hem(who, b)
    sw, ww = (b.depth, b.depth * 0.9) if view == "side" else (b.shoulder_w, b.hip_w * 0.92)
    bottom = b.hip_w * (1.3 if who.upper_clothing == "coat" else 1.02)
    if view == "side":
        bottom = b.depth * (1.35 if who.upper_clothing == "coat" else 1.05)
        pts = [(-sw, b.shoulder_y), (sw * 0.9, b.shoulder_y), (sw * 1.15, b.shoulder_y + 0.09), (ww, b.waist_y),
               (bottom, hem), (-bottom, hem), (-ww, b.waist_y)]  # fmt: skip
    else:
        pts = [
            (-sw, b.shoulder_y + 0.012), (-sw + 0.02, b.shoulder_y), (sw - 0.02, b.shoulder_y),
            (sw, b.shoulder_y + 0.012), (ww, b.waist_y), (bottom, hem), (-bottom, hem), (-ww, b.waist_y),
        ]  # fmt: skip
    p.polygon(pts, m.upper)
    kind = who.upper_clothing
    if kind == "sweater":
        p.polygon([(-bottom, hem - 0.025), (bottom, hem - 0.025), (bottom, hem), (-bottom, hem)], m.upper_trim)
    if view != "front":
        return
    neck_y = b.shoulder_y
    if kind == "t-shirt":
        p.polygon(ellipse_points(0, neck_y, 0.03, 0.022, 12, 0, 180), m.skin)
    elif kind == "jacket":
        p.rect(-0.028, neck_y + 0.005, 0.028, hem, m.inner)
        p.rect(-0.031, neck_y + 0.01, -0.024, hem, m.zip)
        p.rect(0.024, neck_y + 0.01, 0.031, hem, m.zip)
        p.polygon([(-0.05, neck_y - 0.004), (-0.012, neck_y + 0.05), (-0.03, neck_y + 0.055)], m.upper_trim)
        p.polygon([(0.05, neck_y - 0.004), (0.012, neck_y + 0.05), (0.03, neck_y + 0.055)], m.upper_trim)
    elif kind == "shirt":
        p.polygon([(-0.035, neck_y - 0.006), (0.0, neck_y + 0.03), (-0.02, neck_y + 0.035)], m.inner)
        p.polygon([(0.035, neck_y - 0.006), (0.0, neck_y + 0.03), (0.02, neck_y + 0.035)], m.inner)
        for k in range(5):
            yb = neck_y + 0.05 + k * (hem - neck_y - 0.07) / 4
            p.rect(-0.005, yb, 0.005, yb + 0.008, m.inner)
    elif kind == "coat":
        p.rect(-0.004, neck_y + 0.02, 0.004, hem, m.upper_trim)
        for k in range(4):
            yb = neck_y + 0.06 + k * 0.07
            for xb in (-0.03, 0.03):
                p.ellipse(xb, yb, 0.007, 0.005, m.zip, 8)
    elif kind == "sweater":
        p.polygon(ellipse_points(0, neck_y, 0.035, 0.02, 12, 0, 180), m.upper_trim)


def _arm(
    p: Painter,
    m: PersonMaterials,
    who: PersonIdentity,
    b: Body,
    shoulder: tuple[float, float],
    hand: tuple[float, float],
) -> None:
    """An arm with its sleeve (t-shirts: short sleeves, skin below) and a hand."""
    elbow = ((shoulder[0] + hand[0]) / 2 + (0.01 if hand[0] >= shoulder[0] else -0.01), (shoulder[1] + hand[1]) / 2)
    p.quad_strip(shoulder, elbow, 0.055, 0.046, m.skin)
    p.quad_strip(elbow, hand, 0.046, 0.038, m.skin)
    if who.upper_clothing == "t-shirt":
        end = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.55, shoulder[1] + (elbow[1] - shoulder[1]) * 0.55)
        p.quad_strip(shoulder, end, 0.062, 0.058, m.upper)
    else:
        wrist = (elbow[0] + (hand[0] - elbow[0]) * 0.9, elbow[1] + (hand[1] - elbow[1]) * 0.9)
        p.quad_strip(shoulder, elbow, 0.06, 0.052, m.upper)
        p.quad_strip(elbow, wrist, 0.052, 0.046, m.upper)
        if who.upper_clothing == "sweater":
            cuff = (elbow[0] + (hand[0] - elbow[0]) * 0.78, elbow[1] + (hand[1] - elbow[1]) * 0.78)
            p.quad_strip(cuff, wrist, 0.048, 0.046, m.upper_trim)
    p.ellipse(hand[0], hand[1] + 0.012, 0.021, 0.027, m.skin, 12)


def _head(p: Painter, m: PersonMaterials, who: PersonIdentity, b: Body, view: str) -> None:
    """Head with hair by length and style (curly = bumpy outline); face and glasses only where visible."""
    cy, ry = b.head * 0.5, b.head * 0.5
    rx = b.head_rx * (1.08 if view == "side" else 1.0)
    p.rect(-0.022, cy + ry * 0.6, 0.022, b.shoulder_y + 0.01, m.skin)  # neck
    p.ellipse(0, cy, rx, ry, m.skin, 24)
    length = {"short": 0.0, "medium": 1.0, "long": 2.0}[who.hair_length]
    if who.hair_style == "curly":
        outline = blob_points(0, cy - ry * 0.04, rx * 1.16, ry * 1.12, 11, 0.24, n=44)
    else:
        outline = ellipse_points(0, cy, rx * 1.07, ry * 1.06, 36)
    ey = cy - ry * 0.02
    if view == "front":
        p.polygon([pt for pt in outline if pt[1] <= cy - ry * 0.42], m.hair)
        if length > 0:  # locks framing the face
            low = cy + ry * (0.35 + 0.3 * length)
            p.rect(-rx * 1.07, cy - ry * 0.5, -rx * 0.8, low, m.hair)
            p.rect(rx * 0.8, cy - ry * 0.5, rx * 1.07, low, m.hair)
        for ex in (-rx * 0.38, rx * 0.38):
            p.ellipse(ex, ey, rx * 0.13, ry * 0.07, m.eye, 8)
        p.rect(-rx * 0.25, cy + ry * 0.48, rx * 0.25, cy + ry * 0.56, m.mouth)
        if who.glasses:
            p.rect(-rx * 0.72, ey - ry * 0.1, rx * 0.72, ey + ry * 0.1, m.glasses)
    elif view == "back":
        p.polygon([pt for pt in outline if pt[1] <= cy + ry * (0.55 + 0.2 * length)], m.hair)
    else:
        p.polygon([(rx * 0.95, cy - ry * 0.05), (rx * 1.18, cy + ry * 0.18), (rx * 0.95, cy + ry * 0.28)], m.skin)
        limit = cy + ry * (0.35 + 0.3 * length)
        p.polygon([pt for pt in outline if pt[0] <= rx * 0.45 and pt[1] <= limit], m.hair)
        if who.glasses:
            p.rect(rx * 0.5, ey - ry * 0.09, rx * 1.05, ey + ry * 0.09, m.glasses)
            p.line([(rx * 0.5, ey), (-rx * 0.2, ey - ry * 0.05)], 0.006, m.glasses)


def _long_hair(p: Painter, m: PersonMaterials, who: PersonIdentity, b: Body, view: str, behind: bool) -> None:
    """Hair falling below the head: behind the shoulders seen from the front, over the back otherwise."""
    if who.hair_length == "short":
        return
    cy, ry, rx = b.head * 0.5, b.head * 0.5, b.head_rx
    bottom = b.shoulder_y + (0.13 if who.hair_length == "long" else 0.0)
    if who.hair_length == "medium":
        bottom = cy + ry * 1.05
    if view == "front" and behind:
        p.polygon([(-rx * 1.12, cy), (rx * 1.12, cy), (rx * 1.2, bottom), (-rx * 1.2, bottom)], m.hair)
    elif view == "back" and not behind:
        p.polygon([(-rx * 1.08, cy), (rx * 1.08, cy), (rx * 1.15, bottom), (-rx * 1.15, bottom)], m.hair)
    elif view == "side" and not behind:
        p.polygon([(-rx * 1.05, cy), (-rx * 0.1, cy), (-rx * 0.3, bottom), (-rx * 1.15, bottom)], m.hair)


def _backpack(p: Painter, m: PersonMaterials, b: Body, view: str) -> None:
    top, bottom = b.shoulder_y + 0.015, b.waist_y + 0.01
    if view == "back":
        w = b.shoulder_w * 0.78
        p.polygon(
            [(-w, top + 0.02), (-w + 0.02, top), (w - 0.02, top), (w, top + 0.02), (w, bottom), (-w, bottom)],
            m.backpack,
        )
        p.rect(-w * 0.7, bottom - 0.1, w * 0.7, bottom - 0.015, m.backpack_dark)
        p.rect(-b.shoulder_w * 0.62, b.shoulder_y - 0.005, -b.shoulder_w * 0.42, top + 0.02, m.backpack_dark)
        p.rect(b.shoulder_w * 0.42, b.shoulder_y - 0.005, b.shoulder_w * 0.62, top + 0.02, m.backpack_dark)
    elif view == "side":
        x0 = -b.depth - 0.085
        p.polygon(
            [(x0 + 0.015, top), (-b.depth + 0.01, top), (-b.depth + 0.01, bottom), (x0, bottom), (x0, top + 0.02)],
            m.backpack,
        )
        p.rect(x0 - 0.012, bottom - 0.11, x0 + 0.02, bottom - 0.02, m.backpack_dark)
        p.line([(-b.depth + 0.005, top + 0.005), (b.depth * 0.8, b.shoulder_y + 0.06)], 0.012, m.backpack_dark)
    else:  # straps only
        for sx in (-1.0, 1.0):
            x = sx * b.shoulder_w * 0.55
            p.rect(x - 0.014, b.shoulder_y - 0.004, x + 0.014, b.shoulder_y + 0.2, m.backpack_dark)


def _handbag(p: Painter, m: PersonMaterials, b: Body, view: str, side_x: float) -> None:
    """A bag at the hip hanging from a strap over the opposite (front/back) or same (side) shoulder."""
    y0 = b.hip_y - 0.03
    if view == "side":
        x0, x1 = -0.03, 0.07
        p.line([(0.0, b.shoulder_y + 0.01), (0.02, y0)], 0.008, m.handbag)
    else:
        x0 = side_x * (b.hip_w + 0.035)
        x1 = side_x * (b.hip_w + 0.13)
        p.line([(-side_x * b.shoulder_w * 0.5, b.shoulder_y + 0.005), ((x0 + x1) / 2, y0)], 0.008, m.handbag)
    lo, hi = min(x0, x1), max(x0, x1)
    p.polygon([(lo + 0.01, y0), (hi - 0.01, y0), (hi, y0 + 0.085), (lo, y0 + 0.085)], m.handbag)


def _suitcase(p: Painter, m: PersonMaterials, view: str, hand: tuple[float, float]) -> None:
    """A wheeled suitcase dragged by its handle from ``hand``."""
    if view == "side":
        x1, x0 = hand[0] - 0.12, hand[0] - 0.3
        p.line([hand, (x1 + 0.01, 0.7)], 0.01, m.zip)
        p.polygon([(x0 + 0.03, 0.67), (x1 + 0.02, 0.7), (x1 - 0.02, 0.99), (x0 - 0.02, 0.96)], m.suitcase)
        p.ellipse(x1 - 0.02, 0.99, 0.012, 0.012, m.zip, 8)
    else:
        x0 = hand[0] + (0.01 if hand[0] > 0 else -0.19)
        x1 = x0 + 0.18
        p.line([hand, ((x0 + x1) / 2, 0.68)], 0.01, m.zip)
        p.rect(x0, 0.68, x1, 0.975, m.suitcase)
        p.rect(x0 + 0.02, 0.72, x0 + 0.03, 0.95, m.zip)
        p.rect(x1 - 0.03, 0.72, x1 - 0.02, 0.95, m.zip)
        for xw in (x0 + 0.025, x1 - 0.025):
            p.ellipse(xw, 0.985, 0.012, 0.012, m.zip, 8)


def _held(p: Painter, m: PersonMaterials, who: PersonIdentity, hand: tuple[float, float]) -> None:
    x, y = hand[0], hand[1] + 0.012
    if who.holding == "a phone":
        p.rect(x - 0.014, y - 0.025, x + 0.014, y + 0.022, m.phone)
    elif who.holding == "a bottle":
        p.rect(x - 0.013, y - 0.055, x + 0.013, y + 0.04, m.bottle)
        p.rect(x - 0.006, y - 0.068, x + 0.006, y - 0.055, m.zip)


def draw_person(p: Painter, table: MaterialTable, who: PersonIdentity, view: str, rng: np.random.Generator) -> None:
    """Draw ``who`` in ``view`` with a little pose jitter (leg spread or stride, arm swing)."""
    m = PersonMaterials.build(table, who)
    b = Body.of(who)
    hand_y = b.hip_y + 0.055
    if view == "side":
        stride = float(rng.uniform(0.03, 0.11))
        swing = float(rng.uniform(0.02, 0.08))
        far_hand = (swing, hand_y - 0.01)
        near_hand = (-0.13, hand_y - 0.02) if who.suitcase else (-swing, hand_y)
        _arm(p, m, who, b, (0.0, b.shoulder_y + 0.02), far_hand)
        _leg(p, m, who, b, (-0.005, b.hip_y), (-stride, b.ankle_y))
        _foot(p, m, who, (-stride, b.ankle_y), True)
        _leg(p, m, who, b, (0.005, b.hip_y), (stride, b.ankle_y))
        _foot(p, m, who, (stride, b.ankle_y), True)
        if who.lower_clothing == "skirt":
            p.polygon(
                [
                    (-b.depth, b.waist_y),
                    (b.depth, b.waist_y),
                    (b.depth * 1.7, b.knee_y - 0.02),
                    (-b.depth * 1.7, b.knee_y - 0.02),
                ],
                m.lower,
            )
        else:
            p.polygon(
                [
                    (-b.depth * 0.95, b.waist_y),
                    (b.depth * 0.95, b.waist_y),
                    (b.depth, b.crotch_y + 0.02),
                    (-b.depth, b.crotch_y + 0.02),
                ],
                m.lower,
            )
        _torso(p, m, who, b, view)
        if who.backpack:
            _backpack(p, m, b, view)
        _long_hair(p, m, who, b, view, behind=False)
        _head(p, m, who, b, view)
        if who.suitcase:
            _suitcase(p, m, view, near_hand)
        _arm(p, m, who, b, (0.0, b.shoulder_y + 0.02), near_hand)
        if who.handbag:
            _handbag(p, m, b, view, 1.0)
        _held(p, m, who, near_hand)
        return

    spread = float(rng.uniform(0.0, 0.035))
    swing = float(rng.uniform(-0.01, 0.03))
    hip_x = b.hip_w * 0.5
    ankle_x = hip_x * 0.9 + spread
    # Image-right hand holds things; in the back view that is the person's right hand.
    hands = ((-(b.shoulder_w + 0.018 + swing), hand_y), (b.shoulder_w + 0.018 + swing, hand_y))
    if view == "front":
        _long_hair(p, m, who, b, view, behind=True)
    if who.suitcase:
        _suitcase(p, m, view, hands[1])
    for sx in (-1.0, 1.0):
        _leg(p, m, who, b, (sx * hip_x, b.hip_y), (sx * ankle_x, b.ankle_y))
        _foot(p, m, who, (sx * ankle_x, b.ankle_y), False)
    if who.lower_clothing == "skirt":
        p.polygon(
            [
                (-b.hip_w, b.waist_y),
                (b.hip_w, b.waist_y),
                (b.hip_w * 1.6, b.knee_y - 0.02),
                (-b.hip_w * 1.6, b.knee_y - 0.02),
            ],
            m.lower,
        )
    else:
        p.polygon(
            [
                (-b.hip_w * 0.92, b.waist_y),
                (b.hip_w * 0.92, b.waist_y),
                (b.hip_w, b.crotch_y + 0.02),
                (-b.hip_w, b.crotch_y + 0.02),
            ],
            m.lower,
        )
    _torso(p, m, who, b, view)
    for sx, hand in zip((-1.0, 1.0), hands, strict=True):
        _arm(p, m, who, b, (sx * (b.shoulder_w - 0.012), b.shoulder_y + 0.018), hand)
    _head(p, m, who, b, view)
    if view == "back":
        _long_hair(p, m, who, b, view, behind=False)
    if who.backpack:
        _backpack(p, m, b, view)
    if who.handbag:
        _handbag(p, m, b, view, -1.0)
    _held(p, m, who, hands[1])

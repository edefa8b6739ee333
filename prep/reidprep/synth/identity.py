"""Latent identity attributes (the ground truth an attribute extractor should recover), drawn per (seed, pid).

Closed attributes use the template vocabularies of ``reidschemas``; open ones pick from fixed plausible lists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reidschemas.attributes import load_template

RGB = tuple[int, int, int]

PALETTE: dict[str, RGB] = {
    "red": (196, 30, 36),
    "blue": (34, 72, 178),
    "green": (40, 140, 60),
    "black": (26, 26, 28),
    "white": (236, 236, 232),
    "gray": (128, 130, 132),
    "yellow": (232, 200, 30),
    "orange": (236, 120, 24),
    "brown": (112, 70, 38),
    "purple": (110, 46, 140),
    "pink": (236, 130, 170),
    "silver": (186, 190, 196),
}
"""Colour names (the vocabulary written to the ground truth) and their sRGB values."""

PERSON_COLOURS = ("red", "blue", "green", "black", "white", "gray", "yellow", "orange", "brown", "purple", "pink")
LOWER_COLOURS = ("black", "blue", "gray", "brown", "white", "green")
SKIN_TONES: dict[str, RGB] = {"light": (234, 192, 164), "medium": (198, 146, 108), "dark": (122, 82, 58)}
HAIR_COLOURS: dict[str, RGB] = {"black": (24, 20, 18), "brown": (84, 54, 32), "blond": (196, 160, 96)}
GRAY_HAIR: RGB = (176, 176, 172)

UPPER_CLOTHING = ("t-shirt", "sweater", "jacket", "shirt", "coat")
LOWER_CLOTHING = ("jeans", "trousers", "shorts", "skirt")
FOOTWEAR = ("sneakers", "boots", "sandals", "leather shoes")
HOLDING = ("a phone", "a bottle", "none")
FABRIC_OF_UPPER = {"t-shirt": "cotton", "sweater": "wool", "jacket": "nylon", "shirt": "cotton", "coat": "wool"}
FABRIC_OF_LOWER = {"jeans": "denim", "trousers": "polyester", "shorts": "cotton", "skirt": "polyester"}
INSULATION_OF_UPPER = {"t-shirt": 0.2, "shirt": 0.25, "sweater": 0.35, "jacket": 0.45, "coat": 0.55}

VEHICLE_TYPES = ("sedan", "SUV", "truck", "hatchback", "minivan", "coupe")
VEHICLE_COLOURS = ("white", "black", "silver", "gray", "red", "blue", "green", "yellow", "orange", "brown", "purple")
VEHICLE_COLOUR_WEIGHTS = (0.2, 0.18, 0.14, 0.12, 0.09, 0.09, 0.04, 0.03, 0.03, 0.04, 0.04)


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...] | None = None) -> str:
    probs = None if p is None else np.asarray(p, dtype=float) / np.sum(p)
    return str(options[int(rng.choice(len(options), p=probs))])


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int = 10) -> RGB:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return (r, g, b)


def _vocabulary(kind: str, name: str) -> tuple[str, ...]:
    options = load_template(kind).spec(name).options
    assert options is not None, f"{kind}.{name} is an open attribute"
    return options


@dataclass(frozen=True)
class PersonIdentity:
    """A pedestrian: everything the renderer draws, fixed for every image of the id."""

    pid: int
    age: str
    gender: str
    skin: RGB
    hair_length: str
    hair_style: str
    hair_rgb: RGB
    upper_clothing: str
    upper_color: str
    upper_rgb: RGB
    inner_rgb: RGB
    lower_clothing: str
    lower_color: str
    lower_rgb: RGB
    footwear: str
    footwear_rgb: RGB
    glasses: bool
    backpack: bool
    backpack_rgb: RGB
    handbag: bool
    handbag_rgb: RGB
    suitcase: bool
    suitcase_rgb: RGB
    holding: str
    carbon_black: bool
    """Black synthetic fabrics dyed with carbon: dark in NIR too (other dyes are transparent there)."""

    @property
    def footwear_style(self) -> str:
        return {"sneakers": "sporty", "leather shoes": "formal"}.get(self.footwear, "casual")

    @property
    def carrying(self) -> str:
        if self.suitcase:
            return "luggage"
        if self.backpack:
            return "backpack"
        return "handbag" if self.handbag else "none"

    def attributes(self) -> dict[str, str]:
        """Identity attributes in the template spelling (per-image conditions are not included)."""
        return {
            "age": self.age,
            "gender": self.gender,
            "upper_clothing": self.upper_clothing,
            "upper_clothing_color": self.upper_color,
            "lower_clothing": self.lower_clothing,
            "lower_clothing_color": self.lower_color,
            "hair_length": self.hair_length,
            "hair_style": self.hair_style,
            "footwear": self.footwear,
            "footwear_style": self.footwear_style,
            "carrying": self.carrying,
            "holding": self.holding,
            "handbag": "carrying handbag" if self.handbag else "not",
            "backpack": "carrying backpack" if self.backpack else "not",
            "glasses": "wearing glasses" if self.glasses else "not",
            "suitcase": "dragging" if self.suitcase else "not dragging",
        }


def sample_person(pid: int, rng: np.random.Generator) -> PersonIdentity:
    """Draw a pedestrian's latent attributes."""
    age = _pick(rng, _vocabulary("pedestrian", "age"), (0.1, 0.15, 0.6, 0.15))
    gender = _pick(rng, ("male", "female"))
    hair_length = _pick(
        rng, _vocabulary("pedestrian", "hair_length"), (0.6, 0.25, 0.15) if gender == "male" else (0.15, 0.35, 0.5)
    )
    hair_rgb = GRAY_HAIR if age == "senior" else HAIR_COLOURS[_pick(rng, tuple(HAIR_COLOURS), (0.6, 0.3, 0.1))]
    upper = _pick(rng, UPPER_CLOTHING, (0.3, 0.2, 0.25, 0.15, 0.1))
    upper_color = _pick(rng, PERSON_COLOURS)
    lower = _pick(rng, LOWER_CLOTHING, (0.4, 0.3, 0.15, 0.15) if gender == "female" else (0.45, 0.4, 0.15, 0.0))
    lower_color = "blue" if lower == "jeans" and rng.random() < 0.6 else _pick(rng, LOWER_COLOURS)
    inner = _pick(rng, ("white", "gray", "black"))
    backpack = bool(rng.random() < 0.35)
    suitcase = bool(rng.random() < (0.05 if age == "child" else 0.12))
    return PersonIdentity(
        pid=pid,
        age=age,
        gender=gender,
        skin=_jitter(SKIN_TONES[_pick(rng, tuple(SKIN_TONES), (0.45, 0.35, 0.2))], rng, 8),
        hair_length=hair_length,
        hair_style=_pick(rng, ("straight", "curly"), (0.75, 0.25)),
        hair_rgb=_jitter(hair_rgb, rng, 6),
        upper_clothing=upper,
        upper_color=upper_color,
        upper_rgb=_jitter(PALETTE[upper_color], rng, 8),
        inner_rgb=PALETTE[inner],
        lower_clothing=lower,
        lower_color=lower_color,
        lower_rgb=_jitter(PALETTE[lower_color], rng, 8),
        footwear=_pick(rng, FOOTWEAR, (0.45, 0.2, 0.1, 0.25)),
        footwear_rgb=PALETTE[_pick(rng, ("white", "black", "brown", "gray", "blue"))],
        glasses=bool(rng.random() < 0.25),
        backpack=backpack,
        backpack_rgb=_jitter(PALETTE[_pick(rng, ("black", "gray", "blue", "red", "green"))], rng, 8),
        handbag=bool(rng.random() < (0.35 if gender == "female" else 0.08)) and age != "child",
        handbag_rgb=_jitter(PALETTE[_pick(rng, ("black", "brown", "white", "red"))], rng, 8),
        suitcase=suitcase,
        suitcase_rgb=_jitter(PALETTE[_pick(rng, ("black", "gray", "blue", "silver"))], rng, 8),
        holding="none" if suitcase else _pick(rng, HOLDING, (0.2, 0.12, 0.68)),
        carbon_black=bool(rng.random() < 0.5),
    )


@dataclass(frozen=True)
class VehicleIdentity:
    """A vehicle: everything the renderer draws, fixed for every image of the id."""

    pid: int
    vehicle_type: str
    color: str
    paint_rgb: RGB
    paint_nir: float
    tinted: bool
    exterior_condition: str
    headlights_shape: str
    taillights_shape: str
    front_grille_shape: str
    sunroof: bool
    tire_size: str
    spoiler: bool
    roof_rack: bool
    side_mirror_condition: str
    exhaust_type: str
    plate: bool
    """Whether the car carries plates (a few unregistered ones do not)."""

    @property
    def roof_type(self) -> str:
        if self.sunroof:
            return "sunroof"
        return "flat" if self.vehicle_type in ("SUV", "minivan", "truck") else "sloped"

    def attributes(self) -> dict[str, str]:
        """Identity attributes in the template spelling (per-image conditions are not included)."""
        return {
            "vehicle_type": self.vehicle_type,
            "color": self.color,
            "window_condition": "tinted" if self.tinted else "clear",
            "exterior_condition": self.exterior_condition,
            "headlights_shape": self.headlights_shape,
            "taillights_shape": self.taillights_shape,
            "front_grille_shape": self.front_grille_shape,
            "roof_type": self.roof_type,
            "tire_size": self.tire_size,
            "spoiler": "present" if self.spoiler else "not present",
            "roof_rack": "present" if self.roof_rack else "not present",
            "side_mirrors": "present",
            "side_mirror_condition": self.side_mirror_condition,
            "exhaust_type": self.exhaust_type,
        }


# NIR reflectance of automotive paints by colour; black is either carbon black (dark) or an IR-reflective black.
_PAINT_NIR = {
    "white": 0.78, "silver": 0.62, "gray": 0.45, "red": 0.66, "blue": 0.34, "green": 0.48,
    "yellow": 0.72, "orange": 0.7, "brown": 0.42, "purple": 0.5,
}  # fmt: skip


def sample_vehicle(pid: int, rng: np.random.Generator) -> VehicleIdentity:
    """Draw a vehicle's latent attributes."""
    vtype = _pick(rng, VEHICLE_TYPES, (0.32, 0.24, 0.1, 0.14, 0.1, 0.1))
    color = _pick(rng, VEHICLE_COLOURS, VEHICLE_COLOUR_WEIGHTS)
    paint_nir = (0.08 if rng.random() < 0.6 else 0.5) if color == "black" else _PAINT_NIR[color]
    big = vtype in ("SUV", "truck")
    return VehicleIdentity(
        pid=pid,
        vehicle_type=vtype,
        color=color,
        paint_rgb=_jitter(PALETTE[color], rng, 8),
        paint_nir=float(np.clip(paint_nir + rng.normal(0, 0.03), 0.03, 0.9)),
        tinted=bool(rng.random() < 0.4),
        exterior_condition=_pick(rng, ("new", "used", "worn", "damaged"), (0.3, 0.45, 0.15, 0.1)),
        headlights_shape=_pick(rng, _vocabulary("vehicle", "headlights_shape")),
        taillights_shape=_pick(rng, _vocabulary("vehicle", "taillights_shape")),
        front_grille_shape=_pick(rng, _vocabulary("vehicle", "front_grille_shape")),
        sunroof=bool(rng.random() < 0.25) and vtype != "truck",
        tire_size=_pick(rng, _vocabulary("vehicle", "tire_size"), (0.1, 0.4, 0.5) if big else (0.35, 0.55, 0.1)),
        spoiler=bool(rng.random() < (0.45 if vtype in ("coupe", "hatchback") else 0.12)),
        roof_rack=bool(rng.random() < (0.45 if vtype in ("SUV", "minivan") else 0.1)) and vtype != "truck",
        side_mirror_condition=_pick(rng, ("intact", "missing"), (0.92, 0.08)),
        exhaust_type=_pick(rng, _vocabulary("vehicle", "exhaust_type"), (0.45, 0.3, 0.25)),
        plate=bool(rng.random() < 0.93),
    )


def identity_record(identity: PersonIdentity | VehicleIdentity) -> dict[str, Any]:
    """JSON-ready description: the template attributes plus the rendering parameters."""
    return {"attributes": identity.attributes(), "render": {k: v for k, v in asdict(identity).items() if k != "pid"}}

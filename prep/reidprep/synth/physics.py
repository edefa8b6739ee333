"""Materials and the three sensors: visible colour, near-infrared reflectance, thermal emission.

A scene is drawn once as a map of material indices; each modality then looks its own property up per pixel:
the RGB camera sees the dye colour under daylight or street light, the NIR camera sees the material's
reflectance (not the visible luminance: cotton, denim and leaves are bright, carbon-black dyes dark) under the
sun or an active IR illuminator, and the thermal camera sees temperature (skin and engines warm, glass and sky
cold, surroundings following the weather and the sun).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

SKIN_TEMPERATURE = 33.5
"""Exposed skin, degrees C."""
NIGHT_SKY_COOLING = 3.0
PASSIVE_SOLAR_GAIN = 8.0
"""Degrees C a fully absorbing passive surface (dark asphalt) gains in full sun over the air (a mild day)."""
CLOTHING_SOLAR_GAIN = 6.0
"""Degrees C the surface of fully insulating fabric gains in full sun (thin fabric passes it to the skin)."""
"""Degrees C an exposed passive surface loses below the air temperature under a clear night sky."""
TIR_RANGE = (-5.0, 45.0)
"""Temperatures mapped to grey 0 and 255 (a fixed-gain, white-hot thermal camera)."""

LightGroup = str
"""Lamps switched together: ``street`` (on at night), ``head`` and ``tail`` (a vehicle's lights)."""


@dataclass(frozen=True)
class Material:
    """What one drawn part is made of."""

    rgb: tuple[float, float, float]
    """Visible albedo as sRGB in [0, 1]."""
    nir: float
    """Reflectance at about 850 nm, [0, 1]."""
    offset: float = 0.0
    """Temperature above ambient (engines, tyres, exhaust > 0; glass and sky reflect the cold sky < 0)."""
    solar: float = 1.0
    """How much the sun heats it (scaled by its visible absorptance)."""
    insulation: float | None = None
    """Body-heated parts: 0 = bare skin, 1 = as cold as the air; None for passive objects."""
    emit: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Linear RGB radiance when its light group is on."""
    emit_nir: float = 0.0
    light: LightGroup | None = None
    texture: float = 1.0
    """Weight of the camera's or the object's texture noise on this material."""


VOID = Material(rgb=(0.0, 0.0, 0.0), nir=0.0)


class MaterialTable:
    """Materials of one image, index 0 reserved for "nothing drawn" (layers are mode-L index maps)."""

    def __init__(self, materials: list[Material] | None = None) -> None:
        self.materials: list[Material] = [VOID]
        self._index: dict[Material, int] = {}
        for material in materials or []:
            self.materials.append(material)
            self._index.setdefault(material, len(self.materials) - 1)

    def add(self, material: Material) -> int:
        """The index of ``material``, appended if it is new."""
        index = self._index.get(material)
        if index is None:
            if len(self.materials) >= 256:
                raise RuntimeError("more than 255 materials in one image")
            self.materials.append(material)
            index = self._index[material] = len(self.materials) - 1
        return index


@dataclass(frozen=True)
class Environment:
    """Conditions of one capture."""

    night: bool
    illumination: str
    """``bright``, ``normal`` or ``dim`` (template spelling)."""
    ambient: float
    """Air temperature, degrees C."""
    sun: float
    """Solar heating, 0 (night, overcast) to 1 (full sun)."""
    lights_on: frozenset[LightGroup] = field(default_factory=frozenset)


@dataclass(frozen=True)
class CameraOptics:
    """Fixed properties of one camera (all three sensors of a rig)."""

    tint: tuple[float, float, float]
    """White balance of the RGB sensor."""
    lamp: tuple[float, float]
    """Street lamp position (x, y) in canvas pixels: the pool of light at night."""
    column_noise: np.ndarray
    """(W,) thermal fixed-pattern offsets, grey levels / 255."""


def _compile(table: MaterialTable, env: Environment) -> dict[str, np.ndarray]:
    """Per-material lookup arrays for ``env``.

    Returns albedo (N, 3) linear, nir (N,), temp (N,) degrees C, emit (N, 3), emit_nir (N,), tex (N,).
    """
    mats = table.materials
    rgb = np.array([m.rgb for m in mats], dtype=np.float32)  # (N, 3)
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (N,)
    temp = np.empty(len(mats), dtype=np.float32)
    for i, m in enumerate(mats):
        absorbed = env.sun * m.solar * (1.0 - lum[i])  # sunlight absorbed, 0..1
        if m.insulation is not None:  # body heat through the fabric, plus the sun on the fabric's surface
            temp[i] = SKIN_TEMPERATURE - (SKIN_TEMPERATURE - env.ambient) * m.insulation
            temp[i] += CLOTHING_SOLAR_GAIN * absorbed * m.insulation
        else:  # sunlit surfaces warm up by day; exposed ones cool below the air under a night sky
            temp[i] = env.ambient + m.offset + PASSIVE_SOLAR_GAIN * absorbed
            if env.night:
                temp[i] -= NIGHT_SKY_COOLING * min(m.solar, 1.0)
    on = np.array([m.light is not None and m.light in env.lights_on for m in mats], dtype=np.float32)  # (N,)
    return {
        "albedo": np.power(rgb, 2.2),
        "nir": np.array([m.nir for m in mats], dtype=np.float32),
        "temp": temp,
        "emit": np.array([m.emit for m in mats], dtype=np.float32) * on[:, None],
        "emit_nir": np.array([m.emit_nir for m in mats], dtype=np.float32) * on,
        "tex": np.array([m.texture for m in mats], dtype=np.float32),
    }


def box_blur(img: np.ndarray, radius: int, passes: int = 2) -> np.ndarray:
    """Approximate Gaussian blur of an (H, W) or (H, W, C) float array by repeated box filters (edges clamped)."""
    if radius <= 0:
        return img
    out = img.astype(np.float32, copy=True)
    k = 2 * radius + 1
    for _ in range(passes):
        for axis in (0, 1):
            pad = [(0, 0)] * out.ndim
            pad[axis] = (radius + 1, radius)
            padded = np.pad(out, pad, mode="edge")
            csum = np.cumsum(padded, axis=axis, dtype=np.float32)
            hi = np.take(csum, np.arange(k, csum.shape[axis]), axis=axis)
            lo = np.take(csum, np.arange(0, csum.shape[axis] - k), axis=axis)
            out = ((hi - lo) / k).astype(np.float32)
    return out


def render_modalities(
    ids: np.ndarray,
    near: np.ndarray,
    shade: np.ndarray,
    texture: np.ndarray,
    table: MaterialTable,
    env: Environment,
    optics: CameraOptics,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free sensor images of a material map.

    ids: (H, W) uint8 material indices; near: (H, W) bool, target and occluders (lit by the IR illuminator);
    shade: (H, W) float, 1 in the open, < 1 in cast shadows; texture: (H, W) float around 1.
    Returns rgb (H, W, 3), nir (H, W) and tir (H, W), floats in [0, 1] (display values).
    """
    lut = _compile(table, env)
    h, w = ids.shape
    tex_w = lut["tex"][ids]  # (H, W)
    tex = 1.0 + (texture - 1.0) * tex_w  # (H, W)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lamp = np.exp(-((xx - optics.lamp[0]) ** 2 + (yy - optics.lamp[1]) ** 2) / (2 * (0.45 * max(h, w)) ** 2))

    # Visible: daylight (shadows) or dim street light around the lamp; lamps and headlights glow.
    if env.night:
        level = {"bright": 0.05, "normal": 0.025, "dim": 0.01}[env.illumination]
        light = level * (0.35 + 1.3 * lamp)  # (H, W)
        tint = np.array([1.15, 0.95, 0.7], dtype=np.float32)  # sodium-ish
    else:
        level = {"bright": 1.05, "normal": 0.72, "dim": 0.38}[env.illumination]
        light = level * shade
        tint = np.array(optics.tint, dtype=np.float32)
    emit = lut["emit"][ids]  # (H, W, 3)
    glow = box_blur(emit, 3) * 0.9 + box_blur(emit, 9) * 0.6 if emit.any() else emit
    lin = lut["albedo"][ids] * (tex * light)[..., None] * tint + emit + glow  # (H, W, 3)
    rgb = np.power(np.clip(lin, 0.0, 1.0), 1 / 2.2)

    # Near infrared: sunlight, or at night an active illuminator (near objects lit, vignetting, far side dim).
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    if env.night:
        nir_light = np.where(near, 0.95, 0.5) * (1.0 - 0.3 * r2)
    else:
        nir_light = {"bright": 0.95, "normal": 0.78, "dim": 0.5}[env.illumination] * (0.55 + 0.45 * shade)
    emit_nir = lut["emit_nir"][ids]
    if emit_nir.any():
        emit_nir = emit_nir + box_blur(emit_nir, 4) * 0.8
    nir = np.power(np.clip(lut["nir"][ids] * tex * nir_light + emit_nir, 0.0, 1.0), 1 / 1.8)

    # Thermal: temperature with a little texture, fixed gain.
    temp = lut["temp"][ids] + (texture - 1.0) * 6.0  # (H, W) degrees C
    lo, hi = TIR_RANGE
    tir = np.clip((temp - lo) / (hi - lo), 0.0, 1.0)
    return rgb.astype(np.float32), nir.astype(np.float32), tir.astype(np.float32)


def finish(img: np.ndarray, blur: float, noise: float, rng: np.random.Generator, lowres: int = 1) -> np.ndarray:
    """Optics and sensor: optional low resolution (factor), Gaussian blur (radius px), Gaussian noise; to uint8.

    img: (H, W) or (H, W, 3) floats in [0, 1]. Returns the same shape as uint8.
    """
    pil = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if lowres > 1:
        w, h = pil.size
        pil = pil.resize((w // lowres, h // lowres), Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)
    if blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    out = np.asarray(pil, dtype=np.float32)
    if noise > 0:
        out = out + rng.normal(0.0, noise * 255.0, size=out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

"""One aligned RGB/NIR/TIR triplet with its visible-foreground masks: compose layers, sense, degrade, crop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from reidprep.synth.canvas import Painter
from reidprep.synth.identity import PersonIdentity, VehicleIdentity
from reidprep.synth.occluders import draw_occluder
from reidprep.synth.person import HEIGHT_OF_AGE, draw_person
from reidprep.synth.physics import Environment, MaterialTable, finish, render_modalities
from reidprep.synth.scene import PAD, Camera, Capture
from reidprep.synth.vehicle import draw_vehicle

MODALITIES = ("rgb", "nir", "tir")
PERSON_SIZE = (128, 256)
"""(width, height) of RGBNT201 images."""
VEHICLE_SIZE = (256, 128)
"""(width, height) of MSVR310 images."""
MIN_VISIBLE = 0.45
"""An occluder that would hide more than 1 - this fraction of the target is left out."""


@dataclass(frozen=True)
class Triplet:
    """Rendered images and masks of one capture."""

    images: dict[str, np.ndarray]
    """Modality -> (H, W, 3) uint8."""
    masks: dict[str, np.ndarray]
    """Modality -> (H, W) uint8, 255 on the visible target (carried items included), 0 elsewhere."""
    conditions: dict[str, str]
    """Per-image attribute values (template spelling): view, illumination, capture_time, target_clarity..."""
    capture: Capture


def _fine_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 texture of the target's surfaces (folds, grain), around 1."""
    coarse = rng.normal(0.0, 1.0, size=(h // 6 + 2, w // 6 + 2)).astype(np.float32)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
    return (1.0 + 0.05 * np.asarray(img) + 0.03 * rng.normal(0.0, 1.0, size=(h, w))).astype(np.float32)


def _compose(
    camera: Camera,
    capture: Capture,
    table: MaterialTable,
    fg: np.ndarray,
    shadow: np.ndarray,
    target_box: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> tuple[Capture, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Add the occluder (dropped if it hides too much) and the background.

    Returns the capture (occluder may be cleared), ids (Hc, Wc) uint8, near (Hc, Wc) bool, shade (Hc, Wc) float,
    texture (Hc, Wc) float and visible (Hc, Wc) bool.
    """
    hc, wc = fg.shape
    occ = np.zeros_like(fg)
    if capture.occluder is not None:
        layer = Image.new("L", (wc, hc), 0)
        draw_occluder(capture.occluder, layer, table, target_box, rng)
        occ = np.asarray(layer, dtype=np.uint8)
        if ((fg > 0) & (occ == 0)).sum() < MIN_VISIBLE * (fg > 0).sum():
            occ = np.zeros_like(fg)
            capture = dataclasses.replace(capture, occluder=None)
    ox, oy = capture.bg_offset
    ids = camera.ids[oy : oy + hc, ox : ox + wc].copy()
    ids[fg > 0] = fg[fg > 0]
    ids[occ > 0] = occ[occ > 0]
    near = (fg > 0) | (occ > 0)
    shade = np.where(near, 1.0, shadow).astype(np.float32)
    texture = np.where(near, _fine_texture(rng, hc, wc), camera.texture[oy : oy + hc, ox : ox + wc])
    return capture, ids, near, shade, texture, (fg > 0) & (occ == 0)


def _sense(
    camera: Camera,
    capture: Capture,
    table: MaterialTable,
    ids: np.ndarray,
    near: np.ndarray,
    shade: np.ndarray,
    texture: np.ndarray,
    visible: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The three sensors with their optics and noise, each cropped at its registration shift, plus masks."""
    lights = {"street"} if capture.night else set()
    if capture.headlights_on:
        lights.add("head")
    env = Environment(capture.night, capture.illumination, capture.ambient, capture.sun, frozenset(lights))
    rgb, nir, tir = render_modalities(ids, near, shade, texture, table, env, camera.optics)
    blur = float(rng.uniform(1.5, 2.6)) if capture.blurry else 0.0
    night = capture.night
    tir = tir + camera.optics.column_noise[None, :]
    full = {
        "rgb": finish(rgb, blur, 0.03 if night else 0.01, rng),
        "nir": finish(nir, blur, 0.035 if night else 0.012, rng),
        "tir": finish(tir, blur * 0.7, 0.012, rng, lowres=2),
    }
    w, h = size
    mask_full = visible.astype(np.uint8) * 255
    images, masks = {}, {}
    for modality, (dx, dy) in zip(MODALITIES, capture.shifts, strict=True):
        crop = (slice(PAD + dy, PAD + dy + h), slice(PAD + dx, PAD + dx + w))
        img = full[modality][crop]
        images[modality] = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        masks[modality] = np.ascontiguousarray(mask_full[crop])
    return images, masks


def _conditions(capture: Capture) -> dict[str, str]:
    return {
        "view": capture.view,
        "illumination": capture.illumination,
        "capture_time": "nighttime" if capture.night else "daytime",
        "target_clarity": "blurry" if capture.blurry else "clear",
    }


def render_person(
    who: PersonIdentity, camera: Camera, capture: Capture, rng: np.random.Generator, size: tuple[int, int] = PERSON_SIZE
) -> Triplet:
    """Render one pedestrian triplet (images 128 x 256 by default)."""
    w, h = size
    wc, hc = w + 2 * PAD, h + 2 * PAD
    table = MaterialTable(list(camera.materials))
    height = h * 0.8 * HEIGHT_OF_AGE[who.age] * float(rng.uniform(0.9, 1.05))
    foot = min(hc - 3.0, hc * camera.ground + float(rng.uniform(-5, 4)))
    height = min(height, foot - 4.0)
    cx = wc / 2 + float(rng.uniform(-0.1, 0.1)) * w
    shear = float(rng.uniform(-0.05, 0.05))
    flip = -1.0 if capture.facing_left else 1.0
    layer = Image.new("L", (wc, hc), 0)
    matrix = (flip * height, height * shear, cx - height * shear, 0.0, height, foot - height)
    draw_person(Painter(layer, matrix), table, who, capture.view, rng)
    fg = np.asarray(layer, dtype=np.uint8)
    shadow_layer = Image.new("L", (wc, hc), 0)
    if not capture.night:
        reach = camera.sun_dx * height * 0.35
        ImageDraw.Draw(shadow_layer).ellipse(
            [
                min(cx, cx + reach) - 0.1 * height,
                foot - 0.025 * height,
                max(cx, cx + reach) + 0.1 * height,
                foot + 0.03 * height,
            ],
            fill=1,
        )
    shadow = 1.0 - (0.2 + 0.45 * capture.sun) * np.asarray(shadow_layer, dtype=np.float32)
    cols, rows = np.nonzero(fg.any(axis=0))[0], np.nonzero(fg.any(axis=1))[0]
    box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    capture, ids, near, shade, texture, visible = _compose(camera, capture, table, fg, shadow, box, rng)
    images, masks = _sense(camera, capture, table, ids, near, shade, texture, visible, size, rng)
    return Triplet(images, masks, _conditions(capture), capture)


def render_vehicle(
    car: VehicleIdentity,
    camera: Camera,
    capture: Capture,
    rng: np.random.Generator,
    size: tuple[int, int] = VEHICLE_SIZE,
) -> Triplet:
    """Render one vehicle triplet (images 256 x 128 by default)."""
    w, h = size
    wc, hc = w + 2 * PAD, h + 2 * PAD
    table = MaterialTable(list(camera.materials))
    ground = min(hc - 3.0, hc * camera.ground + float(rng.uniform(-4, 3)))
    box = (
        wc / 2 + float(rng.uniform(-0.06, 0.06)) * w,
        ground,
        w * float(rng.uniform(0.8, 0.94)),
        (ground - 3) * float(rng.uniform(0.85, 0.97)),
    )
    layer = Image.new("L", (wc, hc), 0)
    plate_drawn, plate_mat = draw_vehicle(
        layer, table, car, capture.view, capture.facing_left, capture.headlights_on, box, rng
    )
    fg = np.asarray(layer, dtype=np.uint8)
    cols, rows = np.nonzero(fg.any(axis=0))[0], np.nonzero(fg.any(axis=1))[0]
    target = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    shadow_layer = Image.new("L", (wc, hc), 0)
    ImageDraw.Draw(shadow_layer).rectangle(
        [target[0] + 4, ground - 0.12 * (target[3] - target[1]), target[2] - 4, ground + 3], fill=1
    )
    shadow = 1.0 - (0.45 if not capture.night else 0.0) * np.asarray(shadow_layer, dtype=np.float32)
    capture, ids, near, shade, texture, visible = _compose(camera, capture, table, fg, shadow, target, rng)
    images, masks = _sense(camera, capture, table, ids, near, shade, texture, visible, size, rng)
    plate_px = int((fg == plate_mat).sum())
    plate_seen = plate_drawn and plate_px >= 4 and int(((fg == plate_mat) & visible).sum()) >= 0.5 * plate_px
    conditions = _conditions(capture) | {
        "headlights_condition": "on" if capture.headlights_on else "off",
        "license_plate": "visible" if plate_seen else "not visible",
    }
    return Triplet(images, masks, conditions, capture)

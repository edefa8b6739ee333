"""``heuristic``: a BASELINE attribute provider that measures a few attributes from the pixels and the mask.

No model and no network: the offline default of the demo and the floor an MLLM has to beat, not a stand-in for one.
It reads nothing but the query's image and mask. What it cannot measure is null with confidence 0; it never fills
an attribute from a prior. Measured (thresholds in ``HeuristicParams``; g = a grey level 0-255, h = the silhouette's
height; ramp(m, s) = 0.5 + 0.45 * min(1, |m| / s), m being the measurement minus its threshold):

=====================  ===========  ====================================================  ==========================
attribute              modalities   measurement                                           confidence
=====================  ===========  ====================================================  ==========================
capture_time           rgb          median background g < 45: night (night RGB is         min(0.98, 0.5 + 0.5 *
                                    nearly black)                                         abs(ln(g / 45)) / ln 2)
capture_time           nir          sensor noise, median abs Laplacian > 26: night        ramp(m, 8)
                                    (high gain under the active illuminator)
capture_time           tir          median background g < 87: night (cold air on a        0.5 + 0.4 * min(1,
                                    fixed-gain camera)                                    abs(m) / 40)
illumination           rgb, nir     by day: a percentile of the background g against      0.35 + 0.55 * min(1,
                       (day)        two thresholds per kind and modality (dim | normal    d / 12), d = distance to
                                    | bright); RGB at night: median g against one         the nearer threshold;
                                    (dim | normal); NIR at night and TIR: null            night: 0.4 + 0.5 * min(1,
                                                                                          abs(m) / 8)
target_clarity         all (RGB     edge-width ratio: 90th percentile gradient on the     ramp(m, 0.25); TIR
                       by day)      mask boundary at sigma 0.7 over sigma 1.5 (a sharp    ramp(m, 0.2); null when
                                    step loses more to the extra smoothing); the          the boundary gradient is
                                    variance of the Laplacian was tried and is swamped    < 4 g per pixel
                                    by sensor noise at night
upper_clothing_color,  rgb (day)    HSV name of each exposure-normalised pixel of a       0.3 + 0.65 * min(1, (top
lower_clothing_color,               region (skin tones left out), majority vote.          share - second share) /
color                               Upper: torso rows (back view: beside a backpack's     0.5), at most 0.95
                                    place; side view: along the head's vertical);
                                    lower: shins, or thighs when the shins are bare;
                                    vehicle: rows 25-80 % of the box. Null at night
view (pedestrian)      rgb, tir;    side when the median torso row width < 0.2 h; else    side: ramp(m, 0.06);
                       nir: side    front when the head rows are mostly face (RGB:        front/back: min(ramp(face
                       only         skin-toned; TIR: within 8 g of the body's hottest),   - t, 0.25), ramp(width -
                                    back when mostly hair                                 0.2 h, 0.06))
view (vehicle)         all          box width / height < 1.75: front or back (TIR: hot    min(ramp(aspect - 1.75,
                                    centre is the front; NIR: a dark centre (grille) is   0.4), ramp(m, s)): s = 10 g
                                    the front, else null; RGB: red tail lights in the     (TIR), 15 g (NIR), 0.05
                                    side thirds are the back, null on red vehicles);      (red share), 0.1 (ends)
                                    wider: diagonal when its taller end stands >= 0.72
                                    of the tallest column (a face), else side
lower_clothing         rgb (day)    shins mostly skin-toned: skirt when the mask just     min(ramp(skin - 0.5, 0.3),
                                    above the knees is wide (>= 0.255 h; side view        ramp(m, 0.05 h)); trousers:
                                    0.185 h), else shorts; covered shins: trousers        0.5 * ramp(skin - 0.5,
                                    (jeans are not told from other trousers)              0.3)
suitcase               all          mask area beyond 0.22 h from the body axis in rows    ramp(m, 0.007)
                                    72-96 % >= 0.007 h^2: dragging (missed when an
                                    occluder hides it)
headlights_condition   nir; rgb     share of saturated pixels (>= 245) on the vehicle     ramp(m, 0.002)
                       at night     and a 3-pixel rim >= 0.002: on; only when the view
                                    is measured front, side or diagonal
=====================  ===========  ====================================================  ==========================

Everything else (age, gender, hair, footwear, bags other than suitcases, vehicle type, brand, ...) is null. NIR and
TIR never give colours, TIR never gives illumination.

Composite (RGB | NIR | TIR side by side, see ``composite_image``): split into equal thirds, each third measured as
its modality, then merged: colours, light and lower clothing from the RGB third, the rest from the most confident
third (headlights dropped when the merged view is the back).

No mask in the query: the target is assumed in a centre box of the crop (``CENTRE_BOX``); colours are read from a
narrow strip along its middle, clarity from the box's strongest edges; view, suitcase and lower clothing are null,
and the confidences of the colours and the headlights are multiplied by ``estimated_mask_factor`` (capture time,
illumination and clarity do not need the mask and keep theirs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from reidprep.captions.attributes import AttributeAnswer, AttributeProvider, AttributeQuery
from reidprep.captions.backends.base import RequestFailure
from reidschemas import ObjectKind, attribute_model

MIN_SIDE = 16
"""Images (each third of a composite) narrower or lower than this many pixels fail: nothing can be measured."""
ALGORITHM_VERSION = 1
"""Bump when the same image, mask and parameters would give different attributes."""

Modality = Literal["rgb", "nir", "tir"]
Measured = dict[str, tuple[str, float]]
"""Attribute name -> (value, confidence) of what one modality measured."""

COLOUR_ATTRIBUTES = frozenset({"upper_clothing_color", "lower_clothing_color", "color"})
RGB_ONLY = COLOUR_ATTRIBUTES | {"illumination", "capture_time", "lower_clothing"}
"""Composite: these come from the RGB third only (colour and light are what visible light is for)."""
SHAPE_ATTRIBUTES = frozenset({"view", "suitcase", "lower_clothing"})
"""Need the silhouette's exact shape: null when the mask is estimated."""
MASK_FREE = frozenset({"illumination", "capture_time", "target_clarity"})
"""Measured on the whole image or its strongest edges: without a mask they are as reliable (measured on the
synthetic data), so their confidence is not lowered."""


@dataclass(frozen=True)
class HeuristicParams:
    """Thresholds of the measurements (grey levels are 0-255; heights are fractions of the silhouette's)."""

    rgb_night_grey: float = 45.0
    """RGB: median background grey below which the image is nighttime (night RGB is nearly black)."""
    day_illumination: dict[str, tuple[float, float, float]] = field(
        default_factory=lambda: {
            "pedestrian/rgb": (50.0, 106.0, 140.0),
            "pedestrian/nir": (50.0, 116.0, 142.0),
            "vehicle/rgb": (50.0, 66.0, 80.0),
            "vehicle/nir": (98.0, 162.0, 202.0),
        }
    )
    """By day, per kind/modality: (percentile of the background grey, dim | normal and normal | bright
    thresholds). Vehicle scenes are mostly asphalt, darker than the pavements behind pedestrians; in NIR their
    brightest surfaces (markings, kerbs, sky) tell the light better than the median."""
    rgb_night_illumination: dict[str, float] = field(default_factory=lambda: {"pedestrian": 22.0, "vehicle": 20.0})
    """RGB at night: median background grey above which the street light is normal rather than dim."""
    nir_night_noise: float = 26.0
    """NIR: median absolute Laplacian of the image above which it is nighttime (high gain, active illuminator)."""
    tir_night_grey: float = 87.0
    """TIR: median background grey below which it is nighttime (about 12 C on the synthetic camera's scale)."""
    clarity_ratio: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"rgb": (1.36, 0.25), "nir": (1.38, 0.25), "tir": (1.26, 0.2)}
    )
    """(threshold, confidence scale) of the edge-width ratio (gradient at sigma 0.7 / at sigma 1.5 on the mask
    boundary) below which the target is blurry. Not measured on RGB at night (noise swamps the edges)."""
    clarity_min_gradient: float = 4.0
    """Boundary gradient (grey per pixel at sigma 1.5) below which clarity is not measured (too dark, too flat)."""
    exposure_reference: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"pedestrian": (50.0, 0.3), "vehicle": (98.0, 0.8)}
    )
    """(percentile, linear luminance) of the background at nominal daylight, per kind: colours are normalised so
    that the background's percentile has that luminance (vehicles: the brightest surfaces, steadier than the
    median over scenes of mostly asphalt)."""
    black_value: float = 0.22
    """HSV value below which a pixel is black (after exposure normalisation)."""
    grey_saturation: float = 0.2
    """HSV saturation below which a pixel is achromatic (white, silver, gray, black)."""
    white_value: dict[str, float] = field(default_factory=lambda: {"pedestrian": 0.82, "vehicle": 0.84})
    """HSV value above which an achromatic pixel is white."""
    silver_value: float = 0.65
    """Vehicles: HSV value above which an achromatic pixel is silver (below: gray)."""
    side_width: float = 0.2
    """Pedestrian: median torso row width / silhouette height below which the view is side."""
    front_face: dict[str, float] = field(default_factory=lambda: {"rgb": 0.35, "tir_day": 0.45, "tir_night": 0.2})
    """Pedestrian: fraction of face pixels in the head rows above which the view is front rather than back (RGB:
    skin-coloured; TIR: within 8 grey levels of the body's hottest, a lower bar at night when hair is colder)."""
    bare_shins: float = 0.5
    """Pedestrian RGB: fraction of skin pixels on the shins above which the legs are bare (shorts)."""
    skirt_hem: dict[str, float] = field(default_factory=lambda: {"front": 0.255, "side": 0.185})
    """Pedestrian with bare shins: mask width just above the knees / height above which it is a skirt (front or
    back view; side view), else shorts."""
    suitcase_area: float = 0.007
    """Pedestrian: mask area beside the legs, in squared heights, above which a suitcase is dragged."""
    face_aspect: float = 1.75
    """Vehicle: mask box width / height below which the view is front or back (else side or diagonal)."""
    diagonal_end: float = 0.72
    """Vehicle, wide box: height of the taller end (mean column height of its outer tenth / the tallest column)
    above which a front or back face stands at that end (diagonal) rather than a bonnet or boot (side)."""
    front_centre: dict[str, float] = field(default_factory=lambda: {"tir": 5.0, "nir": -12.0})
    """Vehicle face view: centre of the box minus the vehicle's median grey; TIR: hotter than this is the front
    (radiator, engine), else the back; NIR: darker than this is the front (black grille), else not measured."""
    back_red: float = 0.02
    """Vehicle face view, RGB: fraction of saturated red pixels in the side thirds (tail lights) above which it
    is the back (not measured on red vehicles)."""
    headlights_area: float = 0.002
    """Vehicle: fraction of saturated pixels on the vehicle and its rim above which the headlights are on (NIR;
    RGB only at night, when nothing else saturates; not measured from behind)."""
    estimated_mask_factor: float = 0.6
    """Confidence multiplier of the mask-dependent attributes (colours, headlights) when there is no mask."""


# ----------------------------------------------------------------------------------------------------------------
# Pixels -> colour names


def _linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> linear floats (gamma 2.2)."""
    return np.power(rgb.astype(np.float32) / 255.0, 2.2)


def hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) floats in [0, 1] -> hue in degrees [0, 360), saturation and value in [0, 1], each (N,)."""
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    delta = mx - mn
    safe = np.maximum(delta, 1e-6)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    hue = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    return hue, sat, mx


COLOUR_NAMES = (
    "black", "white", "silver", "gray", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink",
)  # fmt: skip
"""Every name ``colour_index`` can give (vehicles: no pink; pedestrians: no silver)."""


def colour_index(rgb: np.ndarray, kind: ObjectKind, params: HeuristicParams) -> np.ndarray:
    """Colour name of each pixel, as indices into ``COLOUR_NAMES``. rgb: (N, 3) exposure-normalised sRGB in [0, 1].

    Achromatic by value (black, gray, silver for vehicles, white); chromatic by hue sector, where a dark orange is
    brown, a pale red or magenta is pink (pedestrians) and a dark magenta is purple.
    """
    hue, sat, val = hsv(rgb)
    names = {name: i for i, name in enumerate(COLOUR_NAMES)}
    vehicle = kind == "vehicle"
    person = not vehicle
    achromatic = sat < params.grey_saturation + 0.15 * (val < 0.35)  # dark pixels need more chroma to count
    grey = np.where(
        val > params.white_value[kind],
        names["white"],
        np.where(vehicle & (val > params.silver_value), names["silver"], names["gray"]),
    )
    redish = (hue >= 345) | (hue < 12)
    pinkish = (hue >= 300) & (hue < 345)
    pale = (sat < 0.6) & (val > 0.7)
    chroma = np.select(
        [
            redish & pale & person,
            redish,
            (hue < 40) & (val < 0.62),
            hue < 40,
            hue < 70,
            hue < 170,
            hue < 255,
            hue < 300,
            pinkish & (val > 0.6) & person,
            pinkish,
        ],
        [
            names["pink"],
            names["red"],
            names["brown"],
            names["orange"],
            names["yellow"],
            names["green"],
            names["blue"],
            names["purple"],
            names["pink"],
            names["purple"],
        ],
        default=names["red"],
    )
    out = np.where(achromatic, grey, chroma)
    return np.where(val < params.black_value, names["black"], out)


def is_skin(rgb: np.ndarray) -> np.ndarray:
    """(N,) bool: exposure-normalised sRGB pixels with a skin tone (warm hue, moderate saturation, not dark)."""
    hue, sat, val = hsv(rgb)
    return (hue >= 5) & (hue < 35) & (sat >= 0.2) & (sat < 0.6) & (val > 0.4)


def _vote(indices: np.ndarray) -> tuple[str, float] | None:
    """Majority colour name and confidence (winner's share minus the runner-up's, mapped to 0.3..0.95)."""
    if indices.size < 20:
        return None
    counts = np.bincount(indices, minlength=len(COLOUR_NAMES)).astype(np.float64)
    order = np.argsort(counts)[::-1]
    share = counts / counts.sum()
    margin = share[order[0]] - share[order[1]]
    return COLOUR_NAMES[order[0]], float(np.clip(0.3 + 0.65 * margin / 0.5, 0.3, 0.95))


# ----------------------------------------------------------------------------------------------------------------
# Foreground and silhouette


CENTRE_BOX = {"pedestrian": (0.3, 0.7, 0.1, 0.97), "vehicle": (0.08, 0.92, 0.1, 0.95)}
"""(x0, x1, y0, y1) fractions of the crop where a centred ReID crop's target is expected, per kind."""


def centre_box(shape: tuple[int, ...], kind: ObjectKind) -> np.ndarray:
    """(H, W) bool: the foreground guess without a mask (the target of a ReID crop is centred and fills it)."""
    h, w = shape[:2]
    x0, x1, y0, y1 = CENTRE_BOX[kind]
    box = np.zeros((h, w), dtype=bool)
    box[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = True
    return box


@dataclass(frozen=True)
class Silhouette:
    """Geometry of a foreground mask: box, height and the body axis (a line x = a + b * y)."""

    mask: np.ndarray
    top: int
    bottom: int
    left: int
    right: int
    axis: tuple[float, float]

    @classmethod
    def of(cls, mask: np.ndarray) -> Silhouette | None:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if rows.size < 8 or cols.size < 4:
            return None
        top, bottom = int(rows[0]), int(rows[-1]) + 1
        xs = np.arange(mask.shape[1], dtype=np.float64)
        count = mask.sum(axis=1).astype(np.float64)  # (H,)
        centre = (mask * xs).sum(axis=1) / np.maximum(count, 1)  # (H,) mean column per row
        height = bottom - top
        fit_rows = np.arange(top + round(0.03 * height), top + round(0.45 * height))
        fit_rows = fit_rows[count[fit_rows] > 0]
        if fit_rows.size >= 4:
            b, a = np.polyfit(fit_rows.astype(np.float64), centre[fit_rows], 1)
        else:
            a, b = float((cols[0] + cols[-1]) / 2), 0.0
        return cls(mask, top, bottom, int(cols[0]), int(cols[-1]) + 1, (float(a), float(b)))

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def rows(self, y0: float, y1: float) -> slice:
        """Image rows from ``y0`` to ``y1`` (fractions of the height from the top of the silhouette)."""
        return slice(self.top + round(y0 * self.height), max(self.top + round(y1 * self.height), 1))

    @property
    def head_x(self) -> float:
        """Mean column of the top tenth (the head)."""
        rows = self.rows(0.0, 0.1)
        cols = np.nonzero(self.mask[rows])[1]
        return float(cols.mean()) if cols.size else (self.left + self.right) / 2

    def band(
        self, y0: float, y1: float, half_width: float | None = None, outside: bool = False, centre: float | None = None
    ) -> np.ndarray:
        """(H, W) bool: mask pixels in rows y0..y1, within (or beyond) ``half_width`` heights of the body axis
        (or of the vertical x = ``centre``)."""
        out = np.zeros_like(self.mask)
        rows = self.rows(y0, y1)
        out[rows] = self.mask[rows]
        if half_width is not None:
            yy, xx = np.mgrid[rows, 0 : self.mask.shape[1]]
            axis = self.axis[0] + self.axis[1] * yy if centre is None else centre
            offset = np.abs(xx - axis)
            near = offset <= half_width * self.height
            out[rows] &= ~near if outside else near
        return out


# ----------------------------------------------------------------------------------------------------------------
# Measurements per modality


def _ramp(margin: float, scale: float, base: float = 0.5, span: float = 0.45) -> float:
    """Confidence growing linearly with the distance from a decision threshold: base .. base + span."""
    return float(base + span * min(1.0, abs(margin) / scale))


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=2)


def _clarity(
    grey: np.ndarray, mask: np.ndarray, estimated: bool, modality: Modality, p: HeuristicParams
) -> tuple[str, float] | None:
    """Blurry or clear from the edge-width ratio on the mask boundary (estimated mask: the box's strongest edges)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    pad = 10  # > the filters' reach (Gaussian 4 sigma + Sobel 1) beyond the 2-pixel band: same values as uncropped
    crop = (
        slice(max(int(rows[0]) - pad, 0), int(rows[-1]) + 1 + pad),
        slice(max(int(cols[0]) - pad, 0), int(cols[-1]) + 1 + pad),
    )
    grey, mask = grey[crop], mask[crop]
    magnitudes = []
    for sigma in (0.7, 1.5):
        smooth = ndimage.gaussian_filter(grey, sigma)
        magnitudes.append(np.hypot(ndimage.sobel(smooth, 1), ndimage.sobel(smooth, 0)) / 8.0)  # grey per pixel
    if estimated:
        band = mask & (magnitudes[1] >= np.percentile(magnitudes[1][mask], 90))
    else:
        band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=2)
    if band.sum() < 20:
        return None
    fine, coarse = (float(np.percentile(m[band], 90)) for m in magnitudes)
    if coarse < p.clarity_min_gradient:
        return None
    ratio = fine / coarse
    threshold, scale = p.clarity_ratio[modality]
    return ("clear" if ratio >= threshold else "blurry"), _ramp(ratio - threshold, scale)


def _three_way(value: float, thresholds: tuple[float, float], names: tuple[str, str, str]) -> tuple[str, float]:
    """Low, middle or high by two thresholds; confidence from the distance to the nearer one."""
    lo, hi = thresholds
    name = names[0] if value < lo else names[1] if value < hi else names[2]
    margin = min(abs(value - lo), abs(value - hi))
    return name, _ramp(margin, 12.0, base=0.35, span=0.55)


def _day_illumination(grey: np.ndarray, background: np.ndarray, key: str, p: HeuristicParams) -> tuple[str, float]:
    percentile, lo, hi = p.day_illumination[key]
    values = grey[background] if background.any() else grey
    return _three_way(float(np.percentile(values, percentile)), (lo, hi), ("dim", "normal", "bright"))


def _light(
    grey: np.ndarray, background: np.ndarray, modality: Modality, kind: ObjectKind, p: HeuristicParams
) -> Measured:
    """capture_time and illumination from the image statistics (see the module table)."""
    out: Measured = {}
    bg = float(np.median(grey[background])) if background.any() else float(np.median(grey))
    if modality == "rgb":
        night = bg < p.rgb_night_grey
        ratio = abs(np.log(max(bg, 1.0) / p.rgb_night_grey)) / np.log(2.0)
        out["capture_time"] = ("nighttime" if night else "daytime", float(min(0.5 + 0.5 * ratio, 0.98)))
        if night:
            t = p.rgb_night_illumination[kind]
            out["illumination"] = ("normal" if bg >= t else "dim", _ramp(bg - t, 8.0, base=0.4, span=0.5))
        else:
            out["illumination"] = _day_illumination(grey, background, f"{kind}/rgb", p)
    elif modality == "nir":
        noise = float(np.median(np.abs(ndimage.laplace(grey))))
        night = noise > p.nir_night_noise
        out["capture_time"] = ("nighttime" if night else "daytime", _ramp(noise - p.nir_night_noise, 8.0))
        if not night:
            out["illumination"] = _day_illumination(grey, background, f"{kind}/nir", p)
    else:
        night = bg < p.tir_night_grey
        out["capture_time"] = ("nighttime" if night else "daytime", _ramp(bg - p.tir_night_grey, 40.0, span=0.4))
    return out


def _normalised(image: np.ndarray, region: np.ndarray, gain: float) -> np.ndarray:
    """Exposure-normalised sRGB (N, 3) in [0, 1] of the region's pixels."""
    lin = np.clip(_linear(image[region]) * gain, 0.0, 1.0)
    return np.power(lin, 1 / 2.2)


def _clothing(image: np.ndarray, region: np.ndarray, gain: float, p: HeuristicParams) -> np.ndarray:
    """Colour indices of the region's pixels without the skin-toned ones (bare arms, neck), unless nearly all of it
    is skin-toned (then it is the clothes' colour)."""
    pixels = _normalised(image, region, gain)
    skin = is_skin(pixels)
    if (~skin).sum() >= max(20, 0.1 * skin.size):
        pixels = pixels[~skin]
    return colour_index(pixels, "pedestrian", p)


def _face_fraction(image: np.ndarray, sil: Silhouette, modality: Modality, gain: float | None) -> float | None:
    """Fraction of the head rows that is face: skin-coloured (RGB by day) or near the body's hottest (TIR)."""
    head = sil.band(0.05, 0.12, half_width=0.045)
    if head.sum() < 10:
        return None
    if modality == "rgb" and gain is not None:
        return float(is_skin(_normalised(image, head, gain)).mean())
    if modality == "tir":
        grey = _grey(image)
        hottest = float(np.percentile(grey[sil.mask], 97))
        return float((grey[head] >= hottest - 8.0).mean())
    return None


def _pedestrian(
    image: np.ndarray,
    sil: Silhouette,
    modality: Modality,
    gain: float | None,
    night: bool,
    estimated: bool,
    p: HeuristicParams,
) -> tuple[Measured, dict[str, float]]:
    """View, clothing colours, lower clothing and suitcase of a pedestrian silhouette (of a centre box when
    ``estimated``: then only the colours, from a narrow strip along the middle)."""
    out: Measured = {}
    feats: dict[str, float] = {}
    h = sil.height
    widths = sil.mask[sil.rows(0.22, 0.4)].sum(axis=1) / h
    torso = float(np.median(widths)) if widths.size else 0.0
    feats["torso_width"] = torso
    face = _face_fraction(image, sil, modality, gain)
    if face is not None:
        feats["face"] = face
    side_conf = _ramp(torso - p.side_width, 0.06)
    if torso < p.side_width:
        out["view"] = ("side", side_conf)
    elif face is not None:
        t = p.front_face["rgb" if modality == "rgb" else "tir_night" if night else "tir_day"]
        out["view"] = ("front" if face >= t else "back", min(_ramp(face - t, 0.25), side_conf))

    if modality == "rgb" and gain is not None:
        # Torso rows. A backpack covers the middle seen from behind, so the back view is read beside it (torso
        # edges, sleeves); the side view along the head's vertical, in front of a backpack; skin is left out.
        view = out.get("view", ("",))[0]
        full = sil.band(0.2, 0.45)
        if estimated:
            upper = full = sil.band(0.26, 0.46, half_width=0.06)
        elif view == "side":
            upper = sil.band(0.2, 0.45, half_width=0.05, centre=sil.head_x)
        elif view == "back":
            upper = sil.band(0.2, 0.45, half_width=0.105, outside=True)
        else:
            upper = full
        vote = _vote(_clothing(image, upper, gain, p)) or _vote(_clothing(image, full, gain, p))
        if vote:
            out["upper_clothing_color"] = vote
        shins = sil.band(0.76, 0.92, half_width=0.12)
        if shins.sum() >= 20:
            bare = float(is_skin(_normalised(image, shins, gain)).mean())
            feats["bare_shins"] = bare
            legs_bare = bare >= p.bare_shins
            if legs_bare:  # a skirt flares above the knees, shorts narrow there
                hem = float(np.median(sil.mask[sil.rows(0.62, 0.67)].sum(axis=1))) / h
                feats["hem_width"] = hem
                t = p.skirt_hem["side" if torso < p.side_width else "front"]
                conf = min(_ramp(bare - p.bare_shins, 0.3), _ramp(hem - t, 0.05))
                out["lower_clothing"] = ("skirt" if hem >= t else "shorts", conf)
            else:  # jeans cannot be told from other trousers here
                out["lower_clothing"] = ("trousers", 0.5 * _ramp(bare - p.bare_shins, 0.3))
            lower = sil.band(0.56, 0.68, half_width=0.12) if legs_bare else shins
            if estimated:  # the box's thighs: legs are too thin to find in it further down
                lower = sil.band(0.58, 0.68, half_width=0.05)
            vote = _vote(_clothing(image, lower, gain, p))
            if vote:
                out["lower_clothing_color"] = vote

    beside = sil.band(0.72, 0.96, half_width=0.22, outside=True)
    area = float(beside.sum()) / (h * h)
    feats["beside_legs"] = area
    out["suitcase"] = (
        "dragging" if area >= p.suitcase_area else "not dragging",
        _ramp(area - p.suitcase_area, p.suitcase_area),
    )
    return out, feats


def _vehicle(
    image: np.ndarray,
    sil: Silhouette,
    modality: Modality,
    gain: float | None,
    night: bool,
    estimated: bool,
    p: HeuristicParams,
) -> tuple[Measured, dict[str, float]]:
    """View, colour and headlights of a vehicle silhouette (of a centre box when ``estimated``: no view)."""
    out: Measured = {}
    feats: dict[str, float] = {}
    box = (slice(sil.top, sil.bottom), slice(sil.left, sil.right))
    mask = sil.mask[box]
    hh, ww = mask.shape
    if modality == "rgb" and gain is not None:
        body = sil.band(0.3, 0.75, half_width=0.45) if estimated else sil.band(0.25, 0.8)
        vote = _vote(colour_index(_normalised(image, body, gain), "vehicle", p))
        if vote:
            out["color"] = vote

    aspect = ww / max(hh, 1)
    feats["aspect"] = aspect
    shape_conf = _ramp(aspect - p.face_aspect, 0.4)
    if not estimated and aspect >= p.face_aspect:
        heights = mask.sum(axis=0).astype(np.float64)  # (w,) column heights
        k = max(2, ww // 10)
        end = max(heights[:k].mean(), heights[-k:].mean()) / max(heights.max(), 1.0)
        feats["end_height"] = end
        diagonal = end >= p.diagonal_end
        out["view"] = ("diagonal" if diagonal else "side", min(shape_conf, _ramp(end - p.diagonal_end, 0.1)))
    elif not estimated:
        grey = _grey(image)[box]
        centre = (slice(round(0.35 * hh), round(0.65 * hh)), slice(round(0.35 * ww), round(0.65 * ww)))
        inside = mask[centre]
        front: bool | None = None
        margin, scale = 0.0, 1.0
        if modality in p.front_centre and inside.any():
            offset = float(grey[centre][inside].mean() - np.median(grey[mask]))
            feats["centre"] = offset
            t = p.front_centre[modality]
            if modality == "tir":
                front, margin, scale = offset > t, offset - t, 10.0
            elif offset < t:  # NIR: a dark centre is a grille; a bright one is not always a back (dark paints)
                front, margin, scale = True, offset - t, 15.0
        elif modality == "rgb" and out.get("color", ("",))[0] != "red":
            rgb = image[box].astype(np.float32) / 255.0
            hue, sat, val = hsv(rgb.reshape(-1, 3))
            red = (((hue < 15) | (hue > 340)) & (sat > 0.5) & (val > 0.25)).reshape(hh, ww) & mask
            sides = np.zeros_like(mask)
            rows = slice(round(0.25 * hh), round(0.7 * hh))
            sides[rows, : round(0.3 * ww)] = True
            sides[rows, ww - round(0.3 * ww) :] = True
            share = float(red[sides].mean()) if sides.any() else 0.0
            feats["red_sides"] = share
            front = share < p.back_red
            margin, scale = share - p.back_red, 0.05
        if front is not None:
            out["view"] = ("front" if front else "back", min(shape_conf, _ramp(margin, scale)))

    headlights_seen = estimated or out.get("view", ("",))[0] in ("front", "side", "diagonal")
    if headlights_seen and (modality == "nir" or (modality == "rgb" and night)):
        rim = ndimage.binary_dilation(sil.mask, iterations=3)
        lit = float((image[rim].min(axis=1) >= 245).mean())
        feats["lit"] = lit
        on = lit >= p.headlights_area
        out["headlights_condition"] = ("on" if on else "off", _ramp(lit - p.headlights_area, p.headlights_area))
    return out, feats


def measure(
    image: np.ndarray,
    mask: np.ndarray | None,
    modality: Modality,
    kind: ObjectKind,
    params: HeuristicParams,
) -> tuple[Measured, dict[str, float]]:
    """Attributes one modality image shows, and the raw features behind them (for benchmarks and debugging).

    image: (H, W, 3) uint8; mask: (H, W) bool or None (then estimated, and confidences lowered).
    """
    estimated = mask is None or not mask.any()
    fg = centre_box(image.shape, kind) if mask is None or estimated else mask.astype(bool)
    grey = _grey(image)
    background = ~ndimage.binary_dilation(fg, iterations=2)
    if background.sum() < 0.05 * background.size:  # the target fills the crop: the whole image stands in
        background = np.ones_like(background)
    out = _light(grey, background, modality, kind, params)
    feats: dict[str, float] = {"background_grey": float(np.median(grey[background]))}
    night = out["capture_time"][0] == "nighttime"
    clarity = None if modality == "rgb" and night else _clarity(grey, fg, estimated, modality, params)
    if clarity:
        out["target_clarity"] = clarity
    sil = Silhouette.of(fg)
    if sil is not None:
        gain = None
        if modality == "rgb" and not night:
            lum = _linear(image[background]) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
            percentile, reference = params.exposure_reference[kind]
            gain = float(np.clip(reference / max(float(np.percentile(lum, percentile)), 1e-4), 0.25, 4.0))
            feats["gain"] = gain
        shape_of = _pedestrian if kind == "pedestrian" else _vehicle
        shape, more = shape_of(image, sil, modality, gain, night, estimated, params)
        out |= shape
        feats |= more
    if estimated:
        out = {
            name: (value, conf if name in MASK_FREE else conf * params.estimated_mask_factor)
            for name, (value, conf) in out.items()
            if name not in SHAPE_ATTRIBUTES
        }
    return out, feats


def split_composite(image: np.ndarray, mask: np.ndarray | None) -> list[tuple[Modality, np.ndarray, np.ndarray | None]]:
    """The RGB | NIR | TIR thirds of a composite image (and of its mask)."""
    bounds = np.linspace(0, image.shape[1], 4).round().astype(int)
    parts: list[tuple[Modality, np.ndarray, np.ndarray | None]] = []
    for modality, lo, hi in zip(("rgb", "nir", "tir"), bounds[:-1], bounds[1:], strict=True):
        parts.append((modality, image[:, lo:hi], None if mask is None else mask[:, lo:hi]))  # type: ignore[arg-type]
    return parts


def merge(measured: dict[Modality, Measured]) -> Measured:
    """Composite: RGB-only attributes from the RGB third, the others from the most confident third (headlights
    are dropped when the merged view is from behind)."""
    out: Measured = {}
    for modality, attributes in measured.items():
        for name, (value, conf) in attributes.items():
            if name in RGB_ONLY and modality != "rgb":
                continue
            if name not in out or conf > out[name][1]:
                out[name] = (value, conf)
    if out.get("view", ("",))[0] == "back":
        out.pop("headlights_condition", None)
    return out


class HeuristicProvider(AttributeProvider):
    """Pixel-statistics BASELINE (see the module docstring): measured attributes with honest confidences."""

    name = "heuristic"
    cpu_bound = True

    def __init__(self, params: HeuristicParams | None = None) -> None:
        self.params = params or HeuristicParams()

    def identity(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "model": "pixel-statistics-baseline",
            "version": ALGORITHM_VERSION,
            "params": asdict(self.params),
        }

    def describe_one(self, query: AttributeQuery) -> AttributeAnswer:
        """The attribute set of one query (raises ValueError on a malformed or too small image, or a mask that does
        not fit it)."""
        image = np.asarray(query.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
        mask = None if query.mask is None else np.asarray(query.mask, dtype=bool)
        if min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} pixels: too small to measure")
        if mask is not None and mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match the image {image.shape[:2]}")
        if query.view == "composite":
            if image.shape[1] < 3 * MIN_SIDE:
                raise ValueError(f"composite of width {image.shape[1]}: too narrow for three images")
            parts = split_composite(image, mask)
            found = merge({m: measure(img, msk, m, query.kind, self.params)[0] for m, img, msk in parts})
        else:
            found = measure(image, mask, query.view, query.kind, self.params)[0]
        model = attribute_model(query.kind)
        values = {
            name: {"value": found[name][0], "confidence": round(found[name][1], 3)}
            if name in found
            else {"value": None, "confidence": 0.0}
            for name in model.model_fields
        }
        return AttributeAnswer(attributes=model(**values))

    def describe(self, queries: Sequence[AttributeQuery]) -> list[AttributeAnswer | RequestFailure]:
        answers: list[AttributeAnswer | RequestFailure] = []
        for query in queries:
            try:
                answers.append(self.describe_one(query))
            except ValueError as exc:
                answers.append(RequestFailure(f"heuristic: {exc}", type(exc).__name__))
        return answers

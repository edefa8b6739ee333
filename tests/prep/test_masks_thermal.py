"""The ``thermal`` baseline mask provider: quality on synthetic persons, hand-made scenes, parameters, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidprep.masks.thermal import ALGORITHM_VERSION, ThermalMasker, otsu_threshold
from reidprep.synth import generate_dataset
from reidschemas.config import ThermalConfig
from reidschemas.maskcodec import mask_iou

H, W = 256, 128
CY, CX, RY, RX = 128, 64, 90, 24  # the hand-made "person": a vertical ellipse at the centre


@pytest.fixture(scope="module")
def persons(tmp_path_factory) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Thermal images, ground-truth masks and night flags of a small synthetic RGBNT201 (24 triplets)."""
    root = generate_dataset(tmp_path_factory.mktemp("synth"), kind="person", ids=6, images_per_id=4, seed=0).root
    images, truths, night = [], [], []
    for line in (root / "groundtruth" / "attributes.jsonl").read_text().splitlines():
        record = json.loads(line)
        rel = record["file"].replace("/RGB/", "/TI/")
        with Image.open(root / rel) as image:
            images.append(np.asarray(image.convert("RGB")))
        with Image.open(root / "groundtruth" / "masks" / Path(rel).with_suffix(".png")) as mask:
            truths.append(np.asarray(mask) > 127)
        night.append(record["attributes"]["capture_time"] == "nighttime")
    return images, truths, np.array(night)


def _ious(config: ThermalConfig, images: list[np.ndarray], truths: list[np.ndarray]) -> np.ndarray:
    predictions = ThermalMasker(config).predict(images, "tir")
    return np.array([mask_iou(p.mask, t) for p, t in zip(predictions, truths, strict=True)])


def _ellipse(cy: float = CY, cx: float = CX, ry: float = RY, rx: float = RX) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _thermal(temperature: np.ndarray, seed: int = 0, noise: float = 4.0) -> np.ndarray:
    """(H, W) grey levels plus sensor noise -> (H, W, 3) uint8, like a thermal JPEG."""
    grey = temperature + np.random.default_rng(seed).normal(0.0, noise, temperature.shape)
    return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_synthetic_persons_masks_are_bool_at_image_size_and_beat_plain_otsu(persons):
    images, truths, night = persons
    predictions = ThermalMasker(ThermalConfig()).predict(images, "tir")
    assert len(predictions) == len(images) == 24
    for image, prediction in zip(images, predictions, strict=True):
        assert prediction.mask.dtype == bool and prediction.mask.shape == image.shape[:2]
        assert prediction.mask.any() and 0.0 < prediction.score <= 1.0
    ious = _ious(ThermalConfig(), images, truths)
    plain = _ious(ThermalConfig(background_margin=0.0, otsu_levels=1), images, truths)  # the textbook pipeline
    # bench/thermal_iou.py on 720 held-out persons (seeds 3-6): 0.826 overall, 0.86 at night.
    assert ious.mean() >= 0.6 and ious[night].mean() >= 0.7
    assert ious.mean() >= plain.mean() + 0.15
    scores = np.array([p.score for p in predictions])
    assert np.corrcoef(scores, ious)[0, 1] > 0.3  # the score ranks good masks higher (0.51 on 180 persons)


@pytest.mark.slow
def test_held_out_synthetic_persons_stay_at_the_measured_level(tmp_path: Path) -> None:
    """The issue's target (mean IoU >= 0.8) on 720 persons the defaults were not chosen on (seeds 3-6; chosen on seeds
    0-2 and the demo's persons). bench/thermal_iou.py: 0.826 here, 0.827 on seeds 7-10, 0.812 on fresh seeds 11-14."""
    ious = []
    for seed in (3, 4, 5, 6):
        root = generate_dataset(tmp_path / str(seed), kind="person", ids=30, images_per_id=6, seed=seed).root
        images, truths = [], []
        for line in (root / "groundtruth" / "attributes.jsonl").read_text().splitlines():
            rel = json.loads(line)["file"].replace("/RGB/", "/TI/")
            with Image.open(root / rel) as image:
                images.append(np.asarray(image.convert("RGB")))
            with Image.open(root / "groundtruth" / "masks" / Path(rel).with_suffix(".png")) as mask:
                truths.append(np.asarray(mask) > 127)
        ious.extend(_ious(ThermalConfig(), images, truths))
    assert len(ious) == 720
    assert np.mean(ious) >= 0.8


def test_a_pole_wider_than_five_percent_of_the_height_does_not_cut_the_person_in_half() -> None:
    """A cold pole (0.05 x height, the synthetic generator's widest) down the middle of a warm person."""
    person = _ellipse()
    pole = np.abs(np.mgrid[0:H, 0:W][1] - CX) <= 0.025 * H  # 13 columns
    image = _thermal(np.where(person & ~pole, 170.0, 70.0))
    (prediction,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
    halves = person & ~pole
    assert (prediction.mask & halves & (np.mgrid[0:H, 0:W][1] < CX)).sum() > 0.9 * (halves[:, :CX]).sum()
    assert (prediction.mask & halves & (np.mgrid[0:H, 0:W][1] > CX)).sum() > 0.9 * (halves[:, CX + 1 :]).sum()


def test_central_warm_ellipse_is_kept_and_a_warm_corner_blob_is_not():
    person = _ellipse()
    yy, xx = np.mgrid[0:H, 0:W]
    blob = (yy - 14) ** 2 + (xx - 112) ** 2 <= 10**2  # a warm lamp in the top right corner, warmer than the person
    image = _thermal(np.where(person, 170.0, np.where(blob, 230.0, 70.0)))
    (prediction,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
    assert mask_iou(prediction.mask, person) > 0.9
    assert not (prediction.mask & blob).any()
    assert prediction.score > 0.5


def test_a_warm_band_across_the_scene_is_background():
    """A sunlit road crossing the crop, warmer than the person: per-row background compensation removes it."""
    person = _ellipse()
    band = np.zeros((H, W), dtype=bool)
    band[150:180] = True
    image = _thermal(np.where(person, 140.0, np.where(band, 175.0, 90.0)))
    (compensated,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
    assert mask_iou(compensated.mask, person) > 0.9
    (plain,) = ThermalMasker(ThermalConfig(background_margin=0.0)).predict([image], "tir")
    assert (plain.mask & band & ~person).sum() > 0.5 * (band & ~person).sum()  # joined to the person
    assert mask_iou(plain.mask, person) < 0.8


def test_a_component_larger_than_max_area_is_split_again():
    """Cold sky over warm ground: the first Otsu split is sky / everything else, the next one finds the person."""
    person = _ellipse()
    sky = np.zeros((H, W), dtype=bool)
    sky[:60] = True
    image = _thermal(np.where(person, 160.0, np.where(sky, 15.0, 100.0)))
    config = {"background_margin": 0.0}
    (split,) = ThermalMasker(ThermalConfig(**config)).predict([image], "tir")
    assert mask_iou(split.mask, person) > 0.9
    (once,) = ThermalMasker(ThermalConfig(**config, otsu_levels=1)).predict([image], "tir")
    assert once.mask.mean() > 0.6  # everything below the sky


def test_opening_radius_removes_a_thin_warm_structure():
    person = _ellipse()
    arm = np.zeros((H, W), dtype=bool)
    arm[100:104, CX:106] = True  # 4 px thick, held out sideways (short of the margin the background comes from)
    arm &= ~person
    image = _thermal(np.where(person | arm, 170.0, 70.0), noise=2.0)
    (kept,) = ThermalMasker(ThermalConfig(vertical_opening=0.0)).predict([image], "tir")
    (opened,) = ThermalMasker(ThermalConfig(opening_radius=3, vertical_opening=0.0)).predict([image], "tir")
    assert (kept.mask & arm).sum() > 0.8 * arm.sum()
    assert (opened.mask & arm).sum() < 0.2 * arm.sum() and not opened.mask[100:104, 95:].any()  # a stump at most
    assert mask_iou(opened.mask, person) > 0.9


def test_vertical_opening_cuts_a_thin_warm_horizontal_band_off_the_person():
    """A warm kerb 8 px high touching the person's side, short of the margins the background comes from."""
    person = _ellipse()
    kerb = np.zeros((H, W), dtype=bool)
    kerb[120:128, CX:108] = True
    kerb &= ~person
    image = _thermal(np.where(person | kerb, 170.0, 70.0), noise=2.0)
    (cut,) = ThermalMasker(ThermalConfig()).predict([image], "tir")  # default: a line of 0.05 x 256 = 13 px
    (joined,) = ThermalMasker(ThermalConfig(vertical_opening=0.0)).predict([image], "tir")
    assert (joined.mask & kerb).sum() > 0.8 * kerb.sum()
    assert not cut.mask[120:128, 95:].any() and (cut.mask & kerb).sum() < 0.2 * kerb.sum()
    assert mask_iou(cut.mask, person) > 0.9
    # the same line keeps every upright part: a 4 px wide vertical leg below the ellipse stays
    leg = np.zeros((H, W), dtype=bool)
    leg[CY + RY - 5 : H - 10, CX - 2 : CX + 2] = True
    (with_leg,) = ThermalMasker(ThermalConfig()).predict([_thermal(np.where(person | leg, 170.0, 70.0))], "tir")
    assert with_leg.mask[leg & ~person].mean() > 0.9


def test_fill_enclosed_fills_a_cold_backpack_whose_outline_is_open():
    """A cold backpack on the back, joined to the background by a cold strap over the shoulder: the outline is open,
    so hole filling misses it; ``fill_enclosed`` fills it (foreground on all four sides)."""
    person = _ellipse()
    backpack = np.zeros((H, W), dtype=bool)
    backpack[90:150, CX - 12 : CX + 12] = True
    yy, xx = np.mgrid[0:H, 0:W]
    # 8 px wide (wider than the closing bridges), from the backpack's top corner up and out over the right shoulder
    strap = (yy <= 92) & (np.abs(xx - (CX + 8 + 0.8 * (92 - yy))) <= 4)
    cold = backpack | strap
    image = _thermal(np.where(person & ~cold, 170.0, 70.0), noise=2.0)
    (filled,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
    (open_,) = ThermalMasker(ThermalConfig(fill_enclosed=False)).predict([image], "tir")
    assert open_.mask[backpack].mean() < 0.2  # the hole is open at the strap
    assert filled.mask[backpack].mean() > 0.95 and mask_iou(filled.mask, person) > 0.95
    # a gap open to one side stays open: the space between two legs
    legs = person.copy()
    legs[CY + 20 :, CX - 4 : CX + 4] = False
    (between,) = ThermalMasker(ThermalConfig()).predict([_thermal(np.where(legs, 170.0, 70.0), noise=2.0)], "tir")
    assert not between.mask[CY + 40 : CY + RY - 10, CX - 1 : CX + 1].any()


def test_fill_holes_parameter():
    person = _ellipse()
    hole = _ellipse(ry=20, rx=8)  # a cold flask held against the chest
    image = _thermal(np.where(person & ~hole, 170.0, 70.0), noise=2.0)
    (filled,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
    (open_,) = ThermalMasker(ThermalConfig(fill_holes=False, fill_enclosed=False)).predict([image], "tir")
    assert filled.mask[hole].all()
    assert not open_.mask[CY, CX] and open_.mask[hole].mean() < 0.2


def test_flat_image_gives_an_empty_mask_with_score_zero():
    for value in (0, 90, 255):
        image = np.full((H, W, 3), value, dtype=np.uint8)
        (prediction,) = ThermalMasker(ThermalConfig()).predict([image], "tir")
        assert prediction.mask.shape == (H, W) and prediction.mask.dtype == bool
        assert not prediction.mask.any() and prediction.score == 0.0
    (noise_only,) = ThermalMasker(ThermalConfig()).predict([_thermal(np.full((H, W), 90.0), noise=1.0)], "tir")
    assert noise_only.mask.mean() < 0.05  # no structure: nothing (or a speck), never the whole crop


def test_other_modalities_and_bad_images_raise():
    masker = ThermalMasker(ThermalConfig())
    image = _thermal(np.where(_ellipse(), 170.0, 70.0))
    for modality in ("rgb", "nir"):
        with pytest.raises(ValueError, match=r"thermal images only.*--source tir or the sam2 provider"):
            masker.predict([image], modality)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        masker.predict([image[..., 0]], "tir")
    assert masker.predict([], "tir") == []


def test_identity_names_the_baseline_and_every_parameter():
    config = ThermalConfig(smoothing_sigma=2.0, opening_radius=3, max_area=0.5)
    identity = ThermalMasker(config).identity()
    assert identity["provider"] == "thermal" and identity["model"] == "otsu-baseline"
    assert identity["checkpoint_sha256"] is None
    params = identity["params"]
    assert params == config.model_dump() | {"algorithm_version": ALGORITHM_VERSION}
    assert params["smoothing_sigma"] == 2.0 and params["opening_radius"] == 3 and params["max_area"] == 0.5
    assert json.loads(json.dumps(identity)) == identity
    assert ThermalMasker(ThermalConfig()).identity() != identity
    assert ThermalMasker.supported_sources == ("tir",)


def test_otsu_threshold():
    two = np.array([10] * 30 + [200] * 70, dtype=np.uint8)
    t, eta = otsu_threshold(two)
    assert 10 <= t < 200 and eta == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    mixed = np.clip(np.concatenate([rng.normal(60, 10, 5000), rng.normal(160, 10, 5000)]), 0, 255).astype(np.uint8)
    t, eta = otsu_threshold(mixed)
    assert 95 <= t <= 125 and 0.85 < eta < 1.0
    assert otsu_threshold(np.full(50, 7, dtype=np.uint8)) == (255, 0.0)
    assert otsu_threshold(np.zeros(0, dtype=np.uint8)) == (255, 0.0)

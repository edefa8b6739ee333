"""The ``heuristic`` attribute provider against the synthetic ground truth, and ``attribute_accuracy``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidprep.captions.attributes import AttributeAnswer, AttributeQuery, composite_image
from reidprep.captions.backends.base import RequestFailure
from reidprep.captions.heuristic import (
    COLOUR_ATTRIBUTES,
    COLOUR_NAMES,
    HeuristicParams,
    HeuristicProvider,
    colour_index,
)
from reidprep.captions.quality import attribute_accuracy, load_groundtruth_attributes
from reidprep.synth import generate_dataset
from reidschemas import AttributeSet, attribute_model

FOLDERS = {"person": ("/RGB/", "/NI/", "/TI/"), "vehicle": ("/vis/", "/ni/", "/th/")}
TEMPLATE = {"person": "pedestrian", "vehicle": "vehicle"}
VIEWS = ("rgb", "nir", "tir", "composite")
SEED = 11

Predictions = dict[str, dict[str, AttributeSet]]
"""View -> RGB path relative to the dataset -> the provider's attribute set."""


def _triplet(root: Path, rgb_rel: str, kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rels = [rgb_rel.replace(FOLDERS[kind][0], folder) for folder in FOLDERS[kind]]
    images = [np.asarray(Image.open(root / rel).convert("RGB")) for rel in rels]
    masks = [
        np.asarray(Image.open(root / "groundtruth" / "masks" / Path(rel).with_suffix(".png"))) > 127 for rel in rels
    ]
    return images, masks


def _describe(root: Path, kind: str, use_mask: bool) -> Predictions:
    provider = HeuristicProvider()
    out: Predictions = {view: {} for view in VIEWS}
    for key in sorted(load_groundtruth_attributes(root)):
        images, masks = _triplet(root, key, kind)
        queries = [
            AttributeQuery(key, view, TEMPLATE[kind], image, mask if use_mask else None)  # type: ignore[arg-type]
            for view, image, mask in zip(VIEWS[:3], images, masks, strict=True)
        ]
        composite_mask = np.concatenate(masks, axis=1) if use_mask else None
        queries.append(AttributeQuery(key, "composite", TEMPLATE[kind], composite_image(images), composite_mask))  # type: ignore[arg-type]
        for query, answer in zip(queries, provider.describe(queries), strict=True):
            assert isinstance(answer, AttributeAnswer), answer
            out[query.view][key] = answer.attributes
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Predictions, Predictions]]:
    """Kind -> (dataset root, predictions with ground-truth masks, predictions without masks)."""
    out = {}
    for kind in ("person", "vehicle"):
        root = generate_dataset(tmp_path_factory.mktemp(kind), kind=kind, ids=8, images_per_id=4, seed=SEED).root
        out[kind] = (root, _describe(root, kind, True), _describe(root, kind, False))
    return out


def _accuracy(predictions: dict[str, AttributeSet], truth: dict, name: str) -> tuple[float | None, float]:
    result = attribute_accuracy({k: v.values() for k, v in predictions.items()}, truth)["per_attribute"][name]
    return result["accuracy"], result["coverage"]


def _daytime(root: Path) -> dict[str, dict[str, str | None]]:
    return {k: v for k, v in load_groundtruth_attributes(root).items() if v["capture_time"] == "daytime"}


# ---------------------------------------------------------------------------------------------------------------
# attribute_accuracy and the ground truth


def test_attribute_accuracy_counts_only_known_truth_and_compares_case_insensitively():
    truth = {
        "a": {"color": "Red", "view": "front", "spoiler": None},
        "b": {"color": "blue", "view": "side", "spoiler": None},
        "c": {"color": "white", "view": None, "spoiler": None},
        "only-truth": {"color": "black", "view": "back", "spoiler": None},
    }
    predicted = {
        "a": {"color": "red", "view": "back", "spoiler": "present"},
        "b": {"color": None, "view": " Side "},
        "c": {"color": "gray", "view": "front"},
        "only-predicted": {"color": "red"},
    }
    result = attribute_accuracy(predicted, truth)
    per = result["per_attribute"]
    assert per["color"] == {"accuracy": 0.5, "coverage": pytest.approx(2 / 3), "n": 3}
    assert per["view"] == {"accuracy": 0.5, "coverage": 1.0, "n": 2}
    assert "spoiler" not in per  # the truth is always null
    assert result["mean_accuracy"] == pytest.approx(0.5)
    assert result["mean_coverage"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_attribute_accuracy_without_coverage_or_overlap():
    truth = {"a": {"color": "red"}}
    result = attribute_accuracy({"a": {"color": None}}, truth)
    assert result["per_attribute"]["color"] == {"accuracy": None, "coverage": 0.0, "n": 1}
    assert result["mean_accuracy"] is None and result["mean_coverage"] == 0.0
    empty = attribute_accuracy({"x": {"color": "red"}}, truth)
    assert empty == {"per_attribute": {}, "mean_accuracy": None, "mean_coverage": None}


def test_load_groundtruth_attributes_keys_by_rgb_path(runs, tmp_path):
    root = runs["person"][0]
    truth = load_groundtruth_attributes(root)
    assert len(truth) == 32
    for key, attributes in truth.items():
        assert (root / key).is_file() and "/RGB/" in key
        attribute_model("pedestrian")(**{n: {"value": v, "confidence": 1.0} for n, v in attributes.items()})
    bad = tmp_path / "groundtruth" / "attributes.jsonl"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"file": "x.jpg"}) + "\n")
    with pytest.raises(ValueError, match=r"attributes\.jsonl:1"):
        load_groundtruth_attributes(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Every answer


@pytest.mark.parametrize("kind", ["person", "vehicle"])
@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no-mask"])
def test_answers_validate_with_bounded_confidences_and_null_unknowns(runs, kind, use_mask):
    predictions = runs[kind][1 if use_mask else 2]
    model = attribute_model(TEMPLATE[kind])  # type: ignore[arg-type]
    for view in VIEWS:
        for attributes in predictions[view].values():
            assert isinstance(attributes, model)
            model.model_validate(attributes.model_dump())
            for name in model.model_fields:
                value = getattr(attributes, name)
                assert 0.0 <= value.confidence <= 1.0
                if value.value is None:
                    assert value.confidence == 0.0
                else:
                    assert value.confidence > 0.0
            if view in ("nir", "tir"):
                assert all(getattr(attributes, n).value is None for n in COLOUR_ATTRIBUTES & set(model.model_fields))
            if view == "tir":
                assert attributes.illumination.value is None  # a thermal camera does not see light


@pytest.mark.parametrize("kind", ["person", "vehicle"])
def test_composite_takes_colours_and_light_from_the_rgb_third(runs, kind):
    _, predictions, _ = runs[kind]
    for key, composite in predictions["composite"].items():
        rgb = predictions["rgb"][key]
        for name in ("capture_time", "illumination", *sorted(COLOUR_ATTRIBUTES & set(type(rgb).model_fields))):
            assert getattr(composite, name) == getattr(rgb, name)


@pytest.mark.parametrize("kind", ["person", "vehicle"])
def test_without_a_mask_shape_attributes_are_null_and_colour_confidences_lower(runs, kind):
    _, with_mask, without = runs[kind]
    factor = HeuristicParams().estimated_mask_factor
    colours = sorted(COLOUR_ATTRIBUTES & set(attribute_model(TEMPLATE[kind]).model_fields))  # type: ignore[arg-type]
    for view in VIEWS:
        same_time = 0
        for key, attributes in without[view].items():
            assert attributes.view.value is None
            if kind == "person":
                assert attributes.suitcase.value is None and attributes.lower_clothing.value is None
            for name in colours:
                assert getattr(attributes, name).confidence <= 0.95 * factor
            same_time += attributes.capture_time.value == with_mask[view][key].capture_time.value
        assert same_time >= 0.9 * len(without[view])  # the background is the box's outside, not the mask's


# ---------------------------------------------------------------------------------------------------------------
# Accuracy on the synthetic ground truth, against the best constant answer on the same rows. Plain accuracy alone
# proves little on skewed attributes (a pedestrian's clarity is "clear" for 88% of the truth), so each check asks for
# accuracy above the majority class's share AND a balanced accuracy (mean recall per true class, which is 1/k for any
# constant answer over k classes) well above 1/k. The suitcase is not checked: the synthetic truth has no dragged
# suitcase at this size, so nothing can tell the provider from the constant answer "not dragging".


def _beats_constant(predictions: dict[str, AttributeSet], truth: dict, name: str, balanced_at_least: float) -> None:
    rows = [
        (str(truth[key][name]).lower(), str(value).lower())
        for key, attributes in predictions.items()
        if truth.get(key, {}).get(name) is not None and (value := attributes.values().get(name)) is not None
    ]
    assert rows, f"{name}: no row answered"
    classes = Counter(expected for expected, _ in rows)
    majority = max(classes.values()) / len(rows)
    accuracy = sum(expected == got for expected, got in rows) / len(rows)
    recalls = [sum(got == c for e, got in rows if e == c) / n for c, n in classes.items()]
    balanced = sum(recalls) / len(recalls)
    assert len(classes) > 1, f"{name}: one true class only ({classes}); no answer can beat the constant one"
    assert accuracy > majority, f"{name}: accuracy {accuracy:.3f} <= the majority answer's {majority:.3f}"
    assert balanced >= balanced_at_least > 1 / len(classes), f"{name}: balanced accuracy {balanced:.3f}"


def test_person_attributes_beat_the_constant_answer(runs):
    root, predictions, without = runs["person"]
    truth, day = load_groundtruth_attributes(root), _daytime(root)
    assert _accuracy(predictions["rgb"], truth, "capture_time") == (1.0, 1.0)
    for view in ("rgb", "nir", "tir"):
        _beats_constant(predictions[view], truth, "capture_time", 0.95)
        assert _accuracy(predictions[view], truth, "capture_time")[1] == 1.0  # always answered
    _beats_constant(predictions["rgb"], day, "upper_clothing_color", 0.8)  # 1/k = 1/6
    _beats_constant(predictions["rgb"], day, "lower_clothing_color", 0.8)
    assert _accuracy(predictions["rgb"], day, "upper_clothing_color")[1] >= 0.9
    night = {k: v for k, v in truth.items() if k not in day}
    assert _accuracy(predictions["rgb"], night, "upper_clothing_color")[1] == 0.0  # too dark: not measured
    _beats_constant(predictions["rgb"], truth, "illumination", 0.8)
    _beats_constant(predictions["composite"], truth, "view", 0.75)
    _beats_constant(predictions["tir"], truth, "view", 0.75)
    _beats_constant(predictions["composite"], truth, "target_clarity", 0.85)  # "clear" is 88% of the truth
    _beats_constant(predictions["nir"], truth, "target_clarity", 0.8)
    _beats_constant(without["rgb"], day, "upper_clothing_color", 0.45)  # a centre box only; 1/k = 1/6


def test_vehicle_attributes_beat_the_constant_answer(runs):
    root, predictions, without = runs["vehicle"]
    truth, day = load_groundtruth_attributes(root), _daytime(root)
    for view in ("rgb", "nir", "tir"):
        _beats_constant(predictions[view], truth, "capture_time", 0.95)  # "daytime" is 91% of the truth
        assert _accuracy(predictions[view], truth, "capture_time")[1] == 1.0
    _beats_constant(predictions["rgb"], day, "color", 0.8)  # 1/k = 1/5
    assert _accuracy(predictions["rgb"], day, "color")[1] == 1.0
    _beats_constant(without["rgb"], day, "color", 0.7)
    _beats_constant(predictions["rgb"], truth, "illumination", 0.7)
    for view in ("rgb", "tir", "composite"):
        _beats_constant(predictions[view], truth, "view", 0.85)  # 1/k = 1/4
    _beats_constant(predictions["nir"], truth, "view", 0.6)  # dark NIR frames leave fewer rows and cues
    _beats_constant(predictions["composite"], truth, "target_clarity", 0.85)  # "clear" is 84% of the truth
    _beats_constant(predictions["composite"], truth, "headlights_condition", 0.85)


# ---------------------------------------------------------------------------------------------------------------
# Units


def test_colour_names_of_plain_colours():
    params = HeuristicParams()
    colours = {
        "red": (200, 30, 35), "blue": (35, 70, 180), "green": (40, 140, 60), "yellow": (230, 200, 30),
        "orange": (235, 120, 25), "brown": (110, 70, 40), "purple": (110, 45, 140), "pink": (235, 130, 170),
        "black": (25, 25, 28), "white": (236, 236, 232), "gray": (128, 130, 132),
    }  # fmt: skip
    rgb = np.array(list(colours.values()), dtype=np.float32) / 255.0
    names = [COLOUR_NAMES[i] for i in colour_index(rgb, "pedestrian", params)]
    assert names == list(colours)
    silver = colour_index(np.array([[190, 190, 196]], dtype=np.float32) / 255.0, "vehicle", params)
    assert COLOUR_NAMES[int(silver[0])] == "silver"


def test_identity_is_json_and_names_the_baseline():
    identity = HeuristicProvider().identity()
    assert identity["provider"] == "heuristic" and identity["model"] == "pixel-statistics-baseline"
    assert identity["version"] >= 1 and "rgb_night_grey" in identity["params"]
    json.dumps(identity)
    changed = HeuristicProvider(HeuristicParams(rgb_night_grey=30.0)).identity()
    assert changed != identity


def test_malformed_queries_fail_alone():
    good = np.full((64, 32, 3), 90, dtype=np.uint8)
    queries = [
        AttributeQuery("a", "rgb", "pedestrian", good[..., 0]),
        AttributeQuery("b", "rgb", "pedestrian", good, np.zeros((10, 10), dtype=bool)),
        AttributeQuery("c", "tir", "vehicle", good),
        AttributeQuery("d", "nir", "pedestrian", good[:8, :8]),
    ]
    answers = HeuristicProvider().describe(queries)
    assert isinstance(answers[0], RequestFailure) and "uint8" in answers[0].reason
    assert isinstance(answers[1], RequestFailure) and "mask shape" in answers[1].reason
    assert isinstance(answers[2], AttributeAnswer)  # a flat image: little is known, nothing fails
    assert answers[2].attributes.color.value is None
    assert isinstance(answers[3], RequestFailure) and "too small" in answers[3].reason

"""Merging attributes across modalities, rendering the NEXT caption templates, and validating captions."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from reidprep.captions.attributes import VIEWS
from reidprep.captions.merge import best_of, complement, fuse_triplet, unknown_rate, visibility
from reidprep.captions.render import DROP_ORDER, llm_fusion_prompt, render, render_caption
from reidprep.captions.validate import (
    CLIP_CONTEXT,
    CaptionError,
    ValidCaption,
    check_caption,
    clip_token_count,
    length_note,
    repair_caption,
    validate_caption,
)
from reidschemas import AttributeSet, attribute_model, load_stmi_set, load_template
from reidschemas.resources import read_text


def make(kind: str, **values: str | tuple[str, float]) -> AttributeSet:
    """An attribute set of ``kind``: unknown except ``values`` (a value at confidence 0.8, or (value, confidence))."""
    model = attribute_model(kind)
    data = {name: {"value": None, "confidence": 0.0} for name in model.model_fields}
    for name, value in values.items():
        text, confidence = value if isinstance(value, tuple) else (value, 0.8)
        data[name] = {"value": text, "confidence": confidence}
    return model(**data)


def conf(attributes: AttributeSet, name: str) -> tuple[str | None, float]:
    attribute = getattr(attributes, name)
    return attribute.value, attribute.confidence


# --- visibility and best_of ----------------------------------------------------------------------------------------


def test_visibility_rules_name_template_attributes():
    person, vehicle = visibility("pedestrian"), visibility("vehicle")
    assert person.colour == {"upper_clothing_color", "lower_clothing_color"}
    assert vehicle.colour == {"color"}
    for rules in (person, vehicle):
        assert rules.per_image == {"illumination", "target_clarity"}
        assert rules.not_sensed["tir"] == {"illumination", "capture_time"}
        assert rules.not_sensed["rgb"] == rules.not_sensed["nir"] == frozenset()
        assert {"red", "blue", "grey", "gray"} <= rules.colour_words
    assert person.hidden("rgb", colours=False) == frozenset()
    stmi_left_out = {"view", "illumination", "capture_time", "target_clarity", "handbag", "backpack", "suitcase"}
    assert person.hidden("fused", colours=False) == stmi_left_out
    assert person.presence == {"carrying", "holding", "handbag", "backpack", "suitcase"}
    assert vehicle.presence == frozenset()
    for value in ("not", "None", "not carrying", "not dragging", "no backpack", "nothing.", "empty-handed"):
        assert person.negative(value), value
    for value in ("carrying backpack", "a phone", "notebook", "dragging", "bottle"):
        assert not person.negative(value), value
    assert not person.negative(None)
    assert person.hidden("nir", colours=False) == person.colour
    assert person.hidden("nir", colours=True) == frozenset()
    assert person.hidden("tir", colours=True) == {"illumination", "capture_time"}


def test_best_of_takes_the_most_confident_known_value_per_attribute():
    a = make("pedestrian", gender=("male", 0.6), age=("adult", 0.7), view=("side", 0.5))
    b = make("pedestrian", gender=("female", 0.9), age=("senior", 0.7), hair_length=("short", 0.0))
    c = make("pedestrian", view=("front", 0.5))
    merged = best_of([a, b, c])
    assert conf(merged, "gender") == ("female", 0.9)
    assert conf(merged, "age") == ("adult", 0.7)  # tie: the first answer
    assert conf(merged, "view") == ("side", 0.5)
    assert conf(merged, "hair_length") == (None, 0.0)  # zero confidence counts as unknown
    assert conf(merged, "glasses") == (None, 0.0)  # unknown everywhere
    assert best_of([a]) == a
    with pytest.raises(ValueError, match="at least one"):
        best_of([])
    with pytest.raises(ValueError, match="one kind"):
        best_of([a, make("vehicle")])


# --- complement ----------------------------------------------------------------------------------------------------


def run_complement(per_view, *, below=0.5, colours=False, kind="pedestrian"):
    return complement(per_view, kind, below=below, colours_in_infrared=colours)


def test_rgb_gets_the_backpack_thermal_sees_at_night():
    """NEXT appendix C / Figure 2: RGB says no backpack at 0.6, TIR sees one at 0.9 -> RGB's caption has it."""
    per_view = {
        "rgb": make(
            "pedestrian",
            gender="male",
            capture_time="nighttime",
            backpack=("not", 0.6),
            carrying=("not carrying", 0.7),
            handbag=("not", 0.8),
            holding=("a phone", 0.6),
        ),
        "nir": make("pedestrian", backpack=("carrying backpack", 0.7), holding=("none", 0.9)),
        "tir": make(
            "pedestrian",
            backpack=("carrying backpack", 0.9),
            carrying=("backpack", 0.85),
            handbag=("carrying handbag", 0.75),
        ),
    }
    merged = run_complement(per_view)
    rgb = merged["rgb"]
    assert conf(rgb.attributes, "backpack") == ("carrying backpack", 0.9)  # 0.6 is above `below`, still replaced
    assert conf(rgb.attributes, "carrying") == ("backpack", 0.85)
    assert conf(rgb.attributes, "handbag") == ("not", 0.8)  # the positive answer is less confident: kept
    assert conf(rgb.attributes, "holding") == ("a phone", 0.6)  # a positive is never replaced by a negative
    assert rgb.filled == {"backpack": "tir", "carrying": "tir"}
    assert "He is carrying a backpack" in render_caption(rgb, "pedestrian", "rgb")
    assert "backpack" not in render_caption(per_view["rgb"], "pedestrian", "rgb")  # before the complement
    assert conf(merged["nir"].attributes, "backpack") == ("carrying backpack", 0.7)  # positive, confident: kept
    assert conf(merged["nir"].attributes, "holding") == ("none", 0.9)  # a more confident negative is kept
    assert merged["tir"].filled == {"gender": "rgb", "holding": "nir"}


def test_only_presence_attributes_give_way_to_a_positive():
    per_view = {
        "rgb": make("pedestrian", glasses=("not", 0.6), suitcase=("not dragging", 0.6)),
        "tir": make("pedestrian", glasses=("wearing glasses", 0.9), suitcase=("dragging", 0.9)),
    }
    rgb = run_complement(per_view)["rgb"].attributes
    assert conf(rgb, "glasses") == ("not", 0.6)  # not a carried thing: the general rule (0.6 >= below) keeps it
    assert conf(rgb, "suitcase") == ("dragging", 0.9)
    vehicles = {"rgb": make("vehicle", spoiler=("not present", 0.6)), "nir": make("vehicle", spoiler="present")}
    assert conf(run_complement(vehicles, kind="vehicle")["rgb"].attributes, "spoiler") == ("not present", 0.6)


def test_unknown_is_filled_even_with_threshold_zero_and_ties_go_to_the_first_view():
    per_view = {
        "rgb": make("pedestrian"),
        "nir": make("pedestrian", gender=("male", 0.7)),
        "tir": make("pedestrian", gender=("female", 0.7)),
        "composite": make("pedestrian", gender=("female", 0.7)),
    }
    merged = run_complement(per_view, below=0.0)
    assert conf(merged["rgb"].attributes, "gender") == ("male", 0.7)
    assert merged["rgb"].sources["gender"] == "nir"
    assert merged["nir"].sources["gender"] == "nir"  # known: threshold 0 keeps it


def test_colour_comes_only_from_rgb():
    per_view = {
        "rgb": make("pedestrian", upper_clothing_color=("blue", 0.7)),
        "nir": make("pedestrian", upper_clothing_color=("red", 0.9), lower_clothing_color=("black", 0.9)),
        "tir": make("pedestrian", lower_clothing_color=("grey", 0.9)),
        "composite": make("pedestrian", upper_clothing_color=("green", 0.99), lower_clothing_color=("white", 0.99)),
    }
    merged = run_complement(per_view)
    rgb, nir, tir = (merged[m] for m in ("rgb", "nir", "tir"))
    assert conf(rgb.attributes, "upper_clothing_color") == ("blue", 0.7)  # composite's 0.99 never wins
    assert conf(rgb.attributes, "lower_clothing_color") == (None, 0.0)  # never copied from nir/tir/composite
    assert conf(nir.attributes, "upper_clothing_color") == (None, 0.0)  # nir's own red is dropped
    assert set(nir.dropped) == {"upper_clothing_color", "lower_clothing_color"}
    assert tir.dropped == ("lower_clothing_color",)
    assert conf(tir.attributes, "upper_clothing_color") == (None, 0.0)  # rgb's blue only with the flag

    with_flag = run_complement(per_view, colours=True)
    for modality in ("nir", "tir"):
        assert conf(with_flag[modality].attributes, "upper_clothing_color") == ("blue", 0.7)
        assert with_flag[modality].sources["upper_clothing_color"] == "rgb"
        assert conf(with_flag[modality].attributes, "lower_clothing_color") == (None, 0.0)
    assert conf(with_flag["rgb"].attributes, "lower_clothing_color") == (None, 0.0)


def test_vehicle_colour_from_nir_or_composite_is_never_used():
    per_view = {
        "rgb": make("vehicle", color=("white", 0.2)),
        "nir": make("vehicle", color=("black", 0.9)),
        "composite": make("vehicle", color=("silver", 0.9)),
    }
    merged = run_complement(per_view, kind="vehicle", colours=True)
    assert conf(merged["rgb"].attributes, "color") == ("white", 0.2)  # low, but nothing else may replace it
    assert conf(merged["nir"].attributes, "color") == ("white", 0.2)
    assert conf(merged["tir"].attributes, "color") == ("white", 0.2)


def test_conditions_stay_with_their_sensor():
    per_view = {
        "rgb": make("pedestrian", capture_time=("nighttime", 0.9), illumination=("dim", 0.3)),
        "nir": make("pedestrian", illumination=("bright", 0.9), target_clarity=("clear", 0.9)),
        "tir": make("pedestrian", capture_time=("daytime", 0.95), illumination=("bright", 0.9), gender="male"),
        "composite": make("pedestrian", illumination=("normal", 0.99), target_clarity=("blurry", 0.99)),
    }
    merged = run_complement(per_view)
    rgb, nir, tir = (merged[m].attributes for m in ("rgb", "nir", "tir"))
    assert conf(rgb, "illumination") == ("dim", 0.3)  # per image: low but never replaced
    assert conf(rgb, "target_clarity") == (None, 0.0)
    assert conf(nir, "illumination") == ("bright", 0.9)
    assert conf(rgb, "capture_time") == ("nighttime", 0.9)  # tir's daytime is not sensed, so not a source
    assert conf(nir, "capture_time") == ("nighttime", 0.9)  # same instant: copied from rgb
    assert merged["nir"].sources["capture_time"] == "rgb"
    assert conf(tir, "capture_time") == (None, 0.0)  # thermal cannot tell: dropped, never filled
    assert conf(tir, "illumination") == (None, 0.0)
    assert set(merged["tir"].dropped) == {"capture_time", "illumination"}
    assert conf(tir, "target_clarity") == (None, 0.0)
    assert conf(rgb, "gender") == ("male", 0.8)  # identity attributes do flow from tir


def test_missing_views_start_unknown_and_the_composite_is_no_source():
    per_view = {"rgb": make("pedestrian", age="adult"), "composite": make("pedestrian", gender=("female", 0.9))}
    merged = run_complement(per_view)
    assert set(merged) == {"rgb", "nir", "tir"}
    assert conf(merged["tir"].attributes, "gender") == (None, 0.0)  # NEXT complements from modalities only
    assert conf(merged["rgb"].attributes, "gender") == (None, 0.0)
    assert merged["tir"].sources == {"age": "rgb"}
    with pytest.raises(ValueError, match="kind"):
        run_complement(per_view, kind="vehicle")
    with pytest.raises(ValueError):
        run_complement({})


def test_fuse_triplet_takes_the_most_confident_view_and_rgb_colours():
    per_view = {
        "rgb": make("pedestrian", gender=("male", 0.5), upper_clothing_color=("blue", 0.4), illumination=("dim", 0.6)),
        "nir": make("pedestrian", gender=("male", 0.8), upper_clothing_color=("red", 0.9)),
        "tir": make("pedestrian", backpack=("carrying backpack", 0.9), carrying=("backpack", 0.7)),
        "composite": make("pedestrian", gender=("female", 0.7), lower_clothing_color=("black", 0.9), age="adult"),
    }
    fused = fuse_triplet(per_view)
    assert fused.view == "fused"
    assert conf(fused.attributes, "gender") == ("male", 0.8)
    assert conf(fused.attributes, "upper_clothing_color") == ("blue", 0.4)
    assert conf(fused.attributes, "lower_clothing_color") == (None, 0.0)
    assert conf(fused.attributes, "illumination") == (None, 0.0)  # not one of STMI's attributes
    assert conf(fused.attributes, "backpack") == (None, 0.0)  # STMI's backpack is the open "carrying"
    assert fused.sources == {"gender": "nir", "upper_clothing_color": "rgb", "carrying": "tir", "age": "composite"}


def test_stmi_sets_are_next_less_conditions_and_bag_flags():
    person, vehicle = load_stmi_set("pedestrian"), load_stmi_set("vehicle")
    left_out = {"view", "illumination", "capture_time", "target_clarity", "handbag", "backpack", "suitcase"}
    assert set(person.names) == set(load_template("pedestrian").names) - left_out
    assert len(person.names) == 13 and len(vehicle.names) == 6  # STMI, Dataset Setup
    assert set(vehicle.names) <= set(load_template("vehicle").names)
    assert not {"view", "illumination", "capture_time", "target_clarity"} & set(vehicle.names)
    assert (person.target_words, vehicle.target_words) == (33, 32)  # 33.28 (RGBNT201); 31.51 and 31.90
    raw = json.loads(read_text("templates/attributes_stmi.json"))
    assert sum(note.startswith("ASSUMED") for note in raw["notes"]) >= 3


STMI_FIGURE_2 = (
    "The adult male is wearing a blue jacket with dark pants and casual sneakers. The male has straight short hair "
    "and is not wearing glasses. The male is holding phone and carrying a backpack."
)


def test_fused_caption_of_stmi_figure_2_has_no_conditions():
    """STMI Figure 2(b): the three views of a night-time triplet give one description of the person only."""
    conditions = {"view": "side", "capture_time": "nighttime", "illumination": "dim", "target_clarity": "blurry"}
    per_view = {
        "rgb": make(
            "pedestrian",
            age="adult",
            gender="male",
            upper_clothing="jacket",
            upper_clothing_color="blue",
            lower_clothing_color="dark",
            hair_length="short",
            glasses="not",
            backpack=("not", 0.6),
            **conditions,
        ),
        "nir": make("pedestrian", lower_clothing="pants", footwear="sneakers", holding="phone", **conditions),
        "tir": make("pedestrian", carrying=("backpack", 0.9), backpack=("carrying backpack", 0.9), view="side"),
        "composite": make("pedestrian", hair_style="straight", footwear_style="casual", target_clarity="clear"),
    }
    fused = fuse_triplet(per_view)
    caption = render_caption(fused, "pedestrian", "fused")
    assert caption == (
        "An adult male is wearing a blue jacket with dark pants, paired with casual sneakers. Short straight hair and "
        "he is not wearing glasses. He is carrying a backpack and holding a phone."
    )
    assert validate_caption(caption, fused.attributes, "pedestrian", "fused") == []
    assert abs(len(caption.split()) - len(STMI_FIGURE_2.split())) <= 3
    assert validate_caption(STMI_FIGURE_2, fused.attributes, "pedestrian", "fused") == []
    # the full set rendered as the fused caption still leaves the conditions out
    full = render_caption(per_view["rgb"], "pedestrian", "fused")
    assert not any(word in full for word in ("side", "night", "dim", "blurry", "lighting"))
    problems = validate_caption(
        "An adult male seen from the side in dim lighting. " + caption, fused.attributes, "pedestrian", "fused"
    )
    assert problems == ["the fused caption describes the object only but says 'lighting', 'seen from'"]
    assert validate_caption("Seen from the side. " + caption, per_view["rgb"], "pedestrian", "rgb") == []  # NEXT may


def test_unknown_rate_drops_after_complementing():
    per_view = {
        "rgb": make("pedestrian", age="adult", gender="male", upper_clothing_color="blue", capture_time="nighttime"),
        "nir": make("pedestrian", age="adult", hair_length="short", holding="a phone"),
        "tir": make("pedestrian", backpack="carrying backpack", gender="male", upper_clothing="jacket"),
    }
    before = unknown_rate(per_view.values())
    merged = run_complement(per_view)
    after = unknown_rate(m.attributes for m in merged.values())
    assert before == pytest.approx(1 - 10 / 60)
    assert after < before
    rgb = merged["rgb"].attributes
    assert unknown_rate([rgb]) == pytest.approx(1 - 8 / 20)
    hidden = visibility("pedestrian").hidden("tir", colours=False)
    assert unknown_rate([merged["tir"].attributes], ignore=hidden) == pytest.approx(1 - 6 / 16)
    assert unknown_rate([]) == 0.0


# --- rendering -----------------------------------------------------------------------------------------------------

NIGHT_MALE = make(
    "pedestrian",
    age="adult",
    gender="male",
    view="side",
    capture_time="nighttime",
    illumination="dim",
    target_clarity="blurry",
    upper_clothing="jacket",
    upper_clothing_color="dark",
    lower_clothing="trousers",
    lower_clothing_color="dark",
    hair_length="short",
    hair_style="straight",
    footwear="boots",
    footwear_style="casual",
    carrying="backpack",
    holding="none",
    handbag="not",
    backpack="carrying backpack",
    glasses="not",
    suitcase="not dragging",
)

FEMALE = make(
    "pedestrian",
    age="adult",
    gender="female",
    view="side",
    capture_time=("unclear", 0.9),
    upper_clothing="Jacket",
    upper_clothing_color="orange",
    lower_clothing="jeans",
    lower_clothing_color="blue",
    footwear="sneakers",
    footwear_style="athletic",
    hair_length="long",
    carrying="luggage",
    holding="a phone",
    handbag="carrying handbag",
    glasses="not",
    suitcase="dragging",
    target_clarity="clear",
)


def test_pedestrian_captions_read_like_the_papers():
    assert render_caption(NIGHT_MALE, "pedestrian", "rgb") == (
        "An adult male seen from the side during nighttime in dim lighting. He is wearing a dark jacket with dark "
        "trousers, paired with casual boots. Short straight hair and he is not wearing glasses. He is carrying a "
        "backpack. The image appears blurry."
    )
    assert render_caption(NIGHT_MALE, "pedestrian", "tir") == (
        "An adult male seen from the side. He is wearing a jacket with trousers, paired with casual boots. "
        "Short straight hair and he is not wearing glasses. He is carrying a backpack. The image appears blurry."
    )
    assert render_caption(FEMALE, "pedestrian", "rgb") == (
        "An adult female seen from the side. She is wearing an orange jacket with blue jeans, paired with athletic "
        "sneakers. Long hair and she is not wearing glasses. She is carrying luggage and a handbag, holding a phone "
        "and dragging a suitcase. The image appears clear."
    )
    # NIR carries no colour unless asked to.
    assert render_caption(FEMALE, "pedestrian", "nir").startswith(
        "An adult female seen from the side. She is wearing a jacket with jeans, paired with athletic sneakers."
    )
    assert "an orange jacket with blue jeans" in render_caption(FEMALE, "pedestrian", "nir", colours=True)


def test_pedestrian_phrases_without_their_attributes():
    assert render_caption(make("pedestrian"), "pedestrian", "rgb") == "A person."
    caption = render_caption(
        make(
            "pedestrian",
            age="teenager",
            hair_style="curly",
            upper_clothing_color="red",
            lower_clothing="a skirt",
            glasses="wearing glasses",
            carrying="none",
            holding="nothing",
            handbag="not",
            backpack="not",
            suitcase="not dragging",
        ),
        "pedestrian",
        "rgb",
    )
    assert caption == (
        "A teenager. The person is wearing a red top with a skirt. Curly hair and the person is wearing glasses."
    )
    caption = render_caption(
        make("pedestrian", gender="non-binary", age="senior", footwear_style="formal", hair_length="medium"),
        "pedestrian",
        "rgb",
    )
    assert caption == "A non-binary senior. The person is wearing formal footwear. The person has medium hair."
    caption = render_caption(
        make("pedestrian", gender="male", age="child", glasses="not", holding="umbrella", upper_clothing="t-shirt"),
        "pedestrian",
        "rgb",
    )
    assert caption == ("A male child. He is wearing a t-shirt. He is not wearing glasses. He is holding an umbrella.")


def test_values_no_caption_can_hold_are_left_out():
    attributes = make(
        "pedestrian",
        gender="male",
        upper_clothing="jacket (unclear)",
        lower_clothing="jeans | trousers",
        footwear="women's boots",
        upper_clothing_color="the blue",
        holding="lower_clothing",
    )
    caption = render_caption(attributes, "pedestrian", "rgb")
    assert caption == "A male. He is wearing a blue top."
    assert validate_caption(caption, attributes, "pedestrian", "rgb") == []
    long_type = make("vehicle", color="red", vehicle_type=" ".join(["big"] * 80) + " truck", branding="Ford")
    result = render(long_type, "vehicle", "rgb")
    assert result.text == "A red vehicle."  # greedy: the brand goes before the type, which was the long one
    assert result.dropped == ("branding", "vehicle_type")


def test_nir_and_tir_captions_strip_colour_words_from_open_values():
    attributes = make("pedestrian", gender="female", upper_clothing="white shirt", lower_clothing="blue-striped skirt")
    assert render_caption(attributes, "pedestrian", "tir") == "A female. She is wearing a shirt with a skirt."
    assert render_caption(attributes, "pedestrian", "tir", colours=True) == (
        "A female. She is wearing a white shirt with a blue-striped skirt."
    )


WHITE_SEDAN = make(
    "vehicle",
    vehicle_type="sedan",
    branding="Volkswagen",
    color="white",
    view="front",
    illumination="bright",
    capture_time="daytime",
    target_clarity="clear",
    window_condition="tinted",
    window_style="curved",
    exterior_condition="used",
    headlights_shape="angular",
    taillights_shape="rectangular",
    front_grille_shape="horizontal",
    license_plate="visible",
)

NIGHT_SUV = make(
    "vehicle",
    vehicle_type="SUV",
    color="orange",
    view="diagonal",
    illumination="dim",
    capture_time="nighttime",
    headlights_condition="on",
    front_grille_edges="sharp",
    roof_type="sunroof",
    tires_type="off-road",
    tire_size="large",
    bumper_condition="intact",
    side_mirrors="not present",
    spoiler="present",
    roof_rack="not present",
    exhaust_type="dual",
)


def test_vehicle_captions():
    assert render_caption(WHITE_SEDAN, "vehicle", "rgb") == (
        "A white Volkswagen sedan viewed from the front in bright daytime light (image appears clear). The vehicle "
        "looks used, with tinted curved windows. It features angular headlights and rectangular taillights, "
        "complemented by a horizontal grille. The license plate is visible."
    )
    assert render_caption(NIGHT_SUV, "vehicle", "rgb") == (
        "An orange SUV viewed from a diagonal angle in dim nighttime light. It features lit headlights, complemented "
        "by a grille with sharp edges. The roof with a sunroof sits above large off-road tires with intact bumpers. "
        "It has no side mirrors. It has a spoiler, no roof rack and dual exhaust pipes."
    )
    assert render_caption(NIGHT_SUV, "vehicle", "tir").startswith("An SUV viewed from a diagonal angle. It features")
    assert render_caption(make("vehicle", branding="BMW"), "vehicle", "nir") == "A BMW vehicle."
    assert render_caption(make("vehicle", branding="Audi"), "vehicle", "nir") == "An Audi vehicle."


def test_rendering_is_deterministic():
    again = make(**{"kind": "pedestrian"}, **{k: (v.value, v.confidence) for k, v in NIGHT_MALE if v.value})
    assert render_caption(NIGHT_MALE, "pedestrian", "fused") == render_caption(again, "pedestrian", "fused")
    with pytest.raises(ValueError, match="kind"):
        render_caption(NIGHT_MALE, "vehicle", "rgb")


def full_vehicle(index: int) -> AttributeSet:
    template = load_template("vehicle")
    values = {spec.name: spec.options[index % len(spec.options)] for spec in template.specs if spec.options}
    values.update(vehicle_type="hatchback", branding="Mitsubishi", capture_time="nighttime", window_condition="dirty")
    return make("vehicle", **values)


def test_drop_order_lists_every_attribute_once():
    for kind, groups in DROP_ORDER.items():
        names = [name for group in groups for name in group]
        assert sorted(names) == sorted(load_template(kind).names)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_long_vehicle_captions_are_shortened_in_order(index: int):
    attributes = full_vehicle(index)
    full = render(attributes, "vehicle", "rgb", max_tokens=None)
    assert clip_token_count(full.text) > CLIP_CONTEXT
    short = render(attributes, "vehicle", "rgb")
    assert short.tokens == clip_token_count(short.text) <= CLIP_CONTEXT
    order = [name for group in DROP_ORDER["vehicle"] for name in group]
    assert short.dropped == tuple(order[: len(short.dropped)])
    assert short.dropped[:2] == ("exhaust_type", "roof_rack")
    assert "exhaust" not in short.text and "roof rack" not in short.text
    assert short.text.startswith("A ")
    assert validate_caption(short.text, attributes, "vehicle", "rgb") == []
    assert render(attributes, "vehicle", "rgb", max_tokens=40).tokens <= 40


def test_fusion_prompt_is_the_template_then_the_attribute_json():
    prompt = llm_fusion_prompt(WHITE_SEDAN, "vehicle")
    template = read_text("templates/caption_vehicle.txt").strip()
    assert prompt.startswith(template + "\n\n{")
    data = json.loads(prompt[len(template) :])
    assert data["color"] == {"value": "white", "confidence": 0.8}
    assert data["spoiler"] == {"value": None, "confidence": 0.0}
    assert list(data) == list(load_template("vehicle").names)

    merged = complement({"rgb": NIGHT_MALE, "tir": FEMALE}, "pedestrian", below=0.5, colours_in_infrared=False)
    prompt = llm_fusion_prompt({m: merged[m] for m in ("rgb", "nir", "tir")}, "pedestrian")
    data = json.loads(prompt[len(read_text("templates/caption_pedestrian.txt").strip()) :])
    assert list(data) == ["rgb", "nir", "tir"]
    assert data["rgb"]["gender"]["value"] == "male"
    with pytest.raises(ValueError, match="kind"):
        llm_fusion_prompt(WHITE_SEDAN, "pedestrian")


@pytest.mark.parametrize(("kind", "attributes"), [("pedestrian", NIGHT_MALE), ("vehicle", WHITE_SEDAN)])
def test_fused_fusion_prompt_is_stmi_length_and_attributes(kind: str, attributes: AttributeSet):
    prompt = llm_fusion_prompt(attributes, kind, target="fused")
    stmi = load_stmi_set(kind)
    template, data = prompt.split("\n\n{", 1)
    assert f"Write about {stmi.target_words} words." in template and "{target_words}" not in template
    assert "do not mention the viewpoint, lighting, time of day or image quality" in template
    for name in ("view", "illumination", "capture_time", "target_clarity"):
        assert f"[{name}]" not in template
    assert list(json.loads("{" + data)) == list(stmi.names)


# --- validation ----------------------------------------------------------------------------------------------------


def test_clip_token_count_includes_start_and_end():
    assert clip_token_count("a photo of a cat") == 7
    assert clip_token_count("") == 2
    exactly = " ".join(["cat"] * (CLIP_CONTEXT - 2))
    assert clip_token_count(exactly) == CLIP_CONTEXT
    person = make("pedestrian")
    assert not any("CLIP tokens" in p for p in validate_caption(exactly, person, "pedestrian", "rgb"))
    assert length_note(exactly) is None
    longer = exactly + " cat"
    assert validate_caption(longer, person, "pedestrian", "rgb") == []  # length is never a problem
    expected = f"{CLIP_CONTEXT + 1} CLIP tokens, truncated to {CLIP_CONTEXT} at tokenisation (end-of-text kept)"
    assert length_note(longer) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("  \n ", "empty"),
        ("An adult male in unknown lighting.", "'unknown'"),
        ("A person. The image appears Unclear.", "'unclear'"),
        ("Short unknowable due to low clarity hair.", "'unknowable'"),
        ("A person holding n/a.", "'n/a'"),
        ("A [age] person.", "brackets or placeholders left: [ ]"),
        ("A person wearing a {upper_clothing}.", "upper_clothing"),
        ("He|She is wearing a jacket.", "|"),
        ("A person with Hair_length hair.", "Hair_length"),
    ],
)
def test_validation_rejects_vague_or_unfinished_text(text: str, reason: str):
    problems = validate_caption(text, make("pedestrian"), "pedestrian", "rgb")
    assert len(problems) == 1 and reason in problems[0], problems


def test_validation_checks_gender_and_colours():
    male = make("pedestrian", gender="male", upper_clothing_color="dark blue", lower_clothing_color=("black", 0.0))
    ok = "An adult male. He is wearing a dark-blue jacket."
    assert validate_caption(ok, male, "pedestrian", "rgb") == []
    assert validate_caption("An adult male. She is wearing a dark blue jacket.", male, "pedestrian", "rgb") == [
        "gender is male but the caption says she"
    ]
    female = make("pedestrian", gender="female")
    assert validate_caption("A woman; his bag.", female, "pedestrian", "rgb") == [
        "gender is female but the caption says his"
    ]
    assert validate_caption("A female. She is here.", female, "pedestrian", "rgb") == []
    assert validate_caption(
        "A non-binary adult. He is here.", make("pedestrian", gender="non-binary"), "pedestrian", "rgb"
    ) == ["gender is non-binary but the caption says he"]
    assert validate_caption("An adult male. He is wearing a jacket.", male, "pedestrian", "rgb") == [
        "upper_clothing_color is 'dark blue' but the caption does not say so"
    ]
    assert validate_caption("An adult male. He is wearing a jacket.", male, "pedestrian", "fused") != []
    # NIR/TIR: no colour words unless colours are allowed, and then the known colours must be there.
    assert validate_caption("An adult male. He is wearing a jacket.", male, "pedestrian", "nir") == []
    assert validate_caption(ok, male, "pedestrian", "tir") == [
        "colour words in a tir caption that carries no colour: blue"
    ]
    assert validate_caption(ok, male, "pedestrian", "tir", colours=True) == []
    assert validate_caption("He wears a jacket.", male, "pedestrian", "nir", colours=True) != []
    grey = make("pedestrian", upper_clothing_color="grey")
    assert validate_caption("A person in a gray coat.", grey, "pedestrian", "fused") == []
    sedan = make("vehicle", color="silver")
    assert validate_caption("A silver sedan.", sedan, "vehicle", "rgb") == []
    assert validate_caption("A silverish sedan.", sedan, "vehicle", "rgb") == [
        "color is 'silver' but the caption does not say so"
    ]


def test_valid_caption_model_and_check_caption():
    text = render_caption(NIGHT_MALE, "pedestrian", "rgb")
    row = ValidCaption(text=text, kind="pedestrian", modality="rgb", attributes=NIGHT_MALE)
    assert row.tokens == clip_token_count(text)
    dumped = row.model_dump()
    assert dumped["attributes"]["gender"] == {"value": "male", "confidence": 0.8}
    assert dumped["tokens"] == row.tokens
    with pytest.raises(ValidationError, match="gender is male"):
        ValidCaption(text="She is here.", kind="pedestrian", modality="rgb", attributes=NIGHT_MALE)
    assert check_caption(text, NIGHT_MALE, "pedestrian", "rgb") == text
    with pytest.raises(CaptionError) as error:
        check_caption("[age] unknown", make("pedestrian", gender="male"), "pedestrian", "rgb")
    assert len(error.value.problems) == 2
    assert str(error.value) == "; ".join(error.value.problems)


@pytest.mark.parametrize(
    "reply",
    [
        "An adult male. He is here.",
        '  "An adult male. He is here."\n',
        "Caption: An adult male. He is here.",
        "Here is the caption: 'An adult male. He is here.'",
        "```\nAn adult male.\nHe is here.\n```",
        "“An adult male. He is here.”",
        "Description - An adult male.   He is here.",
    ],
)
def test_repair_strips_only_the_wrapping(reply: str):
    assert repair_caption(reply) == "An adult male. He is here."


def test_repair_keeps_inner_quotes():
    assert repair_caption("'A person' is 'here'") == "'A person' is 'here'"
    assert repair_caption("'The man's jacket is red.'") == "The man's jacket is red."
    assert repair_caption('He carries a "Nike" bag.') == 'He carries a "Nike" bag.'


# --- property: every rendered caption of a valid attribute set validates -------------------------------------------

OPEN_VALUES = {
    "upper_clothing": ["t-shirt", "sweater", "jacket", "long-sleeve shirt", "white shirt", "coat", "hoodie", "dress"],
    "upper_clothing_color": ["red", "blue", "dark green", "light-grey", "black and white", "navy"],
    "lower_clothing": ["jeans", "shorts", "skirt", "trousers", "a long skirt", "sweatpants"],
    "lower_clothing_color": ["black", "blue", "khaki", "dark", "beige"],
    "hair_style": ["straight", "curly", "ponytail", "wavy", "braided"],
    "footwear": ["sneakers", "sandals", "boots", "shoes", "high heels", "slippers"],
    "footwear_style": ["casual", "formal", "athletic", "sporty"],
    "carrying": ["backpack", "luggage", "none", "a handbag", "shopping bag", "suitcase", "umbrella"],
    "holding": ["a phone", "bottle", "none", "an umbrella", "cup of coffee", "keys", "nothing"],
    "vehicle_type": ["sedan", "SUV", "truck", "coupe", "minivan", "hatchback", "motorcycle", "bus", "pickup truck"],
    "branding": ["Volkswagen", "Skoda", "Mitsubishi", "Audi", "BMW", "Benz", "Honda", "Ford", "Land Rover"],
}


ODD_VALUES = [
    "jacket (unclear)",
    "t-shirt | sweater",
    "the blue",
    "men's coat",
    "woman's blouse",
    "upper_clothing",
    "a " + " ".join(["very"] * 90) + " long description",
]
"""Open values an MLLM may return that no valid caption can hold as they are: left out or shortened away."""


def random_set(kind: str, rng: random.Random, p_unknown: float) -> AttributeSet:
    values: dict[str, tuple[str, float]] = {}
    for spec in load_template(kind).specs:
        if rng.random() < p_unknown:
            continue
        choices = spec.options or OPEN_VALUES[spec.name]
        if spec.options is None and rng.random() < 0.05:
            choices = ODD_VALUES[:-1] if spec.name in visibility(kind).colour else ODD_VALUES
        values[spec.name] = (rng.choice(choices), round(rng.uniform(0.05, 1.0), 2))
    return make(kind, **values)


@pytest.mark.parametrize("kind", ["pedestrian", "vehicle"])
def test_rendered_captions_of_random_sets_always_validate(kind: str):
    rng = random.Random(f"captions-{kind}")
    lengths = []
    for _ in range(150):
        per_view = {view: random_set(kind, rng, p_unknown=rng.choice([0.0, 0.3, 0.7, 1.0])) for view in VIEWS}
        colours = rng.random() < 0.5
        merged = complement(per_view, kind, below=rng.choice([0.0, 0.5, 0.9]), colours_in_infrared=colours)
        targets = [(m, merged[m].attributes, colours) for m in merged]
        targets.append(("fused", fuse_triplet(per_view).attributes, None))
        targets.append(("rgb", per_view["nir"], None))  # a raw set: nir colours rendered as rgb
        targets.append(("tir", per_view["rgb"], False))  # a raw set with colours and conditions, rendered as tir
        for target, attributes, allow in targets:
            result = render(attributes, kind, target, colours=allow)
            assert validate_caption(result.text, attributes, kind, target, colours=allow) == [], result.text
            assert render_caption(attributes, kind, target, colours=allow) == result.text
            lengths.append(result.tokens)
    assert max(lengths) <= CLIP_CONTEXT
    assert min(lengths) < 10  # the all-unknown sets were drawn too

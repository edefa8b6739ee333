"""The attribute templates as schemas: names, vocabularies, normalisation and validation errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from reidschemas import AttributeValue, attribute_model, is_unknown, load_stmi_set, load_template
from reidschemas.resources import read_text


def _answer(kind: str, **overrides) -> dict:
    """A valid full answer: the first option of closed attributes, a word for open ones."""
    template = load_template(kind)
    answer = {s.name: {"value": s.options[0] if s.options else "something", "confidence": 0.5} for s in template.specs}
    answer.update(overrides)
    return answer


def test_templates_match_the_paper_figures():
    pedestrian, vehicle = load_template("pedestrian"), load_template("vehicle")
    assert len(pedestrian.names) == 20 and len(vehicle.names) == 27
    assert pedestrian.names[:3] == ("age", "gender", "view") and pedestrian.names[-1] == "suitcase"
    assert vehicle.names[0] == "vehicle_type" and vehicle.names[-1] == "exhaust_type"
    assert pedestrian.spec("age").options == ("child", "teenager", "adult", "senior")
    assert pedestrian.spec("upper_clothing").options is None  # "e.g., ..." is open
    assert vehicle.spec("color").options[:3] == ("red", "blue", "black")
    assert vehicle.spec("branding").options is None


def test_prompt_is_the_figure_text_with_a_parsable_skeleton():
    prompt = load_template("pedestrian").prompt()
    assert prompt.startswith("You are a visual analysis assistant specialized in processing images.")
    assert prompt.endswith("Please provide the analysis in valid JSON only.")
    assert '"age": {"value": "child | teenager | adult | senior", "confidence": 0.0}' in prompt
    skeleton = json.loads(prompt[prompt.index("{") : prompt.rindex("}") + 1])
    assert list(skeleton) == list(load_template("pedestrian").names)


@pytest.mark.parametrize("kind", ["pedestrian", "vehicle"])
def test_a_valid_answer_validates(kind):
    attrs = attribute_model(kind).model_validate(_answer(kind))
    assert attrs.known_fraction() == 1.0
    assert set(attrs.values()) == set(load_template(kind).names)


def test_closed_values_are_matched_case_insensitively_and_canonicalised():
    attrs = attribute_model("vehicle").model_validate(_answer("vehicle", color={"value": " Silver ", "confidence": 1}))
    assert attrs.color.value == "silver"
    open_value = attribute_model("vehicle").model_validate(
        _answer("vehicle", branding={"value": "BMW", "confidence": 1})
    )
    assert open_value.branding.value == "BMW"  # open attributes keep their spelling


@pytest.mark.parametrize("text", ["unknown", "Unknown", "UNCLEAR", "unknowable due to low clarity", "n/a", "", " "])
def test_unknown_values_become_null_with_zero_confidence(text):
    value = AttributeValue(value=text, confidence=0.9)
    assert value.value is None and value.confidence == 0.0 and not value.known
    assert is_unknown(text)


def test_informative_values_are_not_unknown():
    for text in ("none", "not", "not visible", "not dragging", "a phone"):
        assert not is_unknown(text)
    attrs = attribute_model("pedestrian").model_validate(
        _answer("pedestrian", capture_time={"value": "unclear", "confidence": 0.8})
    )
    assert attrs.capture_time.value is None and attrs.capture_time.confidence == 0.0


def test_validation_errors_name_the_attribute():
    model = attribute_model("pedestrian")
    with pytest.raises(ValidationError) as info:
        model.model_validate(_answer("pedestrian", age={"value": "robot", "confidence": 0.5}))
    assert info.value.errors()[0]["loc"] == ("age",)
    assert "child | teenager | adult | senior" in str(info.value)
    with pytest.raises(ValidationError) as info:
        model.model_validate(_answer("pedestrian", gender={"value": "male", "confidence": 1.5}))
    assert info.value.errors()[0]["loc"] == ("gender", "confidence")
    answer = _answer("pedestrian")
    del answer["glasses"]
    answer["hat"] = {"value": "cap", "confidence": 1.0}
    with pytest.raises(ValidationError) as info:
        model.model_validate(answer)
    assert {e["loc"][0] for e in info.value.errors()} == {"glasses", "hat"}


def test_unknown_set():
    attrs = attribute_model("vehicle").unknown()
    assert attrs.known_fraction() == 0.0
    assert all(v is None for v in attrs.values().values())


@pytest.mark.parametrize(
    ("kind", "name", "said", "option"),
    [
        ("pedestrian", "gender", "Man", "male"),
        ("pedestrian", "gender", "woman.", "female"),
        ("pedestrian", "age", "middle-aged", "adult"),
        ("pedestrian", "view", "rear", "back"),
        ("pedestrian", "backpack", "no backpack", "not"),
        ("pedestrian", "suitcase", "yes", "dragging"),
        ("vehicle", "color", "Grey", "gray"),
        ("vehicle", "spoiler", "absent", "not present"),
    ],
)
def test_synonyms_are_read_as_their_option(kind, name, said, option):
    spec = load_template(kind).spec(name)
    assert spec.canonical(said) == option
    attrs = attribute_model(kind).model_validate(_answer(kind, **{name: {"value": said, "confidence": 0.7}}))
    assert getattr(attrs, name).value == option


def test_every_synonym_maps_to_an_option_of_its_closed_attribute():
    for kind in ("pedestrian", "vehicle"):
        raw = json.loads(read_text(f"templates/attributes_{kind}.json"))
        assert raw["synonyms"] and "ASSUMED" in raw["synonyms_source"]
        for name, mapping in raw["synonyms"].items():
            spec = load_template(kind).spec(name)
            assert spec.options is not None, name
            assert set(mapping.values()) <= set(spec.options), name
            assert not set(mapping) & {o.lower() for o in spec.options}, name  # an option is never a synonym


@pytest.mark.parametrize("kind", ["pedestrian", "vehicle"])
def test_json_schema_lists_each_closed_vocabulary(kind):
    from openai.lib._pydantic import to_strict_json_schema  # what chat.completions.parse sends

    template = load_template(kind)
    for schema in (attribute_model(kind).model_json_schema(), to_strict_json_schema(attribute_model(kind))):
        defs = schema.get("$defs", {})
        for spec in template.specs:
            field = schema["properties"][spec.name]
            field = defs[field["$ref"].rsplit("/", 1)[1]] if "$ref" in field else field
            value = field["properties"]["value"]
            enums = [branch["enum"] for branch in value.get("anyOf", []) if "enum" in branch]
            if spec.options is None:
                assert enums == [], spec.name
            else:
                assert enums == [list(spec.options)], spec.name
                assert {"type": "null"} in value["anyOf"]  # unknown stays possible
            assert field["required"] == ["value", "confidence"] and field["additionalProperties"] is False


def test_stmi_set_reads_and_checks_its_names():
    assert load_stmi_set("pedestrian").names[:2] == ("age", "gender")
    assert load_stmi_set("vehicle").names == (
        "vehicle_type",
        "branding",
        "color",
        "headlights_shape",
        "front_grille_shape",
        "roof_type",
    )

"""Parsing and repairing MLLM replies into attribute sets."""

from __future__ import annotations

import json

import pytest

from reidprep.captions.parse import UnusableReply, extract_json_object, parse_attributes
from reidschemas import load_template


def _reply(kind: str = "pedestrian", **changes) -> dict:
    template = load_template(kind)
    reply = {s.name: {"value": s.options[0] if s.options else "jacket", "confidence": 0.8} for s in template.specs}
    reply.update(changes)
    return reply


def test_clean_reply():
    answer = parse_attributes(json.dumps(_reply()), "pedestrian")
    assert answer.repairs == () and answer.attributes.age.value == "child"


def test_code_fence_and_surrounding_text_are_removed():
    text = "Sure! Here is the analysis:\n```json\n" + json.dumps(_reply()) + "\n```\nHope this helps."
    answer = parse_attributes(text, "pedestrian")
    assert "removed a code fence" in answer.repairs and answer.attributes.gender.value == "male"
    answer = parse_attributes("Result: " + json.dumps(_reply()) + " (end)", "pedestrian")
    assert "removed text around the JSON object" in answer.repairs


@pytest.mark.parametrize(
    ("raw", "expected", "note"),
    [("0.7", 0.7, "read as a number"), ("85%", 0.85, "percentage"), (85, 0.85, "percentage"), (1.3, 1.0, "clipped"),
     (-0.2, 0.0, "clipped")],
)  # fmt: skip
def test_confidence_repairs(raw, expected, note):
    answer = parse_attributes(json.dumps(_reply(age={"value": "adult", "confidence": raw})), "pedestrian")
    assert answer.attributes.age.confidence == pytest.approx(expected)
    assert any(r.startswith("age:") and note in r for r in answer.repairs)


def test_unknowns_and_vocabulary():
    reply = _reply(
        capture_time={"value": "Unclear", "confidence": 0.9},
        view={"value": "from above", "confidence": 0.9},
        glasses={"value": "not", "confidence": "high"},
        gender={"value": "Female", "confidence": 0.6},
    )
    answer = parse_attributes(json.dumps(reply), "pedestrian")
    attrs = answer.attributes
    assert attrs.capture_time.value is None and attrs.capture_time.confidence == 0.0
    assert attrs.view.value is None and any(
        "'from above' is not one of front | back | side" in r for r in answer.repairs
    )
    assert attrs.glasses.value is None and any(
        "glasses: confidence 'high' is not a number" in r for r in answer.repairs
    )
    assert attrs.gender.value == "female"


def test_missing_and_extra_keys():
    reply = _reply()
    del reply["suitcase"]
    reply["hat"] = {"value": "cap", "confidence": 1}
    answer = parse_attributes(json.dumps(reply), "pedestrian")
    assert answer.attributes.suitcase.value is None
    assert "missing attributes set unknown: suitcase" in answer.repairs
    assert "ignored keys not in the template: hat" in answer.repairs


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I cannot help with that.", "no JSON object"),
        ('{"age": {"value": "adult", "confidence": 0.9', "malformed JSON"),
        ('{"age": {"value": "adult", "confidence": 0.9}}', "only 1 of the 20 pedestrian attributes"),
        ("[1, 2]", "no JSON object"),
    ],
)
def test_unusable_replies_are_rejected_with_a_reason(text, reason):
    with pytest.raises(UnusableReply, match=reason):
        parse_attributes(text, "pedestrian")


def test_vehicle_reply_and_json_extraction():
    answer = parse_attributes(json.dumps(_reply("vehicle", color={"value": "Silver", "confidence": 0.9})), "vehicle")
    assert answer.attributes.color.value == "silver"
    data, repairs = extract_json_object('noise {"a": 1} trailing')
    assert data == {"a": 1} and repairs == ["removed text around the JSON object"]


def test_synonyms_are_read_before_an_answer_is_discarded():
    reply = _reply(
        gender={"value": "man", "confidence": 0.9},
        view={"value": "Rear view", "confidence": 0.7},
        backpack={"value": True, "confidence": 0.8},
        age={"value": "grandparent", "confidence": 0.6},
    )
    answer = parse_attributes(json.dumps(reply), "pedestrian")
    attrs = answer.attributes
    assert (attrs.gender.value, attrs.gender.confidence) == ("male", 0.9)
    assert attrs.view.value == "back" and attrs.backpack.value == "carrying backpack"
    assert "gender: 'man' read as 'male'" in answer.repairs
    assert "backpack: 'True' read as 'carrying backpack'" in answer.repairs
    assert attrs.age.value is None  # no synonym: discarded, as before
    assert any(r.startswith("age: 'grandparent' is not one of") for r in answer.repairs)
    assert not any(r.startswith("hair_length") for r in answer.repairs)  # an option itself is no repair

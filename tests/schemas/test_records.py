"""SampleRecord validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reidschemas import SampleRecord

BASE = dict(
    sample_id="rgbnt100/query/0561_c0001_006",
    triplet_key="rgbnt100/query/0561_c0001_006",
    dataset="rgbnt100",
    split="query",
    pid=561,
    camid=1,
    rgb_path="/d/a.jpg",
    nir_path="/d/a.jpg",
    tir_path="/d/a.jpg",
)


def test_record_accessors():
    record = SampleRecord(**BASE, rgb_box=(0, 0, 256, 128), nir_box=(256, 0, 512, 128), tir_box=(512, 0, 768, 128))
    assert record.kind == "vehicle"
    assert record.box("nir") == (256, 0, 512, 128)
    assert record.path("tir") == "/d/a.jpg"


@pytest.mark.parametrize(
    ("change", "bad_key"),
    [
        ({"split": "test"}, "split"),
        ({"dataset": "market1501"}, "dataset"),
        ({"pid": "abc"}, "pid"),
        ({"colour": "red"}, "colour"),
        ({"sample_id": ""}, "sample_id"),
    ],
)
def test_invalid_fields_are_named(change, bad_key):
    with pytest.raises(ValidationError) as info:
        SampleRecord(**{**BASE, **change})
    assert info.value.errors()[0]["loc"][0] == bad_key


def test_crop_boxes_all_or_none_and_not_empty():
    with pytest.raises(ValidationError, match="all three modalities or none"):
        SampleRecord(**BASE, rgb_box=(0, 0, 256, 128))
    with pytest.raises(ValidationError, match="empty or negative"):
        SampleRecord(**BASE, rgb_box=(0, 0, 0, 128), nir_box=(0, 0, 1, 1), tir_box=(0, 0, 1, 1))

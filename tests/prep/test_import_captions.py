"""The import provider: released IDEA/NEXT caption files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reidprep.captions.importer import ReleasedCaptions
from reidprep.captions.validate import validate_caption
from reidprep.stage import Failure, WorkUnit
from reidschemas import SampleRecord, attribute_model


def _record(split: str, name: str) -> SampleRecord:
    return SampleRecord(
        sample_id=f"rgbnt201/{split}/{name}",
        triplet_key=f"rgbnt201/x/{name}",
        dataset="rgbnt201",
        split=split,
        pid=1,
        camid=1,
        rgb_path=f"/d/RGB/{name}.jpg",
        nir_path=f"/d/NI/{name}.jpg",
        tir_path=f"/d/TI/{name}.jpg",
    )


@pytest.fixture
def release(tmp_path):
    for split in ("train", "test"):
        for mod in ("RGB", "NI", "TI"):
            entries = [{"item": f"000001_cam1_0_0{i}.jpg", "description": f"{split} {mod} caption {i}"} for i in (1, 2)]
            (tmp_path / f"{split}_{mod}.json").write_text(json.dumps(entries))
    return tmp_path


def test_lookup_by_split_and_file_name(release):
    captions = ReleasedCaptions(release)
    assert captions.lookup(_record("train", "000001_cam1_0_02")) == {
        "rgb": "train RGB caption 2",
        "nir": "train NI caption 2",
        "tir": "train TI caption 2",
    }
    assert captions.lookup(_record("gallery", "000001_cam1_0_01"))["tir"] == "test TI caption 1"
    with pytest.raises(KeyError, match=r"no released caption for 000001_cam1_0_09\.jpg in test_RGB\.json"):
        captions.lookup(_record("query", "000001_cam1_0_09"))


def test_bad_release_folders(tmp_path, release):
    with pytest.raises(FileNotFoundError, match="not found"):
        ReleasedCaptions(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="none of the files"):
        ReleasedCaptions(empty)
    (release / "test_NI.json").write_text('[{"item": "a.jpg"}]')
    with pytest.raises(ValueError, match=r"test_NI\.json: entry 0"):
        ReleasedCaptions(release)
    (release / "test_NI.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        ReleasedCaptions(release)


def test_rows_equal_every_record_validated_alone(tmp_path):
    """The batched rows (validation cached per distinct caption, tokens per word) against an oracle that validates
    each record's captions on their own and counts tokens with open_clip's tokenizer."""
    import open_clip  # a required dependency (the oracle); imported here, not at collection

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    texts = [
        *["a sedan seen from the front"] * 4,  # valid in every modality
        "a red car, colour unknown at night",  # vague; a colour word (a problem in NIR and TIR only)
        "a {colour} van",  # a placeholder
        " ".join(["a very long caption about a dark blue truck"] * 12),  # over 77 tokens
    ]
    rng = random.Random(0)
    names = [f"{i:04d}_c0001_000.jpg" for i in range(40)]
    for split in ("train", "test"):
        for mod in ("RGB", "NI", "TI"):
            entries = [{"item": n, "description": rng.choice(texts)} for n in names[:-1]]  # the last one missing
            (tmp_path / f"{split}_{mod}.json").write_text(json.dumps(entries))
    records = [_record(rng.choice(["train", "query", "gallery"]), n[:-4]) for n in names]
    units = [WorkUnit(r.triplet_key, r) for r in records]
    release = ReleasedCaptions(tmp_path)

    def oracle(record: SampleRecord) -> dict | Failure:
        split = "train" if record.split == "train" else "test"
        name = Path(record.rgb_path).name
        table = json.loads((tmp_path / f"{split}_RGB.json").read_text())
        if name not in {e["item"] for e in table}:
            return Failure(record.triplet_key, f"no released caption for {name} in {split}_RGB.json", "MissingCaption")
        caption = {
            m: next(
                e["description"] for e in json.loads((tmp_path / f"{split}_{f}.json").read_text()) if e["item"] == name
            )
            for m, f in (("rgb", "RGB"), ("nir", "NI"), ("tir", "TI"))
        }
        caption["fused"] = caption["rgb"]
        unknown = attribute_model("pedestrian").unknown()
        notes = [
            f"{m}: {p}" for m in ("rgb", "nir", "tir") for p in validate_caption(caption[m], unknown, "pedestrian", m)
        ]
        tokens = {t: len(tokenizer.encode(c)) + 2 for t, c in caption.items()}
        notes += [
            f"{t} caption: {n} CLIP tokens, truncated to 77 at tokenisation (end-of-text kept)"
            for t, n in tokens.items()
            if n > 77
        ]
        return {
            "triplet_key": record.triplet_key, "sample_id": record.sample_id, "kind": "pedestrian",
            **{f"caption_{t}": c for t, c in caption.items()}, **{f"tokens_{t}": n for t, n in tokens.items()},
            "attributes": None, "view_attributes": None,
            **{f"unknown_{w}_{m}": None for w in ("before", "after") for m in ("rgb", "nir", "tir")},
            "notes": json.dumps(notes),
        }  # fmt: skip

    expected = [oracle(r) for r in records]
    assert release.rows(units) == expected
    assert release.rows(units[::-1]) == expected[::-1]  # the second pass hits the caches
    notes = [json.loads(row["notes"]) for row in expected if isinstance(row, dict)]
    assert any(n for n in notes) and not all(n for n in notes)
    assert any(isinstance(row, Failure) for row in expected)

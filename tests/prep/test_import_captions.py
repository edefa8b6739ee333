"""The import provider: released IDEA/NEXT caption files."""

from __future__ import annotations

import json

import pytest

from reidprep.captions.importer import ReleasedCaptions
from reidschemas import SampleRecord


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

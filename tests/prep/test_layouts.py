"""Each layout on a small fixture tree that mirrors the real file names, including every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_jpeg

from reidprep.index import build_index

RGBNT201_MODS = ("RGB", "NI", "TI")
VEHICLE_MODS = ("vis", "ni", "th")


def _problems(result, error_type: str) -> list:
    return [p for p in result.problems if p.error_type == error_type]


# ---------------------------------------------------------------- RGBNT201
def _rgbnt201(root: Path) -> Path:
    ds = root / "RGBNT201"
    train = ["000001_cam1_0_00.jpg", "000001_cam3_0_01.jpg", "000002_cam2_0_00.jpg", "000002_cam4_0_01.jpg"]
    test = ["000031_cam1_0_00.jpg", "000031_cam2_0_01.jpg", "000032_cam1_0_00.jpg", "000032_cam2_0_03.jpg"]
    for folder, names in (("train_171", train), ("test", test)):
        for name in names:
            for mod in RGBNT201_MODS:
                write_jpeg(ds / folder / mod / name)
    return ds


def test_rgbnt201_clean_tree(tmp_path):
    ds = _rgbnt201(tmp_path)
    result = build_index("rgbnt201", tmp_path)
    assert result.problems == []
    train = [r for r in result.records if r.split == "train"]
    query = [r for r in result.records if r.split == "query"]
    gallery = [r for r in result.records if r.split == "gallery"]
    assert len(train) == 4 and len(query) == 4 and len(gallery) == 4
    assert {r.pid for r in train} == {1, 2} and {r.pid for r in query} == {31, 32}
    assert sorted(r.camid for r in train) == [1, 2, 3, 4]
    # query and gallery are the same test triplets, with distinct sample ids and a shared triplet key
    assert {r.triplet_key for r in query} == {r.triplet_key for r in gallery}
    assert len({r.sample_id for r in result.records}) == len(result.records)
    rec = next(r for r in train if r.sample_id == "rgbnt201/train/000001_cam3_0_01")
    assert (rec.pid, rec.camid, rec.sceneid) == (1, 3, None)
    assert rec.rgb_path == str(ds / "train_171" / "RGB" / "000001_cam3_0_01.jpg")
    assert rec.nir_path == str(ds / "train_171" / "NI" / "000001_cam3_0_01.jpg")
    assert rec.tir_path == str(ds / "train_171" / "TI" / "000001_cam3_0_01.jpg")
    assert rec.rgb_box is None


def test_rgbnt201_root_may_be_the_dataset_folder(tmp_path):
    _rgbnt201(tmp_path)
    assert len(build_index("rgbnt201", tmp_path / "RGBNT201").records) == 12


def test_rgbnt201_bad_inputs_are_ledgered_and_the_rest_indexed(tmp_path):
    ds = _rgbnt201(tmp_path)
    (ds / "train_171" / "TI" / "000001_cam1_0_00.jpg").unlink()  # missing modality
    (ds / "train_171" / "NI" / "000001_cam3_0_01.jpg").write_bytes(b"")  # zero bytes
    (ds / "test" / "RGB" / "000031_cam1_0_00.jpg").write_bytes(b"not a jpeg at all")  # unreadable
    for mod in RGBNT201_MODS:  # a name that does not parse
        write_jpeg(ds / "train_171" / mod / "person7_cam1.jpg")
    result = build_index("rgbnt201", tmp_path)
    (missing,) = _problems(result, "missing_modality")
    assert missing.path.endswith("000001_cam1_0_00.jpg") and "tir" in missing.reason
    (empty,) = _problems(result, "empty_image")
    assert empty.path == str(ds / "train_171" / "NI" / "000001_cam3_0_01.jpg")
    (unreadable,) = _problems(result, "unreadable_image")
    assert unreadable.path == str(ds / "test" / "RGB" / "000031_cam1_0_00.jpg")
    (bad_name,) = _problems(result, "unparsable_name")
    assert bad_name.path.endswith("person7_cam1.jpg")
    assert all(p.severity == "error" for p in result.problems)
    assert {r.split for r in result.records} == {"train", "query", "gallery"}
    assert len([r for r in result.records if r.split == "train"]) == 2
    assert len([r for r in result.records if r.split == "query"]) == 3


def test_rgbnt201_pairs_by_name_not_listing_order(tmp_path):
    ds = _rgbnt201(tmp_path)
    # An extra NI-only file that sorts first would shift a positional pairing by one.
    write_jpeg(ds / "train_171" / "NI" / "000000_cam1_0_00.jpg")
    result = build_index("rgbnt201", tmp_path)
    for record in result.records:
        assert Path(record.rgb_path).name == Path(record.nir_path).name == Path(record.tir_path).name
    (missing,) = _problems(result, "missing_modality")
    assert missing.path.endswith("NI/000000_cam1_0_00.jpg")


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rgbnt201 dataset under"):
        build_index("rgbnt201", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_index("rgbnt201", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown layout 'market'"):
        build_index("market", tmp_path)


def test_missing_split_folder_is_ledgered(tmp_path):
    ds = _rgbnt201(tmp_path)
    for path in sorted((ds / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (ds / "test").rmdir()
    result = build_index("rgbnt201", tmp_path)
    (problem,) = _problems(result, "missing_split_folder")
    assert problem.path == str(ds / "test")
    assert {r.split for r in result.records} == {"train"}


# ---------------------------------------------------------------- RGBNT100
def _rgbnt100(root: Path) -> Path:
    base = root / "RGBNT100" / "rgbir"
    files = {
        "bounding_box_train": ["0001_c0001_001.jpg", "0001_c0003_002.jpg", "0002_c0002_001.jpg"],
        "query": ["0561_c0001_006.jpg"],
        "bounding_box_test": ["0561_c0004_007.jpg", "0562_c0008_001.jpg"],
    }
    for folder, names in files.items():
        for name in names:
            write_jpeg(base / folder / name, size=(768, 128))
    return base


def test_rgbnt100_side_by_side_crop_boxes(tmp_path):
    base = _rgbnt100(tmp_path)
    result = build_index("rgbnt100", tmp_path)
    assert result.problems == []
    by_split = {s: [r for r in result.records if r.split == s] for s in ("train", "query", "gallery")}
    assert [len(v) for v in by_split.values()] == [3, 1, 2]
    (query,) = by_split["query"]
    assert (query.pid, query.camid) == (561, 1)
    assert query.rgb_path == query.nir_path == query.tir_path == str(base / "query" / "0561_c0001_006.jpg")
    assert query.rgb_box == (0, 0, 256, 128)
    assert query.nir_box == (256, 0, 512, 128)
    assert query.tir_box == (512, 0, 768, 128)
    assert {r.camid for r in by_split["gallery"]} == {4, 8}


def test_rgbnt100_bad_inputs(tmp_path):
    base = _rgbnt100(tmp_path)
    write_jpeg(base / "query" / "0563_c0002_001.jpg", size=(700, 128))  # not three equal parts
    (base / "query" / "0564_c0002_001.jpg").write_bytes(b"")
    write_jpeg(base / "query" / "vehicle.jpg", size=(768, 128))
    write_jpeg(base / "bounding_box_test" / "-1_c0001_001.jpg", size=(768, 128))  # Market-style junk
    (base / "bounding_box_test" / "notes.txt").write_text("hello")
    result = build_index("rgbnt100", tmp_path)
    assert _problems(result, "bad_side_by_side_size")[0].path.endswith("0563_c0002_001.jpg")
    assert _problems(result, "empty_image")[0].path.endswith("0564_c0002_001.jpg")
    assert _problems(result, "unparsable_name")[0].path.endswith("vehicle.jpg")
    assert _problems(result, "junk_id")[0].severity == "warning"
    assert _problems(result, "not_an_image")[0].path.endswith("notes.txt")
    assert len([r for r in result.records if r.split == "query"]) == 1


# ---------------------------------------------------------------- MSVR310
def _msvr310(root: Path, top: str = "MSVR310") -> Path:
    ds = root / top
    files = {
        "bounding_box_train": ["0001_s001_v0_000.jpg", "0001_s002_v3_001.jpg", "0002_s001_v1_000.jpg"],
        "query3": ["0002_s002_v0_000.jpg"],
        "bounding_box_test": ["0002_s002_v1_001.jpg", "0002_s005_v7_002.jpg"],
    }
    for folder, names in files.items():
        for name in names:
            for mod in VEHICLE_MODS:
                write_jpeg(ds / folder / name[:4] / mod / name)
    return ds


@pytest.mark.parametrize("top", ["MSVR310", "msvr310"])
def test_msvr310_per_id_folders_and_scene(tmp_path, top):
    ds = _msvr310(tmp_path, top)
    result = build_index("msvr310", tmp_path)
    assert [p.error_type for p in result.problems] == ["id_in_train_and_test"]  # id 2 is in both (fixture)
    (query,) = [r for r in result.records if r.split == "query"]
    assert (query.pid, query.sceneid, query.camid) == (2, 2, 0)
    assert query.sample_id == "msvr310/query/0002/0002_s002_v0_000"
    assert query.nir_path == str(ds / "query3" / "0002" / "ni" / "0002_s002_v0_000.jpg")
    gallery = sorted((r.sceneid, r.camid) for r in result.records if r.split == "gallery")
    assert gallery == [(2, 1), (5, 7)]


def test_msvr310_bad_inputs(tmp_path):
    ds = _msvr310(tmp_path)
    (ds / "bounding_box_train" / "0001" / "th" / "0001_s002_v3_001.jpg").unlink()
    for mod in VEHICLE_MODS:  # a file of id 0009 inside folder 0001
        write_jpeg(ds / "bounding_box_train" / "0001" / mod / "0009_s001_v0_000.jpg")
        write_jpeg(ds / "bounding_box_train" / "0001" / mod / "0001_scene1.jpg")
    result = build_index("msvr310", tmp_path)
    assert _problems(result, "missing_modality")[0].path.endswith("0001_s002_v3_001.jpg")
    assert "id folder 0001" in _problems(result, "id_folder_mismatch")[0].reason
    assert _problems(result, "unparsable_name")[0].path.endswith("0001_scene1.jpg")
    assert len([r for r in result.records if r.split == "train"]) == 2


# ---------------------------------------------------------------- WMVEID863
def _wmveid863(root: Path) -> Path:
    ds = root / "WMVEID863"
    files = {
        "train": {
            "0001": ["0001_v1_n0_s001_000.jpg", "0001_v2_n1_s002_001.jpg"],
            "0325": ["0325_v1_n0_s003_000.jpg"],
        },
        "query": {"0325": ["0325_v2_n9_s999_000.jpg"], "0400": ["0400_v1_n0_s999_000.jpg"]},
        "test": {"0325": ["0325_v3_n0_s999_001.jpg"], "0400": ["0400_v2_n0_s999_001.jpg"]},
    }
    for folder, ids in files.items():
        for pid, names in ids.items():
            for name in names:
                for mod in VEHICLE_MODS:
                    write_jpeg(ds / folder / pid / mod / name)
    return ds


def test_wmveid863_splits_and_overlapping_ids(tmp_path):
    _wmveid863(tmp_path)
    result = build_index("wmveid863", tmp_path)
    (overlap,) = _problems(result, "id_in_train_and_test")
    assert overlap.severity == "warning" and "id 325" in overlap.reason
    assert len([r for r in result.records if r.split == "train"]) == 3
    q = next(r for r in result.records if r.sample_id == "wmveid863/query/0325/0325_v2_n9_s999_000")
    assert (q.pid, q.camid, q.sceneid) == (325, 2, 999)
    dropped = build_index("wmveid863", tmp_path, drop_overlapping_train_ids=True)
    assert {r.pid for r in dropped.records if r.split == "train"} == {1}
    assert "dropped from train" in _problems(dropped, "id_in_train_and_test")[0].reason


def test_wmveid863_dirt(tmp_path):
    ds = _wmveid863(tmp_path)
    # An odd name, with the modality word inside it, present in the three folders.
    for mod, word in zip(VEHICLE_MODS, ("vis", "ni", "th"), strict=True):
        write_jpeg(ds / "train" / "0865" / mod / f"0865_0865_{word}_v1_n0_03.jpg")
    # A triplet with a missing modality: per-modality folders whose counts differ by one.
    write_jpeg(ds / "train" / "0001" / "vis" / "0001_v3_n0_s001_009.jpg")
    write_jpeg(ds / "train" / "0001" / "ni" / "0001_v3_n0_s001_009.jpg")
    # A name that cannot be read at all.
    for mod in VEHICLE_MODS:
        write_jpeg(ds / "test" / "0400" / mod / "IMG_0001.jpg")
    result = build_index("wmveid863", tmp_path)
    (odd,) = _problems(result, "odd_name")
    assert odd.severity == "warning" and odd.path.endswith("0865_0865_vis_v1_n0_03.jpg")
    odd_record = next(r for r in result.records if r.pid == 865)
    assert (odd_record.camid, odd_record.sceneid) == (1, None)
    assert odd_record.nir_path.endswith("ni/0865_0865_ni_v1_n0_03.jpg")
    assert odd_record.tir_path.endswith("th/0865_0865_th_v1_n0_03.jpg")
    (missing,) = _problems(result, "missing_modality")
    assert missing.path.endswith("0001_v3_n0_s001_009.jpg") and "tir" in missing.reason
    (bad,) = _problems(result, "unparsable_name")
    assert bad.path.endswith("IMG_0001.jpg") and bad.severity == "error"


# ---------------------------------------------------------------- evaluation protocol
def test_each_layout_declares_its_protocol_as_the_reference_code_scores_it():
    from reidprep.layouts import LAYOUTS

    # Only MSVR310 is scored with the scene rule; WMVEID863's scenes (mostly 999) are never used for scoring.
    # The generic layout has none of its own: the user states it (tests/prep/test_generic_layout.py).
    assert {name: layout.protocol for name, layout in LAYOUTS.items() if name != "generic"} == {
        "rgbnt201": "camera",
        "rgbnt100": "camera",
        "msvr310": "scene",
        "wmveid863": "camera",
    }


def test_index_records_the_layout_protocol_in_its_summary(tmp_path):
    from reidprep.index import run_index

    _msvr310(tmp_path / "data")
    _wmveid863(tmp_path / "data")
    assert build_index("msvr310", tmp_path / "data").protocol == "scene"
    summary = run_index(tmp_path / "w1", "msvr310", tmp_path / "data")
    assert summary["protocol"]["name"] == "scene" and summary["protocol"]["layout"] == "msvr310"
    summary = run_index(tmp_path / "w2", "wmveid863", tmp_path / "data")
    assert summary["protocol"]["name"] == "camera" and "same camera" in summary["protocol"]["rule"]


def test_msvr310_row_without_scene_is_an_index_error(tmp_path):
    from reidprep.index import StrictIndexError, run_index
    from reidprep.ledger import read_ledger

    ds = _msvr310(tmp_path / "data")
    for mod in VEHICLE_MODS:  # id and view readable, no _sNNN_ scene
        write_jpeg(ds / "bounding_box_test" / "0002" / mod / "0002_v1_003.jpg")
    result = build_index("msvr310", tmp_path / "data")
    (problem,) = _problems(result, "missing_scene")
    assert problem.severity == "error" and problem.path.endswith("vis/0002_v1_003.jpg")
    assert problem.sample_id == "msvr310/gallery/0002/0002_v1_003" and "scene rule" in problem.reason
    assert all(r.sceneid is not None for r in result.records)  # the row is not indexed
    assert len([r for r in result.records if r.split == "gallery"]) == 2
    summary = run_index(tmp_path / "w", "msvr310", tmp_path / "data")
    assert summary["problems"]["error:missing_scene"] == 1 and summary["errors"] == 1
    ledger = read_ledger(tmp_path / "w" / "index" / "errors.parquet")
    assert [e.sample_id for e in ledger if e.error_type == "missing_scene"] == [problem.sample_id]
    with pytest.raises(StrictIndexError, match=r"0002_v1_003\.jpg"):
        run_index(tmp_path / "w3", "msvr310", tmp_path / "data", strict=True)
    assert not (tmp_path / "w3" / "index" / "manifest.parquet").exists()


def test_wmveid863_keeps_rows_without_scene(tmp_path):
    ds = _wmveid863(tmp_path)
    for mod, word in zip(VEHICLE_MODS, ("vis", "ni", "th"), strict=True):
        write_jpeg(ds / "test" / "0400" / mod / f"0400_0400_{word}_v1_n0_03.jpg")
    result = build_index("wmveid863", tmp_path)
    assert _problems(result, "missing_scene") == []
    odd = next(r for r in result.records if r.split == "gallery" and r.sceneid is None)
    assert (odd.pid, odd.camid) == (400, 1)

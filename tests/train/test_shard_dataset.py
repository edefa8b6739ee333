"""``reidtrain.data.ShardDataset`` on a tiny shard set built by the real pipeline (synth, index, masks, shards)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from reidprep.cli import app
from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidschemas.shards import decode_image
from reidtrain.data.augment import EvalTransform, TrainTransform
from reidtrain.data.items import ShardItems
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import LabelMap, ShardDataset, ShardIndex


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """32 rows (train 16, query 8, gallery 8) in row groups of 5, with masks, without captions."""
    tmp = tmp_path_factory.mktemp("shards")
    generate_dataset(tmp / "data", kind="person", ids=6, images_per_id=4, seed=7)
    workdir = tmp / "work"
    run_index(workdir, "rgbnt201", tmp / "data")
    result = CliRunner().invoke(app, ["masks", "--workdir", str(workdir), "--no-progress"])
    assert result.exit_code == 0, result.output
    return build_shards(workdir, ShardsConfig(missing="null", row_group_rows=5)).out_dir


def _rows(shards: Path) -> list[dict]:
    index = json.loads((shards / "dataset.json").read_text())
    return [row for s in index["shards"] for row in pq.read_table(shards / s["file"]).to_pylist()]


def test_index_lists_row_groups(shards: Path) -> None:
    index = ShardIndex.load(shards)
    info = json.loads((shards / "dataset.json").read_text())
    assert index.rows_per_split == info["rows_per_split"]
    assert [g.rows for g in index.row_groups] == [5, 5, 5, 5, 5, 5, 2]
    assert sum(g.rows for g in index.row_groups) == info["rows"] == 32
    for group in index.row_groups:
        assert sum(group.split_counts.values()) == group.rows == len(group.splits)


def test_lengths_per_split_match_dataset_json(shards: Path) -> None:
    per_split = json.loads((shards / "dataset.json").read_text())["rows_per_split"]
    assert set(per_split) == {"train", "query", "gallery"}
    for split, rows in per_split.items():
        assert len(ShardDataset(shards, split)) == rows
    assert len(ShardDataset(shards, ("query", "gallery"))) == per_split["query"] + per_split["gallery"]


def test_items_equal_the_parquet_rows(shards: Path) -> None:
    rows = _rows(shards)
    for split in ("train", "query", "gallery"):
        expected = [r for r in rows if r["split"] == split]
        dataset = ShardDataset(shards, split)
        for i, row in enumerate(expected):
            item = dataset[i]
            h, w = row["height"], row["width"]
            assert item["images"].shape == (3, h, w, 3) and item["images"].dtype == np.uint8
            for m, name in enumerate(("rgb", "nir", "tir")):
                np.testing.assert_array_equal(item["images"][m], decode_image(row[name], row["image_format"], h, w))
            assert item["mask"].shape == (h, w) and item["mask"].dtype == bool
            packed = np.frombuffer(row["mask"], dtype=np.uint8)
            np.testing.assert_array_equal(item["mask"].ravel(), np.unpackbits(packed, count=h * w).astype(bool))
            assert 0 < item["mask"].sum() < h * w
            assert (item["pid"], item["camid"], item["sceneid"], item["sample_id"]) == (
                row["pid"], row["camid"], row["sceneid"], row["sample_id"],
            )  # fmt: skip
            assert item["captions"] == {"rgb": None, "nir": None, "tir": None, "fused": None}
            assert f"/{split}/" in item["sample_id"] or split in ("query", "gallery")
        assert dataset[-1]["sample_id"] == expected[-1]["sample_id"]
        with pytest.raises(IndexError):
            dataset[len(dataset)]


def test_query_and_gallery_hold_the_same_test_triplets(shards: Path) -> None:
    query, gallery = ShardDataset(shards, "query", columns=()), ShardDataset(shards, "gallery", columns=())
    assert query[0]["images"] is None and query[0]["mask"] is None
    keys = {q["sample_id"].split("/")[-1] for q in query}  # RGBNT201: query = gallery = test/
    assert keys == {g["sample_id"].split("/")[-1] for g in gallery}
    train_pids = set(ShardDataset(shards, "train", columns=()).pids.tolist())
    assert not train_pids & set(query.pids.tolist())


def test_row_group_cache_avoids_rereads(shards: Path) -> None:
    dataset = ShardDataset(shards, "train", cache_row_groups=2)
    for i in range(len(dataset)):
        dataset[i]
    assert dataset.reads == 4  # train rows lie in 4 row groups; each read once in order
    dataset[len(dataset) - 1]
    assert dataset.reads == 4
    dataset[0]  # evicted (LRU of 2)
    assert dataset.reads == 5
    # PK order touches each row group a few times only, not once per sample.
    pk = ShardDataset(shards, "train", cache_row_groups=4)
    for i in PKSampler(pk.pids, p=2, k=2, seed=0):
        pk[i]
    assert pk.reads == 4


def test_label_map_is_contiguous(shards: Path) -> None:
    train = ShardDataset(shards, "train", columns=())
    labels = train.label_map()
    assert isinstance(labels, LabelMap)
    assert sorted(labels.pid_to_label) == sorted(set(train.pids.tolist()))
    assert sorted(labels.pid_to_label.values()) == list(range(labels.num_classes))
    assert list(labels.pid_to_label) == sorted(labels.pid_to_label)
    all_cams = {int(c) for split in ("train", "query", "gallery") for c in ShardDataset(shards, split, ()).camids}
    assert set(labels.camid_to_index) == all_cams
    assert sorted(labels.camid_to_index.values()) == list(range(labels.num_cameras))
    assert ShardDataset(shards, "query", columns=()).label_map() == labels


def test_errors(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"reidprep build-shards") as info:
        ShardIndex.load(tmp_path)
    assert str(tmp_path) in str(info.value)
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    index = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps(index | {"schema_version": "999"}))
    with pytest.raises(ValueError, match="schema version 999"):
        ShardIndex.load(copy)
    with pytest.raises(ValueError, match="unknown split"):
        ShardDataset(shards, "val")
    with pytest.raises(ValueError, match="unknown column"):
        ShardDataset(shards, "train", columns=("pixels",))
    with pytest.raises(ValueError, match="all of"):
        ShardDataset(shards, "train", columns=("rgb",))


def test_pickles_without_open_handles(shards: Path) -> None:
    dataset = ShardDataset(shards, "train")
    first = dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._files == {} and len(clone._cache) == 0
    np.testing.assert_array_equal(clone[0]["images"], first["images"])


def _collate(items: list[dict]) -> dict:
    """Module level so that spawn/forkserver workers can unpickle it."""
    import torch

    return {
        "images": torch.from_numpy(np.stack([it["images"] for it in items])),  # (B, 3, H, W, 3)
        "pid": torch.tensor([it["pid"] for it in items]),
    }


def test_dataloader_with_workers(shards: Path) -> None:
    torch = pytest.importorskip("torch")
    import multiprocessing

    try:
        multiprocessing.get_context().Lock()
    except (OSError, ImportError) as exc:  # pragma: no cover - sandboxes without semaphores
        pytest.skip(f"multiprocessing unavailable: {exc}")
    dataset = ShardDataset(shards, "train", columns=("rgb", "nir", "tir"))
    sampler = PKSampler(dataset.pids, p=2, k=2, seed=1)

    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=_collate)
    batches = list(loader)
    assert len(batches) == len(sampler) // 4
    expected = [dataset.pids[b].tolist() for b in sampler.batches()]
    assert [b["pid"].tolist() for b in batches] == expected
    assert batches[0]["images"].shape == (4, 3, 256, 128, 3)
    by_batch = torch.utils.data.DataLoader(dataset, batch_sampler=sampler.batch_sampler(), num_workers=2,
                                           collate_fn=_collate)  # fmt: skip
    assert [b["pid"].tolist() for b in by_batch] == expected


def test_shard_items_give_the_model_ready_row(shards: Path) -> None:
    """Training rows carry the class label, evaluation rows do not; both carry the raw ids and the camera index."""
    train = ShardDataset(shards, "train")
    labels = train.label_map()
    size = (64, 32)
    train_items = ShardItems(train, TrainTransform(size=size), labels, ("token_mask",), with_labels=True)
    query = ShardDataset(shards, "query", index=train.index)
    query_items = ShardItems(query, EvalTransform(size=size), labels, ("token_mask",))
    train_pids = sorted({int(p) for p in train.pids})
    cameras = sorted({int(r["camid"]) for r in _rows(shards)})
    for items, dataset in ((train_items, train), (query_items, query)):
        assert len(items) == len(dataset)
        for i in (0, len(items) - 1):
            row, raw = items[i], dataset[i]
            assert row["images"].shape == (3, 3, *size)
            assert (row["pid"], row["camid"]) == (raw["pid"], raw["camid"])
            assert row["sceneid"] == (-1 if raw["sceneid"] is None else raw["sceneid"])
            assert row["cam_index"] == cameras.index(raw["camid"])
            assert row["token_mask"].shape == ((size[0] // 16) * (size[1] // 16),) and bool(row["has_mask"])
            if items is train_items:
                assert row["label"] == train_pids.index(raw["pid"])
            else:
                assert "label" not in row
    torch.testing.assert_close(query_items[0]["images"], query_items[0]["images"])  # eval is deterministic


# --- Verification at first open (issue 16, point 1) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def multi(shards: Path, tmp_path_factory) -> Path:
    """The same workdir built into several small shards (for swapped and dropped shards)."""
    out = tmp_path_factory.mktemp("multi") / "shards"
    build_shards(shards.parent, ShardsConfig(missing="null", row_group_rows=4, target_shard_mb=0.02), out_dir=out)
    assert len(list(out.glob("shard-*.parquet"))) >= 3
    return out


def _flip_image_byte(folder: Path) -> str:
    """Flip one byte in the middle of shard 0's rgb column chunk; the footer and the split column stay readable."""
    path = folder / "shard-00000.parquet"
    meta = pq.read_metadata(path)
    rgb = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("rgb"))
    data = bytearray(path.read_bytes())
    data[rgb.data_page_offset + rgb.total_compressed_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert pq.read_table(path, columns=["split"]).num_rows == meta.num_rows  # a row count check cannot see it
    return path.name


def _edit_index(folder: Path, edit) -> None:
    info = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps(edit(info)) if not isinstance(edit, str) else edit)


def _wrong_sha(folder: Path) -> str:
    _edit_index(folder, lambda i: {**i, "shards": [{**i["shards"][0], "sha256": "0" * 64}, *i["shards"][1:]]})
    return "shard-00000.parquet"


def _wrong_rows(folder: Path) -> str:
    _edit_index(folder, lambda i: {**i, "rows": i["rows"] + 1})
    return "rows says"


def _swapped(folder: Path) -> str:
    a, b = folder / "shard-00000.parquet", folder / "shard-00001.parquet"
    a.rename(folder / "tmp")
    b.rename(a)
    (folder / "tmp").rename(b)
    return "shard-00000.parquet"


def _tampered_rows_per_split(folder: Path) -> str:
    def edit(info: dict) -> dict:
        counts = info["rows_per_split"]
        return {**info, "rows_per_split": {**counts, "train": counts["train"] + 1, "query": counts["query"] - 1}}

    _edit_index(folder, edit)  # the total stays right
    return "rows_per_split says"


def _dropped(folder: Path) -> str:
    _edit_index(folder, lambda i: {**i, "shards": i["shards"][:-1]})
    return "a shard dropped"


FAULTS = {
    "flipped image byte": _flip_image_byte,
    "wrong sha256": _wrong_sha,
    "wrong rows": _wrong_rows,
    "swapped files": _swapped,
    "tampered rows_per_split": _tampered_rows_per_split,
    "dropped shard": _dropped,
    "empty object": lambda f: (_edit_index(f, "{}"), "schema_version: field required")[1],
    "shards null": lambda f: (_edit_index(f, lambda i: {**i, "shards": None}), "shards: input should be")[1],
    "a list": lambda f: (_edit_index(f, "[]"), "not an object")[1],
    "not json": lambda f: (_edit_index(f, '{"schema_version": '), "not valid JSON")[1],
    "entry without sha256": lambda f: (
        _edit_index(f, lambda i: {**i, "shards": [{k: v for k, v in s.items() if k != "sha256"} for s in i["shards"]]}),
        "shards.0.sha256: field required",
    )[1],
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_shard_set_is_refused_by_the_reader_fit_and_validate_shards(
    multi: Path, tmp_path: Path, fault: str
) -> None:
    """Each fault: ``ShardIndex.load`` raises naming the file, ``reidtrain fit`` exits 2 with that one line before
    anything is written, and ``validate-shards`` exits 1 naming it too; never a traceback. The intact copy loads."""
    from reidtrain.cli import app as train_app

    folder = tmp_path / "s"
    shutil.copytree(multi, folder)
    ShardIndex.load(folder)  # intact: loads
    named = FAULTS[fault](folder)
    with pytest.raises(ValueError) as refused:
        ShardIndex.load(folder)
    assert named in str(refused.value) and "\n" not in str(refused.value)
    assert str(folder) in str(refused.value) and "reidprep build-shards" in str(refused.value)

    args = ["fit", "--shards", str(folder), "--output", str(tmp_path / "run"), "--no-progress", "--epochs", "1"]
    result = CliRunner().invoke(train_app, [*args, "--random-init", "--recipe", "baseline-tiny-demo"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and named in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()

    checked = CliRunner().invoke(app, ["validate-shards", "--shards", str(folder)])
    assert checked.exit_code == 1 and "Traceback" not in checked.output, checked.output
    assert named in checked.output


def test_validate_shards_names_an_unlisted_shard_file(multi: Path, tmp_path: Path) -> None:
    """A shard file the index does not list (left by another build) is named; the reader reads the listed ones."""
    folder = tmp_path / "s"
    shutil.copytree(multi, folder)
    shutil.copy(folder / "shard-00000.parquet", folder / "shard-00099.parquet")
    result = CliRunner().invoke(app, ["validate-shards", "--shards", str(folder)])
    assert result.exit_code == 1
    assert "shard-00099.parquet: not listed in dataset.json" in result.output
    assert (
        sum(g.rows for g in ShardIndex.load(folder).row_groups)
        == json.loads((folder / "dataset.json").read_text())["rows"]
    )


def test_each_shard_is_hashed_once_per_process_and_a_later_change_is_refused(
    multi: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second load does not hash again; a dataset whose file changes after verification refuses to read it (a
    stat at first open: DataLoader workers never hash)."""
    import reidschemas.shards

    folder = tmp_path / "s"
    shutil.copytree(multi, folder)
    files = len(json.loads((folder / "dataset.json").read_text())["shards"])
    hashed: list[Path] = []
    real = reidschemas.shards.file_sha256
    monkeypatch.setattr(reidschemas.shards, "file_sha256", lambda p: hashed.append(p) or real(p))
    index = ShardIndex.load(folder)
    assert len(hashed) == files
    ShardIndex.load(folder)
    assert len(hashed) == files  # cached by (path, inode, size, mtime, sha256)
    dataset = ShardDataset(folder, "train", index=index)
    clone = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives
    _flip_image_byte(folder)
    with pytest.raises(ValueError, match=r"shard-00000.parquet changed after it was verified"):
        clone[0]
    with pytest.raises(ValueError, match=r"shard-00000.parquet: checksum differs"):
        ShardIndex.load(folder)
    assert len(hashed) == files + 1  # the changed file only

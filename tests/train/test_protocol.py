"""The evaluation protocol is the dataset's: declared by its layout, carried by dataset.json, never inferred from rows.

Tiny WMVEID863 and MSVR310 trees go through the real ``index`` and ``build-shards``; rankings over their query and
gallery rows use hand-chosen distances, scored against mAPs worked out by hand in the comments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidschemas.config import ShardsConfig
from reidtrain.cli import app as train_app
from reidtrain.data.shards import ShardDataset, ShardIndex
from reidtrain.evaluate import Ranking, chance_map, evaluation_protocol, rank_gallery, score
from reidtrain.models import create_model

runner = CliRunner()
WORDS = {"vis": "vis", "ni": "ni", "th": "th"}  # modality folder -> the word an odd WMVEID863 name carries


def _shards(root: Path, layout: str, top: str, files: dict[str, list[str]]) -> Path:
    """Write ``top/<split folder>/<id>/{vis,ni,th}/<name>`` (``{m}`` in a name: the modality word), index, build."""
    for folder, names in files.items():
        for i, name in enumerate(names):
            for mod, word in WORDS.items():
                path = root / "data" / top / folder / name[:4] / mod / name.format(m=word)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 16), (30 * i, 100, 200 - 20 * i)).save(path)
    run_index(root / "w", layout, root / "data")
    build_shards(root / "w", ShardsConfig(require=[], workers=1))
    return root / "w" / "shards"


def _ids(split: ShardDataset) -> tuple[dict[str, np.ndarray], list[str]]:
    items = [split[i] for i in range(len(split))]
    ids = {
        "pids": np.array([it["pid"] for it in items]),
        "camids": np.array([it["camid"] for it in items]),
        "sceneids": np.array([-1 if it["sceneid"] is None else it["sceneid"] for it in items]),
    }
    return ids, [it["sample_id"].rsplit("/", 1)[1] for it in items]


def _ranking(shards: Path, distances: dict[str, dict[str, float]]) -> Ranking:
    """The ranking of ``shards`` with ``distances[query stem][gallery stem]``, as evaluation builds it."""
    index = ShardIndex.load(shards)
    query = ShardDataset(shards, "query", columns=(), index=index)
    gallery = ShardDataset(shards, "gallery", columns=(), index=index)
    (q, q_names), (g, g_names) = _ids(query), _ids(gallery)
    distmat = np.array([[distances[qn][gn] for gn in g_names] for qn in q_names])  # (n_q, n_g)
    return Ranking(distmat, q, g, query, gallery, *evaluation_protocol(index))


# WMVEID863: test scenes are 999; the gallery holds an odd name without a scene.
WMVEID863_FILES = {
    "train": ["0001_v1_n0_s001_000.jpg", "0001_v2_n1_s002_001.jpg", "0002_v1_n0_s003_000.jpg"],
    "query": ["0325_v2_n9_s999_000.jpg", "0400_v1_n0_s999_000.jpg"],
    "test": [
        "0325_v3_n0_s999_001.jpg",  # same id, other camera, same scene 999: a true match under the camera rule
        "0325_v2_n0_s999_002.jpg",  # same id and camera as query 0325: removed
        "0400_v2_n0_s999_001.jpg",  # a true match of query 0400
        "0400_0400_{m}_v1_n0_03.jpg",  # odd name (scene unknown), same id and camera as query 0400: removed
        "0500_v1_n0_s999_000.jpg",  # a distractor
    ],
}
WMVEID863_DIST = {
    "0325_v2_n9_s999_000": {
        "0325_v2_n0_s999_002": 0.1,
        "0500_v1_n0_s999_000": 0.2,
        "0325_v3_n0_s999_001": 0.3,
        "0400_v2_n0_s999_001": 0.4,
        "0400_0400_v1_n0_03": 0.5,
    },
    "0400_v1_n0_s999_000": {
        "0400_0400_v1_n0_03": 0.1,
        "0400_v2_n0_s999_001": 0.2,
        "0500_v1_n0_s999_000": 0.3,
        "0325_v3_n0_s999_001": 0.4,
        "0325_v2_n0_s999_002": 0.5,
    },
}


ODD, PLAIN = "0400_0400_{m}_v1_n0_03.jpg", "0400_v1_n0_s999_003.jpg"  # the same id and camera, without / with scene


def _clean(files: dict[str, list[str]], distances: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """The WMVEID863 tree and distances with the odd name replaced by a regular scene-999 name."""
    plain = {folder: [PLAIN if n == ODD else n for n in names] for folder, names in files.items()}
    stem = {"0400_0400_v1_n0_03": PLAIN.removesuffix(".jpg")}
    return plain, {q: {stem.get(g, g): d for g, d in row.items()} for q, row in distances.items()}


@pytest.fixture(scope="module")
def wmveid863(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shards(tmp_path_factory.mktemp("wmveid863"), "wmveid863", "WMVEID863", WMVEID863_FILES)


@pytest.fixture(scope="module")
def wmveid863_all_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every query and gallery row has scene 999: inferring the rule from the rows would pick the scene rule."""
    files, _ = _clean(WMVEID863_FILES, WMVEID863_DIST)
    return _shards(tmp_path_factory.mktemp("wmveid863_all"), "wmveid863", "WMVEID863", files)


@pytest.fixture(scope="module")
def msvr310(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = {
        "bounding_box_train": ["0001_s001_v0_000.jpg", "0001_s002_v3_001.jpg", "0004_s003_v1_000.jpg"],
        "query3": ["0002_s002_v0_000.jpg"],
        "bounding_box_test": [
            "0002_s002_v1_001.jpg",  # same id and scene, other camera: removed by the scene rule
            "0002_s005_v0_002.jpg",  # same id and camera, other scene: a true match under the scene rule
            "0003_s001_v1_000.jpg",  # a distractor
        ],
    }
    return _shards(tmp_path_factory.mktemp("msvr310"), "msvr310", "MSVR310", files)


def test_dataset_json_carries_the_layout_protocol(wmveid863, msvr310):
    for shards, expected in ((wmveid863, ("camera", "wmveid863")), (msvr310, ("scene", "msvr310"))):
        info = json.loads((shards / "dataset.json").read_text())
        assert (info["protocol"], info["dataset"]) == expected
        assert evaluation_protocol(ShardIndex.load(shards)) == expected


@pytest.mark.parametrize("odd_name", [True, False])
def test_wmveid863_is_scored_with_the_camera_rule_whatever_its_scenes(request, odd_name):
    shards = request.getfixturevalue("wmveid863" if odd_name else "wmveid863_all_scenes")
    distances = WMVEID863_DIST if odd_name else _clean(WMVEID863_FILES, WMVEID863_DIST)[1]
    ranking = _ranking(shards, distances)
    assert ranking.protocol == "camera" and (ranking.query["sceneids"] == 999).all()
    assert (ranking.gallery["sceneids"] == -1).sum() == int(odd_name)  # the odd name has no scene
    result = score(ranking)
    # Query 0325: 0325_v2 removed (same camera); left 0500, 0325_v3 (match at rank 2), 0400, 0400 -> AP 1/2, miss at R1.
    # Query 0400: the odd (or plain) name removed (same camera); left 0400_v2 (match at rank 1) -> AP 1.
    assert result.rule == "camera" and result.dataset == "wmveid863"
    assert (result.mAP, result.R1, result.num_query) == (pytest.approx(0.75), pytest.approx(0.5), 2)
    # The scene rule would remove every same-id row of 0325 (scene 999 = 999) and so skip that query (and 0400 too
    # when no odd name breaks the tie): inferring the rule from the rows loses queries.
    q, g = ranking.query, ranking.gallery
    same_id = q["pids"][:, None] == g["pids"][None, :]  # (n_q, n_g)
    kept_by_scene_rule = (same_id & (q["sceneids"][:, None] != g["sceneids"][None, :])).any(axis=1)  # (n_q,)
    assert kept_by_scene_rule.tolist() == [False, odd_name]
    # Chance under the same rule: each query keeps n = 4 gallery rows with m = 1 match -> E[AP] = H_4 / 4 = 25/48.
    assert chance_map(ranking) == pytest.approx(25 / 48)
    # Rank lists skip what the camera rule removes, nothing else.
    assert ranking.junk(0).sum() == 1 and ranking.junk(1).sum() == 1


def test_msvr310_is_scored_with_the_scene_rule(msvr310):
    distances = {
        "0002_s002_v0_000": {"0002_s002_v1_001": 0.1, "0003_s001_v1_000": 0.2, "0002_s005_v0_002": 0.3},
    }
    ranking = _ranking(msvr310, distances)
    result = score(ranking)
    # Scene rule: 0002_s002_v1 removed (same scene); left 0003 then 0002_s005 (match at rank 2) -> AP 1/2.
    # (The camera rule would keep 0002_s002_v1 as a rank-1 match: AP 1.)
    assert (result.rule, result.dataset) == ("scene", "msvr310")
    assert result.mAP == pytest.approx(0.5) and result.R1 == 0.0
    # Chance: n = 2 rows left, m = 1 -> E[AP] = H_2 / 2 = 3/4.
    assert chance_map(ranking) == pytest.approx(0.75)


def test_a_scene_ranking_refuses_rows_without_scene(msvr310):
    ranking = _ranking(msvr310, {"0002_s002_v0_000": dict.fromkeys(("0002_s002_v1_001", "0003_s001_v1_000",
                                                                     "0002_s005_v0_002"), 0.5)})  # fmt: skip
    gallery = {**ranking.gallery, "sceneids": np.array([3, -1, 1])}
    with pytest.raises(ValueError, match=r"scene rule, but 1 gallery row\(s\) have no scene id \(the first: msvr310/"):
        Ranking(ranking.distmat, ranking.query, gallery, ranking.query_set, ranking.gallery_set, "scene", "msvr310")


def test_rank_gallery_reads_the_protocol_from_dataset_json(wmveid863):
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=3, backbone="tiny", require_pretrained=False, image_size=(32, 64))
    ranking = rank_gallery(model, wmveid863, (32, 64), torch.device("cpu"))
    assert (ranking.protocol, ranking.dataset) == ("camera", "wmveid863")
    assert str(score(ranking)).endswith("(camera rule of wmveid863, 2 queries, 5 gallery)")


def _without_protocol(shards: Path, tmp_path: Path) -> Path:
    """A copy of ``shards`` whose dataset.json is as reidprep wrote it before the protocol was recorded."""
    copy = tmp_path / "old"
    shutil.copytree(shards, copy)
    info = json.loads((copy / "dataset.json").read_text())
    del info["protocol"], info["dataset"]
    (copy / "dataset.json").write_text(json.dumps(info))
    return copy


def test_shards_without_protocol_are_refused_not_guessed(wmveid863, tmp_path):
    old = _without_protocol(wmveid863, tmp_path)
    with pytest.raises(ValueError, match=r"does not say which evaluation protocol.*rerun `reidprep build-shards`"):
        evaluation_protocol(ShardIndex.load(old))
    model = create_model("baseline", num_classes=3, backbone="tiny", require_pretrained=False, image_size=(32, 64))
    with pytest.raises(ValueError, match="rerun `reidprep build-shards`"):
        rank_gallery(model, old, (32, 64), torch.device("cpu"))
    run = tmp_path / "run"
    args = ["fit", "--shards", str(old), "--output", str(run), "--random-init", "--backbone", "tiny", "--epochs", "1"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 2 and "rerun `reidprep build-shards`" in result.output
    assert not run.exists()  # refused before anything was written


def test_build_shards_rewrites_a_dataset_json_without_protocol(tmp_path):
    shards = _shards(tmp_path, "wmveid863", "WMVEID863", WMVEID863_FILES)
    before = json.loads((shards / "dataset.json").read_text())
    del before["protocol"]
    (shards / "dataset.json").write_text(json.dumps(before))
    summary = build_shards(tmp_path / "w", ShardsConfig(require=[], workers=1))  # not forced
    after = json.loads((shards / "dataset.json").read_text())
    assert not summary.skipped and after["protocol"] == "camera" and summary.protocol == "camera"
    assert [s["sha256"] for s in after["shards"]] == [s["sha256"] for s in before["shards"]]  # same shard files


# reidtrain rank: query id 1, camera 0, scene 5. Gallery: id 1 camera 0 scene 6 at 0.1, id 2 at 0.2, id 1 camera 1
# scene 5 at 0.3. Camera rule: the first is removed, the match is at rank 2 -> mAP 50. Scene rule: the third is
# removed, the match is at rank 1 -> mAP 100.
RANK_ARRAYS = {
    "distmat": np.array([[0.1, 0.2, 0.3]]),
    "q_pids": np.array([1]),
    "g_pids": np.array([1, 2, 1]),
    "q_camids": np.array([0]),
    "g_camids": np.array([0, 1, 1]),
    "q_sceneids": np.array([5]),
    "g_sceneids": np.array([6, 7, 5]),
}


@pytest.mark.parametrize(
    ("stored", "option", "expected"),
    [
        ({}, ["--protocol", "scene"], "mAP 100.00"),
        ({}, ["--protocol", "camera"], "mAP 50.00"),
        ({"protocol": "scene"}, [], "mAP 100.00"),
        ({"protocol": "camera"}, [], "mAP 50.00"),
        ({"protocol": "scene"}, ["--protocol", "scene"], "mAP 100.00"),
    ],
)
def test_rank_uses_the_given_protocol(tmp_path, stored, option, expected):
    arrays = tmp_path / "d.npz"
    np.savez(arrays, **RANK_ARRAYS, **stored)
    result = runner.invoke(train_app, ["rank", str(arrays), *option])
    assert result.exit_code == 0, result.output
    assert expected in result.output
    rule = option[1] if option else stored["protocol"]
    assert f"evaluation protocol: {rule} rule" in result.output


@pytest.mark.parametrize(
    ("arrays", "option", "message"),
    [
        (RANK_ARRAYS, [], "has scene ids but no protocol entry: pass --protocol scene"),
        ({**RANK_ARRAYS, "protocol": np.array("scene")}, ["--protocol", "camera"], "contradicts"),
        (RANK_ARRAYS, ["--protocol", "market"], "--protocol is 'market'"),
        ({k: v for k, v in RANK_ARRAYS.items() if k != "g_sceneids"}, ["--protocol", "scene"], "lacks one"),
    ],
)
def test_rank_refuses_to_guess_the_protocol(tmp_path, arrays, option, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    result = runner.invoke(train_app, ["rank", str(path), *option])
    assert result.exit_code == 2 and message in result.output, result.output


def test_rank_without_scene_ids_uses_the_camera_rule_and_says_so(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **{k: v for k, v in RANK_ARRAYS.items() if "scene" not in k})
    result = runner.invoke(train_app, ["rank", str(path)])
    assert result.exit_code == 0 and "mAP 50.00" in result.output
    assert "camera rule (no protocol given and no scene ids" in result.output

"""``reidprep.synth``: layout rules, determinism, ground truth, and that the rendering shows what it claims."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidprep.synth import SynthSummary, generate_dataset
from reidprep.synth.identity import PALETTE, PERSON_COLOURS, sample_person, sample_vehicle
from reidprep.synth.render import render_person, render_vehicle
from reidprep.synth.scene import Capture, make_camera, person_capture, scene_table, vehicle_capture
from reidprep.synth.seeding import rng_for
from reidschemas.attributes import attribute_model, load_template

PERSON_NAME = re.compile(r"^(\d{6})_cam(\d)_")
VEHICLE_NAME = re.compile(r"^(\d{4})_s(\d{3})_v(\d)_(\d{3})")
PERSON_MODS = ("RGB", "NI", "TI")
VEHICLE_MODS = ("vis", "ni", "th")
SMALL = {"ids": 6, "images_per_id": 4}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Small datasets: person and vehicle with seed 0 (twice) and seed 1."""
    out = {}
    for kind in ("person", "vehicle"):
        for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
            summary = generate_dataset(tmp_path_factory.mktemp(f"{kind}{tag}"), kind=kind, seed=seed, **SMALL)
            out[f"{kind}{tag}"] = summary.root
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "groundtruth" / "attributes.jsonl").read_text().splitlines()]


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)  # (H, W)


def _contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean inside the mask minus mean outside. image: (H, W) float; mask: (H, W) bool."""
    return float(image[mask].mean() - image[~mask].mean())


@pytest.mark.parametrize("kind", ["person", "vehicle"])
def test_same_seed_gives_identical_bytes_and_another_seed_differs(datasets, kind):
    a, b, c = (_files(datasets[f"{kind}{t}"]) for t in "abc")
    assert len(a) > 3 * 24 and a == b
    common = [k for k in a.keys() & c.keys() if k.endswith(".jpg")]
    different = sum(a[k] != c[k] for k in common)
    assert different == len(common)
    assert a["groundtruth/identities.json"] != c["groundtruth/identities.json"]


def test_person_layout_follows_rgbnt201(datasets):
    root = datasets["persona"]
    names = {}
    for split in ("train_171", "test"):
        per_mod = [sorted(p.name for p in (root / split / m).iterdir()) for m in PERSON_MODS]
        assert per_mod[0] == per_mod[1] == per_mod[2] and per_mod[0]
        names[split] = per_mod[0]
    cams: dict[str, dict[int, set[int]]] = {s: defaultdict(set) for s in names}
    for split, files in names.items():
        for name in files:
            match = PERSON_NAME.match(name)
            assert match and re.fullmatch(r"\d{6}_cam\d_0_\d{2}\.jpg", name)
            cams[split][int(match[1])].add(int(match[2]))
            with Image.open(root / split / "RGB" / name) as im:
                assert im.size == (128, 256) and im.format == "JPEG" and im.mode == "RGB"
    assert not cams["train_171"].keys() & cams["test"].keys()
    assert set().union(*cams["train_171"].values()) <= {1, 2, 3, 4}
    assert len(cams["test"]) >= 2 and all(c == {1, 2} for c in cams["test"].values())
    assert min(cams["train_171"].keys() | cams["test"].keys()) >= 1
    assert len(names["train_171"]) + len(names["test"]) == SMALL["ids"] * SMALL["images_per_id"]


def test_vehicle_layout_follows_msvr310(datasets):
    root = datasets["vehiclea"]
    items = defaultdict(list)  # folder -> [(pid, scene, view)]
    for folder in ("bounding_box_train", "query3", "bounding_box_test"):
        for id_dir in sorted((root / folder).iterdir()):
            per_mod = [sorted(p.name for p in (id_dir / m).iterdir()) for m in VEHICLE_MODS]
            assert per_mod[0] == per_mod[1] == per_mod[2] and per_mod[0]
            for name in per_mod[0]:
                match = VEHICLE_NAME.match(name)
                assert match and match[1] == id_dir.name and 1 <= int(match[2]) <= 30 and int(match[3]) <= 7
                items[folder].append((int(match[1]), int(match[2]), int(match[3])))
                with Image.open(id_dir / "vis" / name) as im:
                    assert im.size == (256, 128)
    train_ids = {p for p, _, _ in items["bounding_box_train"]}
    query_ids = {p for p, _, _ in items["query3"]}
    assert query_ids == {p for p, _, _ in items["bounding_box_test"]} and len(query_ids) >= 2
    assert not train_ids & query_ids
    same_scene_gallery = 0
    for pid in query_ids:
        queries = [s for p, s, _ in items["query3"] if p == pid]
        assert 1 <= len(queries) <= 2 and len(set(queries)) == 1
        gallery = [s for p, s, _ in items["bounding_box_test"] if p == pid]
        assert any(s != queries[0] for s in gallery), "every query needs a match after the same-scene rule"
        same_scene_gallery += sum(s == queries[0] for s in gallery)
    assert same_scene_gallery > 0
    # A scene is one time span: day or night for every image in it.
    times = defaultdict(set)
    for row in _records(root):
        times[row["sceneid"]].add(row["attributes"]["capture_time"])
    assert all(len(t) == 1 for t in times.values())


@pytest.mark.parametrize("kind", ["person", "vehicle"])
def test_masks_are_binary_visible_foregrounds(datasets, kind):
    root = datasets[f"{kind}a"]
    mods = PERSON_MODS if kind == "person" else VEHICLE_MODS
    shifted = 0
    for row in _records(root):
        masks = []
        for m in mods:
            rel = Path(row["file"].replace(f"/{mods[0]}/", f"/{m}/"))
            mask = np.asarray(Image.open(root / "groundtruth" / "masks" / rel.with_suffix(".png")))
            with Image.open(root / rel) as im:
                assert mask.shape == (im.size[1], im.size[0])
            assert mask.ndim == 2 and set(np.unique(mask).tolist()) == {0, 255}
            assert 0.02 < (mask > 0).mean() < 0.8
            masks.append(mask > 0)
        # Registration shift: the masks follow their modality, same shape up to a couple of pixels.
        assert abs(int(masks[1].sum()) - int(masks[0].sum())) < 0.15 * masks[0].sum()
        shifted += int(not np.array_equal(masks[0], masks[1]) or not np.array_equal(masks[0], masks[2]))
    assert shifted > 0


@pytest.mark.parametrize("kind", ["person", "vehicle"])
def test_attribute_lines_cover_every_triplet_and_validate(datasets, kind):
    root = datasets[f"{kind}a"]
    template = "pedestrian" if kind == "person" else "vehicle"
    model = attribute_model(template)
    rows = _records(root)
    rgb_files = {str(p.relative_to(root)) for p in root.rglob("*.jpg") if p.parent.name in ("RGB", "vis")}
    assert {r["file"] for r in rows} == rgb_files and len(rows) == len(rgb_files)
    identities = json.loads((root / "groundtruth" / "identities.json").read_text())
    per_image = {"view", "illumination", "capture_time", "target_clarity", "headlights_condition", "license_plate"}
    for row in rows:
        name = Path(row["file"]).name
        if kind == "person":
            match = PERSON_NAME.match(name)
            assert (row["pid"], row["camid"], row["sceneid"]) == (int(match[1]), int(match[2]), None)
        else:
            match = VEHICLE_NAME.match(name)
            assert (row["pid"], row["sceneid"], row["camid"]) == (int(match[1]), int(match[2]), int(match[3]))
        values = row["attributes"]
        assert list(values) == list(load_template(template).names)
        parsed = model(**{k: {"value": v, "confidence": 1.0 if v is not None else 0.0} for k, v in values.items()})
        assert parsed.values() == values  # closed vocabularies already in the template spelling
        assert all(values[k] is not None for k in ("view", "illumination", "capture_time", "target_clarity"))
        identity = identities[str(row["pid"])]["attributes"]
        assert {k: v for k, v in values.items() if k not in per_image} == {
            k: v for k, v in identity.items() if k not in per_image
        }
    meta = json.loads((root / "groundtruth" / "synth.json").read_text())
    assert meta["arguments"] == {"kind": kind, "seed": 0, "test_fraction": 0.3, **SMALL}
    assert sum(c["triplets"] for c in meta["counts"].values()) == len(rows)


def test_summary_counts_what_was_written(tmp_path):
    summary = generate_dataset(tmp_path, kind="vehicle", ids=5, images_per_id=3, seed=2)
    assert isinstance(summary, SynthSummary) and summary.layout == "msvr310" and summary.root == tmp_path / "MSVR310"
    for folder, n in summary.triplets.items():
        assert len(list((summary.root / folder).glob("*/vis/*.jpg"))) == n
        assert len({p.parent.parent.name for p in (summary.root / folder).glob("*/vis/*.jpg")}) == summary.ids[folder]
    assert summary.ids["query3"] == 2 and summary.ids["bounding_box_train"] == 3
    assert str(summary.root) in summary.describe() and summary.seconds > 0
    assert not list(tmp_path.glob(".*partial"))


def test_night_rgb_is_dark_while_tir_contrast_stays_high(datasets):
    root = datasets["persona"]
    stats = defaultdict(list)  # capture time -> [(rgb mean, nir fg mean, tir contrast)]
    for row in _records(root):
        mask = np.asarray(Image.open(root / "groundtruth/masks" / Path(row["file"]).with_suffix(".png"))) > 0
        rgb = _gray(root / row["file"])
        nir = _gray(root / row["file"].replace("/RGB/", "/NI/"))
        tir = _gray(root / row["file"].replace("/RGB/", "/TI/"))
        tir_mask = (
            np.asarray(
                Image.open(root / "groundtruth/masks" / Path(row["file"].replace("/RGB/", "/TI/")).with_suffix(".png"))
            )
            > 0
        )
        stats[row["attributes"]["capture_time"]].append((rgb.mean(), nir[mask].mean(), _contrast(tir, tir_mask)))
    day, night = np.array(stats["daytime"]), np.array(stats["nighttime"])
    assert len(day) and len(night)
    assert night[:, 0].mean() < 0.45 * day[:, 0].mean() and night[:, 0].mean() < 50
    assert night[:, 1].mean() > 70  # the active NIR illuminator still shows the target
    assert night[:, 2].min() > 15 and night[:, 2].mean() > 50 and night[:, 2].mean() > day[:, 2].mean() + 15


def _person_capture(**changes) -> tuple:
    camera = make_camera(0, 1, 128, 256, vehicle=False)
    base = person_capture(rng_for(0, 99), camera)
    fixed = {"blurry": False, "occluder": None, "view": "front", "shifts": ((0, 0), (0, 0), (0, 0))}
    return camera, dataclasses.replace(base, **(fixed | changes))


def _day(**changes) -> dict:
    return {"night": False, "illumination": "bright", "sun": 0.9, "ambient": 22.0} | changes


@pytest.mark.parametrize("colour", ["red", "blue", "green", "yellow", "white", "black"])
def test_upper_clothing_colour_shows_in_daylight_rgb(colour):
    who = dataclasses.replace(
        sample_person(1, rng_for(0, 0, 1)),
        upper_clothing="sweater", upper_color=colour, upper_rgb=PALETTE[colour], backpack=False, handbag=False,
        suitcase=False, holding="none", age="adult",
    )  # fmt: skip
    camera, capture = _person_capture(**_day())
    triplet = render_person(who, camera, capture, rng_for(0, 98))
    mask = triplet.masks["rgb"] > 0
    rows = np.nonzero(mask.any(axis=1))[0]
    top, height = rows[0], rows[-1] - rows[0]
    band = np.zeros_like(mask)
    band[top + int(0.22 * height) : top + int(0.36 * height)] = True
    cols = np.nonzero(mask.any(axis=0))[0]
    centre = (cols[0] + cols[-1]) // 2
    band[:, : centre - 8] = False
    band[:, centre + 9 :] = False
    torso = np.median(triplet.images["rgb"][band & mask].astype(float), axis=0)  # (3,)
    nearest = min(PERSON_COLOURS, key=lambda name: np.abs(np.array(PALETTE[name]) - torso).sum())
    assert nearest == colour, (colour, torso)
    if colour == "red":
        assert torso[0] > torso[1] + 60 and torso[0] > torso[2] + 60


def test_person_views_change_the_silhouette_and_the_face():
    who = dataclasses.replace(sample_person(2, rng_for(0, 0, 2)), backpack=True, suitcase=False, handbag=False)
    widths, faces = {}, {}
    for view in ("front", "side", "back"):
        camera, capture = _person_capture(view=view, **_day())
        triplet = render_person(who, camera, capture, rng_for(0, 97))
        mask = triplet.masks["rgb"] > 0
        rows = np.nonzero(mask.any(axis=1))[0]
        mid = rows[0] + int(0.3 * (rows[-1] - rows[0]))  # chest height
        widths[view] = int(mask[mid].sum())
        faces[view] = triplet.images["rgb"]
    assert widths["side"] < 0.8 * widths["front"]
    assert not np.array_equal(faces["front"], faces["back"])


def test_night_vehicle_headlights_glow_in_a_dark_rgb_image():
    car = dataclasses.replace(sample_vehicle(3, rng_for(0, 0, 3)), plate=True)
    camera = make_camera(0, 0, 256, 128, vehicle=True)
    night_scene = next(s for s in scene_table(0).values() if s.night)
    capture: Capture = dataclasses.replace(
        vehicle_capture(rng_for(0, 96), camera, night_scene),
        view="front", headlights_on=True, occluder=None, blurry=False,
    )  # fmt: skip
    triplet = render_vehicle(car, camera, capture, rng_for(0, 95))
    rgb = triplet.images["rgb"].astype(float)  # (H, W, 3)
    assert rgb.mean() < 50 and (rgb.max(axis=2) > 240).sum() > 30
    assert triplet.conditions["headlights_condition"] == "on" and triplet.conditions["license_plate"] == "visible"
    off = render_vehicle(car, camera, dataclasses.replace(capture, headlights_on=False), rng_for(0, 95))
    assert (off.images["rgb"].max(axis=2) > 240).sum() < (rgb.max(axis=2) > 240).sum() / 3


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "cat"},
        {"ids": 2},
        {"ids": True},
        {"images_per_id": 1},
        {"images_per_id": 101},
        {"seed": -1},
        {"test_fraction": 0.0},
        {"test_fraction": 1.0},
        {"ids": 3, "test_fraction": 0.9},
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, changes):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, **({"ids": 4, "images_per_id": 2} | changes))
    assert not (tmp_path / "RGBNT201").exists()


def test_rerun_is_skipped_other_arguments_need_force(tmp_path):
    first = generate_dataset(tmp_path, ids=3, images_per_id=2)
    meta = first.root / "groundtruth" / "synth.json"
    stamp = meta.stat().st_mtime_ns
    again = generate_dataset(tmp_path, ids=3, images_per_id=2)
    assert again.skipped and not first.skipped
    assert again.triplets == first.triplets and meta.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="--force"):
        generate_dataset(tmp_path, ids=4, images_per_id=2)
    replaced = generate_dataset(tmp_path, ids=4, images_per_id=2, force=True)
    assert not replaced.skipped and sum(replaced.triplets.values()) == 8
    assert json.loads(meta.read_text())["arguments"]["ids"] == 4


def test_never_deletes_a_folder_it_did_not_write(tmp_path):
    precious = tmp_path / "RGBNT201" / "train_171" / "RGB" / "real.jpg"
    precious.parent.mkdir(parents=True)
    precious.write_bytes(b"real data")
    for force in (False, True):
        with pytest.raises(ValueError, match="not written by reidprep synth"):
            generate_dataset(tmp_path, ids=3, images_per_id=2, force=force)
    assert precious.read_bytes() == b"real data"

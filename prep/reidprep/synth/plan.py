"""Which images exist: ids per split, camera and scene of every image, file names (RGBNT201 / MSVR310 rules)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidprep.synth.scene import NUM_SCENES
from reidprep.synth.seeding import PLAN, SPLIT, rng_for

PERSON_TRAIN, PERSON_TEST = "train_171", "test"
VEHICLE_TRAIN, VEHICLE_QUERY, VEHICLE_GALLERY = "bounding_box_train", "query3", "bounding_box_test"
PERSON_FOLDERS = {"rgb": "RGB", "nir": "NI", "tir": "TI"}
VEHICLE_FOLDERS = {"rgb": "vis", "nir": "ni", "tir": "th"}


@dataclass(frozen=True)
class ImageSpec:
    """One triplet to render."""

    pid: int
    k: int
    """Index of the image within its id (unique per id)."""
    folder: str
    """Split folder: ``train_171``/``test`` or ``bounding_box_train``/``query3``/``bounding_box_test``."""
    camid: int
    sceneid: int | None

    @property
    def name(self) -> str:
        if self.sceneid is None:
            return f"{self.pid:06d}_cam{self.camid}_0_{self.k:02d}.jpg"
        return f"{self.pid:04d}_s{self.sceneid:03d}_v{self.camid}_{self.k:03d}.jpg"

    def path(self, modality: str) -> str:
        """Path of the modality's image relative to the dataset root."""
        if self.sceneid is None:
            return f"{self.folder}/{PERSON_FOLDERS[modality]}/{self.name}"
        return f"{self.folder}/{self.pid:04d}/{VEHICLE_FOLDERS[modality]}/{self.name}"


def split_ids(seed: int, ids: int, test_fraction: float) -> tuple[list[int], list[int]]:
    """Disjoint (train, test) pids among 1..ids; at least two test ids and one train id."""
    n_test = max(2, round(ids * test_fraction))
    if n_test >= ids:
        raise ValueError(f"ids={ids} with test_fraction={test_fraction} leaves no training identity")
    test = set((rng_for(seed, SPLIT).choice(ids, n_test, replace=False) + 1).tolist())
    return [p for p in range(1, ids + 1) if p not in test], sorted(test)


def _with_all(rng: np.random.Generator, required: list[int], pool: list[int], count: int) -> list[int]:
    """``count`` values from ``pool`` that include every ``required`` one (as far as ``count`` allows), shuffled."""
    values = required[:count] + [int(v) for v in rng.choice(pool, count - min(count, len(required)))]
    return [int(v) for v in rng.permutation(values)]


def person_plan(seed: int, train: list[int], test: list[int], images_per_id: int) -> list[ImageSpec]:
    """RGBNT201 rules: train cameras 1-4; test cameras 1 and 2 only, every test id seen by both."""
    specs = []
    for pid in train:
        rng = rng_for(seed, PLAN, pid)
        first = [int(c) + 1 for c in rng.choice(4, 2, replace=False)]
        cams = _with_all(rng, first, [1, 2, 3, 4], images_per_id)
        specs += [ImageSpec(pid, k, PERSON_TRAIN, cam, None) for k, cam in enumerate(cams)]
    for pid in test:
        cams = _with_all(rng_for(seed, PLAN, pid), [1, 2], [1, 2], images_per_id)
        specs += [ImageSpec(pid, k, PERSON_TEST, cam, None) for k, cam in enumerate(cams)]
    return specs


def vehicle_plan(seed: int, train: list[int], test: list[int], images_per_id: int) -> list[ImageSpec]:
    """MSVR310 rules: 30 scene codes, views 0-7. A test id has 1-2 queries from one scene; its gallery holds at
    least one image from another scene (a valid match) and, when it has two or more, one from the query's scene
    (removed by the same-id-same-scene rule)."""
    specs = []
    for pid in train:
        rng = rng_for(seed, PLAN, pid)
        scenes = [int(s) + 1 for s in rng.choice(NUM_SCENES, int(rng.integers(2, 5)), replace=False)]
        chosen = _with_all(rng, scenes, scenes, images_per_id)
        views = rng.integers(0, 8, size=images_per_id)
        specs += [
            ImageSpec(pid, k, VEHICLE_TRAIN, int(v), s) for k, (s, v) in enumerate(zip(chosen, views, strict=True))
        ]
    for pid in test:
        rng = rng_for(seed, PLAN, pid)
        scenes = [int(s) + 1 for s in rng.choice(NUM_SCENES, int(rng.integers(2, 5)), replace=False)]
        n_query = 1 if images_per_id <= 3 else int(rng.integers(1, 3))
        n_gallery = images_per_id - n_query
        query_scene = scenes[0]
        required = [scenes[1], query_scene] if n_gallery >= 2 else [scenes[1]]
        gallery_scenes = _with_all(rng, required, scenes, n_gallery)
        folders = [VEHICLE_QUERY] * n_query + [VEHICLE_GALLERY] * n_gallery
        chosen = [query_scene] * n_query + gallery_scenes
        order = rng.permutation(images_per_id)  # k indices are not grouped by split
        views = rng.integers(0, 8, size=images_per_id)
        specs += [ImageSpec(pid, int(order[i]), folders[i], int(views[i]), chosen[i]) for i in range(images_per_id)]
    return specs

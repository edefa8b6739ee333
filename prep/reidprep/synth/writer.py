"""``generate_dataset``: render every planned triplet and write the dataset layout plus its ground truth."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from reidprep.marker import Marker, fingerprint_of
from reidprep.progress import track
from reidprep.synth.identity import PersonIdentity, VehicleIdentity, identity_record, sample_person, sample_vehicle
from reidprep.synth.plan import (
    PERSON_TEST,
    PERSON_TRAIN,
    VEHICLE_GALLERY,
    VEHICLE_QUERY,
    VEHICLE_TRAIN,
    ImageSpec,
    person_plan,
    split_ids,
    vehicle_plan,
)
from reidprep.synth.render import MODALITIES, PERSON_SIZE, VEHICLE_SIZE, Triplet, render_person, render_vehicle
from reidprep.synth.scene import Camera, make_camera, person_capture, scene_table, vehicle_capture
from reidprep.synth.seeding import IDENTITY, IMAGE, rng_for
from reidschemas.attributes import attribute_model, load_template

GENERATOR_VERSION = "2"
"""Bump when the same arguments would give different files."""
JPEG_QUALITY = 92
DATASET_DIR = {"person": "RGBNT201", "vehicle": "MSVR310"}
LAYOUT = {"person": "rgbnt201", "vehicle": "msvr310"}
TEMPLATE = {"person": "pedestrian", "vehicle": "vehicle"}
FOLDERS = {"person": (PERSON_TRAIN, PERSON_TEST), "vehicle": (VEHICLE_TRAIN, VEHICLE_QUERY, VEHICLE_GALLERY)}
MAX_IDS = {"person": 999_999, "vehicle": 9_999}
MAX_IMAGES = {"person": 100, "vehicle": 1_000}


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate_dataset`` wrote."""

    root: Path
    """The dataset folder (``OUT/RGBNT201`` or ``OUT/MSVR310``)."""
    layout: str
    """``rgbnt201`` or ``msvr310``: the layout adapter that reads it."""
    kind: str
    ids: dict[str, int] = field(default_factory=dict)
    """Split folder -> number of identities."""
    triplets: dict[str, int] = field(default_factory=dict)
    """Split folder -> number of image triplets."""
    seconds: float = 0.0
    skipped: bool = False
    """True when the same dataset was already there and nothing was written."""

    def describe(self) -> str:
        """A few human-readable lines."""
        total = sum(self.triplets.values())
        if self.skipped:
            lines = [f"{self.root} already holds these {total} {self.kind} triplets; nothing written (--force redoes)"]
        else:
            lines = [
                f"wrote {total} {self.kind} triplets ({self.layout} layout) to {self.root} in {self.seconds:.1f} s"
            ]
        lines += [f"  {folder}: {self.ids[folder]} ids, {n} triplets" for folder, n in self.triplets.items()]
        return "\n".join(lines)


def _check_arguments(kind: str, ids: int, images_per_id: int, seed: int, test_fraction: float) -> None:
    if kind not in DATASET_DIR:
        raise ValueError(f"kind must be 'person' or 'vehicle', not {kind!r}")
    for name, value in (("ids", ids), ("images_per_id", images_per_id), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, not {value!r}")
    if not 3 <= ids <= MAX_IDS[kind]:
        raise ValueError(f"ids must be between 3 (two test ids and one train id) and {MAX_IDS[kind]}, not {ids}")
    if not 2 <= images_per_id <= MAX_IMAGES[kind]:
        raise ValueError(f"images_per_id must be between 2 and {MAX_IMAGES[kind]} for {kind}, not {images_per_id}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, not {seed}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be strictly between 0 and 1, not {test_fraction!r}")


def _arguments(kind: str, ids: int, images_per_id: int, seed: int, test_fraction: float) -> dict[str, Any]:
    return {
        "kind": kind, "ids": int(ids), "images_per_id": int(images_per_id), "seed": int(seed),
        "test_fraction": float(test_fraction),
    }  # fmt: skip


def _fingerprint(arguments: dict[str, Any]) -> str:
    return fingerprint_of({"arguments": arguments, "version": GENERATOR_VERSION})


def _existing(root: Path, arguments: dict[str, Any], force: bool) -> SynthSummary | None:
    """The summary of an identical dataset already at ``root``; clears a synthetic one when ``force``.

    Raises ValueError when ``root`` holds something else: a different synthetic dataset without ``force``, or
    files this generator did not write (never deleted).
    """
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return None
    marker = Marker(root / "groundtruth" / "synth.json")
    meta = marker.read()
    if meta is None:
        raise ValueError(f"{root} already exists and was not written by reidprep synth: choose another folder")
    if force:
        shutil.rmtree(root)
        return None
    if marker.matching(_fingerprint(arguments)) is None:
        raise ValueError(
            f"{root} holds a synthetic dataset made with {meta.get('arguments')} (generator version "
            f"{meta.get('version')}): use --force to replace it, or choose another folder"
        )
    counts = meta["counts"]
    return SynthSummary(
        root=root,
        layout=meta["layout"],
        kind=arguments["kind"],
        ids={f: c["ids"] for f, c in counts.items()},
        triplets={f: c["triplets"] for f, c in counts.items()},
        skipped=True,
    )


def template_values(kind: str, values: dict[str, str]) -> dict[str, str | None]:
    """Every attribute of the template, in template order: ``values`` where given, else None (not rendered)."""
    names = load_template(TEMPLATE[kind]).names
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"not attributes of the {TEMPLATE[kind]} template: {sorted(unknown)}")
    return {name: values.get(name) for name in names}


def _save(root: Path, spec: ImageSpec, triplet: Triplet) -> None:
    for modality in MODALITIES:
        rel = spec.path(modality)
        image_path = root / rel
        mask_path = root / "groundtruth" / "masks" / Path(rel).with_suffix(".png")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(triplet.images[modality]).save(image_path, format="JPEG", quality=JPEG_QUALITY)
        Image.fromarray(triplet.masks[modality]).save(mask_path, format="PNG")


def generate_dataset(
    out: Path,
    kind: Literal["person", "vehicle"] = "person",
    ids: int = 40,
    images_per_id: int = 8,
    seed: int = 0,
    test_fraction: float = 0.3,
    progress: bool = False,
    force: bool = False,
) -> SynthSummary:
    """Write a synthetic RGBNT201-like (person) or MSVR310-like (vehicle) dataset under ``out``.

    Files are byte-identical for the same arguments. Ground truth goes to ``<root>/groundtruth/``: masks of
    the visible target per image, ``attributes.jsonl`` (one line per triplet), ``identities.json`` and
    ``synth.json`` (arguments, version, counts; written last). Rerunning with the same arguments finds the dataset
    and writes nothing; ``force`` replaces a synthetic dataset made with other arguments.
    """
    started = time.perf_counter()
    _check_arguments(kind, ids, images_per_id, seed, test_fraction)
    arguments = _arguments(kind, ids, images_per_id, seed, test_fraction)
    root = Path(out) / DATASET_DIR[kind]
    existing = _existing(root, arguments, force)
    if existing is not None:
        return existing
    train, test = split_ids(seed, ids, test_fraction)
    partial = Path(out) / f".{DATASET_DIR[kind]}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)

    vehicle = kind == "vehicle"
    size = VEHICLE_SIZE if vehicle else PERSON_SIZE
    plan = (vehicle_plan if vehicle else person_plan)(seed, train, test, images_per_id)
    sample: Callable[[int, np.random.Generator], PersonIdentity | VehicleIdentity] = (
        sample_vehicle if vehicle else sample_person
    )
    identities = {pid: sample(pid, rng_for(seed, IDENTITY, pid)) for pid in sorted(train + test)}
    scenes = scene_table(seed) if vehicle else {}
    cameras: dict[int, Camera] = {}
    model = attribute_model(TEMPLATE[kind])

    records: list[dict[str, Any]] = []
    for spec in track(plan, len(plan), f"synth {kind}", enabled=progress):
        if spec.camid not in cameras:
            cameras[spec.camid] = make_camera(seed, spec.camid, size[0], size[1], vehicle)
        camera = cameras[spec.camid]
        rng = rng_for(seed, IMAGE, spec.pid, spec.k)
        who = identities[spec.pid]
        if isinstance(who, VehicleIdentity):
            assert spec.sceneid is not None
            triplet = render_vehicle(who, camera, vehicle_capture(rng, camera, scenes[spec.sceneid]), rng, size)
        else:
            triplet = render_person(who, camera, person_capture(rng, camera), rng, size)
        _save(partial, spec, triplet)
        attributes = template_values(kind, who.attributes() | triplet.conditions)
        model(**{name: {"value": v, "confidence": 1.0 if v is not None else 0.0} for name, v in attributes.items()})
        records.append(
            {
                "file": spec.path("rgb"),
                "pid": spec.pid,
                "camid": spec.camid,
                "sceneid": spec.sceneid,
                "attributes": attributes,
            }
        )

    gt = partial / "groundtruth"
    gt.mkdir(exist_ok=True)
    records.sort(key=lambda r: r["file"])
    (gt / "attributes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    split_of = {pid: "train" for pid in train} | {pid: "test" for pid in test}
    id_json = {
        str(pid): {"split": split_of[pid]}
        | identity_record(who)
        | {"attributes": template_values(kind, who.attributes())}
        for pid, who in identities.items()
    }
    (gt / "identities.json").write_text(json.dumps(id_json, indent=1) + "\n", encoding="utf-8")
    folders = FOLDERS[kind]
    id_counts = {f: len({s.pid for s in plan if s.folder == f}) for f in folders}
    triplet_counts = {f: sum(s.folder == f for s in plan) for f in folders}
    meta = {
        "generator": "reidprep.synth",
        "version": GENERATOR_VERSION,
        "arguments": arguments,
        "layout": LAYOUT[kind],
        "image_size": {"width": size[0], "height": size[1]},
        "jpeg_quality": JPEG_QUALITY,
        "train_ids": train,
        "test_ids": test,
        "counts": {f: {"ids": id_counts[f], "triplets": triplet_counts[f]} for f in folders},
    }  # fmt: skip
    Marker(gt / "synth.json").write(_fingerprint(arguments), meta)  # the completion marker, written last
    if root.exists():
        root.rmdir()  # empty (checked above)
    partial.rename(root)
    return SynthSummary(
        root=root,
        layout=LAYOUT[kind],
        kind=kind,
        ids=id_counts,
        triplets=triplet_counts,
        seconds=time.perf_counter() - started,
    )

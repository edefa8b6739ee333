"""Full-scale file names of the real benchmarks for the prep benchmarks (``bench/prep_scaling.py``).

The layouts and counts are those of ``../shared/reference/datasets.md``: RGBNT100 has 8,675 train, 1,715 query and
8,575 gallery files (18,965 records, one 768x128 side-by-side file each); RGBNT201 has 3,951 train and 836 test
triplets (5,623 records: the test triplets are query and gallery at once). Image content is synthetic: RGBNT100 files
are one flat JPEG (the import never reads pixels); RGBNT201 files are copies of a small pool of synthetic persons
(``reidprep synth``), so the thermal masker, the heuristic captions and build-shards do the work of real 256x128
crops.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

from PIL import Image

from reidprep.synth import generate_dataset

RGBNT100_COUNTS = {"bounding_box_train": 8675, "query": 1715, "bounding_box_test": 8575}
RGBNT201_COUNTS = {"train_171": 3951, "test": 836}
RGBNT201_IDS = {"train_171": 171, "test": 30}

_COLOURS = ["white", "black", "red", "blue", "silver", "gray", "yellow", "green", "dark blue", "light gray"]
_VEHICLES = ["sedan", "SUV", "pickup truck", "bus", "van", "hatchback", "taxi", "truck"]
_VIEWS = ["front", "rear", "side", "front-left", "rear-right", "left side"]


def _caption(rng: random.Random, modality: str) -> str:
    """An IDEA-like vehicle caption (40-60 words; the released ones are MLLM outputs of this shape)."""
    subject = rng.choice(_VEHICLES)
    if modality == "RGB":
        return (
            f"The image shows a {rng.choice(_COLOURS)} {subject} seen from the {rng.choice(_VIEWS)} on a "
            f"{rng.choice(['sunny', 'cloudy', 'dim', 'rainy'])} day. It has {rng.choice(['tinted', 'clear'])} "
            f"windows, {rng.choice(['roof rails', 'a rear spoiler', 'no roof rack', 'a sunroof'])} and "
            f"{rng.choice(['round', 'rectangular', 'slim'])} headlights; the wheels are "
            f"{rng.choice(['silver', 'black', 'chrome'])} and the license plate is "
            f"{rng.choice(['visible', 'blurred'])}. "
            f"The background shows {rng.choice(['a road', 'a parking lot', 'trees', 'buildings'])}."
        )
    light = "near-infrared" if modality == "NI" else "thermal infrared"
    return (
        f"In this {light} image a {subject} is seen from the {rng.choice(_VIEWS)}. The "
        f"{rng.choice(['engine', 'wheels', 'windows', 'roof'])} appear {rng.choice(['bright', 'dark', 'faint'])} "
        f"and the {rng.choice(['outline', 'body', 'front'])} is {rng.choice(['sharp', 'blurred', 'clear'])}; "
        f"the background is {rng.choice(['cluttered', 'plain', 'uniform'])} with "
        f"{rng.choice(['a road', 'trees', 'a wall', 'parked cars'])}."
    )


def _release(folder: Path, names: dict[str, list[str]], seed: int) -> None:
    """``{train,test}_{RGB,NI,TI}.json`` with one caption per file name and modality."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, items in names.items():
        for modality in ("RGB", "NI", "TI"):
            entries = [{"item": name, "description": _caption(rng, modality)} for name in items]
            (folder / f"{split}_{modality}.json").write_text(json.dumps(entries))


def _scaled(counts: dict[str, int], fraction: float) -> dict[str, int]:
    return {folder: max(1, round(n * fraction)) for folder, n in counts.items()}


def rgbnt100(root: Path, release: Path, fraction: float = 1.0, seed: int = 0) -> int:
    """RGBNT100's folders and names (``0561_c0001_006.jpg``; 50 train ids, 50 other test ids, cameras 1-8), one
    flat 768x128 JPEG written under every name, and a released-captions folder; returns the number of files."""
    buffer = io.BytesIO()
    Image.new("RGB", (768, 128), (96, 96, 96)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    names: dict[str, list[str]] = {"train": [], "test": []}
    next_index: dict[int, int] = {}
    for folder, count in _scaled(RGBNT100_COUNTS, fraction).items():
        out = root / "RGBNT100" / "rgbir" / folder
        out.mkdir(parents=True, exist_ok=True)
        first_id = 1 if folder == "bounding_box_train" else 301
        for i in range(count):
            pid = first_id + 6 * (i % 50)  # 50 ids in 1-600
            index = next_index[pid] = next_index.get(pid, -1) + 1
            name = f"{pid:04d}_c{(i // 50) % 8 + 1:04d}_{index:03d}.jpg"
            (out / name).write_bytes(data)
            names["train" if folder == "bounding_box_train" else "test"].append(name)
    _release(release, names, seed)
    return sum(len(v) for v in names.values())


def rgbnt201(root: Path, fraction: float = 1.0, pool_ids: int = 12, seed: int = 0) -> dict[str, int]:
    """RGBNT201's folders and names (``000287_cam1_0_05.jpg``; 171 train ids on cameras 1-4, 30 test ids on cameras
    1-2), each triplet a copy of one of a pool of synthetic persons; returns the number of triplets per folder
    (``train_171``, ``test``)."""
    pool_dir = root / "_pool"
    generate_dataset(pool_dir, kind="person", ids=pool_ids, images_per_id=4, seed=seed)
    pool = sorted((pool_dir / "RGBNT201").glob("*/RGB/*.jpg"))
    names: dict[str, list[str]] = {"train": [], "test": []}
    triplets = 0
    for folder, count in _scaled(RGBNT201_COUNTS, fraction).items():
        ids = min(RGBNT201_IDS[folder], count)
        cameras = 4 if folder == "train_171" else 2
        for i in range(count):
            pid = (1 if folder == "train_171" else 200) + i % ids
            name = f"{pid:06d}_cam{(i // ids) % cameras + 1}_0_{i // ids:02d}.jpg"
            source = pool[triplets % len(pool)]
            for modality in ("RGB", "NI", "TI"):
                out = root / "RGBNT201" / folder / modality
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.parent.parent / modality / source.name, out / name)
            names["train" if folder == "train_171" else "test"].append(name)
            triplets += 1
    shutil.rmtree(pool_dir)
    return {"train_171": len(names["train"]), "test": len(names["test"])}

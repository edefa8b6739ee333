"""Accuracy and coverage of the ``heuristic`` attribute provider against the synthetic dataset's ground truth.

python bench/heuristic_accuracy.py --kind person --ids 40 --images-per-id 8 --seed 3
python bench/heuristic_accuracy.py --kind vehicle --ids 40 --images-per-id 8 --seed 3 --no-mask

Generates the dataset in a temporary folder (or reads --root), describes every triplet's RGB, NIR and TIR image
and their composite with the ground-truth masks (or none: --no-mask), and prints per attribute and view:
accuracy over the images where both truth and prediction are non-null, coverage (fraction predicted where the
truth is known) and the mean confidence of right and wrong answers. Colour accuracy is also given for daytime
images. Attributes the provider never predicts are left out. The last line: expected calibration error of all the
view's answers (10 confidence bins) and accuracy minus mean confidence (> 0: under-confident).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reidprep.captions.attributes import AttributeQuery, composite_image
from reidprep.captions.heuristic import HeuristicProvider
from reidprep.captions.quality import attribute_accuracy, load_groundtruth_attributes
from reidprep.synth import generate_dataset

FOLDERS = {"person": ("/RGB/", "/NI/", "/TI/"), "vehicle": ("/vis/", "/ni/", "/th/")}
TEMPLATE = {"person": "pedestrian", "vehicle": "vehicle"}
VIEWS = ("rgb", "nir", "tir", "composite")


def load_triplet(root: Path, rgb_rel: str, kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The three images (H, W, 3) uint8 and ground-truth masks (H, W) bool of one triplet."""
    rels = [rgb_rel.replace(FOLDERS[kind][0], folder) for folder in FOLDERS[kind]]
    images = [np.asarray(Image.open(root / rel).convert("RGB")) for rel in rels]
    masks = [
        np.asarray(Image.open(root / "groundtruth" / "masks" / Path(rel).with_suffix(".png"))) > 127 for rel in rels
    ]
    return images, masks


def predict(
    root: Path, kind: str, use_mask: bool
) -> tuple[dict[str, dict[str, dict[str, str | None]]], dict[str, dict[str, dict[str, float]]], float]:
    """View -> key -> attribute values, the same with confidences, and the seconds per image."""
    provider = HeuristicProvider()
    truth = load_groundtruth_attributes(root)
    values: dict[str, dict[str, dict[str, str | None]]] = {view: {} for view in VIEWS}
    confs: dict[str, dict[str, dict[str, float]]] = {view: {} for view in VIEWS}
    seconds, count = 0.0, 0
    for key in sorted(truth):
        images, masks = load_triplet(root, key, kind)
        queries = [
            AttributeQuery(key, view, TEMPLATE[kind], image, mask if use_mask else None)  # type: ignore[arg-type]
            for view, image, mask in zip(VIEWS[:3], images, masks, strict=True)
        ]
        queries.append(
            AttributeQuery(
                key,
                "composite",
                TEMPLATE[kind],  # type: ignore[arg-type]
                composite_image(images),
                np.concatenate(masks, axis=1) if use_mask else None,
            )
        )
        start = time.perf_counter()
        answers = provider.describe(queries)
        seconds += time.perf_counter() - start
        count += len(queries)
        for query, answer in zip(queries, answers, strict=True):
            attributes = answer.attributes  # type: ignore[union-attr]
            values[query.view][key] = attributes.values()
            confs[query.view][key] = {name: getattr(attributes, name).confidence for name in attributes.values()}
    return values, confs, seconds / max(count, 1)


def confidence_split(
    values: dict[str, dict[str, str | None]], confs: dict[str, dict[str, float]], truth: dict, name: str
) -> tuple[float, float]:
    """Mean confidence of the right and of the wrong non-null answers (nan when there are none)."""
    right, wrong = [], []
    for key, attrs in values.items():
        if key not in truth:
            continue
        expected, got = truth[key].get(name), attrs.get(name)
        if expected is None or got is None:
            continue
        (right if got.lower() == expected.lower() else wrong).append(confs[key][name])
    return (float(np.mean(right)) if right else float("nan"), float(np.mean(wrong)) if wrong else float("nan"))


def calibration_error(
    values: dict[str, dict[str, str | None]], confs: dict[str, dict[str, float]], truth: dict
) -> tuple[float, float]:
    """Expected calibration error (10 confidence bins) of every non-null answer with a known truth, and their
    accuracy minus their mean confidence."""
    pairs = []
    for key, attrs in values.items():
        for name, got in attrs.items():
            expected = truth[key].get(name)
            if got is not None and expected is not None:
                pairs.append((confs[key][name], got.lower() == expected.lower()))
    if not pairs:
        return float("nan"), float("nan")
    conf, right = (np.array(x, dtype=np.float64) for x in zip(*pairs, strict=True))
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(conf[bins == b].mean() - right[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    return float(ece), float(right.mean() - conf.mean())


def report(root: Path, kind: str, use_mask: bool) -> None:
    truth = load_groundtruth_attributes(root)
    values, confs, per_image = predict(root, kind, use_mask)
    day = {key: attrs for key, attrs in truth.items() if attrs.get("capture_time") == "daytime"}
    results = {view: attribute_accuracy(values[view], truth) for view in VIEWS}
    day_results = {view: attribute_accuracy(values[view], day) for view in VIEWS}
    names = [
        name
        for name in next(iter(truth.values()))
        if any((results[v]["per_attribute"].get(name) or {}).get("coverage") for v in VIEWS)
    ]
    masks = "ground-truth masks" if use_mask else "no masks (estimated foreground)"
    print(f"{kind}: {len(truth)} triplets ({len(day)} daytime), {masks}, {per_image * 1000:.1f} ms per image")
    print("accuracy / coverage / mean confidence right|wrong, per view; '-' = never predicted")
    header = f"{'attribute':<22}" + "".join(f"{view:>28}" for view in VIEWS)
    print(header)
    rows = [(name, results, "") for name in names]
    rows += [(name, day_results, " (day)") for name in names if name.endswith("color")]
    for name, table, suffix in rows:
        cells = []
        for view in VIEWS:
            a = table[view]["per_attribute"].get(name)
            if not a or a["accuracy"] is None:
                cells.append(f"{'-':>28}")
                continue
            right, wrong = confidence_split(values[view], confs[view], truth if not suffix else day, name)
            cells.append(f"{a['accuracy']:>8.2f} / {a['coverage']:.2f} / {right:.2f}|{wrong:.2f}")
        print(f"{name + suffix:<22}" + "".join(f"{c:>28}" for c in cells))
    cells = []
    for view in VIEWS:
        ece, gap = calibration_error(values[view], confs[view], truth)
        cells.append(f"ECE {ece:.2f}, acc-conf {gap:+.2f}")
    print(f"{'calibration':<22}" + "".join(f"{c:>28}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["person", "vehicle"], default="person")
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mask", action="store_true", help="describe without masks (foreground estimated)")
    parser.add_argument("--root", type=Path, default=None, help="an existing synthetic dataset folder to read")
    args = parser.parse_args()
    if args.root is not None:
        report(args.root, args.kind, not args.no_mask)
        return
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_dataset(
            Path(tmp), kind=args.kind, ids=args.ids, images_per_id=args.images_per_id, seed=args.seed
        )
        print(f"generated {summary.root.name} --ids {args.ids} --images-per-id {args.images_per_id} --seed {args.seed}")
        report(summary.root, args.kind, not args.no_mask)


if __name__ == "__main__":
    main()

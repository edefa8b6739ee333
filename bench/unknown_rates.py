"""Unknown-attribute rates per modality before and after NEXT's complement, on a synthetic dataset.

python bench/unknown_rates.py --kind person --ids 40 --images-per-id 8 --seed 3 [--root DIR]

Describes every triplet's RGB, NIR and TIR image and their composite with the ``heuristic`` provider (ground-truth
masks), then runs ``complement`` as the captions stage does (``below`` 0.5, no colours in NIR/TIR) and prints, per
modality: the unknown rate of its own answers, the rate after the complement (attributes the modality never carries
are not counted, as in the stage's ``unknown_before_*``/``unknown_after_*`` columns), the number of values copied from
the composite, and the number of negative carrying/holding/bag answers left although another modality gave a more
confident positive one. It uses only APIs that the code before issue 18 also had, so running it with that code on
PYTHONPATH gives the "before the change" figures on the same images.

``--simulate`` replaces the heuristic provider by a simulated MLLM that answers from the ground truth with the
failure NEXT describes (appendix C): in RGB at night a carried or held thing is missed and answered "not"/"none" at
0.6 half of the time; NIR misses one a fifth of the time at 0.5; TIR sees them (0.7-0.95) but no colour, lighting or
time; the composite answers 70 % of attributes at 0.5-0.99. Every other answer is right, or unknown with a
per-view probability (RGB 0.1 by day, 0.3 at night; NIR 0.3; TIR 0.4). These numbers are ours (ASSUMED), chosen to
mimic the paper's example, not measured; the simulation also prints how many RGB presence answers match the truth.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
from heuristic_accuracy import FOLDERS, TEMPLATE, load_triplet

from reidprep.captions.attributes import AttributeQuery, composite_image
from reidprep.captions.heuristic import HeuristicProvider
from reidprep.captions.merge import complement, fuse_triplet, unknown_rate, visibility
from reidprep.captions.quality import load_groundtruth_attributes
from reidprep.captions.render import render_caption
from reidprep.synth import generate_dataset
from reidschemas import AttributeSet, attribute_model

MODALITIES = ("rgb", "nir", "tir")
PRESENCE = ("carrying", "holding", "handbag", "backpack", "suitcase")
NEGATIVE = {"none", "nothing", "no", "not", "not carrying", "not holding", "not dragging", "empty-handed"}


def _negative(value: str | None) -> bool:
    text = (value or "").strip().lower()
    return text in NEGATIVE or text.startswith(("no ", "not "))


NEGATIVE_OPTION = {
    "carrying": "none",
    "holding": "none",
    "handbag": "not",
    "backpack": "not",
    "suitcase": "not dragging",
}


def simulate(truth: dict[str, str | None], view: str, rng: random.Random, template: str) -> AttributeSet:
    """One simulated MLLM answer for ``view`` (module docstring)."""
    night = truth.get("capture_time") == "nighttime"
    p_unknown = {"rgb": 0.3 if night else 0.1, "nir": 0.3, "tir": 0.4, "composite": 0.3}[view]
    rules = visibility(template)  # type: ignore[arg-type]
    data: dict[str, dict[str, object]] = {}
    model = attribute_model(template)  # type: ignore[arg-type]
    for name in model.model_fields:
        value = truth.get(name)
        answer: dict[str, object] = {"value": None, "confidence": 0.0}
        cannot = view == "tir" and (name in rules.colour or name in ("illumination", "capture_time"))
        if value is not None and not cannot and rng.random() >= p_unknown:
            answer = {"value": value, "confidence": round(rng.uniform(0.5, 0.95), 2)}
            if name in NEGATIVE_OPTION and not _negative(value):
                miss = {"rgb": 0.5 if night else 0.0, "nir": 0.2}.get(view, 0.0)
                if rng.random() < miss:
                    answer = {"value": NEGATIVE_OPTION[name], "confidence": 0.6 if view == "rgb" else 0.5}
                elif view == "tir":
                    answer["confidence"] = round(rng.uniform(0.7, 0.95), 2)
        data[name] = answer
    return model(**data)


def describe(provider: HeuristicProvider, root: Path, key: str, kind: str) -> dict[str, AttributeSet]:
    """The heuristic provider's answers for the triplet's three images and their composite (ground-truth masks)."""
    template = TEMPLATE[kind]
    images, masks = load_triplet(root, key, kind)
    queries = [
        AttributeQuery(key, view, template, image, mask)  # type: ignore[arg-type]
        for view, image, mask in zip(MODALITIES, images, masks, strict=True)
    ]
    composite = composite_image(images)
    queries.append(AttributeQuery(key, "composite", template, composite, np.concatenate(masks, axis=1)))  # type: ignore[arg-type]
    answers = provider.describe(queries)
    return {q.view: a.attributes for q, a in zip(queries, answers, strict=True)}  # type: ignore[union-attr]


def report(root: Path, kind: str, simulated: bool, composite: bool = True) -> None:
    provider = HeuristicProvider()
    truths = load_groundtruth_attributes(root)
    rng = random.Random(0)
    template = TEMPLATE[kind]
    rules = visibility(template)  # type: ignore[arg-type]
    before: dict[str, list[AttributeSet]] = {m: [] for m in MODALITIES}
    after: dict[str, list[AttributeSet]] = {m: [] for m in MODALITIES}
    from_composite = dict.fromkeys(MODALITIES, 0)
    missed = dict.fromkeys(MODALITIES, 0)
    right = dict.fromkeys(MODALITIES, 0)
    presence = PRESENCE if template == "pedestrian" else ()
    words: list[int] = []
    for key in sorted(truths):
        if simulated:
            per_view = {v: simulate(truths[key], v, rng, template) for v in (*MODALITIES, "composite")}
        else:
            per_view = describe(provider, root, key, kind)
        fused = render_caption(fuse_triplet(per_view), template, "fused", max_tokens=None)  # type: ignore[arg-type]
        words.append(len(fused.split()))
        if not composite:
            del per_view["composite"]
        merged = complement(per_view, template, below=0.5, colours_in_infrared=False)  # type: ignore[arg-type]
        for m in MODALITIES:
            before[m].append(per_view[m])
            after[m].append(merged[m].attributes)
            from_composite[m] += sum(source == "composite" for source in merged[m].sources.values())
            for name in presence:
                value = getattr(merged[m].attributes, name)
                right[m] += value.value == truths[key][name]
                if value.value is None or not _negative(value.value):
                    continue
                others = [getattr(per_view[o], name) for o in MODALITIES if o != m]
                missed[m] += any(o.value and not _negative(o.value) and o.confidence > value.confidence for o in others)
    source = "simulated MLLM (ASSUMED failure model)" if simulated else "heuristic provider"
    views = "rgb, nir, tir" + (", composite" if composite else "")
    print(f"{len(truths)} {kind} triplets, {source} on {views}, complement below 0.5, no colours in NIR/TIR")
    print("modality  unknown before  unknown after  from composite  negatives under a surer positive  presence right")
    for m in MODALITIES:
        hidden = rules.hidden(m, colours=False)  # type: ignore[arg-type]
        rate_before = unknown_rate(before[m], ignore=hidden)
        rate_after = unknown_rate(after[m], ignore=hidden)
        accuracy = f"{right[m] / (len(truths) * len(presence)):.3f}" if presence else "-"
        print(f"{m:8}  {rate_before:14.3f}  {rate_after:13.3f}  {from_composite[m]:14d}  {missed[m]:32d}  {accuracy}")
    print(f"fused caption (template): {sum(words) / len(words):.1f} words on average, {min(words)}-{max(words)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(FOLDERS), default="person")
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="an existing synthetic dataset folder to read")
    parser.add_argument("--simulate", action="store_true", help="a simulated MLLM instead of the heuristic provider")
    parser.add_argument("--no-composite", action="store_true", help="complement without the composite's answers")
    args = parser.parse_args()
    if args.root is not None:
        report(args.root, args.kind, args.simulate, not args.no_composite)
        return
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_dataset(
            Path(tmp), kind=args.kind, ids=args.ids, images_per_id=args.images_per_id, seed=args.seed
        )
        report(summary.root, args.kind, args.simulate, not args.no_composite)


if __name__ == "__main__":
    main()

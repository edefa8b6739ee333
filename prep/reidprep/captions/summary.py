"""What the captions stage reports: unknown-attribute rates before and after fusion, accuracy against ground truth,
captions longer than CLIP's context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reidprep.captions.quality import attribute_accuracy, load_groundtruth_attributes
from reidprep.manifest import read_manifest
from reidprep.stage import read_stage_table
from reidprep.workdir import Workdir
from reidschemas import MODALITIES


def unknown_rates(workdir: Path) -> dict[str, dict[str, float | None]]:
    """Mean unknown-attribute rate per modality, before and after fusion (STMI Figure 2c's statistic)."""
    table = read_stage_table(workdir, "captions")
    rates: dict[str, dict[str, float | None]] = {}
    for m in MODALITIES:
        rates[m] = {}
        for when in ("before", "after"):
            values = [v for v in table[f"unknown_{when}_{m}"].to_pylist() if v is not None]
            rates[m][when] = float(np.mean(values)) if values else None
    return rates


def long_captions(workdir: Path, limit: int) -> dict[str, int]:
    """Per target (rgb, nir, tir, fused): how many captions are longer than ``limit`` CLIP tokens (kept, and
    truncated at tokenisation)."""
    targets = (*MODALITIES, "fused")
    table = read_stage_table(workdir, "captions", columns=[f"tokens_{t}" for t in targets])
    return {t: int(sum(n > limit for n in table[f"tokens_{t}"].to_pylist())) for t in targets}


def groundtruth_accuracy(workdir: Path) -> dict[str, Any] | None:
    """Attribute accuracy and coverage of the merged sets (per modality and fused); None without ground truth."""
    wd = Workdir(workdir)
    dataset_dir = Path(json.loads(wd.summary("index").read_text())["dataset_dir"])
    if not (dataset_dir / "groundtruth" / "attributes.jsonl").is_file():
        return None
    truth = load_groundtruth_attributes(dataset_dir)
    records = {r.sample_id: r for r in read_manifest(wd.manifest)}
    rows = read_stage_table(workdir, "captions", columns=["sample_id", "attributes"]).to_pylist()
    result: dict[str, Any] = {}
    for target in (*MODALITIES, "fused"):
        predicted = {}
        for row in rows:
            if row["attributes"] is None:
                continue
            key = str(Path(records[row["sample_id"]].rgb_path).relative_to(dataset_dir))
            merged = json.loads(row["attributes"])[target]
            predicted[key] = {name: entry["value"] for name, entry in merged.items()}
        if predicted:
            scores = attribute_accuracy(predicted, truth)
            result[target] = {"mean_accuracy": scores["mean_accuracy"], "mean_coverage": scores["mean_coverage"]}
    return result or None

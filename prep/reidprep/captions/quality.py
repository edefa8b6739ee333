"""Attribute accuracy against ground truth (the synthetic datasets' ``groundtruth/attributes.jsonl``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _norm(value: str | None) -> str | None:
    return None if value is None else " ".join(str(value).lower().split())


def attribute_accuracy(
    predicted: Mapping[str, Mapping[str, str | None]], truth: Mapping[str, Mapping[str, str | None]]
) -> dict[str, Any]:
    """Per-attribute accuracy and coverage of ``predicted`` against ``truth`` (both: item key -> name -> value).

    Only items in both mappings count. For each attribute: ``n`` = items whose truth is not null; ``coverage`` =
    the fraction of those with a non-null prediction; ``accuracy`` = the fraction of covered ones whose value
    matches (case- and whitespace-insensitive), None when nothing was covered. Attributes whose truth is always
    null are left out. ``mean_accuracy`` averages the attributes with an accuracy, ``mean_coverage`` all of them.
    """
    counts: dict[str, list[int]] = {}  # name -> [n truth known, n predicted, n correct]
    for key in sorted(set(predicted) & set(truth)):
        guess, actual = predicted[key], truth[key]
        for name, true_value in actual.items():
            expected = _norm(true_value)
            if expected is None:
                continue
            row = counts.setdefault(name, [0, 0, 0])
            row[0] += 1
            value = _norm(guess.get(name))
            if value is not None:
                row[1] += 1
                row[2] += value == expected
    per_attribute: dict[str, dict[str, Any]] = {
        name: {
            "accuracy": correct / covered if covered else None,
            "coverage": covered / known,
            "n": known,
        }
        for name, (known, covered, correct) in counts.items()
    }
    accuracies = [a["accuracy"] for a in per_attribute.values() if a["accuracy"] is not None]
    coverages = [a["coverage"] for a in per_attribute.values()]
    return {
        "per_attribute": per_attribute,
        "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "mean_coverage": sum(coverages) / len(coverages) if coverages else None,
    }


def load_groundtruth_attributes(dataset_dir: Path) -> dict[str, dict[str, str | None]]:
    """``<dataset_dir>/groundtruth/attributes.jsonl`` as {RGB image path relative to dataset_dir: attributes}."""
    path = Path(dataset_dir) / "groundtruth" / "attributes.jsonl"
    out: dict[str, dict[str, str | None]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                out[record["file"]] = dict(record["attributes"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a ground-truth attribute record ({exc})") from exc
    return out

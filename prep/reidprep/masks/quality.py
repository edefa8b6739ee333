"""Mask IoU against ground truth, when the dataset has it (the synthetic dataset's ``groundtruth/masks/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidprep.manifest import read_manifest
from reidprep.masks.fusion import resize_mask
from reidprep.stage import read_stage_table
from reidprep.workdir import Workdir
from reidschemas import MODALITIES, SampleRecord
from reidschemas.maskcodec import decode_mask, mask_iou


def groundtruth_mask(dataset_dir: Path, image_path: str) -> Path:
    """``<dataset>/groundtruth/masks/<image path relative to the dataset, as .png>``."""
    return dataset_dir / "groundtruth" / "masks" / Path(image_path).relative_to(dataset_dir).with_suffix(".png")


def _iou(dataset_dir: Path, record: SampleRecord, modality: str, mask: np.ndarray) -> float | None:
    gt_path = groundtruth_mask(dataset_dir, record.path(modality))  # type: ignore[arg-type]
    if not gt_path.is_file():
        return None
    with Image.open(gt_path) as image:
        truth = np.asarray(image.convert("L")) > 127  # (H, W)
    return mask_iou(resize_mask(mask, *truth.shape), truth)


def triplet_iou(dataset_dir: Path, record: SampleRecord, row: dict[str, Any]) -> float | None:
    """IoU of a masks-table row's triplet mask against its reference modality's ground truth (None: no truth)."""
    reference = "rgb" if row["source"] == "all" else row["source"]
    return _iou(dataset_dir, record, reference, decode_mask(row["mask"], row["height"], row["width"]))


def dataset_with_truth(workdir: Path) -> Path | None:
    """The indexed dataset folder when it has ground-truth masks (``groundtruth/masks/``), else None."""
    try:
        dataset_dir = Path(json.loads(Workdir(workdir).summary("index").read_text())["dataset_dir"])
    except (OSError, ValueError, KeyError):
        return None
    return dataset_dir if (dataset_dir / "groundtruth" / "masks").is_dir() else None


def triplet_ious(workdir: Path) -> dict[str, float] | None:
    """``{triplet_key: IoU}`` of every masks-table row with ground truth, in table order; None without truth."""
    dataset_dir = dataset_with_truth(workdir)
    if dataset_dir is None:
        return None
    records = {r.sample_id: r for r in read_manifest(Workdir(workdir).manifest)}
    ious = {}
    for row in read_stage_table(workdir, "masks").to_pylist():
        iou = triplet_iou(dataset_dir, records[row["sample_id"]], row)
        if iou is not None:
            ious[row["triplet_key"]] = iou
    return ious or None


def groundtruth_iou(workdir: Path) -> dict[str, Any] | None:
    """Mean IoU of the triplet masks (against the reference modality's truth) and of kept per-modality masks.

    None when the dataset has no ground-truth masks.
    """
    dataset_dir = dataset_with_truth(workdir)
    if dataset_dir is None:
        return None
    records = {r.sample_id: r for r in read_manifest(Workdir(workdir).manifest)}
    rows = read_stage_table(workdir, "masks").to_pylist()
    triplet: list[float] = []
    per_modality: dict[str, list[float]] = {m: [] for m in MODALITIES}
    for row in rows:
        record = records[row["sample_id"]]
        iou = triplet_iou(dataset_dir, record, row)
        if iou is not None:
            triplet.append(iou)
        for m in MODALITIES:
            if row[f"{m}_mask"] is not None:
                iou = _iou(dataset_dir, record, m, decode_mask(row[f"{m}_mask"], row["height"], row["width"]))
                if iou is not None:
                    per_modality[m].append(iou)
    if not triplet:
        return None
    return {
        "mean_iou": float(np.mean(triplet)),
        "min_iou": float(np.min(triplet)),
        "compared": len(triplet),
        "per_modality_mean_iou": {m: float(np.mean(v)) for m, v in per_modality.items() if v},
    }

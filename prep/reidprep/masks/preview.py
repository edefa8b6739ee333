"""``reidprep masks --preview N``: a PNG grid of N triplets with their masks over RGB, NIR and TIR.

Each column is headed by its modality; each row is labelled with the triplet, its id and camera, the mask's provider
score and, when the dataset has ground-truth masks (the synthetic one does), the triplet mask's IoU against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from reidprep.images import load_modality
from reidprep.manifest import read_manifest
from reidprep.masks.fusion import resize_mask
from reidprep.masks.quality import dataset_with_truth, triplet_iou
from reidprep.stage import read_stage_table
from reidprep.workdir import Workdir
from reidschemas import MODALITIES
from reidschemas.maskcodec import decode_mask
from reidschemas.safeio import atomic_write

TINT = np.array([40, 220, 90], dtype=np.float32)  # foreground tint
EDGE = np.array([255, 40, 40], dtype=np.uint8)  # mask outline
MODALITY_LABELS = {"rgb": "RGB", "nir": "NIR", "tir": "TIR"}
FONT_SIZE = 13
PAD = 4  # pixels around every label and between the columns


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8 image with the (H, W) bool mask tinted and outlined."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * TINT
    out = out.astype(np.uint8)
    out[mask & ~binary_erosion(mask, iterations=1)] = EDGE
    return out


@dataclass(frozen=True)
class PreviewRow:
    """One triplet of the preview: its key, its label line and its three overlaid images (RGB, NIR, TIR)."""

    key: str
    iou: float | None  # triplet mask vs ground truth; None without ground truth
    label: str
    cells: list[np.ndarray]


def preview_rows(workdir: Path, count: int) -> list[PreviewRow]:
    """``count`` evenly spaced triplets of the masks table with their overlays and labels."""
    if count < 1:
        raise ValueError(f"--preview needs a positive number of samples, got {count}")
    rows = read_stage_table(workdir, "masks").to_pylist()
    records = {r.sample_id: r for r in read_manifest(Workdir(workdir).manifest)}
    truth = dataset_with_truth(workdir)
    picks = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))]
    out = []
    for row in picks:
        record = records[row["sample_id"]]
        triplet_mask = decode_mask(row["mask"], row["height"], row["width"])
        cells = []
        for m in MODALITIES:
            image = load_modality(record, m)
            own = row[f"{m}_mask"]
            mask = decode_mask(own, row["height"], row["width"]) if own is not None else triplet_mask
            cells.append(overlay(image, resize_mask(mask, *image.shape[:2])))
        iou = triplet_iou(truth, record, row) if truth is not None else None
        label = f"{row['triplet_key']}  id {record.pid} cam {record.camid}  score {float(row['score'] or 0.0):.2f}"
        label += "" if iou is None else f"  IoU {iou:.2f}"
        out.append(PreviewRow(row["triplet_key"], iou, label, cells))
    return out


def draw_preview(rows: list[PreviewRow]) -> Image.Image:
    """The grid: modality names over the columns, each triplet's label over its row; sized to what is drawn."""
    font = ImageFont.load_default(size=FONT_SIZE)
    line_h = FONT_SIZE + 2 * PAD
    col_w = [max(r.cells[c].shape[1] for r in rows) for c in range(len(MODALITIES))]
    label_w = max(int(font.getlength(r.label)) + 2 * PAD for r in rows)
    width = max(sum(col_w) + PAD * (len(col_w) + 1), label_w)
    heights = [max(c.shape[0] for c in r.cells) for r in rows]
    grid = Image.new("RGB", (width, line_h + sum(h + line_h + PAD for h in heights)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    lefts = [PAD + sum(col_w[:c]) + PAD * c for c in range(len(col_w))]
    for c, m in enumerate(MODALITIES):
        name = MODALITY_LABELS[m]
        draw.text((lefts[c] + (col_w[c] - font.getlength(name)) / 2, PAD), name, fill=(0, 0, 0), font=font)
    top = line_h
    for row, height in zip(rows, heights, strict=True):
        draw.text((PAD, top + PAD), row.label, fill=(0, 0, 0), font=font)
        for c, cell in enumerate(row.cells):
            grid.paste(Image.fromarray(cell), (lefts[c], top + line_h))
        top += line_h + height + PAD
    return grid


def write_preview(workdir: Path, count: int, path: Path | None = None) -> Path:
    """Write ``<workdir>/masks/preview.png`` (or ``path``): ``count`` evenly spaced triplets, one per row."""
    grid = draw_preview(preview_rows(workdir, count))
    target = path or Workdir(workdir).stage_dir("masks") / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: grid.save(tmp, format="PNG"))
    return target

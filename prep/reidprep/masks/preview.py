"""``reidprep masks --preview N``: a PNG grid of N triplets with their masks over RGB, NIR and TIR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from reidprep.images import load_modality
from reidprep.manifest import read_manifest
from reidprep.masks.fusion import resize_mask
from reidprep.stage import read_stage_table
from reidprep.workdir import Workdir
from reidschemas import MODALITIES
from reidschemas.maskcodec import decode_mask

TINT = np.array([40, 220, 90], dtype=np.float32)  # foreground tint
EDGE = np.array([255, 40, 40], dtype=np.uint8)  # mask outline


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8 image with the (H, W) bool mask tinted and outlined."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * TINT
    out = out.astype(np.uint8)
    out[mask & ~binary_erosion(mask, iterations=1)] = EDGE
    return out


def write_preview(workdir: Path, count: int, path: Path | None = None) -> Path:
    """Write ``<workdir>/masks/preview.png`` (or ``path``): ``count`` evenly spaced triplets, one per row."""
    if count < 1:
        raise ValueError(f"--preview needs a positive number of samples, got {count}")
    rows = read_stage_table(workdir, "masks").to_pylist()
    records = {r.sample_id: r for r in read_manifest(Workdir(workdir).manifest)}
    picks = [rows[i] for i in np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int)]
    cells: list[list[np.ndarray]] = []
    for row in picks:
        record = records[row["sample_id"]]
        triplet_mask = decode_mask(row["mask"], row["height"], row["width"])
        line = []
        for m in MODALITIES:
            image = load_modality(record, m)
            own = row[f"{m}_mask"]
            mask = decode_mask(own, row["height"], row["width"]) if own is not None else triplet_mask
            line.append(overlay(image, resize_mask(mask, *image.shape[:2])))
        cells.append(line)
    cell_h = max(c.shape[0] for line in cells for c in line)
    cell_w = max(c.shape[1] for line in cells for c in line)
    label_h = 14
    grid = Image.new("RGB", (3 * cell_w, len(cells) * (cell_h + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (row, line) in enumerate(zip(picks, cells, strict=True)):
        top = r * (cell_h + label_h)
        draw.text((2, top + 1), f"{row['triplet_key']}  score {row['score']:.2f}", fill=(0, 0, 0))
        for c, cell in enumerate(line):
            grid.paste(Image.fromarray(cell), (c * cell_w, top + label_h))
    target = path or Workdir(workdir).stage_dir("masks") / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    grid.save(target)
    return target

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


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """``text`` in lines no wider than ``width``: broken between its two-space separated parts, a part too long
    (a triplet key) after a "/", a piece still too long anywhere."""
    pieces: list[str] = []
    for part in text.split("  "):
        while font.getlength(part) > width:
            cut = max((i + 1 for i, ch in enumerate(part) if ch == "/" and font.getlength(part[: i + 1]) <= width),
                      default=0)  # fmt: skip
            cut = cut or max(1, max(i for i in range(1, len(part) + 1) if font.getlength(part[:i]) <= width))
            pieces.append(part[:cut])
            part = part[cut:]
        pieces.append(part)
    lines = [pieces[0]]
    for piece in pieces[1:]:
        joined = f"{lines[-1]}  {piece}"
        if font.getlength(joined) <= width and not lines[-1].endswith("/"):
            lines[-1] = joined
        else:
            lines.append(piece)
    return lines


def draw_preview(rows: list[PreviewRow]) -> Image.Image:
    """The grid: modality names over the columns, each triplet's label over its row (wrapped to the images' width,
    so the canvas is as wide as the images)."""
    font = ImageFont.load_default(size=FONT_SIZE)
    line_h = FONT_SIZE + PAD
    col_w = [max(r.cells[c].shape[1] for r in rows) for c in range(len(MODALITIES))]
    width = sum(col_w) + PAD * (len(col_w) + 1)
    labels = [_wrap(r.label, font, width - 2 * PAD) for r in rows]
    heights = [max(c.shape[0] for c in r.cells) for r in rows]
    total = line_h + PAD + sum(len(lines) * line_h + PAD + h + PAD for lines, h in zip(labels, heights, strict=True))
    grid = Image.new("RGB", (width, total), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    lefts = [PAD + sum(col_w[:c]) + PAD * c for c in range(len(col_w))]
    for c, m in enumerate(MODALITIES):
        name = MODALITY_LABELS[m]
        draw.text((lefts[c] + (col_w[c] - font.getlength(name)) / 2, PAD), name, fill=(0, 0, 0), font=font)
    top = line_h + PAD
    for row, lines, height in zip(rows, labels, heights, strict=True):
        for i, line in enumerate(lines):
            draw.text((PAD, top + i * line_h), line, fill=(0, 0, 0), font=font)
        top += len(lines) * line_h + PAD
        for c, cell in enumerate(row.cells):
            grid.paste(Image.fromarray(cell), (lefts[c], top))
        top += height + PAD
    return grid


def write_preview(workdir: Path, count: int, path: Path | None = None) -> Path:
    """Write ``<workdir>/masks/preview.png`` (or ``path``): ``count`` evenly spaced triplets, one per row."""
    grid = draw_preview(preview_rows(workdir, count))
    target = path or Workdir(workdir).stage_dir("masks") / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: grid.save(tmp, format="PNG"))
    return target

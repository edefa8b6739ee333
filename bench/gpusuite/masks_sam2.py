"""Section: the sam2 mask provider's per-image loop against its batched encoder, images/s and peak memory.

Full run: SAM 2.1 hiera-l and hiera-t from the configs packaged with the installed ``sam2`` (random weights: the model
built from its config, saved as a ``{"model": state_dict}`` checkpoint that ``Sam2Masker`` loads like a real one),
on random uint8 crops of 256x128 (RGBNT201's person size; SAM resizes them to its 1024x1024 input). The provider runs
both paths in bf16 autocast on CUDA (fp32 on a CPU). ``--tiny``: the tests' tiny random SAM 2.1
(``tests/prep/sam2_tiny.py``). Each path is warmed up on one batch, then timed once over all images.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from gpusuite.common import Figure, Row, peak_memory, timed

from reidprep.masks.sam2_provider import Sam2Masker
from reidschemas.config import Sam2Config

FULL_MODELS = (("hiera-l", "large"), ("hiera-t", "tiny"))
"""(label, ``masks.sam2.model`` short name): the SAM 2.1 configs packaged with sam2 (configs/sam2.1/*.yaml)."""


def _random_checkpoint(path: Path, model: str, overrides: list[str], seed: int) -> None:
    """Build ``model`` (a short name, SAM 2.1) with random weights and save it as a checkpoint the provider loads."""
    from sam2.build_sam import build_sam2

    from reidprep.masks.sam2_provider import resolve_config_name

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = resolve_config_name(model, "2.1")
        sam = build_sam2(name, None, device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=False)
    torch.save({"model": sam.state_dict()}, path)


def sam2_rows(device: torch.device, tiny: bool, images: int, batch_size: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (256, 128, 3), dtype=np.uint8) for _ in range(images)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-suite-sam2-") as tmp:
        if tiny:
            from sam2_tiny import make_tiny_sam2_checkpoint  # tests/prep (put on sys.path by gpu_suite.py)

            checkpoint = Path(tmp) / "tiny.pt"
            name, overrides = make_tiny_sam2_checkpoint(checkpoint, seed=seed)
            models = [("tiny random SAM 2.1", Sam2Config(model=name, checkpoint=checkpoint, overrides=overrides))]
        else:
            models = []
            for label, short in FULL_MODELS:
                checkpoint = Path(tmp) / f"{short}.pt"
                _random_checkpoint(checkpoint, short, [], seed)
                models.append((f"SAM 2.1 {label}", Sam2Config(model=short, version="2.1", checkpoint=checkpoint)))
        for label, config in models:
            masker = Sam2Masker(config, device=device.type, batch_size=batch_size)
            parameters = sum(p.numel() for p in masker._predictor.model.parameters()) / 1e6
            masker.predict(crops[:batch_size], "rgb")  # warm-up: kernels, TorchScript transforms
            masker.predict_one_by_one(crops[:2], "rgb")
            with peak_memory(device) as loop_peak:
                loop_s, loop_out = timed(partial(masker.predict_one_by_one, crops, "rgb"), device)
            with peak_memory(device) as batch_peak:
                batch_s, batch_out = timed(partial(masker.predict, crops, "rgb"), device)
            same = sum(np.array_equal(a.mask, b.mask) for a, b in zip(loop_out, batch_out, strict=True))
            note = f"{parameters:.1f} M parameters; identical masks on both paths: {same}/{images}"
            rows.append(
                Row(
                    f"{label}: per-image loop",
                    {
                        "images_per_s": Figure(images / loop_s, "images/s"),
                        "ms_per_image": Figure(1000 * loop_s / images, "ms/image"),
                        "peak_memory": loop_peak.figure,
                    },
                    note=note,
                )
            )
            rows.append(
                Row(
                    f"{label}: batched (batch {batch_size})",
                    {
                        "images_per_s": Figure(images / batch_s, "images/s"),
                        "ms_per_image": Figure(1000 * batch_s / images, "ms/image"),
                        "peak_memory": batch_peak.figure,
                        "speedup_vs_loop": Figure(loop_s / batch_s, "x", label="speed-up"),
                    },
                    note=note,
                )
            )
            del masker
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows

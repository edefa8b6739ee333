"""A tiny random-initialised SAM 2.1 for tests and the benchmark (no weights can be downloaded).

The shipped hiera-t config is shrunk with Hydra overrides: a 128-pixel input (instead of 1024), a 4-stage Hiera
trunk of 5 blocks starting at 8 channels (8/16/32/64), a 32-channel FPN neck (which also sets the prompt encoder and
mask decoder width), and no memory attention / memory encoder (video-only modules the image predictor never uses).
About 0.46 M parameters (1.9 MB); a 128x256 crop takes a few milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TINY_OVERRIDES = [
    "model.image_size=128",  # input side: feature maps 32/16/8, prompt embedding 8x8, low-res masks 32x32
    "model.image_encoder.trunk.embed_dim=8",
    "model.image_encoder.trunk.num_heads=1",
    "model.image_encoder.trunk.stages=[1,1,2,1]",
    "model.image_encoder.trunk.global_att_blocks=[3]",  # never a stage's first (query-pooling) block
    "model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.trunk.window_spec=[8,4,4,2]",  # window_spec[0] must divide the 32x32 first stage
    "model.image_encoder.neck.d_model=32",  # = prompt encoder and mask decoder transformer width
    "model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",  # the trunk's stage widths, deepest first
    "model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "model.memory_attention=null",
    "model.memory_encoder=null",
]


def make_tiny_sam2_checkpoint(
    path: Path, seed: int = 0, overrides: Sequence[str] = TINY_OVERRIDES
) -> tuple[str, list[str]]:
    """Write ``{"model": state_dict}`` of a random tiny SAM 2.1 to ``path``; return (config name, overrides).

    ``Sam2Config(model=name, checkpoint=path, overrides=overrides)`` loads it. The global RNG is left untouched.
    """
    from sam2.build_sam import build_sam2

    overrides = list(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(TINY_CONFIG, None, device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return TINY_CONFIG, overrides

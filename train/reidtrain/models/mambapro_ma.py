"""MambaPro's Mamba Aggregation (MA, Eqs. 13-19): intra- then inter-modality Mamba blocks over the patch tokens.

One MA block = an intra-modality ``MambaBlock`` (a separate SSM per modality, Eqs. 13-15) followed by an
inter-modality ``MambaBlock`` (one SSM over the 3N-token sequence [rgb | nir | tir], Eqs. 16-17); blocks are stacked
(2 by default, Fig. 9 d). Then, per modality M, f_final^M = xi(LN([f_cls^M, mean(f_ir^M)])) (Eq. 18) and
f_ma = [f_final^rgb, f_final^nir, f_final^tir] (Eq. 19).

Facts from the authors' code where the paper is silent: expand 2 (d_inner = 2D), d_state 16 (also Fig. 8),
dt_rank = ceil(D / 16) (32 at D = 512), 3x3 depthwise conv on the patch grid with BatchNorm and SiLU, per-modality
in-projections and convs, one out-projection shared by the modalities, no bias in the in/out projections, forward
(unidirectional) scans, a LayerNorm on each SSM output, and every Linear (the SSM's x_proj and dt_proj included)
re-initialised with trunc_normal(std 0.02) and zero bias, which overrides Mamba's dt initialisation. With these, one
MA block plus the Eq. 18 heads has 9.47 M parameters at D = 512 (Table 6).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from reidtrain.models.layers.selective_scan import MambaBlock, ScanBackend

__all__ = ["MambaAggregation"]

MAMode = Literal["intra+inter", "intra", "inter"]


class MambaAggregation(nn.Module):
    """MA over M modalities: class tokens (B, M, D) and patch tokens (B, M, N, D) -> f_ma (B, M * D).

    Args:
        dim: token width D (512: CLIP ViT-B-16's projected tokens).
        grid: patch grid (rows, cols) of the N patch tokens (16x8 persons, 8x16 vehicles).
        num_blocks: stacked MA blocks (2, Fig. 9 d).
        mode: "intra+inter" (MA), "intra" or "inter" only (Table 6 ablations).
        d_state, dt_rank, expand, d_conv: SSM sizes (dt_rank None: ceil(D / 16)).
    """

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        num_modalities: int = 3,
        num_blocks: int = 2,
        mode: MAMode = "intra+inter",
        d_state: int = 16,
        dt_rank: int | None = None,
        expand: int = 2,
        d_conv: int = 3,
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        if mode not in ("intra+inter", "intra", "inter"):
            raise ValueError(f"unknown MA mode {mode!r}; choose intra+inter, intra or inter")
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        joints = {"intra+inter": (False, True), "intra": (False,), "inter": (True,)}[mode]
        self.mixers = nn.ModuleList(
            MambaBlock(dim, num_modalities, joint, grid, d_state, dt_rank, expand, d_conv, scan_backend)
            for _ in range(num_blocks)
            for joint in joints
        )
        self.norms = nn.ModuleList(nn.LayerNorm(2 * dim) for _ in range(num_modalities))  # L in Eq. 18
        self.reductions = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(num_modalities))  # xi in Eq. 18
        self.apply(_init_weights)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """cls (B, M, D), patches (B, M, N, D) -> f_ma (B, M * D) in modality order."""
        streams = list(patches.unbind(dim=1))  # M x (B, N, D): f_pa^M
        for mixer in self.mixers:
            streams = mixer(streams)  # intra: f_ia^M (Eq. 15); inter: f_ir^M (Eq. 17)
        finals = [
            reduce(norm(torch.cat([cls[:, m], stream.mean(dim=1)], dim=-1)))  # (B, D) (Eq. 18)
            for m, (stream, norm, reduce) in enumerate(zip(streams, self.norms, self.reductions, strict=True))
        ]
        return torch.cat(finals, dim=-1)  # (B, M * D) (Eq. 19)


def _init_weights(module: nn.Module) -> None:
    """The authors' MA initialisation: every Linear trunc_normal(std 0.02) with zero bias; LayerNorm 1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

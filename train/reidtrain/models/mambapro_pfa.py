"""MambaPro's Parallel Feed-Forward Adapter (PFA) and a frozen CLIP block run with it beside its FFN (Eqs. 1-3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reidtrain.models.layers.activations import Activation, make_activation

__all__ = ["ParallelFeedForwardAdapter", "run_block"]


class ParallelFeedForwardAdapter(nn.Module):
    """PFA (Eq. 2): xi(delta(xi(F_bar))), linear -> GELU -> linear, width -> ratio * width -> width.

    The hidden layer is wider than the input ("ascending-then-descending"; ratio 2 as the authors' code, which gives
    the paper's 28.34 M parameters for 12 ViT-B layers, Table 3 C). Weights start from trunc_normal(std 0.02) with
    zero biases, as the authors' code; the paper does not zero the output layer, so the adapter is active from the
    first step. ``activation``: "gelu" as the paper writes, or "quick_gelu" as the authors' code (CLIP's QuickGELU).
    """

    def __init__(self, width: int, ratio: float = 2.0, activation: Activation = "gelu") -> None:
        super().__init__()
        hidden = int(width * ratio)
        self.up = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.down = nn.Linear(hidden, width)
        for linear in (self.up, self.down):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, width) -> (B, T, width)."""
        return self.down(self.act(self.up(x)))


def run_block(block: Any, x: torch.Tensor, adapter: nn.Module | None = None) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` on x (B, T, width), with the PFA beside its FFN when given.

    Eq. 1: F_bar = MHSA(LN(F)) + F; Eq. 3: F_hat = FFN(LN(F_bar)) + PFA(F_bar) + F_bar. The PFA reads F_bar itself
    (not its LayerNorm), as in the equation and the authors' code. Without an adapter this is the block unchanged.
    """
    x = x + block.ls_1(block.attention(q_x=block.ln_1(x)))  # F_bar (Eq. 1)
    out = x + block.ls_2(block.mlp(block.ln_2(x)))  # F_bar + FFN(LN(F_bar))
    if adapter is not None:
        out = out + adapter(x)  # + PFA(F_bar) (Eq. 3)
    return out

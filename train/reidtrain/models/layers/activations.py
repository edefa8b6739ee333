"""The activation switch of the models' small MLPs: the papers' GELU or CLIP's QuickGELU (the authors' code).

DeMo (PIFE, ATMoE) and MambaPro (PFA, prompt blocks) write GELU in their equations, while the authors' code uses
CLIP's ``QuickGELU``, x * sigmoid(1.702 x), the approximation OpenAI CLIP was trained with. Neither has parameters,
so the switch never changes a state-dict key.
"""

from __future__ import annotations

from typing import Literal

from open_clip.transformer import QuickGELU
from torch import nn

__all__ = ["ACTIVATIONS", "Activation", "make_activation"]

Activation = Literal["gelu", "quick_gelu"]
ACTIVATIONS: tuple[Activation, ...] = ("gelu", "quick_gelu")


def make_activation(name: Activation) -> nn.Module:
    """``nn.GELU`` (exact, erf) for "gelu", open_clip's ``QuickGELU`` for "quick_gelu"; ValueError otherwise."""
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {name!r}")

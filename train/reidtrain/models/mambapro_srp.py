"""MambaPro's Synergistic Residual Prompt (SRP, Eqs. 4-12): per-layer modality prompts, transferred and residual.

At layer l, the tokens of modality m are followed by three prompt groups of k tokens, one per modality j (fixed
order rgb, nir, tir; the order is immaterial since prompts carry no position embedding):

- j == m: the modality's own prompt p_l^m, or in "fusion" mode from the second prompted layer on the residual prompt
  p_l^m' = p_l^m + xi(delta(xi(p_hat_{l-1}^f))) (Eq. 8), where p_hat_{l-1}^f is the mean of the three groups that
  layer l-1 output for this modality (per sample);
- j != m: the transferred prompt T_l^j(p_l^j) = xi(delta(xi(p_l^j))) (Eq. 6), with one transfer block per source
  modality and layer ("each modality utilizes its specific TB", Fig. 7), applied to the layer's raw prompt (Eq. 9).

The prompts leave the sequence after each layer (Eqs. 10-12 add new ones). Modes (Table 4): "independent" (IP: own
prompts only, k tokens), "synergistic" (SP: own + transferred, no residual), "fusion" (SRP (Fusion), the paper's
best). SRP (Separation) is not implemented: the paper shows it only in Fig. 4.

Facts from the authors' code where the paper is silent: k = 4 (also Fig. 9 a), transfer and residual blocks are
linear -> GELU -> linear with hidden width/2 (matches Table 4: 2.37 M parameters per layer), trunc_normal(0.02)
weights and zero biases. ``identity_paths=True`` (the default) reproduces two additions found in the authors' code
but not in Eqs. 6 and 8: p + T(p) for transferred prompts and p_hat + xi(delta(xi(p_hat))) + p for the residual
prompt; False is the equations as printed. ``init="zeros"`` starts the prompts at zero as the authors' code does;
"trunc_normal" (std 0.02) reads "randomly initialized" (Sec. SP) literally. ``activation="quick_gelu"`` is the
authors' code's QuickGELU in the blocks, "gelu" the paper's.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from reidtrain.models.layers.activations import Activation, make_activation

__all__ = ["PromptBlock", "SynergisticResidualPrompt"]

PromptMode = Literal["independent", "synergistic", "fusion"]
PromptInit = Literal["zeros", "trunc_normal"]


class PromptBlock(nn.Module):
    """xi(delta(xi(p))): linear -> GELU -> linear, width -> width/2 -> width (transfer block T, Eq. 6; RP, Eq. 8)."""

    def __init__(self, width: int, activation: Activation = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width // 2)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(width // 2, width)
        for linear in (self.fc1, self.fc2):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """p (..., width) -> (..., width)."""
        return self.fc2(self.act(self.fc1(p)))


class SynergisticResidualPrompt(nn.Module):
    """Prompt tokens for every prompted layer (see the module docstring).

    Args:
        width: transformer width (768 for ViT-B-16).
        num_layers: transformer depth; layers ``start_layer`` .. ``num_layers - 1`` get prompts (Fig. 9 b: all).
        num_prompts: k, prompts per modality and layer (N_pr = 4, Fig. 9 a).
        num_modalities: 3 (rgb, nir, tir).
        mode: "fusion" (SRP), "synergistic" (SP) or "independent" (IP), Table 4.
        identity_paths: add the authors' code's identity terms (module docstring; on by default).
        init: the prompts' initialisation, "zeros" (authors' code) or "trunc_normal" (std 0.02).
        activation: of the transfer and residual blocks, "gelu" (paper) or "quick_gelu" (authors' code).
    """

    def __init__(
        self,
        width: int,
        num_layers: int,
        num_prompts: int = 4,
        num_modalities: int = 3,
        mode: PromptMode = "fusion",
        start_layer: int = 0,
        identity_paths: bool = True,
        init: PromptInit = "trunc_normal",
        activation: Activation = "gelu",
    ) -> None:
        super().__init__()
        if mode not in ("independent", "synergistic", "fusion"):
            raise ValueError(f"unknown prompt mode {mode!r}; choose independent, synergistic or fusion")
        if not 0 <= start_layer < num_layers:
            raise ValueError(f"start_layer must be in [0, {num_layers}), got {start_layer}")
        if init not in ("zeros", "trunc_normal"):
            raise ValueError(f"prompt init must be 'zeros' or 'trunc_normal', not {init!r}")
        self.mode: PromptMode = mode
        self.k, self.num_modalities = num_prompts, num_modalities
        self.start_layer, self.num_layers = start_layer, num_layers
        self.identity_paths = identity_paths
        depth = num_layers - start_layer
        self.prompts = nn.Parameter(torch.zeros(depth, num_modalities, num_prompts, width))  # p_l^m
        if init == "trunc_normal":
            nn.init.trunc_normal_(self.prompts, std=0.02)
        self.transfer = nn.ModuleList()  # [layer][source modality] -> T_l^j
        if mode != "independent":
            self.transfer.extend(
                nn.ModuleList(PromptBlock(width, activation) for _ in range(num_modalities)) for _ in range(depth)
            )
        self.residual = nn.ModuleList()  # [layer - 1] -> the RP block of layers start_layer + 1 ..
        if mode == "fusion":
            self.residual.extend(PromptBlock(width, activation) for _ in range(depth - 1))

    @property
    def tokens_per_modality(self) -> int:
        """Prompt tokens appended to each modality's sequence: k (independent) or 3k."""
        return self.k if self.mode == "independent" else self.k * self.num_modalities

    def prompted(self, layer: int) -> bool:
        return self.start_layer <= layer < self.num_layers

    def transferred(self, layer: int) -> torch.Tensor:
        """T_l^j(p_l^j) for every source modality j (Eq. 6): (M, k, width)."""
        i = layer - self.start_layer
        out = []
        blocks: nn.ModuleList = self.transfer[i]  # type: ignore[assignment]
        for j, block in enumerate(blocks):
            p = self.prompts[i, j]  # (k, width)
            out.append(block(p) + p if self.identity_paths else block(p))
        return torch.stack(out)

    def own(self, layer: int, batch: int, fused: torch.Tensor | None) -> torch.Tensor:
        """Each modality's own prompt at ``layer``: (M, B, k, width); residual (Eq. 8) when ``fused`` is given."""
        i = layer - self.start_layer
        p = self.prompts[i].unsqueeze(1).expand(-1, batch, -1, -1)  # (M, B, k, width)
        if fused is None or self.mode != "fusion" or i == 0:
            return p
        refined = self.residual[i - 1](fused)  # xi(delta(xi(p_hat_{l-1}^f))) (M, B, k, width)
        return p + refined + fused if self.identity_paths else p + refined

    def layer_prompts(self, layer: int, batch: int, fused: torch.Tensor | None = None) -> torch.Tensor:
        """The prompt tokens appended at ``layer``: (M, B, P, width), P = ``tokens_per_modality``.

        ``fused`` (M, B, k, width) is ``fuse`` of the previous layer's output prompts (fusion mode).
        """
        own = self.own(layer, batch, fused)  # (M, B, k, width)
        if self.mode == "independent":
            return own
        moved = self.transferred(layer).unsqueeze(1).expand(-1, batch, -1, -1)  # (M source, B, k, width)
        groups = []
        for m in range(self.num_modalities):
            parts = [own[m] if j == m else moved[j] for j in range(self.num_modalities)]  # M x (B, k, width)
            groups.append(torch.cat(parts, dim=1))  # (B, M k, width)
        return torch.stack(groups)  # (M target, B, M k, width)

    def fuse(self, prompt_out: torch.Tensor) -> torch.Tensor | None:
        """p_hat^f: the mean of the M groups output by a layer (Eq. 8); prompt_out (M, B, M k, width) -> (M, B, k,
        width). None outside fusion mode (no residual needs it)."""
        if self.mode != "fusion":
            return None
        m, b, _, width = prompt_out.shape
        return prompt_out.view(m, b, self.num_modalities, self.k, width).mean(dim=2)

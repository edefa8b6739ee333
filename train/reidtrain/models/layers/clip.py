"""CLIP backbones from local weight files (open_clip), position embeddings resized to the ReID input size.

Weights never come from the network: ``weights`` is a local file (open_clip state dict ``.pt``/``.pth``/``.bin``, a
``{"state_dict": ...}`` training checkpoint, ``.safetensors``, or OpenAI's original TorchScript ``.pt`` archive).

QuickGELU: OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain ``ViT-B-16`` uses nn.GELU and loads
them without complaint but computes wrong features. Say ``ViT-B-16-quickgelu`` for OpenAI weights. The OpenAI
TorchScript archive (and a state dict that still holds its ``input_resolution`` / ``context_length`` / ``vocab_size``
entries) is recognised as OpenAI and switches QuickGELU on by itself, with a log message.

Safety: a TorchScript archive is read with ``torch.jit.load`` (its pickles are read by TorchScript's own unpickler,
which builds tensors and TorchScript classes only, never arbitrary Python objects); every other file is read with
``torch.load(weights_only=True)``. Nothing here calls ``torch.load(weights_only=False)``, so a file from an untrusted
source cannot run Python code through pickle. Load TorchScript archives only from sources you trust all the same.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from torch import nn

__all__ = [
    "TINY_CONFIG",
    "ClipTextEncoder",
    "ClipVisualEncoder",
    "build_clip",
    "build_clip_visual",
    "is_torchscript_archive",
    "load_clip_state_dict",
    "split_qkv",
]

log = logging.getLogger(__name__)

# A tiny CLIP for tests and CPU smoke runs (same structure as ViT-B-16: patch 16, class token, proj to embed_dim).
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

# Entries of OpenAI's CLIP state dict that open_clip's CLIP does not have (they mark a checkpoint as OpenAI's).
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

_NO_WEIGHTS_HELP = "pass --weights FILE (a local CLIP checkpoint) or --random-init to start from random weights"


def _model_config(name: str) -> tuple[dict[str, Any], bool]:
    """(open_clip config, quick_gelu) for ``name``: "tiny", "tiny-quickgelu", or any open_clip built-in name."""
    base, quick_gelu = (name.removesuffix("-quickgelu"), True) if name.endswith("-quickgelu") else (name, False)
    if base == "tiny":
        return {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_CONFIG.items()}, quick_gelu
    cfg = open_clip.get_model_config(name)  # built-in "-quickgelu" configs carry quick_gelu themselves
    if cfg is None:
        choices = "tiny, tiny-quickgelu, ViT-B-16, ViT-B-16-quickgelu, ..."
        raise ValueError(f"unknown CLIP backbone {name!r}; choose one of {choices} (open_clip model names)")
    quick_gelu = bool(cfg.pop("quick_gelu", False)) or quick_gelu
    return cfg, quick_gelu


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript archive (``torch.jit.save``, OpenAI's original ``.pt``); False for ``torch.save``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(part == "code" for name in archive.namelist() for part in name.split("/")[1:2])


def load_clip_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, is_openai) from a local file; unwraps ``{"state_dict": ...}`` and ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file {path} does not exist; {_NO_WEIGHTS_HELP}")
    is_openai = False
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    elif is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the way to read it
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        is_openai = True
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle with non-tensor objects, truncated file, not a checkpoint at all
            raise ValueError(f"cannot read CLIP weights from {path}: {error}") from error
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path} holds no state dict (found {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(key in state for key in _OPENAI_EXTRA_KEYS):
        is_openai = True
        for key in _OPENAI_EXTRA_KEYS:
            state.pop(key, None)
    return state, is_openai


def _check_fits(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path, name: str) -> None:
    """Raise a ValueError naming ``path`` and the missing, unexpected and differently shaped entries."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("shape mismatches", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: " + "; ".join(items[:5]) + more)
    raise ValueError(f"CLIP weights {path} do not fit backbone {name!r}: " + " | ".join(parts))


def build_clip(
    name: str = "ViT-B-16",
    image_size: tuple[int, int] = (256, 128),
    weights: Path | str | None = None,
    require_pretrained: bool = True,
) -> open_clip.CLIP:
    """The whole open_clip CLIP model (visual + text towers) for ``image_size`` = (height, width).

    The position embeddings are built for ``image_size`` and a checkpoint's (square) grid is interpolated to it at
    load (open_clip ``resize_pos_embed``, bicubic), e.g. 14x14 -> 16x8 for 256x128 at patch 16. ``weights=None``
    with ``require_pretrained`` raises; pass ``require_pretrained=False`` for a random initialisation.
    """
    if weights is None and require_pretrained:
        raise ValueError(f"backbone {name!r} needs pretrained weights but none were given; {_NO_WEIGHTS_HELP}")
    state, is_openai = load_clip_state_dict(Path(weights)) if weights is not None else ({}, False)
    cfg, quick_gelu = _model_config(name)
    if is_openai and not quick_gelu:
        log.info("%s holds OpenAI CLIP weights: using QuickGELU (say %s-quickgelu to silence this)", weights, name)
        quick_gelu = True
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "image_size": tuple(image_size)}
    model = open_clip.CLIP(**cfg, quick_gelu=quick_gelu)
    if weights is not None:
        path = Path(weights)
        persistent = model.state_dict().keys()
        for key, _ in model.named_buffers():  # non-persistent buffers (attn_mask) that a TorchScript archive saves
            if key not in persistent:
                state.pop(key, None)
        pos = state.get("visual.positional_embedding")
        grid = model.visual.grid_size
        if pos is not None and pos.shape[0] != 1 + grid[0] * grid[1]:
            side = round((pos.shape[0] - 1) ** 0.5)
            if side * side != pos.shape[0] - 1:
                raise ValueError(
                    f"CLIP weights {path}: visual.positional_embedding has {pos.shape[0] - 1} patch positions, not a "
                    f"square grid, and cannot be interpolated to {grid[0]}x{grid[1]} for image size {tuple(image_size)}"
                )
        if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        try:
            resize_pos_embed(state, model)
            resize_text_pos_embed(state, model)
        except (RuntimeError, AssertionError) as error:  # a width mismatch shows here first
            _check_fits(state, model, path, name)
            raise ValueError(f"CLIP weights {path} do not fit backbone {name!r}: {error}") from error
        _check_fits(state, model, path, name)
        model.load_state_dict(state, strict=True)
    return model


def build_clip_visual(
    name: str = "ViT-B-16",
    image_size: tuple[int, int] = (256, 128),
    weights: Path | str | None = None,
    require_pretrained: bool = True,
) -> nn.Module:
    """The visual tower (open_clip ``VisionTransformer``) of :func:`build_clip`; the text tower is dropped."""
    return build_clip(name, image_size, weights, require_pretrained).visual


class ClipVisualEncoder(nn.Module):
    """A CLIP ViT visual tower returning all tokens: images (B, 3, H, W) -> (B, 1 + N, D).

    Token 0 is the class token, tokens 1..N the patches in row-major order (N = H/16 * W/16 = 128 at 256x128).
    Tokens pass ``ln_post`` and, with ``project=True`` (DeMo), CLIP's ``proj``: D = embed_dim (512 for ViT-B-16);
    otherwise D = width (768). ``cls_bias`` (B, width) is added to the class token after the position embedding,
    before ``ln_pre`` and the transformer (DeMo's SIE camera embedding).
    """

    def __init__(self, visual: Any, project: bool = True) -> None:
        # visual: open_clip's VisionTransformer, reached by attribute (torch types those as Tensor | Module)
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ValueError("ClipVisualEncoder supports plain CLIP ViTs (class-token pooling, no attention pool)")
        self.visual: Any = visual
        self.project = project and visual.proj is not None
        self.width: int = visual.conv1.out_channels
        self.out_dim: int = visual.proj.shape[1] if self.project else self.width
        self.grid_size: tuple[int, int] = tuple(visual.grid_size)
        self.num_patches: int = self.grid_size[0] * self.grid_size[1]

    @property
    def blocks(self) -> Any:
        """The transformer's residual attention blocks (open_clip ``ResidualAttentionBlock``, batch first)."""
        return self.visual.transformer.resblocks

    @property
    def num_heads(self) -> int:
        return int(self.blocks[0].attn.num_heads)

    def embed(self, images: torch.Tensor, cls_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, 1 + N, width) entering the first block (after ``ln_pre``)."""
        v: Any = self.visual
        x = v.conv1(images)  # (B, width, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1 + N, width)
        if cls_bias is not None:
            x = torch.cat([x[:, :1] + cls_bias.unsqueeze(1).to(x.dtype), x[:, 1:]], dim=1)
        return v.ln_pre(v.patch_dropout(x))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens leaving the last block (B, T, width) -> ``ln_post``, then CLIP's ``proj`` if ``project`` (B, T, D)."""
        x = self.visual.ln_post(x)
        if self.project:
            x = x @ self.visual.proj  # (B, T, embed_dim)
        return x

    def forward(self, images: torch.Tensor, cls_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> (B, 1 + N, D): ``embed``, every block, ``head``.

        Models that change the blocks (STMI's attention, prompts, adapters) call ``embed``, run ``blocks``
        themselves and finish with ``head``.
        """
        return self.head(self.visual.transformer(self.embed(images, cls_bias)))


def split_qkv(block: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key, value of a block's ``nn.MultiheadAttention`` for (already normalised) tokens x (B, T, width).

    Returns three (B, heads, T, head_dim) tensors computed with the block's own ``in_proj`` weights, so a model that
    rewrites the attention (STMI's SFM) loads pretrained weights unchanged. Finish with ``block.attn.out_proj``.
    """
    attn = block.attn
    b, t, width = x.shape
    heads = attn.num_heads
    qkv = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, T, 3 * width)
    qkv = qkv.view(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, head_dim)
    return qkv[0], qkv[1], qkv[2]


class ClipTextEncoder(nn.Module):
    """CLIP's text tower from an open_clip ``CLIP``: tokens (n, 77) -> features (n, embed_dim), pooled at EOT.

    ``return_tokens=True`` also returns every token's projected feature (n, 77, embed_dim) for models that attend
    over words. ``freeze()`` stops gradients and keeps the tower in eval mode (NEXT, DMPT use a frozen text encoder).
    """

    def __init__(self, clip: Any) -> None:  # open_clip's CLIP, reached by attribute
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.attn_mask: torch.Tensor
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.out_dim: int = (
            clip.text_projection.shape[1]
            if isinstance(clip.text_projection, torch.Tensor)
            else clip.text_projection.out_features
        )
        self.frozen = False

    def freeze(self) -> ClipTextEncoder:
        self.frozen = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> ClipTextEncoder:
        return super().train(mode and not self.frozen)

    def forward(self, tokens: torch.Tensor, return_tokens: bool = False):
        """tokens (n, L) int64 from ``reidtrain.data.text.tokenize_captions`` -> (n, D) [and (n, L, D)]."""
        from reidtrain.data.text import eot_positions

        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (n, L, width)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)  # (n, L, width)
        proj = self.text_projection
        x = x @ proj if isinstance(proj, torch.Tensor) else proj(x)  # (n, L, D)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_positions(tokens)]  # (n, D)
        return (pooled, x) if return_tokens else pooled

"""Train and eval transforms for an aligned RGB/NIR/TIR triplet and its foreground mask.

The recipe is the reference repos' (DeMo, MambaPro, TOP-ReID, IDEA): resize, horizontal flip 0.5, pad 10 + random
crop, normalise, random erasing 0.5. Two choices are made explicit here:

- Geometric transforms (resize, flip, pad + crop) are drawn ONCE per sample and applied identically to the three
  modalities and to the mask (the mask with nearest-neighbour resizing), so the mask stays aligned with every modality
  (``geometry="shared"``, the default: the triplets are pixel-aligned, and the token mask and any patch-to-patch
  cross-modal pairing stay true). ``geometry="per_modality"`` draws flip and crop for each modality on its own, as the
  DeMo and MambaPro code does (torchvision's transform applied to each image separately); the mask then follows RGB.
- Random erasing is photometric and drawn INDEPENDENTLY per modality (whether to erase, and where), as the reference
  repos apply ``RandomErasing`` to each modality's tensor separately. It never changes the mask: the mask says where
  the object is, not what is visible.

The patch token mask (``reidschemas.tokens``) is recomputed from the augmented mask, so it matches the patches the
ViT actually sees. All modalities go through each op as one (3, 3, H, W) batch; no PIL, no per-modality resize.

Two ways to run the training transform, with the same random draws and the same result:

- per sample, :class:`TrainTransform` on (3, H, W, 3) uint8 numpy arrays (the reference);
- per batch, :class:`BatchTrainTransform` on (B, 3, 3, H, W) uint8 tensors on any device (the trainer's path: the
  DataLoader workers only decode and draw, ``TrainTransform.draw``; flip, pad-crop, normalisation, erasing and the
  token mask run once for the whole batch where the model runs). Given the same draws both give the same tensors,
  for every recipe option (pixel statistics, ``geometry``, ``erase_value`` incl. ``"random"``: the erasing noise is
  part of the draws, drawn in the worker from the sample's generator exactly where ``__call__`` draws it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from reidschemas.tokens import patch_grid, token_fractions, token_mask
from reidtrain.data.normalize import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    from reidtrain.recipes import TrainRecipe

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DRAW_SIZE",
    "AugmentedTriplet",
    "BatchTrainTransform",
    "Draws",
    "EvalTransform",
    "Geometry",
    "TrainTransform",
    "train_transform",
]

GeometryMode = Literal["shared", "per_modality"]

DRAW_SIZE = 3 * 3 + 3 * 4
"""Integers of one sample's draws (``TrainTransform.draw``): (flip, top, left) of each modality (rgb, nir, tir; the
same three under ``geometry="shared"``), then (top, left, h, w) of each modality's erased box (h = w = 0: none)."""


class Draws(NamedTuple):
    """Every random draw of one sample (``TrainTransform.draw``), for ``BatchTrainTransform``."""

    values: torch.Tensor  # (DRAW_SIZE,) int64: geometry per modality, then the erased boxes
    noise: torch.Tensor  # (n,) float32: erase_value="random"'s fill of the boxes in turn, each (3, h, w) row-major


class AugmentedTriplet(TypedDict):
    """One transformed sample; every value is a tensor, so the default ``collate_fn`` stacks a batch of them."""

    images: torch.Tensor  # (3 modalities, 3 channels, H', W') float32, normalised
    mask: torch.Tensor  # (H', W') bool foreground, aligned with every modality
    token_fraction: torch.Tensor  # (rows, cols) float32 foreground fraction under each patch
    token_mask: torch.Tensor  # (rows, cols) bool, token_fraction >= threshold
    has_mask: torch.Tensor  # () bool; False when no mask was given (mask, token_* are then all False / 0)


@dataclass(frozen=True)
class Geometry:
    """The geometric draw shared by the modalities and the mask: flip, then crop at (top, left) of the padded image."""

    flip: bool
    top: int  # in [0, 2 * pad]
    left: int  # in [0, 2 * pad]


def _check_input(images: np.ndarray, mask: np.ndarray | None) -> None:
    if images.ndim != 4 or images.shape[0] != 3 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (3, H, W, 3) uint8 (rgb, nir, tir); got {images.shape} {images.dtype}")
    if mask is not None and mask.shape != images.shape[1:3]:
        raise ValueError(f"mask shape {mask.shape} does not match images {images.shape[1:3]}")


class _TripletTransform:
    """What the train and eval transforms share: resize, normalisation and the token mask."""

    def __init__(
        self,
        size: tuple[int, int],
        patch: int,
        stride: int,
        token_threshold: float,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        self.size = (int(size[0]), int(size[1]))  # (H', W')
        self.grid = patch_grid(*self.size, patch, stride)  # (rows, cols); raises when the patch does not fit
        self.patch, self.stride, self.token_threshold = patch, stride, token_threshold
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def _to_tensors(self, images: np.ndarray, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (3, H, W, 3) + mask -> float (3, 3, H', W') in [0, 1] and bool (H', W'), resized to ``size``."""
        _check_input(images, mask)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)  # (3, 3, H, W)
        m = torch.zeros(images.shape[1:3], dtype=torch.bool) if mask is None else torch.from_numpy(mask.astype(bool))
        if tuple(x.shape[-2:]) != self.size:
            # Bilinear with antialiasing (torchvision's Resize on tensors); nearest-exact keeps the mask binary
            # and, unlike legacy "nearest", samples pixel centres, so it agrees with the image's geometry.
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
            m = F.interpolate(m[None, None].float(), size=self.size, mode="nearest-exact")[0, 0].bool()
        return x, m  # (3, 3, H', W'), (H', W')

    def _finish(self, x: torch.Tensor, m: torch.Tensor, has_mask: bool) -> AugmentedTriplet:
        """Normalise a [0, 1] triplet and derive the token mask from the (augmented) mask."""
        images = (x - self.mean) / self.std  # (3, 3, H', W')
        if has_mask:
            fractions = token_fractions(m.numpy(), self.patch, self.stride)  # (rows, cols)
        else:
            fractions = np.zeros(self.grid, dtype=np.float32)
        return AugmentedTriplet(
            images=images,
            mask=m,
            token_fraction=torch.from_numpy(fractions),
            token_mask=torch.from_numpy(token_mask(fractions, self.token_threshold)),
            has_mask=torch.tensor(has_mask),
        )


class EvalTransform(_TripletTransform):
    """Resize + normalise; the token mask comes from the resized mask. Deterministic."""

    def __init__(
        self,
        size: tuple[int, int] = (256, 128),
        patch: int = 16,
        stride: int = 16,
        token_threshold: float = 0.5,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        super().__init__(size, patch, stride, token_threshold, mean, std)

    def __call__(self, images: np.ndarray, mask: np.ndarray | None = None) -> AugmentedTriplet:
        """(3, H, W, 3) uint8 (rgb, nir, tir) + optional (H, W) bool mask -> :class:`AugmentedTriplet`."""
        x, m = self._to_tensors(images, mask)
        return self._finish(x, m, mask is not None)


class TrainTransform(_TripletTransform):
    """Resize, flip, pad + random crop (shared, or per modality), normalise, random erasing (per modality).

    Randomness comes from ``generator`` (or ``seed``) given to :meth:`__call__`; with neither, from torch's global
    RNG, which DataLoader seeds differently in every worker. Geometry is drawn before erasing, so the same seed gives
    the same geometry whatever ``erase_p`` is.

    Erasing follows ``torchvision.transforms.RandomErasing`` (same scale, ratio and 10-attempt rectangle search) on the
    normalised tensor, all channels of one modality; ``erase_value`` 0.0 fills with the dataset mean, ``"random"``
    with standard normal noise (timm's ``mode="pixel"``).
    """

    def __init__(
        self,
        size: tuple[int, int] = (256, 128),
        flip_p: float = 0.5,
        pad: int = 10,
        erase_p: float = 0.5,
        erase_scale: tuple[float, float] = (0.02, 0.33),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
        erase_value: float | str = 0.0,
        patch: int = 16,
        stride: int = 16,
        token_threshold: float = 0.5,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        geometry: GeometryMode = "shared",
    ) -> None:
        super().__init__(size, patch, stride, token_threshold, mean, std)
        if geometry not in ("shared", "per_modality"):
            raise ValueError(f"geometry must be 'shared' or 'per_modality', not {geometry!r}")
        self.geometry: GeometryMode = geometry
        if pad < 0 or not 0 <= flip_p <= 1 or not 0 <= erase_p <= 1:
            raise ValueError("need pad >= 0 and probabilities in [0, 1]")
        if isinstance(erase_value, str) and erase_value != "random":
            raise ValueError(f"erase_value is a float or 'random', not {erase_value!r}")
        self.flip_p, self.pad, self.erase_p = flip_p, pad, erase_p
        self.erase_scale, self.erase_ratio, self.erase_value = erase_scale, erase_ratio, erase_value

    def sample_geometry(self, generator: torch.Generator | None = None) -> Geometry:
        """Draw the shared flip and crop offsets (3 draws from ``generator``)."""
        flip = bool(torch.rand((), generator=generator) < self.flip_p)
        top = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
        left = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
        return Geometry(flip, top, left)

    def apply_geometry(self, x: torch.Tensor, m: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip and pad + crop (3, 3, H, W) images (padded with 0 = black) and the (H, W) mask (padded with False)."""
        if geometry.flip:
            x, m = x.flip(-1), m.flip(-1)
        if self.pad:
            h, w = m.shape
            p = self.pad
            x = F.pad(x, (p, p, p, p))[..., geometry.top : geometry.top + h, geometry.left : geometry.left + w]
            m = F.pad(m, (p, p, p, p))[geometry.top : geometry.top + h, geometry.left : geometry.left + w]
        return x.contiguous(), m.contiguous()

    def _erase_box(
        self, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[int, int, int, int] | None:
        """torchvision ``RandomErasing.get_params``: (top, left, h, w) of the box, or None after 10 failed tries."""
        area = height * width
        log_ratio = torch.log(torch.tensor(self.erase_ratio))
        for _ in range(10):
            erase_area = area * float(torch.empty(()).uniform_(*self.erase_scale, generator=generator))
            aspect = math.exp(
                float(torch.empty(()).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator))
            )
            h = round(math.sqrt(erase_area * aspect))
            w = round(math.sqrt(erase_area / aspect))
            if not (h < height and w < width):
                continue
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
        return None

    def erase(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random erasing on normalised (3, 3, H, W) images, drawn independently for each modality (in place)."""
        height, width = images.shape[-2:]
        for modality in range(images.shape[0]):
            if not torch.rand((), generator=generator) < self.erase_p:
                continue
            box = self._erase_box(height, width, generator)
            if box is None:
                continue
            top, left, h, w = box
            region = images[modality, :, top : top + h, left : left + w]  # (3, h, w) view
            if self.erase_value == "random":
                region.copy_(torch.randn(region.shape, generator=generator))
            else:
                region.fill_(float(self.erase_value))
        return images

    def draw(self, generator: torch.Generator | None = None) -> Draws:
        """Every random draw of one sample, in the order :meth:`__call__` makes them (the erasing noise included).

        So ``BatchTrainTransform`` given these draws computes what ``__call__`` computes from the same generator state.
        """
        if self.geometry == "shared":
            geometries = [self.sample_geometry(generator)] * 3
        else:  # rgb, nir, tir in turn
            geometries = [self.sample_geometry(generator) for _ in range(3)]
        values = [v for g in geometries for v in (int(g.flip), g.top, g.left)]
        noise: list[torch.Tensor] = []
        for _ in range(3):  # as erase(): whether to erase this modality, where, then (for "random") the fill
            box = None
            if torch.rand((), generator=generator) < self.erase_p:
                box = self._erase_box(*self.size, generator)
            values.extend(box if box is not None else (0, 0, 0, 0))
            if box is not None and self.erase_value == "random":
                noise.append(torch.randn((3, box[2], box[3]), generator=generator).flatten())
        fill = torch.cat(noise) if noise else torch.zeros(0)
        return Draws(torch.tensor(values, dtype=torch.int64), fill)

    def __call__(
        self,
        images: np.ndarray,
        mask: np.ndarray | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> AugmentedTriplet:
        """(3, H, W, 3) uint8 (rgb, nir, tir) + optional (H, W) bool mask -> :class:`AugmentedTriplet`.

        ``seed`` (when given, and no ``generator``) seeds a fresh generator for this call.
        """
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        x, m = self._to_tensors(images, mask)  # (3, 3, H', W'), (H', W')
        if self.geometry == "shared":
            x, m = self.apply_geometry(x, m, self.sample_geometry(generator))
        else:  # one draw per modality (rgb, nir, tir in turn); the mask follows rgb's
            moved = [self.apply_geometry(x[i : i + 1], m, self.sample_geometry(generator)) for i in range(len(x))]
            x, m = torch.cat([xi for xi, _ in moved]), moved[0][1]
        out = self._finish(x, m, mask is not None)
        self.erase(out["images"], generator)  # after the token mask: erasing never touches the mask
        return out


def train_transform(recipe: TrainRecipe) -> TrainTransform:
    """The recipe's train transform: image size, normalisation, flip / pad / erasing and their options."""
    return TrainTransform(
        size=recipe.image_size,
        flip_p=recipe.augment.flip_p,
        pad=recipe.augment.pad,
        erase_p=recipe.augment.erase_p,
        erase_value="random" if recipe.augment.erase_fill == "noise" else 0.0,
        mean=recipe.pixel_mean,
        std=recipe.pixel_std,
        geometry=recipe.augment.geometry,
    )


class BatchTrainTransform:
    """:class:`TrainTransform` for a whole batch, on the batch's device, from each sample's ``TrainTransform.draw``.

    Input: uint8 images (B, 3, 3, H, W) (modality, channel), bool masks (B, H, W) (all False where ``has_mask`` is
    False; None when the model reads no mask: the mask outputs are then all False), draws (B, ``DRAW_SIZE``) int64
    (the stacked ``Draws.values``) and, for ``erase_value="random"``, noise (n,) float32 (the samples'
    ``Draws.noise`` concatenated in batch order). Flip and pad-crop are one pad and one gather (on uint8 when no
    resize is needed; each modality its own index, so ``geometry="per_modality"`` costs the same; the mask follows
    rgb's, as in ``TrainTransform``), erasing one masked fill (or one masked scatter of the noise), the token
    fractions one pooling: a handful of kernels whatever B is. With the same draws the output equals
    ``TrainTransform`` sample by sample (tested), so both paths share one distribution.
    """

    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform

    def __call__(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None,
        has_mask: torch.Tensor,
        draws: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """-> ``images`` (B, 3, 3, H', W') float32 normalised, ``mask`` (B, H', W') bool, ``token_fraction`` and
        ``token_mask`` (B, rows, cols), ``has_mask`` (B,) bool: a collated :class:`AugmentedTriplet`."""
        t = self.transform
        b = images.shape[0]
        if images.dtype != torch.uint8 or images.dim() != 5 or tuple(images.shape[1:3]) != (3, 3):
            raise ValueError(f"images must be (B, 3, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        device = images.device
        if mask is None:
            mask = torch.zeros((b, *images.shape[-2:]), dtype=torch.bool, device=device)
        if tuple(mask.shape) != (b, *images.shape[-2:]) or tuple(draws.shape) != (b, DRAW_SIZE):
            raise ValueError(f"mask {tuple(mask.shape)} / draws {tuple(draws.shape)} do not fit images {images.shape}")
        draws = draws.to(device)
        x: torch.Tensor = images
        m = mask.to(device).bool()
        if tuple(images.shape[-2:]) != t.size:  # as TrainTransform._to_tensors: float, antialiased bilinear
            flat = images.flatten(0, 1).float().div_(255.0)  # (B * 3, 3, H, W)
            x = F.interpolate(flat, size=t.size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
            x = x.view(b, 3, 3, *t.size)
            m = F.interpolate(m[:, None].float(), size=t.size, mode="nearest-exact")[:, 0].bool()
        x, m = self._geometry(x, m, draws[:, :9].view(b, 3, 3))
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = x.sub_(t.mean.to(device)).div_(t.std.to(device))  # (B, 3, 3, H', W'), in place: the same values
        boxes = draws[:, 9:].view(b, 3, 4)
        erased = self._erased(boxes, *t.size)  # (B, 3, 1, H', W')
        if t.erase_value == "random":
            needed = int((boxes[..., 2] * boxes[..., 3]).sum()) * 3
            if noise is None or tuple(noise.shape) != (needed,):
                got = "none" if noise is None else tuple(noise.shape)
                raise ValueError(f"erase_value='random' needs the draws' noise, ({needed},) values; got {got}")
            # Boxes in (sample, modality, channel, row, col) order: the order the draws concatenate the noise in.
            x.masked_scatter_(erased.expand_as(x), noise.to(device, x.dtype))
        else:
            x.masked_fill_(erased, float(t.erase_value))
        m = m & has_mask.to(device).bool().view(b, 1, 1)
        # Integer patch sums (exact in float32), divided in float64 as reidschemas.tokens.token_fractions does.
        sums = F.avg_pool2d(m[:, None].float(), t.patch, t.stride, divisor_override=1)[:, 0]  # (B, rows, cols)
        fractions = (sums.double() / float(t.patch * t.patch)).float()
        return {
            "images": x,
            "mask": m,
            "token_fraction": fractions,
            "token_mask": fractions >= t.token_threshold,
            "has_mask": has_mask.to(device).bool(),
        }

    def _geometry(self, x: torch.Tensor, m: torch.Tensor, geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip, then crop at (top, left) of the image padded by ``pad`` (zeros / False), per sample and modality
        (``geometry`` (B, 3, 3): (flip, top, left) of rgb, nir, tir): one pad and one ``gather`` over the flattened
        padded pixels (the flip folded into the column index). The mask takes rgb's geometry."""
        b, h, w = m.shape
        p = self.transform.pad
        hp, wp = h + 2 * p, w + 2 * p
        flip, top, left = geometry[..., 0].bool(), geometry[..., 1], geometry[..., 2]  # (B, 3) each
        rows = torch.arange(h, device=x.device) + top.view(b, 3, 1)  # (B, 3, H) rows of the padded image
        cols = torch.arange(w, device=x.device) + left.view(b, 3, 1)  # (B, 3, W) columns of the flipped, padded one
        cols = torch.where(flip.view(b, 3, 1), wp - 1 - cols, cols)  # flipping the padded image flips the pad too
        index = (rows.view(b, 3, h, 1) * wp + cols.view(b, 3, 1, w)).view(b, 3, 1, h * w)  # (B, 3, 1, H * W)
        padded = F.pad(x.reshape(b * 3, 3, h, w), (p, p, p, p)).view(b, 3, 3, hp * wp)  # (B, 3, 3, Hp * Wp)
        out = padded.gather(3, index.expand(b, 3, 3, h * w)).view(b, 3, 3, h, w)
        padded_mask = F.pad(m.view(b, 1, h, w), (p, p, p, p)).view(b, hp * wp)
        return out, padded_mask.gather(1, index[:, 0, 0]).view(b, h, w)

    @staticmethod
    def _erased(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Boxes (B, 3, 4) of (top, left, h, w) -> (B, 3, 1, H, W) bool, True inside each modality's box."""
        ys = torch.arange(height, device=boxes.device).view(1, 1, height, 1)
        xs = torch.arange(width, device=boxes.device).view(1, 1, 1, width)
        top, left, h, w = (boxes[..., i].view(*boxes.shape[:2], 1, 1) for i in range(4))
        rows = (ys >= top) & (ys < top + h)  # (B, 3, H, 1)
        cols = (xs >= left) & (xs < left + w)  # (B, 3, 1, W)
        return (rows & cols).unsqueeze(2)  # (B, 3, 1, H, W)

"""Use a trained model from Python: ``model = reidtrain.load("runs/x/best.pt")``, then ``model.embed(rgb, nir, tir)``.

:func:`load` reads a self-describing checkpoint (``reidtrain.evaluate.load_checkpoint``) and returns a
:class:`ReidModel`: the network in eval mode on its device, the eval transform of its run (resize to the recipe's
image size, CLIP normalisation, the token mask from the mask), what the network reads besides the images, and its
cameras. :meth:`ReidModel.embed` turns one triplet or a batch (paths, PIL images or uint8 arrays) into L2-normalised
features in the model's retrieval space, through the same forward pass as ``reidtrain eval``
(``reidtrain.evaluate.embed_batch``): on the shards' own images it gives ``eval``'s features exactly.

Cameras (SIE). A model trained with camera embeddings adds the embedding of the triplet's camera. ``camera`` is a
camera id as the dataset names it (``SampleRecord.camid``); when it is not given, or was not seen in training, the
first camera's embedding is used (index 0, :data:`DEFAULT_CAMERA_INDEX`), as the DeMo code does where it has no
camera (``DeMo.flops`` passes ``cam_label=0``; its ViT always adds a camera vector, it has no "no camera" case).
Which camera was used is printed, never chosen silently.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from reidtrain.batch import CAPTION_KEYS, MODALITY_COLUMNS, model_caption_keys, model_inputs
from reidtrain.data.augment import EvalTransform
from reidtrain.data.normalize import CLIP_MEAN, CLIP_STD
from reidtrain.data.shards import INDEX_NAME, ShardDataset, ShardIndex
from reidtrain.evaluate import embed_batch, load_checkpoint

__all__ = ["DEFAULT_CAMERA_INDEX", "ImageLike", "ReidModel", "load"]

DEFAULT_CAMERA_INDEX = 0
"""The camera embedding used without a known camera: the first training camera's, as DeMo's code (see above)."""

ImageLike = str | Path | Image.Image | np.ndarray
"""An image file's path, a PIL image, or a uint8 array (H, W, 3) or (H, W) (grey, expanded to three channels)."""
Caption = str | Mapping[str, str]
"""The fused triplet caption, or {"rgb", "nir", "tir", "fused"} -> caption (the keys the model reads)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _image(value: ImageLike, what: str) -> np.ndarray:
    """One image -> (H, W, 3) uint8, as ``reidprep`` reads dataset files (grey expanded to RGB)."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {path} does not exist")
        try:
            with Image.open(path) as opened:
                return np.array(opened.convert("RGB"))
        except UnidentifiedImageError:
            raise ValueError(f"{what}: {path} is not an image PIL can read") from None
    if isinstance(value, Image.Image):
        return np.array(value.convert("RGB"))
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            raise ValueError(
                f"{what}: a {value.dtype} array; pass uint8 pixels in 0-255 (e.g. (x * 255).astype('uint8'))"
            )
        if value.ndim == 2 or (value.ndim == 3 and value.shape[2] == 1):
            return np.repeat(value.reshape(*value.shape[:2], 1), 3, axis=2)
        if value.ndim == 3 and value.shape[2] == 3:
            return value
        raise ValueError(f"{what}: array of shape {value.shape}; pass (H, W, 3) or (H, W) uint8")
    raise TypeError(f"{what}: {type(value).__name__} is not an image; pass a path, a PIL image or a uint8 array")


def _mask(value: ImageLike, what: str) -> np.ndarray:
    """A foreground mask -> (H, W) bool: a file or PIL image (non-zero is foreground) or a bool / uint8 array."""
    if isinstance(value, (str, Path, Image.Image)):
        rgb = _image(value, what)
        return rgb.max(axis=2) > 0
    if isinstance(value, np.ndarray):
        if value.ndim == 3 and value.shape[2] == 1:
            value = value[..., 0]
        if value.ndim != 2:
            raise ValueError(f"{what}: array of shape {value.shape}; pass an (H, W) bool or uint8 mask")
        return value.astype(bool)
    raise TypeError(f"{what}: {type(value).__name__} is not a mask; pass a path, a PIL image or an (H, W) array")


def _is_batch(value: object) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 4)


@dataclass
class ReidModel:
    """A trained model ready to embed triplets: what :func:`load` returns."""

    network: nn.Module  # in eval mode, on ``device``
    config: dict[str, Any]  # the run's configuration (config.json's content), recorded in the checkpoint
    checkpoint: Path
    epoch: int | None
    device: torch.device
    transform: EvalTransform  # resize to the recipe's image size, CLIP normalisation, token mask
    inputs: tuple[str, ...]  # what the network reads besides the images: "token_mask", "captions"
    caption_keys: tuple[str, ...]  # the captions it reads, when "captions" is in inputs
    camera_ids: tuple[int, ...] | None  # camera index -> camera id; None when the checkpoint does not record them
    echo: Callable[[str], None] = _stderr

    @property
    def name(self) -> str:
        return str(self.config["model"])

    @property
    def uses_cameras(self) -> bool:
        """Whether the network adds a camera embedding (SIE)."""
        return getattr(self.network, "sie_embed", None) is not None

    def needs(self) -> str:
        """What :meth:`embed` must be given besides the three images, in words."""
        parts = ["rgb, nir, tir images"]
        if "token_mask" in self.inputs:
            parts.append("mask= (the triplet's foreground mask)")
        if "captions" in self.inputs:
            keys = self.caption_keys
            parts.append("caption= (the fused caption)" if keys == ("fused",) else f"caption={{{', '.join(keys)}}}")
        if self.uses_cameras:
            known = ", ".join(map(str, self.camera_ids)) if self.camera_ids is not None else "not recorded"
            parts.append(f"camera= optional (cameras {known}; default: index {DEFAULT_CAMERA_INDEX})")
        return "; ".join(parts)

    def __repr__(self) -> str:
        height, width = self.transform.size
        return (
            f"ReidModel({self.name}, backbone {self.config.get('backbone')}, {self.checkpoint} epoch {self.epoch}, "
            f"{height}x{width}, device {self.device}; needs {self.needs()})"
        )

    # --- cameras ---------------------------------------------------------------------------------------------------

    def camera_index(self, camera: int | None) -> tuple[int, str | None]:
        """(the SIE index of ``camera``, a note when the default was used)."""
        if not self.uses_cameras:
            return DEFAULT_CAMERA_INDEX, None  # the network ignores cameras
        if self.camera_ids is None:
            first = "index 0"
            why = "this checkpoint does not record its camera ids (trained before they were recorded)"
        else:
            first = f"camera {self.camera_ids[DEFAULT_CAMERA_INDEX]}'s (index {DEFAULT_CAMERA_INDEX})"
            if camera is not None and int(camera) in self.camera_ids:
                return self.camera_ids.index(int(camera)), None
            why = "no camera given" if camera is None else f"camera {camera} was not seen in training"
        return DEFAULT_CAMERA_INDEX, f"{why}: using {first} embedding, as DeMo's code does without a camera"

    # --- embedding -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(
        self,
        rgb: ImageLike | Sequence[ImageLike],
        nir: ImageLike | Sequence[ImageLike],
        tir: ImageLike | Sequence[ImageLike],
        mask: ImageLike | Sequence[ImageLike] | None = None,
        caption: Caption | Sequence[Caption] | None = None,
        camera: int | Sequence[int | None] | None = None,
        missing: Sequence[str] = (),
        batch_size: int = 64,
    ) -> np.ndarray:
        """Features of one triplet, (D,), or of a batch (lists of equal length, or (N, H, W, 3) arrays), (N, D):
        float32, L2-normalised, in the model's retrieval space (cosine similarity = dot product).

        The three images of a triplet must share one size (as the shards store them); ``mask`` has that size.
        ``missing`` zeroes modalities as ``reidtrain eval --missing`` does. A model that reads a mask or captions
        raises ValueError when they are not given.
        """
        single = not _is_batch(rgb)
        rgbs, nirs, tirs = (self._images(x, single) for x in (rgb, nir, tir))
        n = len(rgbs)
        if len(nirs) != n or len(tirs) != n:
            raise ValueError(f"rgb, nir and tir hold {n}, {len(nirs)} and {len(tirs)} images: pass one per triplet")
        masks = self._per_triplet(mask, n, single, "mask")
        captions = self._per_triplet(caption, n, single, "caption")
        cameras = self._per_triplet(camera, n, single, "camera")
        if "token_mask" in self.inputs and any(m is None for m in masks):
            raise ValueError(
                f"{self.name} reads the triplet's foreground mask (STMI's SFM): pass mask= (a path, PIL image or "
                "(H, W) bool array per triplet), e.g. the mask reidprep masks wrote"
            )
        texts = [self._caption(c) for c in captions] if "captions" in self.inputs else []
        indices: list[int] = []
        notes: dict[str, int] = {}  # a default camera's note -> triplets it applied to
        for cam in cameras:
            index, note = self.camera_index(cam)
            indices.append(index)
            if note is not None:
                notes[note] = notes.get(note, 0) + 1
        for note, count in notes.items():
            self.echo(f"reidtrain: {note}" + (f" ({count} of {n} triplets)" if n > 1 else ""))
        feats = []
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            items = [self._item(i, rgbs[i], nirs[i], tirs[i], masks[i]) for i in range(start, stop)]
            batch: dict[str, Any] = {
                "images": torch.stack([it["images"] for it in items]),  # (B, 3, 3, H, W)
                "cam_index": torch.tensor(indices[start:stop], dtype=torch.long),  # (B,)
                "token_mask": torch.stack([it["token_mask"].flatten() for it in items]),  # (B, N) bool
            }
            if texts:
                batch["captions"] = {key: [t[key] for t in texts[start:stop]] for key in CAPTION_KEYS}
            feats.append(embed_batch(self.network, batch, self.inputs, self.device, missing))  # (B, D)
        out = torch.cat(feats).numpy()  # (N, D) float32
        return out[0] if single else out

    @staticmethod
    def _images(value: ImageLike | Sequence[ImageLike], single: bool) -> list[ImageLike]:
        return [cast(ImageLike, value)] if single else list(cast(Sequence[ImageLike], value))

    def _per_triplet(self, value: Any, n: int, single: bool, what: str) -> list[Any]:
        """``value`` as one entry per triplet: None for all, the single triplet's value, or a batch's list (a camera
        id alone is every triplet's camera)."""
        if value is None:
            return [None] * n
        if single or (what == "camera" and isinstance(value, (int, np.integer))):
            return [value] * n
        if not _is_batch(value) or len(value) != n:
            raise ValueError(f"{what}: pass one per triplet ({n}) as a list, or None")
        return list(value)

    def _caption(self, caption: Caption | None) -> dict[str, str]:
        """The captions of one triplet, every key the network reads present; ValueError naming what is missing."""
        keys = self.caption_keys
        if isinstance(caption, str):
            if keys != ("fused",):
                raise ValueError(
                    f"{self.name} reads one caption per modality: pass caption={{'rgb': ..., 'nir': ..., 'tir': ...}}"
                )
            caption = {"fused": caption}
        wanted = "the fused caption: caption='...'" if keys == ("fused",) else f"caption={{{', '.join(keys)}}}"
        if caption is None:
            raise ValueError(f"{self.name} reads captions: pass {wanted} (the captions reidprep captions wrote)")
        if not isinstance(caption, Mapping):
            raise TypeError(f"caption: {type(caption).__name__}; pass a string or a mapping of captions")
        lacking = [key for key in keys if not caption.get(key)]
        if lacking:
            raise ValueError(f"{self.name} reads the captions {', '.join(keys)}; missing: {', '.join(lacking)}")
        return {key: str(caption.get(key) or "") for key in CAPTION_KEYS}

    def _item(self, i: int, rgb: ImageLike, nir: ImageLike, tir: ImageLike, mask: ImageLike | None) -> Any:
        """One triplet through the eval transform."""
        arrays = [
            _image(x, f"{m} image of triplet {i}") for m, x in zip(MODALITY_COLUMNS, (rgb, nir, tir), strict=True)
        ]
        sizes = {a.shape[:2] for a in arrays}
        if len(sizes) > 1:
            shapes = ", ".join(f"{m} {a.shape[0]}x{a.shape[1]}" for m, a in zip(MODALITY_COLUMNS, arrays, strict=True))
            raise ValueError(f"triplet {i}: the three images differ in size ({shapes}); resize them to one size")
        m = None if mask is None else _mask(mask, f"mask of triplet {i}")
        if m is not None and m.shape != arrays[0].shape[:2]:
            raise ValueError(
                f"mask of triplet {i} is {m.shape[0]}x{m.shape[1]}, its images {arrays[0].shape[0]}x"
                f"{arrays[0].shape[1]}: pass the mask at the images' size"
            )
        return self.transform(np.stack(arrays), m)  # images (3, 3, H', W'), token_mask (rows, cols)


def _camera_ids(config: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, str]:
    """(camera index -> camera id, where that came from): config.json's ``camera_ids``, else the run's shards folder
    when it is still there and has as many cameras as the model (the trainer numbered that folder's sorted camids)."""
    if config.get("camera_ids") is not None:
        return tuple(int(c) for c in config["camera_ids"]), "the checkpoint"
    shards = config.get("shards")
    if shards and (Path(shards) / INDEX_NAME).is_file():
        index = ShardIndex.load(Path(shards))
        camids = sorted({int(c) for c in ShardDataset(index.root, tuple(index.rows_per_split), columns=()).camids})
        if len(camids) == int(config.get("num_cameras", -1)):
            return tuple(camids), f"the run's shards folder {shards} (the checkpoint predates recorded camera ids)"
    return None, "nowhere: the checkpoint predates recorded camera ids and its shards folder is gone"


def load(
    checkpoint: str | Path,
    device: str | torch.device | None = None,
    echo: Callable[[str], None] | None = None,
) -> ReidModel:
    """A checkpoint of ``reidtrain fit`` (``best.pt``, ``last.pt`` or a copy anywhere) as a :class:`ReidModel`.

    ``device``: "cpu", "cuda", ... (None: cuda when available, else cpu; printed). ``echo``: where the lines saying
    what was loaded and chosen go (default: stderr).
    """
    say = echo if echo is not None else _stderr
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (a run folder holds best.pt and last.pt)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        say(f"reidtrain.load: device {device} ({'CUDA available' if device == 'cuda' else 'no CUDA'}; pass device=)")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda but CUDA is not available: pass device='cpu'")
    network, config, state = load_checkpoint(path)
    camera_ids, source = _camera_ids(config)
    network.to(dev).eval()
    recipe = config["recipe"]
    model = ReidModel(
        network=network,
        config=config,
        checkpoint=path,
        epoch=state.get("epoch"),
        device=dev,
        transform=EvalTransform(  # as reidtrain eval (evaluate.rank_gallery), with the recipe's normalisation
            size=tuple(recipe["image_size"]),
            mean=recipe.get("pixel_mean", CLIP_MEAN),
            std=recipe.get("pixel_std", CLIP_STD),
        ),
        inputs=model_inputs(network),
        caption_keys=model_caption_keys(network),
        camera_ids=camera_ids,
        echo=say,
    )
    say(f"reidtrain.load: {model!r}")
    if model.uses_cameras:
        say(f"reidtrain.load: camera ids from {source}")
    return model

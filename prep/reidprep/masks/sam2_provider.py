"""The ``sam2`` mask provider: SAM 2 / 2.1 prompted with the crop itself (weights from a local file).

ReID crops are tight boxes around one object, so the prompt is derived from the crop's own size:

- ``box``: one XYXY box covering the crop minus ``box_margin`` of its width (left and right) and of its height (top
  and bottom), in original pixels.
- ``box+center``: the same box plus one positive point at the crop centre (helps when the box alone makes SAM pick
  the background or a part).

SAM returns three candidate masks per prompt (``multimask_output=True``); the one with the highest predicted IoU is
kept, and that predicted IoU, clipped to [0, 1], is the score. Masks come back bool at the input image's size.

Two paths give the same masks: ``predict`` batches the image encoder (``set_image_batch`` on ``batch_size`` images,
then ``predict_batch`` with one prompt per image); ``predict_one_by_one`` is the plain per-image loop (``set_image``
+ ``predict``), kept as the reference and for ``bench/masks.py``.

``masks.sam2.model`` is ``tiny``/``small``/``base+``/``large`` (the configs shipped for ``masks.sam2.version``) or a
Hydra config name inside the sam2 package; ``masks.sam2.overrides`` go to ``build_sam2`` as extra Hydra overrides.
Hole/sprinkle post-processing stays off: it needs sam2's compiled ``_C`` extension, which the wheel lacks.
On CUDA, encoder and decoder run in one bf16 autocast context; on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from reidprep.masks.base import MaskPrediction, MaskProvider
from reidschemas import Modality
from reidschemas.config import Sam2Config
from reidschemas.digest import file_sha256

SHORT_NAMES = {"tiny": "t", "small": "s", "base+": "b+", "large": "l"}
"""``masks.sam2.model`` short names -> the suffix of the shipped ``sam2_hiera_*.yaml`` / ``sam2.1_hiera_*.yaml``."""


def shipped_configs() -> list[str]:
    """The model config names shipped in the installed sam2 package (``configs/sam2*/...yaml``)."""
    root = files("sam2") / "configs"
    return sorted(
        f"configs/{folder.name}/{item.name}"
        for folder in root.iterdir()
        if folder.is_dir() and folder.name in ("sam2", "sam2.1")
        for item in folder.iterdir()
        if item.name.endswith(".yaml")
    )


def resolve_config_name(model: str, version: str) -> str:
    """The Hydra config name for ``masks.sam2.model`` (a short name or a config name inside the sam2 package)."""
    if model in SHORT_NAMES:
        suffix = SHORT_NAMES[model]
        return (
            f"configs/sam2/sam2_hiera_{suffix}.yaml" if version == "2" else f"configs/sam2.1/sam2.1_hiera_{suffix}.yaml"
        )
    name = model if model.endswith(".yaml") else f"{model}.yaml"
    relative = PurePosixPath(name)
    if not relative.is_absolute() and ".." not in relative.parts and (files("sam2") / name).is_file():
        return name
    choices = ", ".join([*SHORT_NAMES, *shipped_configs()])
    if model.endswith(".yaml") and Path(model).expanduser().is_file():
        raise ValueError(
            f"masks.sam2.model={model!r} is a file on disk, but sam2 builds models from Hydra config names inside "
            f"the installed sam2 package, never from file paths. Use one of: {choices}; adjust it with "
            "masks.sam2.overrides (Hydra overrides such as 'model.image_size=512')."
        )
    raise ValueError(f"masks.sam2.model={model!r} is not a sam2 config. Choices: {choices}")


class Sam2Masker(MaskProvider):
    """SAM 2 prompted with the crop's box (and optionally its centre); the model is built once, in eval mode."""

    name = "sam2"

    def __init__(self, config: Sam2Config, device: str = "cuda", batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = config
        self.batch_size = batch_size
        self.device = torch.device(device)
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"the sam2 provider runs on cuda or cpu, got device {device!r}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "CUDA is not available: the sam2 mask provider runs on the GPU by default; pass --device cpu (slow)"
            )
        self.config_name = resolve_config_name(config.model, config.version)
        if config.checkpoint is None:
            raise ValueError("masks.sam2.checkpoint is not set: the sam2 provider needs a local checkpoint file")
        self.checkpoint = Path(config.checkpoint).expanduser()
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"SAM 2 checkpoint not found: {self.checkpoint} (config key masks.sam2.checkpoint)")
        self.checkpoint_sha256 = file_sha256(self.checkpoint)
        self._predictor = self._build()

    def _build(self) -> Any:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        overrides = list(self.config.overrides)
        try:
            model = build_sam2(
                self.config_name, None, device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=False
            )
        except Exception as exc:
            raise ValueError(
                f"sam2 could not build {self.config_name} with overrides {overrides} (masks.sam2.overrides): {exc}"
            ) from exc
        try:
            blob = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{self.checkpoint}: not a readable PyTorch checkpoint: {exc}") from exc
        if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
            found = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(f"{self.checkpoint}: expected a SAM 2 checkpoint {{'model': state_dict}}, found {found}")
        problems = _state_dict_mismatch(model.state_dict(), blob["model"])
        try:
            if problems:
                raise RuntimeError(problems)
            model.load_state_dict(blob["model"])
        except RuntimeError as exc:
            raise ValueError(
                f"checkpoint {self.checkpoint} does not fit the sam2 config {self.config_name} "
                f"(overrides {overrides}): {_first_lines(str(exc))}; check masks.sam2.model, masks.sam2.version "
                "(a SAM 2.1 checkpoint needs '2.1') and masks.sam2.overrides against the checkpoint"
            ) from exc
        model = model.to(self.device).eval()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            predictor = SAM2ImagePredictor(model, mask_threshold=0.0, max_hole_area=0.0, max_sprinkle_area=0.0)
        # The predictor hard-codes the feature sizes of a 1024-pixel model; derive them from the model's image size
        # (strides 4, 8, 16 of the three levels the decoder uses) so that other image sizes work too.
        side = model.image_size // model.backbone_stride
        predictor._bb_feat_sizes = [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]
        return predictor

    def identity(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "model": self.config_name,
            "checkpoint_sha256": self.checkpoint_sha256,
            "params": {
                "prompt": self.config.prompt,
                "box_margin": self.config.box_margin,
                "overrides": list(self.config.overrides),
                "dtype": "bf16-autocast" if self.device.type == "cuda" else "fp32",
            },
        }

    def predict(self, images: Sequence[np.ndarray], modality: Modality) -> list[MaskPrediction]:
        """Batched: the encoder sees ``batch_size`` images at once; prompts are decoded per image."""
        arrays = [_as_rgb(image) for image in images]
        out: list[MaskPrediction] = []
        with self._inference():
            for start in range(0, len(arrays), self.batch_size):
                chunk = arrays[start : start + self.batch_size]
                prompts = [self._prompt(*image.shape[:2]) for image in chunk]
                with_points = prompts[0][1] is not None
                self._predictor.set_image_batch(chunk)
                masks, ious, _ = self._predictor.predict_batch(
                    point_coords_batch=[points for _, points, _ in prompts] if with_points else None,
                    point_labels_batch=[labels for _, _, labels in prompts] if with_points else None,
                    box_batch=[box for box, _, _ in prompts],
                    multimask_output=True,
                )  # per image: masks (3, H, W) float 0/1, ious (3,)
                out.extend(_best(candidates, scores) for candidates, scores in zip(masks, ious, strict=True))
            self._predictor.reset_predictor()
        return out

    def predict_one_by_one(self, images: Sequence[np.ndarray], modality: Modality) -> list[MaskPrediction]:
        """The plain per-image loop (``set_image`` + ``predict``); same masks as ``predict``."""
        out: list[MaskPrediction] = []
        with self._inference():
            for image in images:
                array = _as_rgb(image)
                box, points, labels = self._prompt(*array.shape[:2])
                self._predictor.set_image(array)
                masks, ious, _ = self._predictor.predict(
                    point_coords=points, point_labels=labels, box=box, multimask_output=True
                )  # masks (3, H, W) float 0/1, ious (3,)
                out.append(_best(masks, ious))
            self._predictor.reset_predictor()
        return out

    def _prompt(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(box (4,) XYXY, points (1, 2) XY or None, labels (1,) or None), in original pixels."""
        dx, dy = self.config.box_margin * width, self.config.box_margin * height
        box = np.array([dx, dy, width - dx, height - dy], dtype=np.float32)
        if self.config.prompt == "box":
            return box, None, None
        return box, np.array([[width / 2, height / 2]], dtype=np.float32), np.ones(1, dtype=np.int32)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            yield


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8, contiguous; a (H, W) or (H, W, 1) grey image is repeated to three channels."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _state_dict_mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str:
    """A short description of missing, unexpected and differently shaped keys ('' when the checkpoint fits)."""

    def some(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:3]) + (f"{sep}..." if len(items) > 3 else "")

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key}: file {list(getattr(found[key], 'shape', []))} vs model {list(tensor.shape)}"
        for key, tensor in expected.items()
        if key in found and tuple(getattr(found[key], "shape", ())) != tuple(tensor.shape)
    ]
    parts = [
        f"{len(missing)} missing keys ({some(missing)})" if missing else "",
        f"{len(unexpected)} unexpected keys ({some(unexpected)})" if unexpected else "",
        f"{len(shapes)} shape mismatches ({some(shapes, '; ')})" if shapes else "",
    ]
    return "; ".join(part for part in parts if part)


def _first_lines(text: str, lines: int = 4, chars: int = 600) -> str:
    kept = " ".join(line.strip() for line in text.splitlines()[:lines])
    return kept if len(kept) <= chars else kept[:chars] + " ..."


def _best(masks: np.ndarray, ious: np.ndarray) -> MaskPrediction:
    """The candidate with the highest predicted IoU. masks: (3, H, W) float 0/1; ious: (3,)."""
    index = int(np.argmax(ious))
    return MaskPrediction(mask=masks[index] > 0.5, score=float(np.clip(ious[index], 0.0, 1.0)))

"""Training recipes as named configs: ``TrainRecipe`` (typed, validated) read from ``data/recipes/<name>.yaml``.

Each YAML file cites its source (paper section or the reference facts) in a comment; values not stated by a paper are
marked there as assumptions. ``load_recipe("demo-rgbnt201")`` returns the validated recipe; errors name the bad key
or list the available recipe names.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reidschemas.resources import data_root, read_text

__all__ = ["AugmentRecipe", "RecipeError", "TrainRecipe", "list_recipes", "load_recipe", "parse_recipe"]

RECIPE_FOLDER = "recipes"


class RecipeError(ValueError):
    """A recipe is missing, is not valid YAML, or does not validate (the message names the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentRecipe(_Section):
    """Train-time augmentation (the arguments of ``reidtrain.data.augment``'s transform)."""

    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="horizontal flip probability (shared by the modalities)")
    pad: int = Field(10, ge=0, description="zero padding before the random crop back to the image size, pixels")
    erase_p: float = Field(0.5, ge=0.0, le=1.0, description="random erasing probability, drawn per modality")


class TrainRecipe(_Section):
    """Optimizer, schedule, sampling, loss and augmentation settings of one training run."""

    description: str = Field("", description="one line: what the recipe reproduces")
    # optimizer
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer name (reidtrain.optim)")
    base_lr: float = Field(3.5e-4, gt=0.0, description="lr of the new (non-backbone) modules")
    backbone_lr: float = Field(5e-6, gt=0.0, description="lr of the backbone (pretrained CLIP/ViT)")
    weight_decay: float = Field(1e-4, ge=0.0, description="weight decay of weights")
    weight_decay_bias: float = Field(1e-4, ge=0.0, description="weight decay of biases")
    bias_lr_factor: float = Field(2.0, gt=0.0, description="bias lr = its group's lr times this")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (unused by Adam/AdamW)")
    # schedule (per epoch; reidtrain.optim.WarmupCosine)
    schedule: Literal["warmup_cosine"] = Field("warmup_cosine", description="lr schedule")
    epochs: int = Field(50, ge=1, description="training epochs")
    warmup_epochs: int = Field(10, ge=0, description="linear warmup epochs")
    warmup_factor: float = Field(0.1, gt=0.0, le=1.0, description="lr factor at the first warmup epoch")
    eta_min_factor: float = Field(0.001, ge=0.0, le=1.0, description="lr factor at the end of the cosine")
    # sampling (PK batches)
    ids_per_batch: int = Field(8, ge=2, description="P: identities per batch")
    instances_per_id: int = Field(8, ge=1, description="K: samples per identity; batch size = P * K")
    image_size: tuple[int, int] = Field((256, 128), description="(height, width) of every modality")
    # losses (reidtrain.losses.ReIDObjective)
    loss_weights: dict[Literal["id", "triplet"], float] = Field(
        default_factory=lambda: {"id": 1.0, "triplet": 1.0},  # type: ignore[arg-type]
        description="weight of each loss term",
    )
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="epsilon of the label-smoothed CE")
    triplet_margin: float | None = Field(None, ge=0.0, description="triplet margin; null = soft margin")
    augment: AugmentRecipe = Field(default_factory=AugmentRecipe, description="train-time augmentation")
    # model and numerics
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the model's builder (ablation switches, heads, experts, ...)",
    )
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this; null = off")
    amp: Literal["bf16", "fp16", "off"] = Field(
        "bf16", description="mixed precision on CUDA (fp16 uses a gradient scaler); CPU always trains in fp32"
    )

    @property
    def batch_size(self) -> int:
        """P * K."""
        return self.ids_per_batch * self.instances_per_id

    @model_validator(mode="after")
    def _check(self) -> TrainRecipe:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if min(self.image_size) < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if any(w < 0 for w in self.loss_weights.values()) or not any(self.loss_weights.values()):
            raise ValueError("loss_weights must be >= 0 with at least one > 0")
        return self


def list_recipes() -> list[str]:
    """Names of the shipped recipes (the YAML files under ``data/recipes/``), sorted."""
    folder = data_root().joinpath(RECIPE_FOLDER)
    if not folder.is_dir():
        return []
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def _describe(exc: ValidationError, name: str) -> RecipeError:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(recipe)"
        lines.append(f"key {key!r}: {error['msg']}")
    return RecipeError(f"recipe {name!r}: " + "; ".join(lines))


def parse_recipe(raw: Any, name: str = "<inline>") -> TrainRecipe:
    """Validate a mapping (e.g. parsed YAML) as a ``TrainRecipe``; errors name the bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {name!r}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return TrainRecipe.model_validate(raw)
    except ValidationError as exc:
        raise _describe(exc, name) from None


def load_recipe(name: str) -> TrainRecipe:
    """The shipped recipe ``name`` (file ``data/recipes/<name>.yaml``)."""
    available = list_recipes()
    if name not in available:
        raise RecipeError(f"unknown recipe {name!r}; available: {', '.join(available) or '(none)'}")
    text = read_text(f"{RECIPE_FOLDER}/{name}.yaml")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {name!r}: not valid YAML: {exc}") from exc
    return parse_recipe(raw, name)

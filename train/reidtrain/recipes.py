"""Training recipes: ``TrainRecipe``, the one typed config of what a run trains, read from YAML.

A recipe names its model and backbone, and holds every optimisation, sampling, loss and augmentation setting and the
model's ``model_options``. The shipped ones are ``data/recipes/<name>.yaml``; each cites its source (paper section or
the reference facts) in a comment and marks values not stated by a paper as assumptions. A recipe can also be any
YAML file (a copied and edited one). ``resolve_recipe`` is the one way a run's recipe is made: the recipe file <-
dotted overrides (``--set``) <- ``--model`` / ``--backbone``, validated once, with ``model_options`` checked against
the model's builder before anything is built. Errors name the bad key (``reidschemas.overrides``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from reidschemas.config import is_recipe_path
from reidschemas.overrides import ConfigError, apply_dotted, decode_utf8, describe, read_mapping
from reidschemas.resources import data_root, read_text
from reidtrain.data.normalize import CLIP_MEAN, CLIP_STD

__all__ = [
    "DEFAULT_RECIPE",
    "AugmentRecipe",
    "RecipeError",
    "TrainRecipe",
    "list_recipes",
    "load_recipe",
    "parse_recipe",
    "read_recipe",
    "resolve_recipe",
]

RECIPE_FOLDER = "recipes"
DEFAULT_RECIPE = "baseline-tiny-demo"  # when neither a recipe nor a model is given


class RecipeError(ConfigError):
    """A recipe is missing, is not valid YAML, does not validate, or does not fit its model (names the key)."""


class _Section(BaseModel):
    # strict: YAML's `true` is no epoch count and "yes" no boolean; ints are still accepted where floats belong
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class AugmentRecipe(_Section):
    """Train-time augmentation (the arguments of ``reidtrain.data.augment``'s transform)."""

    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="horizontal flip probability")
    pad: int = Field(10, ge=0, description="zero padding before the random crop back to the image size, pixels")
    erase_p: float = Field(0.5, ge=0.0, le=1.0, description="random erasing probability, drawn per modality")
    erase_fill: Literal["mean", "noise"] = Field(
        "mean",
        description="what an erased box holds: the dataset mean (0 after normalising) or per-pixel standard normal "
        "noise (timm RandomErasing mode='pixel', the DeMo/MambaPro code)",
    )
    geometry: Literal["shared", "per_modality"] = Field(
        "shared",
        description="flip and crop drawn once and applied to every modality and the mask (keeps them pixel-aligned), "
        "or drawn per modality as the DeMo/MambaPro code transforms each image on its own (the mask follows RGB)",
    )


class TrainRecipe(_Section):
    """Optimizer, schedule, sampling, loss and augmentation settings of one training run."""

    description: str = Field("", description="one line: what the recipe reproduces")
    # what is trained
    model: str = Field("baseline", description="registered model (reidtrain.models): baseline, stmi, next, ...")
    backbone: str = Field("ViT-B-16", description="CLIP backbone: ViT-B-16, ViT-B-16-quickgelu (OpenAI), tiny, ...")
    # optimizer
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer name (reidtrain.optim)")
    base_lr: float = Field(3.5e-4, gt=0.0, description="lr of the new (non-backbone) modules")
    backbone_lr: float = Field(5e-6, gt=0.0, description="lr of the backbone (pretrained CLIP/ViT)")
    weight_decay: float = Field(1e-4, ge=0.0, description="weight decay of weights")
    weight_decay_bias: float = Field(1e-4, ge=0.0, description="weight decay of biases")
    bias_lr_factor: float = Field(2.0, gt=0.0, description="bias lr = its group's lr times this")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (unused by Adam/AdamW)")
    # schedule (per epoch; reidtrain.optim.WarmupCosine)
    schedule: Literal["warmup_cosine", "timm_cosine"] = Field(
        "warmup_cosine",
        description="lr schedule shape (reidtrain.optim): warmup then a cosine over the remaining epochs, or the "
        "authors' timm CosineLRScheduler (1-based epochs, cosine over the whole run)",
    )
    epochs: int = Field(50, ge=1, description="training epochs")
    warmup_epochs: int = Field(10, ge=0, description="linear warmup epochs")
    warmup_factor: float = Field(0.1, gt=0.0, le=1.0, description="lr factor at the first warmup epoch")
    eta_min_factor: float = Field(0.001, ge=0.0, le=1.0, description="lr factor at the end of the cosine")
    schedule_anchor: Literal["group_lr", "base_lr"] = Field(
        "group_lr",
        description="what warmup_factor and eta_min_factor scale: each group's own lr, or base_lr for every group "
        "(the authors' absolute warmup_lr_init and lr_min)",
    )
    lr_noise: float = Field(
        0.0, ge=0.0, lt=1.0, description="per-epoch relative lr noise bound (timm noise_pct); 0 = off"
    )
    lr_noise_seed: int = Field(42, ge=0, description="seed of the lr noise (timm noise_seed)")
    # sampling (PK batches)
    ids_per_batch: int = Field(8, ge=2, description="P: identities per batch")
    instances_per_id: int = Field(8, ge=1, description="K: samples per identity; batch size = P * K")
    image_size: tuple[PositiveInt, PositiveInt] = Field(
        (256, 128), strict=False, description="(height, width) of every modality"
    )
    pixel_mean: tuple[float, float, float] = Field(
        CLIP_MEAN, strict=False, description="per-channel mean subtracted from [0, 1] images (train and eval)"
    )
    pixel_std: tuple[float, float, float] = Field(
        CLIP_STD, strict=False, description="per-channel std dividing [0, 1] images (train and eval)"
    )
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
        if min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std}")
        return self


def list_recipes() -> list[str]:
    """Names of the shipped recipes (the YAML files under ``data/recipes/``), sorted."""
    folder = data_root().joinpath(RECIPE_FOLDER)
    if not folder.is_dir():
        return []
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def parse_recipe(raw: Any, name: str = "<inline>") -> TrainRecipe:
    """Validate a mapping (e.g. parsed YAML) as a ``TrainRecipe``; errors name the bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {name!r}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return TrainRecipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(str(describe(exc, f"recipe {name!r}"))) from None


def read_recipe(recipe: str) -> tuple[str, dict[str, Any]]:
    """(the recipe's reference as a run records it, its raw mapping): a shipped name, or a YAML file's path.

    A file is recorded by its absolute path. An unknown name lists the shipped recipes.
    """
    available = list_recipes()
    if recipe in available:
        return recipe, _mapping(read_text(f"{RECIPE_FOLDER}/{recipe}.yaml"), recipe)
    if is_recipe_path(recipe):
        path = Path(recipe).expanduser().resolve()
        if not path.is_file():
            raise RecipeError(f"recipe file {recipe} not found")
        try:
            text = decode_utf8(path.read_bytes(), f"recipe {str(path)!r}")
        except ConfigError as exc:
            raise RecipeError(str(exc)) from None
        return str(path), _mapping(text, str(path))
    raise RecipeError(f"unknown recipe {recipe!r}; available: {', '.join(available) or '(none)'} (or a YAML file)")


def _mapping(text: str, name: str) -> dict[str, Any]:
    try:
        return read_mapping(text, f"recipe {name!r}")
    except ConfigError as exc:
        raise RecipeError(str(exc)) from None


def load_recipe(name: str) -> TrainRecipe:
    """The shipped recipe ``name`` (file ``data/recipes/<name>.yaml``), or a recipe file's path."""
    ref, raw = read_recipe(name)
    return parse_recipe(raw, ref)


def resolve_recipe(
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    model: str | None = None,
    backbone: str | None = None,
) -> tuple[str, TrainRecipe]:
    """(the recipe's reference, the validated recipe) of a run: ``recipe`` <- ``overrides`` <- model, backbone.

    ``recipe`` None is ``DEFAULT_RECIPE`` unless ``model`` names another model (then the recipe must be given: a
    demo recipe of the baseline would silently train another model). ``model`` replaces the recipe's model only when
    the recipe's ``model_options`` are options of it. The model options are checked against the model's builder
    (keys and, where annotated, values); nothing heavy is loaded.
    """
    from reidtrain.models import list_models
    from reidtrain.models.registry import check_model_options

    if recipe is None:
        if model is not None and model != load_recipe(DEFAULT_RECIPE).model:
            mine = [name for name in list_recipes() if load_recipe(name).model == model]
            raise RecipeError(
                f"--model {model} needs a recipe: --recipe NAME or a YAML file (recipes of {model}: "
                f"{', '.join(mine) or '(none)'})"
            )
        recipe = DEFAULT_RECIPE
    ref, raw = read_recipe(recipe)
    try:
        raw = apply_dotted(raw, overrides or {})
    except ConfigError as exc:
        raise RecipeError(f"recipe {ref!r}: {exc}") from None
    named = parse_recipe(raw, ref)
    if model is not None and model != named.model:
        if model not in list_models():
            raise RecipeError(f"--model: unknown model {model!r}; registered models: {', '.join(list_models())}")
        try:
            check_model_options(model, named.model_options)
        except ValueError as exc:
            raise RecipeError(
                f"--model {model} does not fit recipe {ref!r} (a recipe of {named.model}): {exc}"
            ) from None
    resolved = named.model_copy(update={k: v for k, v in (("model", model), ("backbone", backbone)) if v is not None})
    if resolved.model not in list_models():
        raise RecipeError(
            f"recipe {ref!r}: model: unknown model {resolved.model!r}; registered: {', '.join(list_models())}"
        )
    try:
        check_model_options(resolved.model, resolved.model_options)
    except ValueError as exc:
        raise RecipeError(f"recipe {ref!r}: {exc}") from None
    return ref, resolved

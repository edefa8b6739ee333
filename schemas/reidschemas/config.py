"""``PipelineConfig``: the typed form of ``pipeline.yaml``.

Relative paths in the file are resolved against the file's folder, so a config runs the same from any working
directory. Every CLI option overrides the matching key (``apply_overrides``); errors name the bad key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from reidschemas.overrides import describe, read_yaml_file, set_dotted
from reidschemas.records import DatasetName


class _Section(BaseModel):
    """Strict: a YAML ``true`` is not a count, ``'yes'`` not a boolean, ``.inf`` not a size; ints are still floats.
    Paths and (height, width) pairs are coerced from YAML strings and lists (``strict=False`` on those fields)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DatasetConfig(_Section):
    layout: DatasetName = Field(
        "rgbnt201", description="on-disk layout of the raw dataset; generic = your own data listed in a manifest file"
    )
    kind: Literal["person", "vehicle"] | None = Field(
        None, description="generic layout only (required there): person or vehicle"
    )
    protocol: Literal["camera", "scene"] | None = Field(
        None,
        description="generic layout only (required there): camera = gallery items of the query's id and camera are "
        "removed; scene = those of its id and scene (every row then needs a sceneid)",
    )
    root: Path | None = Field(
        strict=False,
        default=None,
        description="folder that holds the layout's top folder (e.g. ROOT/RGBNT201); generic: the manifest file "
        "(CSV or Parquet) or a folder holding manifest.csv / manifest.parquet",
    )


class SynthConfig(_Section):
    """The embedded synthetic dataset (``reidprep synth``)."""

    out: Path | None = Field(
        strict=False, default=None, description="where to write it; the dataset root then is this folder"
    )
    kind: Literal["person", "vehicle"] = "person"
    ids: int = Field(40, ge=2, description="number of identities")
    images_per_id: int = Field(8, ge=2, description="triplets per identity")
    seed: int = 0


class IndexConfig(_Section):
    strict: bool = Field(False, description="fail on the first bad file instead of recording it in the ledger")
    drop_overlapping_train_ids: bool = Field(
        False, description="drop from train the ids that also appear in query/gallery (WMVEID863's dirt)"
    )
    check_images: bool = Field(True, description="open every image header to catch unreadable files")


class Sam2Config(_Section):
    """The ``sam2`` mask provider (the real SAM 2 / 2.1 package; weights from a local file)."""

    model: str = Field("tiny", description="tiny, small, base+, large, or a Hydra config name inside sam2")
    version: Literal["2", "2.1"] = Field("2.1", description="SAM release whose config the short names refer to")
    checkpoint: Path | None = Field(
        strict=False, default=None, description="local checkpoint ({'model': state_dict}); enables sam2"
    )
    prompt: Literal["box", "box+center"] = Field(
        "box", description="box = the crop minus a margin; box+center adds a positive point at the crop centre"
    )
    box_margin: float = Field(0.02, ge=0.0, lt=0.5, description="margin as a fraction of the crop's width/height")
    overrides: list[str] = Field(
        default_factory=list, description="extra Hydra overrides for build_sam2 (advanced; tests build tiny models)"
    )


class ThermalConfig(_Section):
    """The ``thermal`` mask provider: a classical baseline on the thermal image (the object is warmer)."""

    smoothing_sigma: float = Field(1.0, ge=0.0, description="Gaussian smoothing before the Otsu threshold (pixels)")
    opening_radius: int = Field(1, ge=0, description="morphological opening radius (removes specks)")
    closing_radius: int = Field(3, ge=0, description="morphological closing radius (bridges gaps)")
    fill_holes: bool = True
    fill_enclosed: bool = Field(
        True,
        description="also fill pixels with foreground on all four sides in their row and column (a cold backpack or "
        "window inside the outline that is open at one point)",
    )
    vertical_opening: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="opening with a vertical line this fraction of the crop height: removes warm horizontal bands "
        "thinner than it (a kerb, a sunlit road edge) that touch the object; 0=off",
    )
    background_margin: float = Field(
        0.125, ge=0.0, lt=0.5, description="each row's background from this fraction of the width at both sides; 0=off"
    )
    background_tolerance: float = Field(
        1.5, ge=0.0, description="grey levels: pixels this close to their row's background are background"
    )
    max_area: float = Field(
        0.4, gt=0.0, le=1.0, description="a central component above this fraction of the crop is split again (Otsu)"
    )
    min_area: float = Field(0.05, ge=0.0, le=1.0, description="but a split that leaves less than this is undone")
    otsu_levels: int = Field(4, ge=1, description="at most this many nested Otsu splits of the warmer class")


class MasksConfig(_Section):
    """``reidprep masks``: one foreground mask per triplet."""

    provider: Literal["auto", "sam2", "thermal"] = Field(
        "auto", description="auto = sam2 when masks.sam2.checkpoint is set, else the thermal baseline"
    )
    source: Literal["rgb", "nir", "tir", "all"] | None = Field(
        None, description="image(s) to segment; all fuses the three; default: all for sam2, tir for thermal"
    )
    fusion: Literal["majority", "union", "intersection"] = Field("majority", description="how source=all fuses")
    keep_modality_masks: bool = Field(False, description="with source=all, also store the three per-modality masks")
    device: str = Field("cuda", description="cuda (default) or cpu; sam2 only")
    batch_size: int = Field(8, ge=1, description="images per encoder batch")
    chunk_size: int = Field(64, ge=1, description="triplets per output part (the unit of resume)")
    workers: int = Field(
        0,
        ge=0,
        description="processes computing thermal masks; 0 = one per CPU core this process may use (sam2 stays in "
        "one process, on its device)",
    )
    sam2: Sam2Config = Sam2Config()
    thermal: ThermalConfig = ThermalConfig()


class OpenAIConfig(_Section):
    """The ``openai`` provider: GPT-4o, or any OpenAI-compatible server (vLLM, Ollama) through ``base_url``."""

    model: str = "gpt-4o"
    base_url: str | None = Field(None, description="e.g. http://localhost:8000/v1 for vLLM; None = api.openai.com")
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the environment variable holding the key")
    detail: Literal["low", "high", "auto"] = Field("low", description="image detail (low = 85 tokens per image)")
    structured_output: Literal["auto", "on", "off"] = Field(
        "auto", description="JSON-schema output where the server supports it; auto falls back to plain JSON"
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=16)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, description="retries on 429, timeouts, connection errors and 5xx")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    max_connection_failures: int = Field(
        10,
        ge=1,
        description="attempts in a row that reach no server (connection refused, time-out) before the stage stops; "
        "what is done so far is kept",
    )
    usd_per_million_input: float | None = Field(2.5, ge=0, description="for the cost estimate; None = unknown")
    usd_per_million_output: float | None = Field(10.0, ge=0)


class QwenConfig(_Section):
    """The ``qwen`` provider: Qwen2.5-VL or Qwen2-VL loaded with transformers from a local folder."""

    model_path: Path | None = Field(
        strict=False, default=None, description="local model folder (config, weights, processor)"
    )
    device: str = Field("cuda", description="cuda (default) or cpu")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    batch_size: int = Field(4, ge=1)
    max_new_tokens: int = Field(768, ge=16)


class CaptionsConfig(_Section):
    """``reidprep captions``: attributes per image and per composite, merged, then captions."""

    providers: list[Literal["heuristic", "openai", "qwen", "import"]] = Field(
        ["heuristic"],  # pydantic copies a mutable default for every instance
        description="attribute sources; with several MLLMs the most confident answer per attribute wins",
    )
    views: list[Literal["rgb", "nir", "tir", "composite"]] = Field(
        ["rgb", "nir", "tir", "composite"],
        description="images to query: each modality and the three side by side (STMI's composite)",
    )
    fusion: Literal["template", "llm"] = Field("template", description="render the NEXT template, or ask an LLM")
    fusion_provider: Literal["openai", "qwen"] | None = Field(
        None, description="LLM for --fusion llm; default: the first of providers that is an LLM"
    )
    fusion_openai: OpenAIConfig | None = Field(
        None,
        description="a separate OpenAI-compatible text model for --fusion llm (e.g. DeepSeek-V3, as NEXT uses); "
        "overrides fusion_provider",
    )
    complement_below: float = Field(
        0.5, ge=0.0, le=1.0, description="attributes below this confidence are filled from other views"
    )
    colours_in_infrared_captions: bool = Field(
        False, description="let NIR/TIR captions carry colours taken from RGB (never from NIR/TIR themselves)"
    )
    shorten_to_clip: bool = Field(
        False,
        description="template captions longer than CLIP's 77 tokens leave out the least important attributes until "
        "they fit (noted); false keeps the whole caption, truncated at tokenisation as the reference code does",
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="triplets per output part (the unit of resume); default 32, and 1024 for the import provider "
        "(a lookup: a part costs more to write than to fill)",
    )
    workers: int = Field(
        0,
        ge=0,
        description="processes describing triplets with CPU providers (heuristic, template captions); 0 = one per "
        "CPU core this process may use (model and server providers stay in one process)",
    )
    batch_api: bool = Field(False, description="openai: use the Batch API (half price, up to 24 h)")
    openai: OpenAIConfig = OpenAIConfig()
    qwen: QwenConfig = QwenConfig()
    import_dir: Path | None = Field(
        strict=False,
        default=None,
        description="the import provider: folder of released captions {train,test}_{RGB,NI,TI}.json",
    )


class ShardsConfig(_Section):
    """``reidprep build-shards``: one row per record with images, mask, token mask, captions and attributes."""

    image_format: Literal["jpeg", "png", "raw"] = Field(
        "jpeg", description="jpeg, png, or raw: uint8 pixels at the stored size (zstd), no decode when reading"
    )
    jpeg_quality: int = Field(95, ge=50, le=100)
    size: Literal["model", "original"] = Field(
        "model", description="model = resize to the model input (person 256x128, vehicle 128x256, h x w)"
    )
    person_size: tuple[PositiveInt, PositiveInt] = Field(
        (256, 128), strict=False, description="(height, width) stored for persons"
    )
    vehicle_size: tuple[PositiveInt, PositiveInt] = Field(
        (128, 256), strict=False, description="(height, width) stored for vehicles"
    )
    patch_size: int = Field(16, ge=1, description="ViT patch size for the token mask")
    patch_stride: int = Field(16, ge=1, description="ViT patch stride (smaller than the patch: overlapping)")
    token_threshold: float = Field(0.5, gt=0.0, le=1.0, description="foreground fraction that makes a token fg")
    target_shard_mb: float = Field(256.0, gt=0.0, description="a shard is closed once it reaches this size")
    row_group_rows: int = Field(64, ge=1, description="rows per Parquet row group (the unit of random access)")
    missing: Literal["exclude", "null"] = Field(
        "exclude", description="a sample without mask or caption: exclude it (ledgered) or keep it with nulls"
    )
    allow_test_exclusions: bool = Field(
        False,
        description="let a query or gallery sample without mask, caption or readable image be excluded; by default "
        "build-shards refuses (exit 1), since a missing test row changes the benchmark",
    )
    require: list[Literal["masks", "captions"]] = Field(
        ["masks", "captions"], description="stages whose output every sample needs"
    )
    workers: int = Field(
        0, ge=0, description="processes decoding and encoding images; 0 = one per CPU core this process may use"
    )


class TrainConfig(_Section):
    """``pipeline.yaml``'s train section: run settings of ``reidtrain fit`` / ``eval``, the recipe and its overrides.

    Every key is also a command-line option. The recipe (``reidtrain.recipes``) names the model and backbone and holds
    every optimisation setting; ``model``, ``backbone`` and ``set`` override it (``reidtrain.trainer.resolve_run``).
    """

    recipe: str | None = Field(
        None,
        description="packaged recipe name (data/recipes/<name>.yaml) or a YAML file; default: baseline-tiny-demo",
    )
    model: str | None = Field(None, description="override of the recipe's model (its model_options must fit)")
    backbone: str | None = Field(None, description="override of the recipe's backbone (tiny, ViT-B-16, ...)")
    set: dict[str, Any] = Field(default_factory=dict, description="recipe keys to override (dotted for nesting)")
    shards: Path | None = Field(strict=False, default=None, description="shards folder (default: <workdir>/shards)")
    output: Path | None = Field(strict=False, default=None, description="run folder (default: <workdir>/train/<model>)")
    weights: Path | None = Field(strict=False, default=None, description="local CLIP weights file (never downloaded)")
    random_init: bool = Field(False, description="allow random initial weights when no weights file is given")
    epochs: int | None = Field(None, ge=1, description="stop after this epoch (default: the recipe's epochs)")
    device: str = Field("cpu", description="cpu or cuda")
    seed: int = Field(0, ge=0, description="seed of model init, PK order and augmentation")
    val_ids: int = Field(
        0, ge=0, description="training ids held out as a validation split that chooses best.pt (0: none, best on test)"
    )
    workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes (unset: 0 on CPU; on CUDA one per core but one, at most 8)"
    )
    # fit's refusals (reidtrain.preflight), each with its override
    allow_orientation_mismatch: bool = Field(
        False, description="train at an image size whose orientation (portrait/landscape) contradicts the shards'"
    )
    allow_missing_inputs: bool = Field(
        False, description="train although a declared input (mask, caption) is missing on more than 1% of train rows"
    )
    allow_stale_shards: bool = Field(
        False, description="train on shards built from masks/captions/index other than the workdir's current ones"
    )


def is_recipe_path(recipe: str) -> bool:
    """A recipe given as a file (``*.yaml`` / ``*.yml`` or with a folder part) rather than a packaged name."""
    return recipe.endswith((".yaml", ".yml")) or "/" in recipe or "\\" in recipe


class PipelineConfig(_Section):
    workdir: Path = Field(strict=False, default=Path("runs/demo"), description="where every stage writes its outputs")
    dataset: DatasetConfig = DatasetConfig()
    synth: SynthConfig = SynthConfig()
    index: IndexConfig = IndexConfig()
    masks: MasksConfig = MasksConfig()
    captions: CaptionsConfig = CaptionsConfig()
    shards: ShardsConfig = ShardsConfig()
    train: TrainConfig = TrainConfig()


def _resolve_paths(section: BaseModel, base: Path) -> None:
    for name, value in section:
        if isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, Path) and not value.is_absolute():
            setattr(section, name, (base / value).resolve())


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read ``path`` (defaults when None), then apply ``overrides`` (``{"dataset.root": ...}``; None = not given).

    Paths from the file are relative to its folder; paths from overrides are relative to the working directory.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = read_yaml_file(path)
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise describe(exc, source) from None
    base = path.parent.resolve() if path is not None else Path.cwd()
    _resolve_paths(config, base)
    recipe = config.train.recipe
    if recipe is not None and is_recipe_path(recipe) and not Path(recipe).is_absolute():
        config.train.recipe = str((base / recipe).resolve())  # a recipe file, relative to the config's folder
    return apply_overrides(config, overrides or {})


def apply_overrides(config: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """Set dotted keys (``"index.strict"``) whose value is not None; relative paths resolve against the cwd."""
    data = config.model_dump()
    for key, value in overrides.items():
        if value is not None:
            set_dotted(data, key, value.resolve() if isinstance(value, Path) else value)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise describe(exc, "command-line options") from None

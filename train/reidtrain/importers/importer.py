"""``reidtrain import-checkpoint``: an authors' released checkpoint -> a run folder that ``reidtrain eval`` scores.

The model is built from a recipe (default: the shipped ``<format>-<dataset>`` recipe, which carries the authors'
settings: QuickGELU, image size, DIRECT mode, ATMoE heads, identity paths, ...), with as many classes as the file's
classifier has rows and as many cameras as its SIE embedding. The file's tensors are placed by the format's name map
(``reidtrain.importers.demo`` / ``.mambapro``); anything that does not fit is refused before anything is written,
naming every key of the file not placed, every key of our model left empty and every shape mismatch.

Cameras: the authors index the SIE embedding by the camera number they parse from the file name, minus 1 on RGBNT201
and RGBNT100 and as it is on MSVR310; ``eval`` gives the j-th camera of a shard set (sorted) row j. With ``--shards``
the two numberings must agree (refused otherwise, naming both); the run records the authors' camera ids.

The run folder holds ``config.json`` (as ``fit`` writes it; ``provenance.imported_from`` names the file and its
SHA-256) and ``last.pt`` (the model and the same configuration; epoch None). It cannot be resumed by ``fit``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from reidschemas.config import TrainConfig
from reidschemas.digest import file_sha256
from reidtrain.atomic import atomic_save, atomic_write_text
from reidtrain.data.shards import LabelMap, ShardDataset
from reidtrain.importers import demo, mambapro
from reidtrain.importers.mapping import place
from reidtrain.models import create_model
from reidtrain.provenance import provenance
from reidtrain.recipes import resolve_recipe
from reidtrain.trainer import config_record

__all__ = ["DATASETS", "FORMATS", "ImportRefused", "ImportSummary", "import_checkpoint", "read_state_dict"]

FORMATS: dict[str, ModuleType] = {"demo": demo, "mambapro": mambapro}
# dataset -> what the authors subtract from the camera number of a file name to index SIE (their data/datasets/*.py)
DATASETS: dict[str, int] = {"rgbnt201": 1, "rgbnt100": 1, "msvr310": 0}


class ImportRefused(ValueError):
    """The file does not fit the model the recipe builds (every problem named), or the options contradict it."""


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_checkpoint`` wrote."""

    run: Path
    recipe: str
    num_classes: int
    num_cameras: int
    placed: int  # keys of the file placed
    dropped: tuple[str, ...]  # keys of the file left out on purpose (unused by the authors' forward)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save``d state dict (``weights_only``: no code runs); ``module.`` prefixes (DDP) and a
    ``{"state_dict": ...}`` wrapper are removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle of other objects, not a checkpoint at all
        raise ImportRefused(f"cannot read {path} as a state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ImportRefused(f"{path} holds no state dict (found {type(state).__name__})")
    others = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ImportRefused(f"{path}: entries that are not tensors: {', '.join(others[:5])}; pass a model state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _dataset(fmt: str, dataset: str | None, recipe_ref: str, shards_dataset: str | None) -> tuple[str | None, str]:
    """(dataset, where it came from): --dataset, the shipped recipe's name, or the shards' layout."""
    if dataset is not None:
        if dataset not in DATASETS:
            raise ImportRefused(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
        if shards_dataset in DATASETS and shards_dataset != dataset:
            raise ImportRefused(f"--dataset {dataset} but the shards hold {shards_dataset}: pass matching ones")
        return dataset, "--dataset"
    named = re.fullmatch(rf"{fmt}-({'|'.join(DATASETS)})", recipe_ref)
    if named is not None:
        return named[1], f"recipe {recipe_ref}"
    if shards_dataset in DATASETS:
        return shards_dataset, "the shards' layout"
    return None, ""


def _cameras(
    rows: int, offset: int | None, shards_cameras: list[int] | None, cameras: int | None, file: Path
) -> tuple[list[int], str]:
    """(camera ids in SIE row order, how they were chosen); refused when the shards number cameras otherwise."""
    if cameras is not None and cameras != rows:
        raise ImportRefused(f"--cameras {cameras} but {file}'s camera embedding has {rows} rows: pass --cameras {rows}")
    if rows == 0:
        return [], "none (the file has no camera embedding: SIE off)"
    if offset is None:
        raise ImportRefused(
            f"{file} has a camera embedding ({rows} cameras) indexed by the dataset's camera numbers: "
            f"pass --dataset {'|'.join(DATASETS)}"
        )
    authors = [row + offset for row in range(rows)]  # camera id of each row
    if shards_cameras is None:
        return authors, f"{rows} from the file, camera ids {authors} (the authors' numbering)"
    if shards_cameras != authors:  # eval gives the shards' j-th camera (sorted) row j
        raise ImportRefused(
            f"the shards have cameras {shards_cameras} but {file}'s camera embedding has {rows} rows for cameras "
            f"{authors} (camera number - {offset}, the authors' numbering): pass the shards of the dataset the "
            "checkpoint was trained on, or the right --dataset"
        )
    return authors, f"{rows}, camera ids {authors}: the shards' and the authors' numbering agree"


def import_checkpoint(
    file: Path,
    fmt: str,
    output: Path,
    dataset: str | None = None,
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    shards: Path | None = None,
    cameras: int | None = None,
    echo: Callable[[str], None] = print,
) -> ImportSummary:
    """Import the authors' ``fmt`` checkpoint ``file`` into run folder ``output`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ImportRefused(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    file, output = Path(file).resolve(), Path(output).resolve()
    if (output / "config.json").exists():
        raise ImportRefused(f"{output} already holds a run (config.json): pass another --output or delete it")
    if recipe is None and dataset is None:
        raise ImportRefused(f"pass --dataset {'|'.join(DATASETS)} (recipe {fmt}-DATASET) or --recipe")
    ref, chosen = resolve_recipe(recipe if recipe is not None else f"{fmt}-{dataset}", overrides)
    if chosen.model != spec.MODEL:
        raise ImportRefused(f"recipe {ref} trains {chosen.model}, not {spec.MODEL}: pass a recipe of {spec.MODEL}")
    state = read_state_dict(file)
    labels = shards_info = None
    if shards is not None:
        index_only = ShardDataset(Path(shards), "train", columns=())
        labels, shards_info = index_only.label_map(), index_only.index.info
    where, how = _dataset(fmt, dataset, ref, None if shards_info is None else shards_info.get("dataset"))
    camera_rows = int(state[spec.CAMERA_KEY].shape[0]) if spec.CAMERA_KEY in state else 0
    camids, said = _cameras(
        camera_rows, DATASETS.get(where or ""), None if labels is None else list(labels.camid_to_index), cameras, file
    )
    classifier = next((key for key in spec.CLASSIFIER_KEYS if key in state), None)
    if classifier is None:
        raise ImportRefused(f"{file} has none of {', '.join(spec.CLASSIFIER_KEYS)}: is it a {fmt} checkpoint?")
    num_classes = int(state[classifier].shape[0])
    echo(f"recipe {ref}: {chosen.model}, backbone {chosen.backbone}, image size {list(chosen.image_size)}")
    echo(f"dataset: {where} ({how})" if where else "dataset: not given (the file has no camera embedding)")
    echo(f"cameras: {said}")
    echo(f"classes: {num_classes} (rows of {classifier})")
    halves = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()} - {"float32"}
    if halves:
        echo(f"tensors of the file in {', '.join(sorted(halves))}: stored in the model's dtype")
    model = create_model(
        chosen.model,
        num_classes=num_classes,
        num_cameras=camera_rows,
        backbone=chosen.backbone,
        image_size=tuple(chosen.image_size),
        weights=None,
        require_pretrained=False,  # every weight comes from the file
        **chosen.model_options,
    )
    table, fields = spec.name_map(model)
    placement = place(state, table, model.state_dict(), fields)
    hints = spec.hints(state, model)
    if not placement.ok or hints:
        found = " | ".join(hints + [p for p in (placement.problems(),) if p])  # the likely cause first
        raise ImportRefused(
            f"{file} does not fit {chosen.model} as recipe {ref} builds it ({chosen.backbone}, image size "
            f"{list(chosen.image_size)}, {num_classes} classes, {camera_rows} cameras): {found}; check --format, "
            "--dataset / --recipe (the authors' settings of that dataset), or pass a recipe file that matches"
        )
    model.load_state_dict(placement.state, strict=True)
    if placement.dropped:
        echo(f"left out (unused by the authors' forward too): {', '.join(placement.dropped)}")
    train = TrainConfig(recipe=ref, model=chosen.model, backbone=chosen.backbone, shards=shards, output=output)
    config = config_record(
        train, chosen, LabelMap({i: i for i in range(num_classes)}, {c: i for i, c in enumerate(camids)}), None
    )
    config["shards"] = None if shards is None else str(Path(shards).resolve())
    sha = file_sha256(file)
    config["provenance"] = {
        **provenance(dict(shards_info or {}), None),
        "imported_from": f"{file} (sha256 {sha})",
        "import_format": fmt,
        "authors_code": spec.SOURCE,
    }
    config["dataset_fingerprint"] = None if shards_info is None else shards_info.get("fingerprint")
    params = sum(p.numel() for p in model.parameters())
    config["parameters"] = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "total": params}
    output.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": model.state_dict(), "config": config, "epoch": None}, output / "last.pt")
    atomic_write_text(json.dumps(config, indent=2) + "\n", output / "config.json")  # last: the run is complete
    placed = len(state) - len(placement.dropped)
    return ImportSummary(output, ref, num_classes, camera_rows, placed, tuple(placement.dropped))

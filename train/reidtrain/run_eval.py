"""``reidtrain eval``: evaluate a run folder's checkpoints (last and best by default) and optionally draw rank lists.

Results go to ``RUN/eval.json`` (all modalities) or ``RUN/eval-missing-<names>.json`` (``--missing``), one record per
checkpoint with its epoch, so a report always says which epoch a figure comes from, and how "best" was chosen: "best on
val" (``fit --val-ids``) or "best on test" (the best test mAP: not a fair estimate of unseen data). ``rank_list`` > 0
writes ``RUN/rank_list[-missing-<names>].png`` for the first checkpoint evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reidschemas.config import TrainConfig
from reidtrain.atomic import atomic_write_text, read_checkpoint
from reidtrain.data.normalize import CLIP_MEAN, CLIP_STD
from reidtrain.evaluate import Ranking, load_run_model, rank_gallery, score

__all__ = [
    "MISSING_SETTINGS",
    "RunEval",
    "best_label",
    "evaluate_missing_all",
    "evaluate_run",
    "parse_missing",
    "run_folder",
]

MODALITIES = ("rgb", "nir", "tir")
MISSING_SETTINGS: tuple[tuple[str, ...], ...] = (
    (),
    ("rgb",),
    ("nir",),
    ("tir",),
    ("rgb", "nir"),
    ("rgb", "tir"),
    ("nir", "tir"),
)
"""``--missing all``: no modality absent, each one absent, each pair absent (DeMo's Tables 3-4)."""
METRICS = ("mAP", "R1", "R5", "R10", "mINP")


def parse_missing(text: str) -> tuple[str, ...]:
    """ "rgb,nir" -> ("rgb", "nir"); unknown names, repeats and all three at once are errors."""
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in MODALITIES]
    if unknown:
        raise ValueError(f"--missing: unknown modalities {unknown}; choose from {', '.join(MODALITIES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--missing names a modality twice: {text!r}")
    if len(names) == len(MODALITIES):
        raise ValueError("--missing cannot remove all three modalities")
    return names


@dataclass(frozen=True)
class RunEval:
    """What ``evaluate_run`` wrote."""

    records: list[dict[str, Any]]  # one per checkpoint: checkpoint, epoch, missing, mAP, R1, R5, R10, mINP, ...
    path: Path  # the JSON file
    rank_list: dict[str, Any] | None  # what the PNG shows (path, queries, their top-k and correctness)
    saved: tuple[Path, ...] = ()  # feature (.parquet) and distance (.npz) files, with --save-features/-distances


def best_label(path: Path) -> str:
    """ "best on val" or "best on test": how ``best.pt`` at ``path`` was chosen (before ``selected_on``: on test)."""
    state = read_checkpoint(path, mmap=True)
    return f"best on {state.get('selected_on', 'test')}"


def _label(run: Path, name: str, checkpoint: str, names: list[str]) -> str:
    """The checkpoint's name in eval.json and the table: "last", "best on val|test", "last (= best on ...)"."""
    if name == "best":
        return best_label(run / "best.pt")
    if name == "last" and checkpoint == "both" and len(names) == 1 and (run / "best.pt").is_file():
        return f"last (= {best_label(run / 'best.pt')})"
    return name


def _checkpoints(run: Path, checkpoint: str) -> list[str]:
    """``both`` -> ["last", "best"] (just "last" when best.pt is the last epoch's model); else [checkpoint]."""
    if checkpoint != "both":
        return [checkpoint]
    if not (run / "best.pt").is_file():
        return ["last"]
    # mmap: read the epoch without loading the weights and optimizer state
    best = read_checkpoint(run / "best.pt", keys=("epoch",), mmap=True)["epoch"]
    last = read_checkpoint(run / "last.pt", keys=("epoch",), mmap=True)["epoch"]
    return ["last"] if best == last else ["last", "best"]


@dataclass(frozen=True)
class _Loaded:
    """One checkpoint of a run, ready to rank with."""

    label: str  # "last", "best on val|test", ...
    epoch: int | None
    model: torch.nn.Module  # on the device
    shards: Path
    image_size: tuple[int, int]
    name: str  # "last", "best", or the checkpoint file's stem: names the feature and distance files
    config: dict[str, Any]  # the run's configuration, from the checkpoint
    pixel_stats: tuple[Sequence[float], Sequence[float]]  # the recipe's (pixel_mean, pixel_std)


def _load_checkpoints(run: Path, checkpoint: str, shards: Path | None, device: torch.device) -> Iterator[_Loaded]:
    """Each checkpoint ``checkpoint`` names in ``run``, loaded on ``device`` with its shards folder (checked)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but CUDA is not available")
    names = _checkpoints(run, checkpoint)
    for name in names:
        model, config, state = load_run_model(run, name)
        if shards is None and not config.get("shards"):  # an imported run without --shards records none
            raise FileNotFoundError(f"{run} records no shards folder: pass --shards")
        shards_dir = Path(shards) if shards is not None else Path(config["shards"])
        if not shards_dir.is_dir():
            raise FileNotFoundError(f"shards folder {shards_dir} does not exist; pass --shards")
        size = tuple(config["recipe"]["image_size"])
        stats = (config["recipe"].get("pixel_mean", CLIP_MEAN), config["recipe"].get("pixel_std", CLIP_STD))
        label, stem = _label(run, name, checkpoint, names), name if name in ("last", "best") else Path(name).stem
        yield _Loaded(label, state.get("epoch"), model.to(device), shards_dir, size, stem, config, stats)


def evaluate_run(
    run: Path,
    checkpoint: str = "both",
    missing: Sequence[str] = (),
    shards: Path | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    rank_list: int = 0,
    top_k: int = 10,
    save_features: bool = False,
    save_distances: bool = False,
    progress: bool | None = False,
) -> RunEval:
    """Evaluate ``run``'s checkpoints ("last", "best", "both" or a file) with ``missing`` modalities zeroed.

    ``save_features``: each checkpoint's query and gallery features to ``RUN/features-<name>[-missing-...].parquet``
    (``reidtrain.features``); ``save_distances``: its distances to ``RUN/dist-<name>[-missing-...].npz``, which
    ``reidtrain rank`` scores. ``<name>``: last, best, or the checkpoint file's stem.
    """
    from reidtrain.ranklist import draw_rank_list

    run, dev = Path(run), torch.device(device)
    suffix = f"-missing-{'-'.join(missing)}" if missing else ""
    records, drawn, saved = [], None, []
    for loaded in _load_checkpoints(run, checkpoint, shards, dev):
        ranking = rank_gallery(
            loaded.model, loaded.shards, loaded.image_size, dev, missing, num_workers, progress=progress,
            desc=loaded.label, pixel_stats=loaded.pixel_stats,
        )  # fmt: skip
        record = {
            "checkpoint": loaded.label,
            "epoch": loaded.epoch,
            "missing": list(missing),
            **score(ranking).to_dict(),
        }
        records.append(record)
        saved += _save(ranking, loaded, run, missing, save_features, save_distances)
        if rank_list and drawn is None:
            drawn = draw_rank_list(ranking, run / f"rank_list{suffix}.png", rank_list, top_k, checkpoint=loaded.label)
    path = run / f"eval{suffix}.json"
    payload = {"missing": list(missing), "results": records, "rank_list": drawn}
    atomic_write_text(json.dumps(payload, indent=2) + "\n", path)
    return RunEval(records, path, drawn, tuple(saved))


def _save(
    ranking: Ranking, loaded: _Loaded, run: Path, missing: Sequence[str], features: bool, distances: bool
) -> list[Path]:
    """``eval --save-features`` / ``--save-distances`` for one checkpoint: the files written."""
    from reidtrain.features import ranking_features, save_distances, write_features

    suffix = f"-missing-{'-'.join(missing)}" if missing else ""
    written = []
    if features:
        metadata = {
            "checkpoint_label": loaded.label,
            "epoch": loaded.epoch,
            "model": loaded.config.get("model"),
            "backbone": loaded.config.get("backbone"),
            "missing": list(missing),
        }
        table = ranking_features(ranking, metadata)
        written.append(write_features(run / f"features-{loaded.name}{suffix}.parquet", table))
    if distances:
        written.append(save_distances(run / f"dist-{loaded.name}{suffix}.npz", ranking))
    return written


def evaluate_missing_all(
    run: Path,
    checkpoint: str = "both",
    shards: Path | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool | None = False,
) -> RunEval:
    """Every setting of :data:`MISSING_SETTINGS` for each checkpoint, plus their average per checkpoint (the last
    record of each checkpoint, ``missing: "average"``), into ``RUN/eval-missing-all.json``."""
    run, dev = Path(run), torch.device(device)
    records: list[dict[str, Any]] = []
    for loaded in _load_checkpoints(run, checkpoint, shards, dev):
        settings = []
        for missing in MISSING_SETTINGS:
            desc = f"{loaded.label} missing {','.join(missing) or 'none'}"
            ranking = rank_gallery(
                loaded.model,
                loaded.shards,
                loaded.image_size,
                dev,
                missing,
                num_workers,
                progress=progress,
                desc=desc,
                pixel_stats=loaded.pixel_stats,
            )
            settings.append({"checkpoint": loaded.label, "epoch": loaded.epoch, "missing": list(missing),
                             **score(ranking).to_dict()})  # fmt: skip
        average = {k: sum(s[k] for s in settings) / len(settings) for k in METRICS}
        records += [*settings, {**settings[0], "missing": "average", **average}]
    path = run / "eval-missing-all.json"
    payload = {"missing": "all", "settings": [list(m) for m in MISSING_SETTINGS], "results": records}
    atomic_write_text(json.dumps(payload, indent=2) + "\n", path)
    return RunEval(records, path, None)


def run_folder(train: TrainConfig, workdir: Path) -> Path:
    """The run folder ``reidtrain fit`` writes for ``train`` (pipeline.yaml's train section) under ``workdir``."""
    from reidtrain.recipes import resolve_recipe

    if train.output is not None:
        return train.output
    _, recipe = resolve_recipe(train.recipe, train.set, train.model, train.backbone)
    return workdir / "train" / recipe.model

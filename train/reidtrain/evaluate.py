"""Retrieval evaluation on a shard set's query and gallery splits, and loading a trained run back for it.

Features are the model's eval-mode ``retrieval`` output, L2-normalised; the distance is the squared Euclidean
distance between unit vectors (``2 - 2 cos``). The removal rule is the protocol that ``dataset.json`` records for
the dataset's layout (``camera``: same id and camera removed; ``scene``, MSVR310 only: same id and scene removed),
never inferred from the rows; shards without one are refused. The result says which rule was used.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reidschemas import Protocol, describe_protocol
from reidschemas.shards import read_protocol
from reidtrain.atomic import read_checkpoint, read_json
from reidtrain.batch import forward_inputs, model_inputs, shard_columns
from reidtrain.data.augment import EvalTransform
from reidtrain.data.items import ShardItems
from reidtrain.data.normalize import CLIP_MEAN, CLIP_STD
from reidtrain.data.shards import INDEX_NAME, LabelMap, ShardDataset, ShardIndex
from reidtrain.metrics import evaluate_rank, expected_random_map
from reidtrain.models import create_model
from reidtrain.progress import progress_bar

__all__ = [
    "EvalResult",
    "Ranking",
    "chance_map",
    "embed_batch",
    "evaluation_protocol",
    "extract_features",
    "load_checkpoint",
    "load_run_model",
    "rank_gallery",
    "resolve_checkpoint",
    "score",
]


@torch.no_grad()
def embed_batch(
    model: nn.Module,
    batch: Mapping[str, Any],
    inputs: tuple[str, ...],
    device: torch.device,
    missing: Sequence[str] = (),
) -> torch.Tensor:
    """(B, D) float32 L2-normalised retrieval features of a collated batch (``images``, ``cam_index`` and the
    model's ``inputs``, as :class:`ShardItems` gives them), on the CPU; bf16 autocast on CUDA as in training.

    The one forward pass of evaluation, feature files and ``reidtrain.load(...).embed``, so they agree exactly.
    """
    model.eval()
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        out = model(
            batch["images"].to(device),
            camids=batch["cam_index"].to(device),
            missing=tuple(missing),
            **forward_inputs(inputs, batch, device),
        )
    return nn.functional.normalize(out["retrieval"].float(), dim=1).cpu()  # (B, D)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    items: ShardItems,
    device: torch.device,
    missing: Sequence[str] = (),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool | None = False,
    desc: str = "features",
) -> dict[str, np.ndarray]:
    """``feats`` (N, D) float32 L2-normalised, and ``pids``, ``camids``, ``sceneids`` (N,) int64.

    ``progress``: a bar over the batches (None: only on a terminal)."""
    model.eval()
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, pids, camids, scenes = [], [], [], []
    with progress_bar(len(loader), desc, progress) as bar:
        for batch in loader:
            feats.append(embed_batch(model, batch, items.inputs, device, missing))  # (B, D)
            pids.append(batch["pid"])
            camids.append(batch["camid"])
            scenes.append(batch["sceneid"])
            bar.update()
    cat = lambda parts: torch.cat(parts).numpy()  # noqa: E731
    return {"feats": cat(feats), "pids": cat(pids), "camids": cat(camids), "sceneids": cat(scenes)}


@dataclass(frozen=True)
class EvalResult:
    """Retrieval metrics (fractions in [0, 1]) and the removal rule used."""

    mAP: float
    R1: float
    R5: float
    R10: float
    mINP: float
    rule: str  # the protocol: "scene" (MSVR310: same id and scene removed) or "camera" (same id and camera removed)
    num_query: int
    num_gallery: int
    dataset: str = "?"  # the layout whose protocol it is (as dataset.json records it)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (
            f"mAP {100 * self.mAP:.2f}  R1 {100 * self.R1:.2f}  R5 {100 * self.R5:.2f}  R10 {100 * self.R10:.2f}  "
            f"mINP {100 * self.mINP:.2f}  ({self.rule} rule of {self.dataset}, {self.num_query} queries, "
            f"{self.num_gallery} gallery)"
        )


@dataclass(frozen=True)
class Ranking:
    """Query x gallery distances with the ids the protocol needs (what ``evaluate`` scores and rank lists draw)."""

    distmat: np.ndarray  # (n_q, n_g) squared distance of unit vectors
    query: dict[str, np.ndarray]  # pids, camids, sceneids (n_q,)
    gallery: dict[str, np.ndarray]  # pids, camids, sceneids (n_g,)
    query_set: ShardDataset
    gallery_set: ShardDataset
    protocol: Protocol  # the dataset's, from dataset.json: "camera" or "scene"
    dataset: str = "?"  # the layout that declared the protocol
    query_feats: np.ndarray | None = None  # (n_q, D) float32 L2-normalised features (``eval --save-features``)
    gallery_feats: np.ndarray | None = None  # (n_g, D)

    def __post_init__(self) -> None:
        if self.protocol != "scene":
            return  # scene ids (WMVEID863's 999) are carried but never used by the camera rule
        for name, ids, rows in (("query", self.query, self.query_set), ("gallery", self.gallery, self.gallery_set)):
            missing = np.flatnonzero(ids["sceneids"] < 0)  # -1: no scene id
            if missing.size:
                first = rows[int(missing[0])]["sample_id"]
                raise ValueError(
                    f"{self.dataset} is scored with the scene rule, but {missing.size} {name} row(s) have no scene id "
                    f"(the first: {first}); reindex with `reidprep index` (it reports such rows) and rebuild the shards"
                )

    @property
    def scene_arrays(self) -> dict[str, np.ndarray]:
        """``q_sceneids`` / ``g_sceneids`` for the metrics under the scene rule; empty under the camera rule."""
        if self.protocol != "scene":
            return {}
        return {"q_sceneids": self.query["sceneids"], "g_sceneids": self.gallery["sceneids"]}

    def junk(self, q: int) -> np.ndarray:
        """(n_g,) bool: gallery items removed for query ``q`` (same id and camera; scene rule: same id and scene)."""
        same_id = self.gallery["pids"] == self.query["pids"][q]
        if self.protocol == "scene":
            return same_id & (self.gallery["sceneids"] == self.query["sceneids"][q])
        return same_id & (self.gallery["camids"] == self.query["camids"][q])


def evaluation_protocol(index: ShardIndex) -> tuple[Protocol, str]:
    """(protocol, dataset) that ``index``'s ``dataset.json`` records; ValueError for shards built without one."""
    return read_protocol(index.info, index.root / INDEX_NAME)


def describe(index: ShardIndex) -> str:
    """The line ``fit`` and ``eval`` print: ``scene rule (msvr310 layout: same id and same scene removed, ...)``."""
    protocol, dataset = evaluation_protocol(index)
    return describe_protocol(protocol, f"{dataset} layout")


def rank_gallery(
    model: nn.Module,
    shards_dir: Path,
    image_size: tuple[int, int],
    device: torch.device,
    missing: Sequence[str] = (),
    num_workers: int = 0,
    labels: LabelMap | None = None,
    index: ShardIndex | None = None,
    *,
    query: ShardDataset | None = None,
    gallery: ShardDataset | None = None,
    pixel_stats: tuple[Sequence[float], Sequence[float]] = (CLIP_MEAN, CLIP_STD),
    progress: bool | None = False,
    desc: str = "",
) -> Ranking:
    """Features of every query and gallery row of ``shards_dir`` (model left in eval mode) and their distances.

    ``index``: the shard set's already loaded index (the trainer passes its own, so an epoch reads no metadata).
    Raises ValueError when its ``dataset.json`` records no protocol (before any feature is computed).
    ``query`` / ``gallery``: other rows of the same shard set to rank instead of its query and gallery splits (the
    trainer's validation split, ``reidtrain.data.valsplit``); they must carry the model's input columns.
    ``pixel_stats``: the (mean, std) the model was trained with (the recipe's ``pixel_mean`` / ``pixel_std``).
    ``progress`` shows a bar per split (None: only on a terminal), named ``desc query`` / ``desc gallery``.
    """
    inputs = model_inputs(model)
    columns = shard_columns(inputs)
    if (query is None) != (gallery is None):
        raise ValueError("rank_gallery: pass both query and gallery rows, or neither")
    if query is None or gallery is None:
        query = ShardDataset(shards_dir, "query", columns=columns, index=index)
        gallery = ShardDataset(shards_dir, "gallery", columns=columns, index=query.index)
    protocol, dataset = evaluation_protocol(query.index)
    labels = labels if labels is not None else query.label_map()
    transform = EvalTransform(size=image_size, mean=pixel_stats[0], std=pixel_stats[1])
    q_items, g_items = ShardItems(query, transform, labels, inputs), ShardItems(gallery, transform, labels, inputs)
    prefix = f"{desc} " if desc else ""
    q = extract_features(
        model, q_items, device, missing, num_workers=num_workers, progress=progress, desc=f"{prefix}query"
    )
    g = extract_features(
        model, g_items, device, missing, num_workers=num_workers, progress=progress, desc=f"{prefix}gallery"
    )
    q_feats, g_feats = q.pop("feats"), g.pop("feats")  # (n_q, D), (n_g, D)
    qf, gf = torch.from_numpy(q_feats).double(), torch.from_numpy(g_feats).double()
    distmat = (2.0 - 2.0 * qf @ gf.T).clamp_(min=0.0).numpy()  # (n_q, n_g) squared distance of unit vectors
    return Ranking(distmat, q, g, query, gallery, protocol, dataset, q_feats, g_feats)


def score(ranking: Ranking) -> EvalResult:
    """mAP, Rank-1/5/10 and mINP of ``ranking`` under the dataset's protocol."""
    q, g = ranking.query, ranking.gallery
    scenes = ranking.scene_arrays
    result = evaluate_rank(ranking.distmat, q["pids"], g["pids"], q["camids"], g["camids"], max_rank=50, **scenes)
    return EvalResult(
        mAP=float(result.mAP),
        R1=result.rank(1),
        R5=result.rank(5),
        R10=result.rank(10),
        mINP=float(result.mINP),
        rule=ranking.protocol,
        num_query=len(q["pids"]),
        num_gallery=len(g["pids"]),
        dataset=ranking.dataset,
    )


def chance_map(ranking: Ranking) -> float:
    """The exact expected mAP of a uniformly random ranking of the same queries and gallery under the same removal
    rule (what "far above chance" is measured against: it depends on how many true matches each query has)."""
    q, g = ranking.query, ranking.gallery
    return expected_random_map(q["pids"], g["pids"], q["camids"], g["camids"], **ranking.scene_arrays)


def resolve_checkpoint(run: Path, checkpoint: str) -> Path:
    """``last`` / ``best`` -> ``run/last.pt`` / ``run/best.pt``; anything else is a file path."""
    path = run / f"{checkpoint}.pt" if checkpoint in ("last", "best") else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def options_as_trained(config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The model options a checkpoint was trained with. Options whose default changed since are pinned to the old
    default when the configuration predates the change (it lacks the recipe's ``pixel_mean``, added with it), with a
    note: MambaPro's ``prompt_identity_paths`` (off before, on now; same weights, another function)."""
    recipe = config["recipe"]
    options = dict(recipe.get("model_options", {}))
    older = "pixel_mean" not in recipe
    if config.get("model") == "mambapro" and older and "prompt_identity_paths" not in options:
        options["prompt_identity_paths"] = False
        print(
            f"note: {path} was trained before MambaPro's prompt identity paths became the default: "
            "built with prompt_identity_paths=false, as it was trained",
            file=sys.stderr,
        )
    return options


def load_checkpoint(path: Path, config_path: Path | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model with the weights of checkpoint ``path``, the run's configuration, the checkpoint), from the file alone.

    ``fit`` stores config.json's content in every checkpoint (``config``), so a checkpoint copied out of its run
    folder loads on its own. A checkpoint of an earlier version lacks it: ``config_path`` (default: config.json beside
    the file) is read instead. A damaged checkpoint or config.json is ``UnreadableRunFile`` naming it.
    """
    state = read_checkpoint(path)
    config = state.get("config")
    if config is None:
        config_path = Path(path).parent / "config.json" if config_path is None else config_path
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{path} does not record its configuration (written before checkpoints did) and {config_path} "
                "does not exist: evaluate it inside its run folder"
            )
        config = read_json(config_path, f"{path} predates checkpoints that record their configuration: restore a copy")
    recipe = config["recipe"]
    model = create_model(
        config["model"],
        num_classes=config["num_classes"],
        num_cameras=config["num_cameras"],
        backbone=config["backbone"],
        image_size=tuple(recipe["image_size"]),
        weights=None,
        require_pretrained=False,  # the checkpoint holds every weight
        **options_as_trained(config, path),
    )
    model.load_state_dict(state["model"])
    return model, config, state


def load_run_model(run: Path, checkpoint: str = "last") -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model with the checkpoint's weights, the run's configuration, the checkpoint) for a run folder of ``fit``;
    ``checkpoint`` is last, best or a file (which may lie elsewhere: see ``load_checkpoint``)."""
    config_path = run / "config.json"
    if checkpoint in ("last", "best") and not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: {run} is not a run folder written by `reidtrain fit`")
    return load_checkpoint(resolve_checkpoint(run, checkpoint), config_path if config_path.is_file() else None)

"""A thin trainer: PK batches -> model -> ReIDObjective, per-epoch evaluation, metrics to a file, auto-resume.

A run folder holds::

    config.json     the resolved configuration: the run settings and the whole recipe (model, backbone, every
                    setting, model_options) after overrides, image size, classes and cameras, parameter counts and
                    ``provenance`` (``reidtrain.provenance``: package version, git commit, the shards' dataset.json
                    fingerprint, the weights file's SHA-256); a rerun must match it to resume
    metrics.jsonl   one JSON line per finished epoch (loss terms, lr, test mAP, R1, R5, R10, mINP, seconds; with a
                    validation split also val_mAP, val_R1, ... and ``best_on``; the model's epoch statistics such
                    as STMI's ``chi_density``)
    last.pt         everything needed to continue exactly: model, optimizer, scheduler (and fp16 scaler), epoch
    best.pt         the model of the epoch with the best validation mAP so far (``val_ids`` > 0), else with the best
                    test mAP; ``selected_on`` says which ("val" / "test")
                    (both checkpoints also hold config.json's content under ``config``: each loads on its own,
                    ``reidtrain.evaluate.load_checkpoint``)
    tensorboard/    the same per-epoch figures as event files, when TensorBoard is installed
    .lock           held by the fit writing the folder (``reidtrain.runlock``): a second fit on it exits naming
                    the holder; temporary files are ``.NAME.tmp-HOST-PID``, removed once their writer is gone

Every file is written atomically and durably (``reidtrain.atomic``); a full disk ends the run with ``DiskFull``
(one line naming the file and the bytes needed) and leaves the last finished epoch's files whole. A damaged
``last.pt`` is refused with the way out (delete it to start over, or restore a copy).

Determinism: everything random is seeded from ``seed``: model init, PK order (``PKSampler(seed)``, per epoch), each
sample's augmentation (its own seed from (seed, epoch, rank, position): ``reidtrain.data.loader``, whatever the
number of workers), and every epoch reseeds Python, numpy and torch from (seed, epoch, rank) before its first batch,
which drives dropout. So a run stopped after epoch e and resumed gives the same weights as one that never stopped
(on CPU), without restoring RNG states (``last.pt`` still records them).

Data: the DataLoader workers read and decode; augmentation runs per batch on the training device
(``reidtrain.data.loader``). ``workers`` unset: 0 on CPU, on CUDA one per core but one, at most 8 (printed).

Precision: fp32 on CPU; on CUDA the recipe's ``amp`` (bf16 autocast by default, fp16 with a gradient scaler, or off).
``grad_clip`` clips the global gradient norm. Under ``torchrun`` (``reidtrain.distributed``) each rank trains its own
whole PK batches and rank 0 evaluates and writes the run folder.

The schedule always spans ``recipe.epochs``; ``epochs`` (``--epochs``) is where this invocation stops, so a run can be
trained in several pieces without changing its learning rates.

Before the first step ``fit`` checks the shards against the run and prints what it trains
(``reidtrain.preflight``): it refuses a contradicting image orientation, declared inputs missing on more than 1% of
train rows and stale shards, each unless its ``allow_*`` override is set.

Model selection: ``val_ids`` > 0 holds that many training ids out of training (``reidtrain.data.valsplit``: which ids,
and how their rows become a query and a gallery) and ranks them after every epoch with the test set's ranking code;
their mAP chooses ``best.pt``. Without it "best" is the best on test, and every place that shows it says so.

Configuration: ``fit`` takes ``reidschemas.config.TrainConfig`` (pipeline.yaml's train section with the command line
applied: run settings, the recipe's name or path, ``set`` overrides, ``model`` / ``backbone`` overrides) and resolves
it once (``resolve_run``) into the run settings and the validated ``TrainRecipe`` before any shard is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reidschemas.config import TrainConfig
from reidschemas.safeio import disk_full_guard
from reidschemas.signals import interrupts_deferred
from reidtrain.atomic import UnreadableRunFile, append_line, atomic_save, atomic_write_text, read_checkpoint, read_json
from reidtrain.batch import forward_inputs, model_inputs, shard_columns
from reidtrain.data.augment import train_transform
from reidtrain.data.loader import DeviceBatches, auto_workers, train_loader
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import LabelMap, ShardDataset, ShardIndex
from reidtrain.data.valsplit import ValSplit, choose_val_ids, split_val, train_labels
from reidtrain.distributed import DistEnv, broadcast_object, dist_env, process_group
from reidtrain.evaluate import EvalResult, Ranking, chance_map, describe, rank_gallery, score
from reidtrain.losses import ReIDObjective, objective_for
from reidtrain.models import create_model
from reidtrain.optim import optimizer_for, scheduler_for
from reidtrain.preflight import ALLOW_KEYS, FitRefused, refusals, shard_facts, start_block
from reidtrain.progress import progress_bar, reported_lr
from reidtrain.provenance import provenance
from reidtrain.recipes import TrainRecipe, resolve_recipe
from reidtrain.runlock import RunLock

__all__ = ["FitSummary", "RunMismatchError", "config_record", "fit", "resolve_run"]

log = logging.getLogger(__name__)

LAST, BEST, CONFIG, METRICS = "last.pt", "best.pt", "config.json", "metrics.jsonl"
_FIGURES = ("mAP", "R1", "R5", "R10", "mINP")
# Options that may change between the pieces of one run without changing its result.
_NOT_COMPARED = ("output", "epochs", "device", "num_workers", "provenance", "allowed")
# Keys that config.json of earlier versions lacks: compared only when the saved config has them.
_ADDED = ("image_size", "model_options", "parameters", "dataset_fingerprint", "camera_ids")


class RunMismatchError(ValueError):
    """The run folder holds a checkpoint of a different configuration."""


@dataclass(frozen=True)
class FitSummary:
    """Where a run ended: the last epoch's test mAP; the best epoch (chosen on ``selected_on``) and its test mAP."""

    last_epoch: int
    last_map: float  # test mAP of the last epoch
    best_epoch: int
    best_map: float  # test mAP of the best epoch
    resumed_from: int  # completed epochs found in last.pt (0: fresh start)
    chance_map: float | None = None  # expected test mAP of a random ranking (None: not computed)
    selected_on: str = "test"  # "val" (the held-out ids chose best.pt) or "test"
    best_val_map: float | None = None  # validation mAP of the best epoch (selected_on "val")
    val_chance_map: float | None = None  # expected validation mAP of a random ranking

    def __str__(self) -> str:
        chance = "" if self.chance_map is None else f" (random ranking: mAP {100 * self.chance_map:.2f})"
        if self.selected_on == "val" and self.best_val_map is not None:
            val_chance = "" if self.val_chance_map is None else f", random {100 * self.val_chance_map:.2f}"
            best = (
                f"best on val: epoch {self.best_epoch} (val mAP {100 * self.best_val_map:.2f}{val_chance}), "
                f"test mAP {100 * self.best_map:.2f}"
            )
        else:
            best = f"best on test: epoch {self.best_epoch}, test mAP {100 * self.best_map:.2f}"
        return f"last epoch {self.last_epoch}: test mAP {100 * self.last_map:.2f} | {best}{chance}"


def resolve_run(train: TrainConfig, workdir: Path | None = None) -> tuple[TrainConfig, TrainRecipe]:
    """(the run settings, the recipe) of ``train``, resolved once and validated; reads no shard, builds no model.

    The recipe is ``train.recipe`` (a shipped name or a YAML file) <- ``train.set`` <- ``train.model`` /
    ``train.backbone`` (``reidtrain.recipes.resolve_recipe``). The returned settings carry the recipe's reference,
    model and backbone, and absolute paths: ``shards`` and ``output`` default to ``<workdir>/shards`` and
    ``<workdir>/train/<model>`` when a workdir is given.
    """
    ref, recipe = resolve_recipe(train.recipe, train.set, train.model, train.backbone)
    if train.weights is not None and train.random_init:
        raise ValueError("--weights and --random-init exclude each other")
    shards = train.shards if train.shards is not None else (workdir / "shards" if workdir is not None else None)
    output = (
        train.output
        if train.output is not None
        else (workdir / "train" / recipe.model if workdir is not None else None)
    )
    if shards is None or output is None:
        raise ValueError(
            "pass --shards and --output, or --config pipeline.yaml / --workdir W (W/shards, W/train/MODEL)"
        )
    epochs = recipe.epochs if train.epochs is None else train.epochs
    if not 1 <= epochs <= recipe.epochs:
        raise ValueError(
            f"--epochs {epochs} must be in [1, {recipe.epochs}] (the recipe's schedule length); "
            "train longer with `--set epochs=N`"
        )
    resolved = train.model_copy(
        update={
            "recipe": ref,
            "model": recipe.model,
            "backbone": recipe.backbone,
            "shards": Path(shards).resolve(),
            "output": Path(output).resolve(),
            "weights": None if train.weights is None else Path(train.weights).resolve(),
            "epochs": epochs,
        }
    )
    return resolved, recipe


def config_record(
    train: TrainConfig, recipe: TrainRecipe, labels: LabelMap, shards_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's config.json content: the resolved run settings (``resolve_run``) and the whole recipe, and with
    ``shards_info`` (the shards' dataset.json) the run's provenance (``reidtrain.provenance``).

    ``model`` and ``backbone`` appear twice (top level and in the recipe) so run folders of earlier versions, whose
    recipe did not name them, stay readable by ``reidtrain eval`` and resumable; ``image_size`` and
    ``model_options`` are the recipe's, repeated for readers.
    """
    record = {
        "shards": str(train.shards),
        "output": str(train.output),
        "recipe_name": train.recipe,
        "overrides": dict(train.set),
        "recipe": recipe.model_dump(mode="json"),
        "model": recipe.model,
        "backbone": recipe.backbone,
        "weights": None if train.weights is None else str(train.weights),
        "random_init": train.random_init,
        "seed": train.seed,
        "val_ids": train.val_ids,
        "epochs": train.epochs,
        "device": train.device,
        "num_workers": train.workers,
        "num_classes": labels.num_classes,
        "num_cameras": labels.num_cameras,
        "camera_ids": sorted(labels.camid_to_index, key=labels.camid_to_index.__getitem__),  # index -> camid (SIE)
        "image_size": list(recipe.image_size),
        "model_options": dict(recipe.model_options),
        "allowed": {key: getattr(train, key) for key in ALLOW_KEYS},
    }
    if shards_info is not None:
        record["dataset_fingerprint"] = shards_info.get("fingerprint")
        record["provenance"] = provenance(dict(shards_info), train.weights)
    return record


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the recipe naming its model and backbone (config.json of earlier versions lacks them) and
    every recipe key it lacks at its default (keys added later default to the behaviour before them)."""
    recipe = dict(config.get("recipe") or {})
    recipe.setdefault("model", config.get("model"))
    recipe.setdefault("backbone", config.get("backbone"))
    defaults = TrainRecipe().model_dump(mode="json")
    recipe = {**defaults, **recipe, "augment": {**defaults["augment"], **(recipe.get("augment") or {})}}
    return {"val_ids": 0, "val_pids": [], **config, "recipe": recipe}  # earlier versions had no validation split


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    old, new = _comparable(old), _comparable(new)
    keys = sorted((set(old) | set(new)) - set(_NOT_COMPARED) - {k for k in _ADDED if k not in old})
    return [k for k in keys if old.get(k) != new.get(k)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch (CPU, CUDA) RNG states, in types ``torch.load(weights_only=True)`` reads."""
    kind, key, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` ("bf16", "fp16", "off") on ``device``; None (fp32) on CPU or when off."""
    if device.type != "cuda" or amp == "off":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader | DeviceBatches,
    objective: ReIDObjective,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    desc: str = "train",
    progress: bool | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean total loss, the mean of each term and the time split.

    ``amp_dtype`` runs the forward pass under CUDA autocast (the losses are computed in fp32); ``scaler`` (fp16)
    scales the loss. ``grad_clip`` clips the global gradient norm (after unscaling). ``model`` may be wrapped in
    DistributedDataParallel. ``data_seconds`` is the time spent waiting for batches, ``compute_seconds`` the rest.
    """
    model.train()
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inputs = model_inputs(core)
    sums: dict[str, float] = {}
    batches, samples, start = 0, 0, time.perf_counter()
    data_time = 0.0
    lr = reported_lr(optimizer)  # the epoch line's
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
    with progress_bar(len(loader), desc, progress) as bar:
        waited = time.perf_counter()
        for batch in loader:
            data_time += time.perf_counter() - waited
            images = batch["images"].to(device, non_blocking=True)  # (B, 3, 3, H, W)
            labels = batch["label"].to(device, non_blocking=True)  # (B,)
            with autocast:
                outputs = model(
                    images,
                    camids=batch["cam_index"].to(device, non_blocking=True),
                    **forward_inputs(inputs, batch, device),
                )
            loss, terms = objective(outputs, labels)  # fp32 heads
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {float(loss)} at batch {batches}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            for name, value in {"loss": float(loss.detach()), **{f"loss_{k}": v for k, v in terms.items()}}.items():
                sums[name] = sums.get(name, 0.0) + value
            batches += 1
            samples += len(labels)
            rate = samples / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}", refresh=False)
            bar.update()
            waited = time.perf_counter()
    if batches == 0:
        raise ValueError("the training loader gave no batch")
    total = time.perf_counter() - start
    means = {name: value / batches for name, value in sums.items()}
    return {**means, "samples": samples, "data_seconds": data_time, "compute_seconds": total - data_time}


def _truncate_metrics(path: Path, completed: int) -> None:
    """Drop metrics lines of epochs after ``completed`` (written before a crash, not in last.pt)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for number, line in enumerate(lines, 1) if _metrics_epoch(path, number, line) <= completed]
    if len(kept) != len(lines):
        atomic_write_text("".join(line + "\n" for line in kept), path)


def _metrics_epoch(path: Path, number: int, line: str) -> int:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableRunFile(
            f"{path} line {number} is not an epoch's JSON record ({line[:60]!r}): delete that line; "
            "fit rewrites the lines of epochs after last.pt's"
        ) from exc


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of (run seed, 1-based epoch, rank): every epoch starts its RNGs from it (augmentation, dropout)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _tensorboard(run: Path, enabled: bool) -> Any:
    """A SummaryWriter under ``run/tensorboard`` when TensorBoard is installed (and this is the main rank)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    with disk_full_guard(run / "tensorboard"):
        return SummaryWriter(log_dir=str(run / "tensorboard"))


def _log_epoch(writer: Any, run: Path, record: Mapping[str, Any], epoch: int) -> None:
    """The epoch's figures as TensorBoard scalars (``val/*`` with a validation split); a full disk is ``DiskFull``."""
    with disk_full_guard(run / "tensorboard"):
        for key in ("loss", *(k for k in record if k.startswith("loss_")), "lr", "train_samples_per_s"):
            writer.add_scalar(f"train/{key}", record[key], epoch)
        for key in _FIGURES:
            writer.add_scalar(f"test/{key}", record[key], epoch)
            if f"val_{key}" in record:
                writer.add_scalar(f"val/{key}", record[f"val_{key}"], epoch)
        writer.flush()


DEGENERATE_DENSITY = 0.95
"""An incidence density at or above this is reported: the hypergraph has become (nearly) one hyperedge."""


def model_epoch_stats(model: nn.Module) -> dict[str, float]:
    """Statistics the model's modules gathered while training this epoch (modules with ``pop_epoch_stats``, named
    by their ``stats_prefix``: CHI's ``chi_density``), then reset; {} for models without any."""
    by_prefix: dict[str, list[dict[str, float]]] = {}
    for module in model.modules():
        pop = getattr(module, "pop_epoch_stats", None)
        if callable(pop):
            by_prefix.setdefault(str(getattr(module, "stats_prefix", "stats")), []).append(pop())
    out: dict[str, float] = {}
    for prefix, found in by_prefix.items():
        for i, stats in enumerate(found, 1):
            name = prefix if len(found) == 1 else f"{prefix}{i}"
            out.update({f"{name}_{key}": round(value, 6) for key, value in stats.items()})
    return out


@dataclass
class _Where:
    """How far a fit got: the last epoch saved in ``last.pt`` and the epoch in progress (for Ctrl-C's note)."""

    completed: int
    running: int


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during ``fit``; the message says where it stopped and that rerunning resumes."""


@contextlib.contextmanager
def _interrupt_note(run: Path, epochs: int, where: _Where) -> Iterator[None]:
    """Turn Ctrl-C into :class:`FitInterrupted` naming the epoch it stopped in and what ``last.pt`` holds."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if where.completed == epochs:
            kept = f"{run / LAST} holds the final epoch; the run is complete"
        elif where.completed:
            kept = (
                f"{run / LAST} holds epoch {where.completed} of {epochs}; run the same command again to resume "
                f"from epoch {where.completed + 1}"
            )
        else:
            kept = "no epoch was finished, so nothing was saved; run the same command again to start over"
        when = f"after epoch {where.completed}" if where.completed == where.running else f"during epoch {where.running}"
        raise FitInterrupted(f"interrupted {when} of {epochs}: {kept}") from exc


def _holding_note(epoch: int) -> Callable[[int], None]:
    """What Ctrl-C prints while epoch ``epoch``'s files are being written (it stops right after them)."""

    def note(signum: int) -> None:
        line = f"stopping after the files of epoch {epoch} are written (press Ctrl-C again to stop at once)"
        # a signal handler may run while stderr is mid-write ("reentrant call"): then the note is skipped, not the wait
        with contextlib.suppress(RuntimeError):
            print(line, file=sys.stderr, flush=True)

    return note


def fit(
    train: TrainConfig,
    workdir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> FitSummary:
    """Train (or continue) the run of ``train`` (resolved by ``resolve_run``); see the module docstring.

    ``resume`` requires ``output/last.pt`` (it is continued anyway when present); ``progress`` None shows a bar only
    when stderr is a terminal. Under ``torchrun`` every rank calls this; rank 0 evaluates, writes the run folder and
    echoes, the others train their share of the batches and wait.
    """
    run_settings, recipe = resolve_run(train, workdir)
    env = dist_env()
    device = torch.device(run_settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but CUDA is not available")
    assert run_settings.output is not None  # resolve_run
    shown = echo if env.is_main else lambda _: None
    with process_group(env, device) as device, RunLock(run_settings.output, env, shown) as lock:
        return _fit(run_settings, recipe, env, device, shown, resume, progress, lock)


def _fit(
    options: TrainConfig,
    recipe: TrainRecipe,
    env: DistEnv,
    device: torch.device,
    echo: Callable[[str], None],
    resume: bool,
    progress: bool | None,
    lock: RunLock,
) -> FitSummary:
    assert options.shards is not None and options.output is not None and options.epochs is not None  # resolve_run
    workers = options.workers if options.workers is not None else auto_workers(device)
    if options.output.is_dir():
        lock.take()  # refuse a second fit before it builds a model
    shards = options.shards
    if not shards.is_dir():
        raise FileNotFoundError(f"shards folder {shards} does not exist; write it with `reidprep build-shards`")
    index_only = ShardDataset(shards, "train", columns=())
    protocol = describe(index_only.index)  # refuses shards that record no protocol, before any training
    labels = index_only.label_map()
    val_pids: tuple[int, ...] = ()
    if options.val_ids:
        val_pids = choose_val_ids(index_only, options.val_ids, options.seed, recipe.ids_per_batch)
        labels = train_labels(labels, val_pids)  # the classifier's classes: the remaining train ids
    seed_everything(options.seed)  # the same initial weights on every rank
    model = create_model(
        recipe.model,
        num_classes=labels.num_classes,
        num_cameras=labels.num_cameras,
        backbone=recipe.backbone,
        image_size=tuple(recipe.image_size),
        weights=options.weights,
        require_pretrained=not options.random_init,
        **recipe.model_options,
    ).to(device)
    inputs = model_inputs(model)
    facts = shard_facts(index_only.index, inputs)
    problems = refusals(facts, recipe.image_size, options)
    if problems:  # before anything is written
        raise FitRefused(f"{shards}: {'; '.join(problems)}")
    lock.take()  # before last.pt is read and anything is written
    params = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    config = config_record(options.model_copy(update={"workers": workers}), recipe, labels, index_only.index.info)
    config["parameters"] = {"trainable": params[0], "total": params[1]}
    config["val_pids"] = list(val_pids)
    config["world_size"] = env.world_size
    run = options.output
    last_path = run / LAST
    for line in start_block(options, recipe.image_size, params, inputs, facts):
        echo(line)
    if options.workers is None:
        echo(f"data: {workers} DataLoader workers (chosen for {device.type}; set with --workers)")

    start_epoch = 0
    state: dict[str, Any] | None = None
    if last_path.is_file():
        state = read_checkpoint(last_path, resume=True)
        saved = state.get("config")  # config.json's content when last.pt was written
        if saved is None:  # last.pt of an earlier version: compare with config.json
            way_out = f"{last_path} predates checkpoints that record their configuration: restore a copy of it"
            saved = read_json(run / CONFIG, way_out) if (run / CONFIG).is_file() else {}
        diff = _config_diff(saved, config)
        if diff:
            raise RunMismatchError(
                f"{run} holds a checkpoint of a different configuration (differs in: {', '.join(diff)}); "
                "use another --output, or delete the run folder"
            )
        start_epoch = int(state["epoch"])
        if start_epoch >= config["epochs"]:
            echo(f"{run} is already trained to epoch {start_epoch}; nothing to do (`--epochs N` or `--set epochs=N`)")
        else:
            echo(f"resuming {run} after epoch {start_epoch}")
    elif resume:
        raise FileNotFoundError(f"--resume: {last_path} does not exist")
    if env.is_main:
        with disk_full_guard(run):
            run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(config, indent=2) + "\n", run / CONFIG)
        echo(f"evaluation protocol: {protocol}")
    train_rows = ShardDataset(shards, "train", columns=shard_columns(inputs), index=index_only.index)
    val = split_val(train_rows, val_pids) if val_pids else None
    train_set = val.train if val is not None else train_rows
    if val is not None:
        echo(
            f"validation split (val_ids {len(val.pids)}, seed {options.seed}): ids {list(val.pids)} held out of "
            f"train; {len(val.query)} queries, {len(val.gallery)} gallery rows; it chooses best.pt"
        )
    else:
        echo("no validation split (val_ids 0): best.pt is the best epoch on test")
    objective = objective_for(recipe, labels.num_classes)
    optimizer = optimizer_for(model, recipe)
    scheduler = scheduler_for(optimizer, recipe)
    amp_dtype = autocast_dtype(device, recipe.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    sampler = PKSampler(
        train_set.pids,
        recipe.ids_per_batch,
        recipe.instances_per_id,
        seed=options.seed,
        rank=env.rank,
        world_size=env.world_size,
    )
    transform = train_transform(recipe)  # the recipe's size, pixel statistics, flip/pad/erasing and their options
    loader = train_loader(train_set, transform, labels, inputs, sampler, device, workers)

    selected_on = "val" if val is not None else "test"
    best_map, best_epoch, last_map = -1.0, 0, float("nan")  # best_map: the selecting mAP (val, else test)
    best_test_map, best_val_map = float("nan"), None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        best_map, best_epoch, last_map = float(state["best_map"]), int(state["best_epoch"]), float(state["last_map"])
        best_test_map = float(state.get("best_test_map", best_map))  # last.pt of earlier versions: chosen on test
        best_val_map = best_map if val is not None else None
    if env.is_main:
        _truncate_metrics(run / METRICS, start_epoch)
    # DDP: each rank trains on its own whole PK batches (effective batch = world_size x P x K); gradients are
    # averaged. A model whose training graph skips some of its trainable parameters sets ``ddp_find_unused = True``.
    trained = (
        nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(model, "ddp_find_unused", False)),
        )
        if env.enabled
        else model
    )
    writer = _tensorboard(run, env.is_main)
    ranking: Ranking | None = None
    val_ranking: Ranking | None = None

    where = _Where(completed=start_epoch, running=start_epoch + 1)
    with _interrupt_note(run, config["epochs"], where):
        for epoch in range(start_epoch + 1, config["epochs"] + 1):  # 1-based
            where.running = epoch
            start = time.perf_counter()
            sampler.set_epoch(epoch - 1)
            seed_everything(epoch_seed(options.seed, epoch, env.rank))  # resume needs no saved RNG state
            lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
            shown_lr = reported_lr(optimizer)  # as the progress bar shows it
            losses = train_one_epoch(
                trained,
                loader,
                objective,
                optimizer,
                device,
                f"epoch {epoch}/{config['epochs']}",
                progress if env.is_main else False,
                amp_dtype=amp_dtype,
                scaler=scaler,
                grad_clip=recipe.grad_clip,
            )
            scheduler.step()
            train_seconds = time.perf_counter() - start
            stats = model_epoch_stats(model)  # e.g. CHI's incidence density over this epoch's training samples
            for key, value in stats.items():
                if key.endswith("density") and value >= DEGENERATE_DENSITY:
                    echo(
                        f"epoch {epoch}: {key} {value:.3f}: nearly every node pair shares a hyperedge, so CHI averages "
                        "all tokens alike (raise model_options.tau to keep it selective)"
                    )
            result: EvalResult | None = None
            val_result: EvalResult | None = None
            if env.is_main:
                ranking, val_ranking = _rank(
                    model, shards, recipe, device, workers, labels, index_only.index, val,
                    progress=progress, desc=f"epoch {epoch} eval",
                )  # fmt: skip
                result = score(ranking)
                val_result = score(val_ranking) if val_ranking is not None else None
            result, val_result = broadcast_object((result, val_result), env)
            assert result is not None
            last_map = result.mAP
            record = {
                "epoch": epoch,
                **losses,
                "lr": shown_lr,
                "lrs": lrs,
                **{k: getattr(result, k) for k in ("mAP", "R1", "R5", "R10", "mINP")},
                "rule": result.rule,
                **({f"val_{k}": getattr(val_result, k) for k in _FIGURES} if val_result is not None else {}),
                **({"val_rule": val_result.rule} if val_result is not None else {}),
                "best_on": selected_on,
                "train_samples_per_s": round(losses["samples"] * env.world_size / max(train_seconds, 1e-9), 2),
                "seconds": round(time.perf_counter() - start, 3),
                **stats,
            }
            # best.pt, the metrics line, last.pt and the epoch line belong together: Ctrl-C waits for all four
            with interrupts_deferred(_holding_note(epoch)):
                selecting = val_result.mAP if val_result is not None else result.mAP
                if selecting > best_map:
                    best_map, best_epoch, best_test_map = selecting, epoch, result.mAP
                    best_val_map = val_result.mAP if val_result is not None else None
                    if env.is_main:
                        best = {
                            "model": model.state_dict(),
                            "epoch": epoch,
                            "mAP": result.mAP,
                            "selected_on": selected_on,
                            "config": config,
                        }
                        if val_result is not None:
                            best["val_mAP"] = val_result.mAP
                        atomic_save(best, run / BEST)
                if env.is_main:
                    append_line(json.dumps(record), run / METRICS)
                    atomic_save(
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict() if scaler is not None else {},
                            "sampler_epoch": epoch,
                            "rng": rng_states(),
                            "epoch": epoch,
                            "best_map": best_map,
                            "best_epoch": best_epoch,
                            "best_test_map": best_test_map,
                            "selected_on": selected_on,
                            "last_map": last_map,
                            "config": config,
                        },
                        last_path,
                    )
                    where.completed = epoch
                    if writer is not None:
                        _log_epoch(writer, run, record, epoch)
                shown = f"test {result}" if val_result is None else f"val {val_result} | test {result}"
                timing = f"lr {record['lr']:.2e}  {record['seconds']:.1f}s"
                echo(f"epoch {epoch}: loss {losses['loss']:.4f}  {shown}  {timing}")
    if writer is not None:
        with disk_full_guard(run / "tensorboard"):
            writer.close()
    if math.isnan(last_map):
        raise RuntimeError("no epoch was trained")
    trained_now = env.is_main and start_epoch < config["epochs"]
    chance = chance_map(ranking) if trained_now and ranking is not None else None
    val_chance = chance_map(val_ranking) if trained_now and val_ranking is not None else None
    return FitSummary(
        config["epochs"],
        last_map,
        best_epoch,
        best_test_map,
        start_epoch,
        chance,
        selected_on,
        best_val_map,
        val_chance,
    )


def _rank(
    model: nn.Module,
    shards: Path,
    recipe: TrainRecipe,
    device: torch.device,
    workers: int,
    labels: LabelMap,
    index: ShardIndex,
    val: ValSplit | None,
    progress: bool | None = False,
    desc: str = "eval",
) -> tuple[Ranking, Ranking | None]:
    """(the test ranking, the validation ranking or None): the same ranking code on the two sets of rows."""
    size, stats = recipe.image_size, (recipe.pixel_mean, recipe.pixel_std)
    shown: dict[str, Any] = {"progress": progress, "pixel_stats": stats, "num_workers": workers, "labels": labels}
    test = rank_gallery(model, shards, size, device, index=index, desc=f"{desc} test", **shown)
    if val is None:
        return test, None
    held_out = rank_gallery(
        model, shards, size, device, query=val.query, gallery=val.gallery, desc=f"{desc} val", **shown
    )
    return test, held_out

"""Sections: training steps of the six models (triplets/s, MFU, peak memory, data wait) and two-epoch ``fit`` runs.

Shards: synthetic persons (RGBNT201 layout) through the real prep pipeline (``reidprep run``: synth, index, thermal
masks, heuristic captions, build-shards), as ``tests/train/conftest.py`` builds them, so every model finds the masks
and captions it reads.

Training steps: the trainer's own pieces (``TrainItems`` over the shards with the recipe's ``train_transform``,
``PKSampler``, the real ``DataLoader`` with worker processes, augmentation per batch on the device (``DeviceBatches``),
``ReIDObjective``, the recipe's optimizer and parameter groups, and
``train_one_epoch`` itself) with each model's recipe: its backbone (ViT-B/16), 256x128 input, P x K batch, bf16
autocast on CUDA. Weights are random. ``warmup`` steps run first (worker start-up, cuDNN/kernel choice) and are not
counted; the workers stay alive (``persistent_workers``) for the timed steps. Figures:

- triplets/s over the timed steps (data included, as training sees it);
- data wait: the time ``train_one_epoch`` spent blocked on the DataLoader iterator, as a share of the timed wall time;
- FLOPs: one extra step counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward matmuls,
  convolutions and attention; elementwise work is not counted, as usual for model FLOPs); MFU = counted FLOPs per
  step x steps/s / the GPU's dense bf16 peak (``common.PEAK_BF16_FLOPS``), "n/a" on a CPU.

Fit: ``reidtrain.trainer.fit`` for two epochs of each model's tiny-demo recipe with ``amp`` bf16 and fp16 (the fp16
run uses the gradient scaler): autocast and scaler bugs live in the models' own code, which is the same at any width,
so the tiny backbone keeps the section short; ViT-B/16 speed is the training-steps section's job. On a CPU the
trainer always runs fp32 (its autocast is CUDA-only), which the rows say.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import yaml
from gpusuite.common import Figure, Row, guarded, peak_bf16_flops, peak_memory, timed
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from reidschemas.config import TrainConfig
from reidtrain.batch import model_inputs, shard_columns
from reidtrain.data.augment import train_transform
from reidtrain.data.items import TrainItems
from reidtrain.data.loader import DeviceBatches, collate_train
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import ShardDataset
from reidtrain.losses import objective_for
from reidtrain.models import create_model
from reidtrain.optim import optimizer_for
from reidtrain.recipes import TrainRecipe, parse_recipe, resolve_recipe
from reidtrain.trainer import autocast_dtype, fit, seed_everything, train_one_epoch

STEP_RECIPES: dict[str, str | None] = {
    "baseline": None,  # no packaged ViT-B recipe: TrainRecipe's defaults (ViT-B-16, 256x128, P8 x K8, bf16)
    "demo": "demo-rgbnt201",
    "dmpt": "dmpt-rgbnt201",
    "mambapro": "mambapro-rgbnt201",
    "next": "next-person",
    "stmi": "stmi-rgbnt201",
}
"""Model -> the packaged recipe whose backbone, batch size and options the training-steps section uses (full run)."""


def build_shards(root: Path, ids: int, images_per_id: int, seed: int = 0) -> Path:
    """synth -> index -> masks (thermal) -> captions (heuristic) -> build-shards with ``reidprep run``; the shards."""
    from typer.testing import CliRunner

    from reidprep.cli import app

    config = {
        "workdir": str(root / "work"),
        "dataset": {"layout": "rgbnt201", "root": str(root / "synth")},
        "synth": {
            "out": str(root / "synth"),
            "kind": "person",
            "ids": ids,
            "images_per_id": images_per_id,
            "seed": seed,
        },
        "masks": {"provider": "thermal"},
        "captions": {"providers": ["heuristic"]},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--no-progress"])
    if result.exit_code != 0:
        raise RuntimeError(f"reidprep run for the suite's shards failed ({path}):\n{result.output}")
    return root / "work" / "shards"


def step_recipe(model: str, tiny: bool) -> tuple[str, TrainRecipe]:
    """(recipe reference, recipe) of ``model`` for the training-steps section; bf16 either way."""
    name = f"{model}-tiny-demo" if tiny else STEP_RECIPES[model]
    if name is None:
        return "TrainRecipe defaults", parse_recipe({"model": model, "amp": "bf16"})
    return name, resolve_recipe(name, {"amp": "bf16"})[1]


class _Plan:
    """A DataLoader ``batch_sampler`` whose batches can be replaced between passes (the workers stay alive)."""

    def __init__(self, batches: list[list[tuple[int, int]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def step_row(
    model_name: str, shards: Path, device: torch.device, tiny: bool, workers: int, warmup: int, steps: int
) -> Row:
    reference, recipe = step_recipe(model_name, tiny)
    index_only = ShardDataset(shards, "train", columns=())
    labels = index_only.label_map()
    seed_everything(0)
    model = create_model(
        recipe.model,
        num_classes=labels.num_classes,
        num_cameras=labels.num_cameras,
        backbone=recipe.backbone,
        image_size=tuple(recipe.image_size),
        require_pretrained=False,
        **recipe.model_options,
    ).to(device)
    inputs = model_inputs(model)
    train_set = ShardDataset(shards, "train", columns=shard_columns(inputs), index=index_only.index)
    objective = objective_for(recipe, labels.num_classes)
    optimizer = optimizer_for(model, recipe)
    sampler = PKSampler(train_set.pids, recipe.ids_per_batch, recipe.instances_per_id, seed=0)
    transform = train_transform(recipe)
    items = TrainItems(train_set, transform, labels, inputs)
    plain: list[list[int]] = []
    while len(plain) < warmup + steps + 1:  # more epochs' batches when one epoch is short
        plain += [b.tolist() for b in sampler.batches()]
        sampler.set_epoch(sampler.epoch + 1)
    seeds = iter(range(10**9))  # one augmentation seed per sample, as SeededBatches gives them
    batches = [[(index, next(seeds)) for index in batch] for batch in plain]
    plan = _Plan(batches[:warmup])
    cuda = device.type == "cuda"
    image_format = str(train_set.column("image_format")[0])
    loader = DeviceBatches(
        DataLoader(items, batch_sampler=plan, num_workers=workers, collate_fn=collate_train, pin_memory=cuda,
                   persistent_workers=workers > 0),
        transform, device, image_format,
    )  # fmt: skip
    amp = autocast_dtype(device, recipe.amp)

    def train(data: DeviceBatches) -> dict[str, float]:
        return train_one_epoch(
            model, data, objective, optimizer, device, progress=False, amp_dtype=amp, grad_clip=recipe.grad_clip
        )

    train(loader)  # warm-up
    plan.batches = batches[warmup : warmup + steps]
    with peak_memory(device) as peak:
        wall, result = timed(partial(train, loader), device)
    with FlopCounterMode(display=False) as counter:  # one more step, in this process (no workers to count in)
        train(DeviceBatches(DataLoader(items, batch_sampler=[batches[-1]], collate_fn=collate_train), transform,
                            device, image_format))  # fmt: skip
    flops_per_step = counter.get_total_flops()
    peak_flops, peak_note = peak_bf16_flops(device)
    step_s = wall / steps
    mfu = None if peak_flops is None else 100 * flops_per_step / step_s / peak_flops
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    precision = str(amp).removeprefix("torch.") + " autocast" if amp is not None else "fp32 (CPU)"
    row = Row(
        f"{model_name} ({reference})",
        {
            "triplets_per_s": Figure(result["samples"] / wall, "triplets/s"),
            "step_time": Figure(1000 * step_s, "ms/step"),
            "mfu": Figure(mfu, "%", "" if mfu is not None else peak_note, label="MFU"),
            "flops_per_step": Figure(flops_per_step / 1e12, "TFLOP/step"),
            "peak_memory": peak.figure,
            "data_wait": Figure(100 * result["data_seconds"] / wall, "% of step time", label="data wait"),
        },
        note=(
            f"{recipe.backbone} {recipe.image_size[0]}x{recipe.image_size[1]}, batch {recipe.ids_per_batch}x"
            f"{recipe.instances_per_id}, {precision}, {parameters:.1f} M parameters, {steps} steps, {workers} workers"
        ),
    )
    return row  # the model, optimizer and persistent workers go with this frame


def fit_row(model_name: str, amp: str, shards: Path, device: torch.device, workers: int, run: Path) -> Row:
    recipe = f"{model_name}-tiny-demo"
    options = TrainConfig(
        recipe=recipe,
        shards=shards,
        output=run,
        random_init=True,
        epochs=2,
        device=device.type,
        workers=workers,
        set={"amp": amp},
    )
    lines: list[str] = []
    seconds, summary = timed(partial(fit, options, progress=False, echo=lines.append), device)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    scaler = bool(state.get("scaler"))
    losses = [record["loss"] for record in records]
    finite = all(math.isfinite(loss) for loss in losses)
    precision = f"{amp} autocast" + (" + gradient scaler" if scaler else "") if device.type == "cuda" else "fp32"
    note = f"{len(records)} epochs, precision {precision}; losses {', '.join(f'{x:.3f}' for x in losses)}"
    if device.type != "cuda":
        note += f" (CPU: the trainer's autocast is CUDA-only, so amp={amp} trains in fp32)"
    if not finite:
        note += "; NON-FINITE LOSS"
    return Row(
        f"{model_name} ({recipe}) amp={amp}",
        {
            "seconds": Figure(seconds, "s (2 epochs + evaluation)"),
            "final_loss": Figure(losses[-1], "", label="final loss"),
            "test_map": Figure(100 * summary.last_map, "%", label="test mAP"),
            "train_triplets_per_s": Figure(records[-1]["train_samples_per_s"], "triplets/s"),
        },
        note=note,
    )


def step_rows(
    models: list[str], shards: Path, device: torch.device, tiny: bool, workers: int, warmup: int, steps: int
) -> list[Row]:
    rows = []
    for model in models:
        rows.append(guarded(model, partial(step_row, model, shards, device, tiny, workers, warmup, steps)))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def fit_rows(models: list[str], shards: Path, device: torch.device, workers: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-suite-fit-") as tmp:
        for model in models:
            for amp in ("bf16", "fp16"):
                run = Path(tmp) / f"{model}-{amp}"
                rows.append(guarded(f"{model} amp={amp}", partial(fit_row, model, amp, shards, device, workers, run)))
    return rows

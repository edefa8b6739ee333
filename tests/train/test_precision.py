"""Numerics of a training step: autocast choice, gradient clipping, CUDA AMP (GPU only), TensorBoard (if installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from reidschemas.config import TrainConfig
from reidtrain.models import create_model
from reidtrain.trainer import autocast_dtype, fit, seed_everything


def test_autocast_dtype_is_fp32_on_cpu_and_follows_the_recipe_on_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu, "bf16") is None and autocast_dtype(cpu, "fp16") is None
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16
    assert autocast_dtype(cuda, "fp16") is torch.float16
    assert autocast_dtype(cuda, "off") is None


def _options(shards: Path, output: Path, **overrides: object) -> TrainConfig:
    return TrainConfig(
        shards=shards,
        output=output,
        backbone="tiny",
        random_init=True,
        epochs=1,
        seed=5,
        set={"ids_per_batch": 2, **overrides},
    )


def _initial_weights(shards: Path, seed: int) -> dict[str, torch.Tensor]:
    from reidtrain.data.shards import ShardDataset

    labels = ShardDataset(shards, "train", columns=()).label_map()
    seed_everything(seed)
    model = create_model(
        "baseline",
        num_classes=labels.num_classes,
        num_cameras=labels.num_cameras,
        backbone="tiny",
        image_size=(64, 32),
        require_pretrained=False,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_grad_clip_bounds_every_sgd_step(full_shards: Path, tmp_path: Path) -> None:
    sgd = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "weight_decay_bias": 0.0}
    clip = 1e-6
    fit(_options(full_shards, tmp_path / "clipped", grad_clip=clip, **sgd), echo=lambda _: None)
    fit(_options(full_shards, tmp_path / "free", **sgd), echo=lambda _: None)
    before = _initial_weights(full_shards, 5)
    record = json.loads((tmp_path / "clipped" / "metrics.jsonl").read_text())
    batches = record["samples"] // 4  # P=2 x K=2
    clipped = torch.load(tmp_path / "clipped" / "last.pt", weights_only=True)["model"]
    free = torch.load(tmp_path / "free" / "last.pt", weights_only=True)["model"]
    trainable = [k for k in before if before[k].is_floating_point() and "running" not in k and k != "bottleneck.bias"]

    def moved(after: dict[str, torch.Tensor]) -> float:  # global L2 norm of the change of the trained parameters
        return float(torch.sqrt(sum(((after[k] - before[k]).double() ** 2).sum() for k in trainable)))

    # SGD without momentum or decay: each step moves the weights by lr * grad, |grad| <= clip, lr <= 2e-3 (bias 2x)
    assert batches >= 1
    assert moved(clipped) <= 2e-3 * clip * batches * 1.01
    assert moved(free) > 100 * moved(clipped)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_trains_with_finite_losses(full_shards: Path, tmp_path: Path, amp: str) -> None:
    options = _options(full_shards, tmp_path / amp, amp=amp)
    summary = fit(options.model_copy(update={"device": "cuda"}), progress=False, echo=lambda _: None)
    assert 0.0 <= summary.last_map <= 1.0
    state = torch.load(tmp_path / amp / "last.pt", weights_only=True)
    assert (state["scaler"] != {}) == (amp == "fp16")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="TensorBoard is not installed")
def test_tensorboard_event_file_holds_the_epoch_figures(full_shards: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(_options(full_shards, tmp_path / "tb"), echo=lambda _: None)
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "test/mAP", "test/R1"} <= tags
    assert [e.step for e in events.Scalars("test/mAP")] == [1]

"""Samples per second of a full training step (data + forward + backward + optimizer) for a ``reidtrain`` model.

Runs the trainer's own pieces (``ShardItems`` over the shards, ``PKSampler``, ``DataLoader``, the model, the
``ReIDObjective``, Adam with the recipe's parameter groups, ``train_one_epoch``) on shards of the synthetic dataset
and splits the wall time into waiting for batches (data) and the rest (compute). The first ``--warmup`` steps are
run and not counted. Default: the baseline at ViT-B/16 size (random init), 256x128 persons. The data path is the
trainer's (``reidtrain.data.loader``: decode in the workers, augmentation per batch on the device); ``--compile``
wraps the model in ``torch.compile`` (off in the trainer until it measurably helps on a GPU).

    python bench/train_step.py                                   # CPU, ViT-B-16, batch 8 (P=4 x K=2)
    python bench/train_step.py --device cuda --p 8 --k 8 --amp bf16 --workers 8
    python bench/train_step.py --backbone tiny --image-size 64 32
    python bench/train_step.py --model stmi --device cuda --p 16 --k 4 --workers 8 --compile
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidtrain.batch import model_inputs, shard_columns
from reidtrain.data.augment import TrainTransform
from reidtrain.data.items import TrainItems
from reidtrain.data.loader import DeviceBatches, collate_train
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import ShardDataset
from reidtrain.losses import ReIDObjective
from reidtrain.models import create_model
from reidtrain.optim import make_optimizer, param_groups
from reidtrain.trainer import autocast_dtype, train_one_epoch


def _shards(root: Path, ids: int, images_per_id: int) -> Path:
    generate_dataset(root / "data", kind="person", ids=ids, images_per_id=images_per_id, seed=0)
    run_index(root / "work", "rgbnt201", root / "data")
    return build_shards(root / "work", ShardsConfig(missing="null")).out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--p", type=int, default=4, help="identities per batch")
    parser.add_argument("--k", type=int, default=2, help="instances per identity")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"], help="CUDA only; CPU is fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--ids", type=int, default=24)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in the warm-up)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        shards = _shards(Path(tmp), args.ids, args.images_per_id)
        index_only = ShardDataset(shards, "train", columns=())
        labels = index_only.label_map()
        model = create_model(
            args.model,
            num_classes=labels.num_classes,
            num_cameras=labels.num_cameras,
            backbone=args.backbone,
            image_size=tuple(args.image_size),
            require_pretrained=False,
        ).to(device)
        inputs = model_inputs(model)
        train_set = ShardDataset(shards, "train", columns=shard_columns(inputs), index=index_only.index)
        prefixes = [n for n in ("backbone", "encoder") if isinstance(getattr(model, n, None), torch.nn.Module)]
        optimizer = make_optimizer(
            "adam", param_groups(model, 3.5e-4, 5e-6, 1e-4, backbone_prefixes=prefixes), momentum=0.9
        )
        objective = ReIDObjective(labels.num_classes)
        sampler = PKSampler(train_set.pids, args.p, args.k, seed=0)
        transform = TrainTransform(size=tuple(args.image_size))
        items = TrainItems(train_set, transform, labels, inputs)
        plain = [b.tolist() for b in sampler.batches()]
        while len(plain) < args.warmup + args.steps:  # more epochs' batches when one epoch is short
            sampler.set_epoch(sampler.epoch + 1)
            plain += [b.tolist() for b in sampler.batches()]
        seeds = iter(range(10**9))  # one augmentation seed per sample, as SeededBatches
        batches = [[(index, next(seeds)) for index in batch] for batch in plain]
        image_format = str(train_set.column("image_format")[0])

        def loader(part: list[list[tuple[int, int]]]) -> DeviceBatches:
            data = DataLoader(items, batch_sampler=part, num_workers=args.workers, collate_fn=collate_train,
                              pin_memory=device.type == "cuda")  # fmt: skip
            return DeviceBatches(data, transform, device, image_format)

        if args.compile:
            model = torch.compile(model)  # type: ignore[assignment]

        amp = autocast_dtype(device, args.amp)
        scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        step = lambda part: train_one_epoch(  # noqa: E731
            model, loader(part), objective, optimizer, device, progress=False, amp_dtype=amp, scaler=scaler
        )
        if args.warmup:
            step(batches[: args.warmup])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        timed = step(batches[args.warmup : args.warmup + args.steps])
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    samples = timed["samples"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.model} / {args.backbone} ({params:.1f} M parameters), {args.image_size[0]}x{args.image_size[1]}, "
        f"batch {args.p}x{args.k} triplets, {where}, precision {amp or torch.float32}, workers {args.workers}"
        f"{', torch.compile' if args.compile else ''}"
    )
    print(
        f"  {args.steps} steps, {samples} samples in {wall:.2f} s: {samples / wall:.2f} samples/s "
        f"({wall / args.steps:.3f} s/step)"
    )
    print(
        f"  data (waiting for batches): {timed['data_seconds']:.2f} s ({100 * timed['data_seconds'] / wall:.1f}%)"
        f"  compute (forward + backward + step): {timed['compute_seconds']:.2f} s "
        f"-> compute alone {samples / timed['compute_seconds']:.2f} samples/s"
    )


if __name__ == "__main__":
    main()

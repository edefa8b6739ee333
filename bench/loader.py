"""Training batches per second: the reference repos' loader against ours, in one run, on the same images and batches.

Every path yields the same PK batches (the same samples, in the same order) as (B, 3, 3, 256, 128) float32 images
on ``--device``, augmented with the recipe's flip 0.5, pad 10 + crop, normalise, random erasing 0.5; the same number
of DataLoader workers (persistent), one warm-up pass, then the best of ``--repeats`` timed passes.

- reference: what the reference repos' ``__getitem__`` does (DeMo, MambaPro, TOP-ReID, IDEA): per modality
  ``Image.open(path).convert("RGB")`` from the dataset folders, then torchvision ``Resize`` (bicubic),
  ``RandomHorizontalFlip``, ``Pad``, ``RandomCrop``, ``ToTensor``, ``Normalize``, ``RandomErasing``; float32 batches
  are collated in the workers and copied to the device.
- per-sample (ours before issue 19): ``ShardItems`` + ``TrainTransform`` on the shards (PIL decode, transform per
  sample in the workers).
- batched (the trainer's path): ``reidtrain.data.loader.train_loader``: workers read, decode (torchvision) and draw;
  ``BatchTrainTransform`` augments the whole uint8 batch on the device.
- batched, decode on device: the same with JPEG decoded per batch by ``torchvision.io.decode_jpeg`` on the device
  (nvJPEG on CUDA; on CPU, in the main process).

``--authors-options``: our paths with the DeMo / MambaPro recipes' input options (0.5 pixel statistics, erasing
filled with per-pixel noise, flip and crop per modality); the reference row stays as above.

    python bench/loader.py --workers 2
    python bench/loader.py --device cuda --workers 8 --ids 60 --p 16 --k 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reidprep.index import run_index
from reidprep.manifest import read_manifest
from reidprep.masks.providers import make_provider
from reidprep.masks.stage import MasksTask
from reidprep.shards.build import build_shards
from reidprep.stage import StageOptions, run_stage
from reidprep.synth import generate_dataset
from reidschemas.config import MasksConfig, ShardsConfig
from reidtrain.data.augment import CLIP_MEAN, CLIP_STD, TrainTransform
from reidtrain.data.items import ShardItems
from reidtrain.data.loader import DeviceBatches, train_loader
from reidtrain.data.normalize import HALF
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import ShardDataset

SIZE = (256, 128)
INPUTS = ("token_mask",)  # STMI's image-side input: the masks travel and the token mask is recomputed


class ReferenceItems(Dataset):
    """The reference repos' training ``__getitem__``: three files per sample, PIL + torchvision transforms each."""

    def __init__(self, paths: list[tuple[str, str, str]], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels
        self.transform = T.Compose(
            [
                T.Resize(SIZE, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(p=0.5),
                T.Pad(10),
                T.RandomCrop(SIZE),
                T.ToTensor(),
                T.Normalize(CLIP_MEAN, CLIP_STD),
                T.RandomErasing(p=0.5, value=0),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        images = []
        for path in self.paths[i]:
            with Image.open(path) as image:
                images.append(self.transform(image.convert("RGB")))
        return {"images": torch.stack(images), "label": self.labels[i]}  # (3, 3, H, W)


def timed(
    make: Callable[[], Iterable[dict[str, Any]]], device: torch.device, repeats: int, to_device: bool = True
) -> tuple[float, int]:
    """(best seconds for one pass, samples per pass); the first pass warms up (workers, caches)."""
    batches = make()
    best, samples = float("inf"), 0
    for i in range(repeats + 1):
        start = time.perf_counter()
        samples = 0
        for batch in batches:
            images = batch["images"].to(device, non_blocking=True) if to_device else batch["draws"]
            samples += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return best, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=30)
    parser.add_argument("--images-per-id", type=int, default=10)
    parser.add_argument("--p", type=int, default=8, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="instances per identity")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--authors-options", action="store_true", help="0.5 statistics, noise erasing, per modality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(root / "data", kind="person", ids=args.ids, images_per_id=args.images_per_id, seed=0)
        run_index(root / "w", "rgbnt201", root / "data")
        run_stage(MasksTask(make_provider(MasksConfig(provider="thermal")), "tir"), root / "w", StageOptions())
        shards = build_shards(root / "w", ShardsConfig(require=["masks"])).out_dir  # JPEG at 256x128
        dataset = ShardDataset(shards, "train", columns=("rgb", "nir", "tir", "mask"))
        labels = dataset.label_map()
        records = {r.sample_id: r for r in read_manifest(root / "w" / "index" / "manifest.parquet")}
        ids = dataset.column("sample_id")
        paths = [(records[s].rgb_path, records[s].nir_path, records[s].tir_path) for s in ids]
        sampler = PKSampler(dataset.pids, args.p, args.k, seed=0)
        transform = (
            TrainTransform(size=SIZE, mean=HALF, std=HALF, erase_value="random", geometry="per_modality")
            if args.authors_options
            else TrainTransform(size=SIZE)
        )
        pinned = device.type == "cuda"
        common = {"num_workers": args.workers, "persistent_workers": args.workers > 0, "pin_memory": pinned}
        reference = ReferenceItems(paths, [labels.pid_to_label[int(p)] for p in dataset.pids])
        per_sample = ShardItems(dataset, transform, labels, INPUTS, with_labels=True)
        paths_to_time: dict[str, Callable[[], Iterable[dict[str, Any]]]] = {
            "reference (PIL per file + torchvision)": lambda: DataLoader(
                reference, batch_sampler=sampler.batch_sampler(), **common
            ),
            "per-sample (ShardItems + TrainTransform)": lambda: DataLoader(
                per_sample, batch_sampler=sampler.batch_sampler(), **common
            ),
            "batched (trainer: decode in workers)": lambda: train_loader(
                dataset, transform, labels, INPUTS, sampler, device, args.workers
            ),
            "batched, decode on device": lambda: train_loader(
                dataset, transform, labels, INPUTS, sampler, device, args.workers, decode_on="device"
            ),
        }
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{len(dataset)} train triplets, batches {args.p}x{args.k}, {args.workers} workers, "
              f"{args.threads} main-process threads, images to {where}"
              f"{', authors options' if args.authors_options else ''}")  # fmt: skip
        rates = {}
        for name, make in paths_to_time.items():
            seconds, samples = timed(make, device, args.repeats)
            rates[name] = samples / seconds
            print(f"  {name:42s} {samples} triplets in {seconds:6.2f} s  {rates[name]:8.1f} triplets/s "
                  f"({rates[name] / next(iter(rates.values())):.2f}x reference)")  # fmt: skip
            batches = make()
            if isinstance(batches, DeviceBatches):  # what stays on the host when the augmentation runs on a GPU
                host, samples = timed(lambda b=batches: b.loader, torch.device("cpu"), args.repeats, to_device=False)
                print(f"  {'  of which DataLoader only (read, decode, draw)':42s} {samples} triplets in {host:6.2f} s  "
                      f"{samples / host:8.1f} triplets/s")  # fmt: skip


if __name__ == "__main__":
    main()

"""The training data path (reidtrain.data.loader): decoded in workers, augmented per batch, equal to the per-sample
path for the same seeds, independent of the number of workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidschemas.shards import decode_image
from reidtrain.data.augment import TrainTransform, train_transform
from reidtrain.data.decode import decode_images
from reidtrain.data.loader import SeededBatches, auto_workers, train_loader
from reidtrain.data.sampler import PKSampler
from reidtrain.data.shards import ShardDataset
from reidtrain.recipes import parse_recipe

INPUTS = ("token_mask", "captions")
COLUMNS = ("rgb", "nir", "tir", "mask", "caption_rgb", "caption_nir", "caption_tir", "caption_fused")
# The recipe input options of the DeMo / MambaPro recipes: 0.5 statistics, pixel-noise erasing, per-modality geometry.
AUTHORS = {
    "pixel_mean": [0.5] * 3,
    "pixel_std": [0.5] * 3,
    "augment": {"erase_fill": "noise", "geometry": "per_modality"},
}
RECIPES = {"default": {}, "authors' options": AUTHORS}


def _transform(recipe: dict) -> TrainTransform:
    """The trainer's transform (``train_transform``) for a recipe at 256x128 with pad 10 and erasing 0.5."""
    augment = {"pad": 10, "erase_p": 0.5, **recipe.get("augment", {})}
    return train_transform(parse_recipe({"image_size": [256, 128], **recipe, "augment": augment}))


def _batches(
    shards: Path, workers: int, decode_on: str = "workers", epoch: int = 0, recipe: dict | None = None
) -> list[dict]:
    dataset = ShardDataset(shards, "train", columns=COLUMNS)
    sampler = PKSampler(dataset.pids, 2, 2, seed=3)
    sampler.set_epoch(epoch)
    transform = _transform(recipe or {})
    loader = train_loader(
        dataset, transform, dataset.label_map(), INPUTS, sampler, torch.device("cpu"), workers, decode_on
    )
    return list(loader)


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
@pytest.mark.parametrize("decode_on", ["workers", "device"])
def test_batches_equal_the_per_sample_transform_with_the_same_seeds(
    full_shards: Path, decode_on: str, recipe: dict
) -> None:
    dataset = ShardDataset(full_shards, "train", columns=COLUMNS)
    sampler = PKSampler(dataset.pids, 2, 2, seed=3)
    transform = _transform(recipe)
    labels = dataset.label_map()
    batches = list(train_loader(dataset, transform, labels, INPUTS, sampler, torch.device("cpu"), 0, decode_on))
    pairs = list(SeededBatches(sampler))
    assert len(batches) == len(pairs) > 0
    for batch, keys in zip(batches, pairs, strict=True):
        expected = []
        for index, seed in keys:
            item = dataset[index]  # PIL decode, the per-sample path
            expected.append(transform(item["images"], item["mask"], generator=torch.Generator().manual_seed(seed)))
        assert torch.equal(batch["images"], torch.stack([e["images"] for e in expected]))
        assert torch.equal(batch["token_mask"], torch.stack([e["token_mask"].flatten() for e in expected]))
        assert torch.equal(batch["has_mask"], torch.stack([e["has_mask"] for e in expected]))
        assert batch["label"].tolist() == [labels.pid_to_label[int(dataset[i]["pid"])] for i, _ in keys]
        assert batch["captions"]["fused"] == [dataset[i]["captions"]["fused"] or "" for i, _ in keys]


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_augmentation_does_not_depend_on_the_workers_and_changes_per_epoch(full_shards: Path, recipe: dict) -> None:
    inline, two = _batches(full_shards, 0, recipe=recipe), _batches(full_shards, 2, recipe=recipe)
    for a, b in zip(inline, two, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["token_mask"], b["token_mask"])
    later = _batches(full_shards, 0, epoch=1, recipe=recipe)
    assert not all(torch.equal(a["draws"], b["draws"]) for a, b in zip(inline, later, strict=False))


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 3 persons x 2 triplets as JPEG, PNG and raw shards (no masks)."""
    root = tmp_path_factory.mktemp("formats")
    generate_dataset(root / "data", kind="person", ids=3, images_per_id=2, seed=1)
    out = {}
    for fmt in ("jpeg", "png", "raw"):
        run_index(root / fmt, "rgbnt201", root / "data")
        out[fmt] = build_shards(root / fmt, ShardsConfig(missing="null", image_format=fmt)).out_dir
    return out


@pytest.mark.parametrize("fmt", ["jpeg", "png", "raw"])
def test_decode_images_gives_the_pixels_of_the_reference_decoder(small_shards: dict[str, Path], fmt: str) -> None:
    """torchvision's decoders (the workers' and the GPU path's) give PIL's pixels exactly, for every shard format."""
    shard = sorted(small_shards[fmt].glob("shard-*.parquet"))[0]
    rows = pq.read_table(shard, columns=["rgb", "tir", "height", "width", "image_format"]).to_pylist()
    for row in rows:
        h, w = row["height"], row["width"]
        got = decode_images([row["rgb"], row["tir"]], fmt, h, w)
        for data, image in zip([row["rgb"], row["tir"]], got, strict=True):
            assert image.shape == (3, h, w) and image.dtype == torch.uint8
            assert np.array_equal(image.permute(1, 2, 0).numpy(), decode_image(data, fmt, h, w))
    with pytest.raises(ValueError, match="raw 2x2 image has 12 bytes"):
        decode_images([b"\0" * 5], "raw", 2, 2)


def test_device_decoding_refuses_non_jpeg_shards(small_shards: dict[str, Path]) -> None:
    dataset = ShardDataset(small_shards["png"], "train")
    sampler = PKSampler(dataset.pids, 1, 2, seed=0)
    with pytest.raises(ValueError, match="decode in the workers"):
        train_loader(dataset, TrainTransform(), dataset.label_map(), (), sampler, torch.device("cpu"), 0, "device")


def test_auto_workers() -> None:
    assert auto_workers(torch.device("cpu"), cpus=16) == 0  # CPU steps are all compute
    assert auto_workers(torch.device("cuda"), cpus=16) == 8
    assert auto_workers(torch.device("cuda"), cpus=4) == 3
    assert auto_workers(torch.device("cuda"), cpus=1) == 1

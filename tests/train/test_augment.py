"""Triplet transforms: the mask stays aligned with every modality; erasing is per modality and leaves the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidschemas.tokens import token_fractions, token_mask
from reidtrain.data.augment import CLIP_MEAN, CLIP_STD, BatchTrainTransform, EvalTransform, TrainTransform

H, W = 64, 32
SIZE = (H, W)


def bright_triplet(seed: int = 0, box: tuple[int, int, int, int] = (10, 3, 40, 14)) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W, 3) uint8 with a white, left-of-centre rectangle in all modalities on a dark noisy background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(20, 100, size=(3, H, W, 3), dtype=np.uint8)  # each modality its own background
    top, left, bottom, right = box
    images[:, top:bottom, left:right] = 255
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return images, mask


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """(3, 3, H, W) normalised -> [0, 1]."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return images * std + mean


def test_geometry_keeps_mask_aligned_in_every_modality():
    images, mask = bright_triplet()
    transform = TrainTransform(size=SIZE, erase_p=0.0, patch=8, stride=8)
    flips, offsets = set(), set()
    for seed in range(40):
        out = transform(images, mask, seed=seed)
        bright = denormalise(out["images"]).min(dim=1).values > 0.9  # (3, H, W): white in all channels
        for modality in range(3):
            assert torch.equal(bright[modality], out["mask"]), f"seed {seed} modality {modality}"
        assert int(out["mask"].sum()) > 0
        columns = out["mask"].any(dim=0).nonzero()
        flips.add(bool(columns.float().mean() > W / 2))  # the rectangle is left of centre unless flipped
        rows = out["mask"].any(dim=1).nonzero()
        offsets.add((int(rows[0]), int(columns[0])))
    assert flips == {True, False}  # both outcomes were drawn, and each was applied to all modalities at once
    assert len(offsets) > 5  # the crop moved, identically for images and mask


def test_geometry_matches_reference_flip_pad_crop():
    images, mask = bright_triplet()
    transform = TrainTransform(size=SIZE, erase_p=0.0, pad=10, patch=8, stride=8)
    geometry = transform.sample_geometry(torch.Generator().manual_seed(3))
    out = transform(images, mask, generator=torch.Generator().manual_seed(3))
    padded_mask = np.pad(mask[:, ::-1] if geometry.flip else mask, 10)
    expected = padded_mask[geometry.top : geometry.top + H, geometry.left : geometry.left + W]
    assert np.array_equal(out["mask"].numpy(), expected)
    padded = np.pad(images[:, :, ::-1] if geometry.flip else images, ((0, 0), (10, 10), (10, 10), (0, 0)))
    expected_images = padded[:, geometry.top : geometry.top + H, geometry.left : geometry.left + W]  # (3, H, W, 3)
    got = (denormalise(out["images"]).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(got, expected_images)


def test_token_mask_is_recomputed_from_augmented_mask():
    images, mask = bright_triplet()
    transform = TrainTransform(size=SIZE, patch=8, stride=4, token_threshold=0.4)
    for seed in range(10):
        out = transform(images, mask, seed=seed)
        fractions = token_fractions(out["mask"].numpy(), 8, 4)
        assert np.array_equal(out["token_fraction"].numpy(), fractions)
        assert np.array_equal(out["token_mask"].numpy(), token_mask(fractions, 0.4))


def test_output_shapes_dtypes_and_resize():
    images, mask = bright_triplet()
    out = TrainTransform(size=(128, 64))(images, mask, seed=0)  # upsampled 2x
    assert out["images"].shape == (3, 3, 128, 64) and out["images"].dtype == torch.float32
    assert out["mask"].shape == (128, 64) and out["mask"].dtype == torch.bool
    assert out["token_fraction"].shape == (8, 4) and out["token_fraction"].dtype == torch.float32
    assert out["token_mask"].shape == (8, 4) and out["token_mask"].dtype == torch.bool
    assert bool(out["has_mask"])
    # Nearest-exact 2x upsampling of the mask: exactly 4x the foreground pixels before pad + crop cuts any.
    ev = EvalTransform(size=(128, 64))(images, mask)
    assert int(ev["mask"].sum()) == 4 * int(mask.sum())


def test_missing_mask_gives_empty_mask_and_flag():
    images, _ = bright_triplet()
    out = TrainTransform(size=SIZE, patch=8, stride=8)(images, None, seed=0)
    assert not bool(out["has_mask"])
    assert not out["mask"].any() and not out["token_mask"].any()
    assert out["token_fraction"].shape == (8, 4) and float(out["token_fraction"].sum()) == 0.0


def test_erasing_is_per_modality_and_leaves_mask_and_geometry():
    images, mask = bright_triplet()
    plain = TrainTransform(size=SIZE, erase_p=0.0, patch=8, stride=8)
    erasing = TrainTransform(size=SIZE, erase_p=1.0, patch=8, stride=8)
    differing = 0
    for seed in range(10):
        a = plain(images, mask, seed=seed)
        b = erasing(images, mask, seed=seed)
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["token_mask"], b["token_mask"])
        erased = (b["images"] == 0).all(dim=1)  # (3, H, W): filled with 0 (the mean) in every channel
        assert erased.any(dim=(1, 2)).all()  # erase_p=1: every modality lost a box (no 10-try failure here)
        keep = ~erased[:, None].expand_as(a["images"])  # (3, 3, H, W)
        assert torch.equal(a["images"][keep], b["images"][keep])  # nothing else changed
        differing += int(not (torch.equal(erased[0], erased[1]) and torch.equal(erased[1], erased[2])))
    assert differing > 0  # modalities are erased in different places


def test_eval_is_deterministic_and_normalises_with_clip_constants():
    import open_clip

    assert CLIP_MEAN == open_clip.constants.OPENAI_DATASET_MEAN and CLIP_STD == open_clip.constants.OPENAI_DATASET_STD
    images, mask = bright_triplet()
    transform = EvalTransform(size=SIZE, patch=8, stride=8)
    a, b = transform(images, mask), transform(images, mask)
    for key in a:
        assert torch.equal(a[key], b[key])
    expected = (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    ) / (torch.tensor(CLIP_STD).view(1, 3, 1, 1))
    torch.testing.assert_close(a["images"], expected)
    assert torch.equal(a["mask"], torch.from_numpy(mask))


def test_custom_normalisation_and_input_checks():
    images, mask = bright_triplet()
    out = EvalTransform(size=SIZE, patch=8, stride=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(images, mask)
    assert float(out["images"].max()) == pytest.approx(1.0) and float(out["images"].min()) >= -1.0
    with pytest.raises(ValueError):
        EvalTransform(size=SIZE, patch=8, stride=8)(images[:2], mask)
    with pytest.raises(ValueError):
        EvalTransform(size=SIZE, patch=8, stride=8)(images, mask[:10])


def test_generator_reproducible_and_batch_collates():
    images, mask = bright_triplet()
    transform = TrainTransform(size=SIZE, patch=8, stride=8)
    a = transform(images, mask, generator=torch.Generator().manual_seed(7))
    b = transform(images, mask, seed=7)
    for key in a:
        assert torch.equal(a[key], b[key])
    batch = torch.utils.data.default_collate([a, b])
    assert batch["images"].shape == (2, 3, 3, H, W) and batch["has_mask"].shape == (2,)


HALF = (0.5, 0.5, 0.5)  # the DeMo / MambaPro pixel statistics
OPTIONS = {  # recipe input options: pixel statistics, geometry, erasing fill
    "clip, shared, mean fill": {},
    "other stats, per-modality": {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.25), "geometry": "per_modality"},
    "half stats, noise fill": {"mean": HALF, "std": HALF, "erase_value": "random"},
    "authors' (DeMo/MambaPro)": {"mean": HALF, "std": HALF, "erase_value": "random", "geometry": "per_modality"},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize(
    ("stored", "pad", "erase_p"),
    [((H, W), 10, 0.5), ((H, W), 0, 1.0), ((80, 40), 4, 0.5)],  # (80, 40): resized to SIZE first
)
def test_batch_transform_equals_the_per_sample_path_for_the_same_draws(stored, pad, erase_p, options):
    """BatchTrainTransform on a batch == TrainTransform sample by sample, given each sample's draws (bit for bit),
    for every recipe option the per-sample transform has."""
    rng = np.random.default_rng(1)
    n = 8
    images = rng.integers(0, 256, size=(n, 3, *stored, 3), dtype=np.uint8)
    masks = rng.random((n, *stored)) > 0.6
    has_mask = torch.tensor([i % 4 != 3 for i in range(n)])  # some rows without a mask
    transform = TrainTransform(size=SIZE, pad=pad, erase_p=erase_p, patch=8, stride=4, token_threshold=0.3, **options)
    expected = [transform(images[i], masks[i] if has_mask[i] else None, seed=100 + i) for i in range(n)]
    drawn = [transform.draw(torch.Generator().manual_seed(100 + i)) for i in range(n)]
    draws = torch.stack([d.values for d in drawn])
    assert {int(f) for f in draws[:, 0]} == {0, 1}  # both flips are in the batch
    per_modality = bool((draws[:, 0:3] != draws[:, 6:9]).any())  # rgb's geometry vs tir's
    assert per_modality == (options.get("geometry") == "per_modality")
    noise = torch.cat([d.noise for d in drawn])
    assert (len(noise) > 0) == (options.get("erase_value") == "random")
    batch = torch.from_numpy(images).permute(0, 1, 4, 2, 3)  # (n, 3, 3, h, w)
    masked = torch.from_numpy(masks) & has_mask.view(n, 1, 1)
    got = BatchTrainTransform(transform)(batch, masked, has_mask, draws, noise if len(noise) else None)
    for key in expected[0]:
        assert torch.equal(got[key], torch.stack([e[key] for e in expected])), key


def test_draws_follow_the_per_sample_order():
    """draw() makes __call__'s draws in __call__'s order: geometry (once, or rgb, nir, tir in turn), then per
    modality whether and where to erase and, for noise fill, the box's noise."""
    for geometry in ("shared", "per_modality"):
        transform = TrainTransform(size=SIZE, erase_p=1.0, patch=8, stride=8, geometry=geometry)
        draws = transform.draw(torch.Generator().manual_seed(5)).values
        generator = torch.Generator().manual_seed(5)
        times = 1 if geometry == "shared" else 3
        geometries = [transform.sample_geometry(generator) for _ in range(times)] * (3 // times)
        assert draws[:9].tolist() == [v for g in geometries for v in (int(g.flip), g.top, g.left)]
        boxes = draws[9:].view(3, 4)  # (top, left, h, w) per modality, inside the image
        assert bool((boxes[:, 2] > 0).all()) and bool((boxes[:, 0] + boxes[:, 2] <= H).all())
        assert bool((boxes[:, 1] + boxes[:, 3] <= W).all())
    noisy = TrainTransform(size=SIZE, erase_p=1.0, erase_value="random", patch=8, stride=8)
    drawn = noisy.draw(torch.Generator().manual_seed(5))
    boxes = drawn.values[9:].view(3, 4)
    assert drawn.noise.shape == (3 * int((boxes[:, 2] * boxes[:, 3]).sum()),)
    images = np.zeros((1, 3, H, W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="noise"):  # the noise is part of the draws: refused without it
        BatchTrainTransform(noisy)(torch.from_numpy(images).permute(0, 1, 4, 2, 3), None, torch.tensor([False]),
                                   drawn.values[None])  # fmt: skip


def test_per_modality_geometry_draws_each_modality_on_its_own_and_the_mask_follows_rgb():
    """geometry="per_modality" (the DeMo/MambaPro code transforms each image on its own): each modality is the
    reference flip + pad + crop under its own draw, drawn rgb, nir, tir in turn; the mask takes rgb's."""
    images, mask = bright_triplet()
    transform = TrainTransform(size=SIZE, erase_p=0.0, pad=10, patch=8, stride=8, geometry="per_modality")
    differed = False
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        draws = [transform.sample_geometry(generator) for _ in range(3)]
        out = transform(images, mask, generator=torch.Generator().manual_seed(seed))
        got = (denormalise(out["images"]).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        for modality, g in enumerate(draws):
            image = images[modality, :, ::-1] if g.flip else images[modality]
            padded = np.pad(image, ((10, 10), (10, 10), (0, 0)))
            assert np.array_equal(got[modality], padded[g.top : g.top + H, g.left : g.left + W]), (seed, modality)
        rgb = draws[0]
        padded_mask = np.pad(mask[:, ::-1] if rgb.flip else mask, 10)
        assert np.array_equal(out["mask"].numpy(), padded_mask[rgb.top : rgb.top + H, rgb.left : rgb.left + W])
        differed |= len(set(draws)) > 1
    assert differed  # the draws really are independent
    with pytest.raises(ValueError, match="geometry"):
        TrainTransform(geometry="random")


def test_train_transform_follows_the_recipe_normalisation_and_erasing_fill():
    from reidtrain.data.augment import train_transform
    from reidtrain.recipes import parse_recipe

    images = np.full((3, H, W, 3), 255, dtype=np.uint8)
    half = {"image_size": [H, W], "pixel_mean": [0.5] * 3, "pixel_std": [0.5] * 3}  # no padding below: all white
    plain = train_transform(parse_recipe({**half, "augment": {"erase_p": 0.0, "pad": 0}}))
    assert torch.allclose(plain(images, seed=0)["images"], torch.ones(3, 3, H, W))  # (1 - 0.5) / 0.5
    noisy = train_transform(parse_recipe({**half, "augment": {"erase_p": 1.0, "pad": 0, "erase_fill": "noise"}}))
    erased = noisy(images, seed=0)["images"] != 1.0  # (3, 3, H, W)
    values = noisy(images, seed=0)["images"][erased]
    assert erased.any() and values.std() > 0.5 and len(values.unique()) > 100  # per-pixel normal noise
    mean_fill = train_transform(parse_recipe({**half, "augment": {"erase_p": 1.0, "pad": 0}}))
    out = mean_fill(images, seed=0)["images"]
    assert set(out.unique().tolist()) <= {0.0, 1.0} and (out == 0).any()  # today's default: the mean (0)
    default = train_transform(parse_recipe({"image_size": [H, W]}))
    assert default.geometry == "shared" and default.erase_value == 0.0
    assert torch.allclose(default.mean.flatten(), torch.tensor(CLIP_MEAN))

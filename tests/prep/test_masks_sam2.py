"""The sam2 mask provider on a tiny random SAM 2.1 (real sam2 code paths, CPU; one GPU test)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2_tiny import TINY_OVERRIDES, make_tiny_sam2_checkpoint  # tests/prep/ is on sys.path

from reidprep.masks.sam2_provider import SHORT_NAMES, Sam2Masker, resolve_config_name, shipped_configs
from reidschemas.config import Sam2Config

SIZES = [(128, 256), (96, 200), (128, 256), (96, 200), (128, 256)]  # (H, W): two sizes mixed in one batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine can be 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    path = tmp_path_factory.mktemp("sam2") / "tiny.pt"
    name, overrides = make_tiny_sam2_checkpoint(path)
    return path, name, overrides


def make_config(tiny: tuple[Path, str, list[str]], **fields: object) -> Sam2Config:
    path, name, overrides = tiny
    return Sam2Config(**{"model": name, "checkpoint": path, "overrides": overrides, **fields})


@pytest.fixture(scope="module")
def masker(tiny: tuple[Path, str, list[str]]) -> Sam2Masker:
    return Sam2Masker(make_config(tiny), device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def masks_of(predictions: list) -> list[np.ndarray]:
    return [p.mask for p in predictions]


def test_outputs_one_per_image_in_order_at_input_size(masker: Sam2Masker, images: list[np.ndarray]) -> None:
    predictions = masker.predict(images, "rgb")
    assert len(predictions) == len(images)
    for prediction, image in zip(predictions, images, strict=True):
        assert prediction.mask.dtype == np.bool_
        assert prediction.mask.shape == image.shape[:2]
        assert 0.0 <= prediction.score <= 1.0
    reversed_predictions = masker.predict(images[::-1], "rgb")
    for a, b in zip(predictions, reversed_predictions[::-1], strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.score == pytest.approx(b.score, abs=1e-5)
    assert masker.predict([], "rgb") == []


def test_masks_depend_on_the_image(masker: Sam2Masker, images: list[np.ndarray]) -> None:
    first, third = masker.predict([images[0], images[2]], "rgb")  # same size, different pixels
    assert not np.array_equal(first.mask, third.mask)


@pytest.mark.parametrize("prompt", ["box", "box+center"])
def test_batched_equals_one_by_one(tiny, images: list[np.ndarray], prompt: str) -> None:
    masker = Sam2Masker(make_config(tiny, prompt=prompt), device="cpu", batch_size=3)
    batched = masker.predict(images, "nir")
    single = masker.predict_one_by_one(images, "nir")
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_prompt_strategies_differ(tiny, images: list[np.ndarray]) -> None:
    box = Sam2Masker(make_config(tiny, prompt="box"), device="cpu").predict(images[:2], "rgb")
    point = Sam2Masker(make_config(tiny, prompt="box+center"), device="cpu").predict(images[:2], "rgb")
    assert [p.score for p in box] != [p.score for p in point]  # the centre point reaches the decoder


def test_batch_size_does_not_change_masks(tiny, images: list[np.ndarray]) -> None:
    one = Sam2Masker(make_config(tiny), device="cpu", batch_size=1).predict(images, "tir")
    three = Sam2Masker(make_config(tiny), device="cpu", batch_size=3).predict(images, "tir")
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)


def test_grey_image_is_repeated_to_three_channels(masker: Sam2Masker, images: list[np.ndarray]) -> None:
    grey = images[1][:, :, 0]
    from_grey, from_rgb = masker.predict([grey, np.repeat(grey[:, :, None], 3, axis=2)], "tir")
    np.testing.assert_array_equal(from_grey.mask, from_rgb.mask)
    with pytest.raises(ValueError, match="uint8"):
        masker.predict([grey.astype(np.float32)], "tir")


def test_identity_names_config_hash_and_params(tiny, masker: Sam2Masker, tmp_path: Path) -> None:
    path, name, overrides = tiny
    identity = masker.identity()
    assert identity == {
        "provider": "sam2",
        "model": name,
        "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "params": {"prompt": "box", "box_margin": 0.02, "overrides": overrides, "dtype": "fp32"},
    }
    assert Sam2Masker(make_config(tiny), device="cpu", batch_size=1).identity() == identity  # batch size: no
    other = tmp_path / "other.pt"
    make_tiny_sam2_checkpoint(other, seed=1)
    changed = Sam2Masker(Sam2Config(model=name, checkpoint=other, overrides=overrides), device="cpu").identity()
    assert changed["checkpoint_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert changed["checkpoint_sha256"] != identity["checkpoint_sha256"]
    assert Sam2Masker(make_config(tiny, prompt="box+center"), device="cpu").identity() != identity


def test_short_names_resolve_to_shipped_configs() -> None:
    shipped = set(shipped_configs())
    for short in SHORT_NAMES:
        assert resolve_config_name(short, "2") in shipped
        assert resolve_config_name(short, "2.1") in shipped
    assert resolve_config_name("tiny", "2") == "configs/sam2/sam2_hiera_t.yaml"
    assert resolve_config_name("large", "2.1") == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert resolve_config_name("configs/sam2.1/sam2.1_hiera_s", "2") == "configs/sam2.1/sam2.1_hiera_s.yaml"


def test_missing_checkpoint_names_path_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*masks\.sam2\.checkpoint"):
        Sam2Masker(Sam2Config(checkpoint=missing), device="cpu")
    with pytest.raises(ValueError, match=r"masks\.sam2\.checkpoint is not set"):
        Sam2Masker(Sam2Config(), device="cpu")


def test_unknown_config_name_lists_choices(tiny) -> None:
    with pytest.raises(ValueError, match=r"'huge'.*tiny, small, base\+, large.*sam2\.1_hiera_t\.yaml"):
        Sam2Masker(make_config(tiny, model="huge"), device="cpu")


def test_config_file_path_is_refused_with_explanation(tiny, tmp_path: Path) -> None:
    local = tmp_path / "my_sam2.yaml"
    local.write_text("model: {}\n")
    with pytest.raises(ValueError, match=r"file on disk.*config names inside"):
        Sam2Masker(make_config(tiny, model=str(local)), device="cpu")


def test_checkpoint_that_does_not_fit_names_file_and_config(tiny, tmp_path: Path) -> None:
    _, name, overrides = tiny
    wider = [o.replace("=32", "=48") if "neck" in o else o for o in TINY_OVERRIDES]  # a 48-wide neck and decoder
    path = tmp_path / "wider.pt"
    make_tiny_sam2_checkpoint(path, overrides=wider)
    with pytest.raises(ValueError, match=r"wider\.pt does not fit the sam2 config configs/sam2\.1/sam2\.1_hiera_t"):
        Sam2Masker(Sam2Config(model=name, checkpoint=path, overrides=overrides), device="cpu")
    not_sam = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_sam)
    with pytest.raises(ValueError, match=r"weights\.pt: expected a SAM 2 checkpoint"):
        Sam2Masker(Sam2Config(model=name, checkpoint=not_sam, overrides=overrides), device="cpu")


def test_bad_override_names_the_config_key(tiny) -> None:
    with pytest.raises(ValueError, match=r"masks\.sam2\.overrides"):
        Sam2Masker(make_config(tiny, overrides=["model.no_such_key=1"]), device="cpu")


@pytest.mark.slow
def test_shipped_config_with_a_full_size_random_checkpoint(tmp_path: Path) -> None:
    """The real hiera-t 2.1 config (1024-pixel input, memory modules) loads and predicts; 2 rejects its checkpoint."""
    from sam2.build_sam import build_sam2

    path = tmp_path / "sam2.1_hiera_t_random.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_sam2(resolve_config_name("tiny", "2.1"), None, device="cpu", apply_postprocessing=False)
    torch.save({"model": model.state_dict()}, path)
    image = np.random.default_rng(0).integers(0, 256, (256, 128, 3), dtype=np.uint8)
    (prediction,) = Sam2Masker(Sam2Config(model="tiny", checkpoint=path), device="cpu").predict([image], "rgb")
    assert prediction.mask.shape == (256, 128) and 0.0 <= prediction.score <= 1.0
    with pytest.raises(ValueError, match=r"3 unexpected keys \(no_obj_embed_spatial"):
        Sam2Masker(Sam2Config(model="tiny", version="2", checkpoint=path), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_requested_without_cuda(tiny) -> None:
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*--device cpu"):
        Sam2Masker(make_config(tiny))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_agrees_with_cpu(tiny, images: list[np.ndarray]) -> None:
    gpu = Sam2Masker(make_config(tiny), device="cuda", batch_size=3)
    assert gpu.identity()["params"]["dtype"] == "bf16-autocast"
    on_gpu = gpu.predict(images, "rgb")
    on_cpu = Sam2Masker(make_config(tiny), device="cpu", batch_size=3).predict(images, "rgb")
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a.mask.dtype == np.bool_ and a.mask.shape == b.mask.shape
        assert (a.mask != b.mask).mean() < 0.02
        assert a.score == pytest.approx(b.score, abs=0.02)

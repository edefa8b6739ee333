"""Model registry, CLIP backbone loading (tiny random models saved to disk) and the three-branch baseline."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from reidtrain.models import create_model, list_models
from reidtrain.models.baseline import ClipBaseline
from reidtrain.models.layers.clip import (
    ClipVisualEncoder,
    build_clip,
    build_clip_visual,
    is_torchscript_archive,
    load_clip_state_dict,
)

TINY_D = 32  # TINY_CONFIG embed_dim: projected class-token size
TINY_WIDTH = 64


def tiny_baseline(**kwargs: object) -> ClipBaseline:
    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "backbone": "tiny", "require_pretrained": False, **kwargs}
    return create_model("baseline", **kwargs)  # type: ignore[return-value]


# --- registry -----------------------------------------------------------------------------------------------------


def test_registry_lists_baseline_and_rejects_unknown_names() -> None:
    assert "baseline" in list_models()
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*baseline"):
        create_model("nope")


def test_registry_refuses_a_second_registration() -> None:
    from reidtrain.models.registry import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("baseline")(ClipBaseline)


# --- backbone -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "grid"), [((256, 128), (16, 8)), ((128, 256), (8, 16))])
def test_tiny_backbone_tokens_and_position_embedding(size: tuple[int, int], grid: tuple[int, int]) -> None:
    visual = build_clip_visual("tiny", size, None, require_pretrained=False)
    assert tuple(visual.grid_size) == grid
    assert visual.positional_embedding.shape == (1 + 128, TINY_WIDTH)
    encoder = ClipVisualEncoder(visual).eval()
    images = torch.randn(2, 3, *size)
    tokens = encoder(images)
    assert tokens.shape == (2, 1 + 128, TINY_D)
    # the class token equals open_clip's own pooled, projected output
    torch.testing.assert_close(tokens[:, 0], visual(images), atol=1e-5, rtol=1e-5)
    assert ClipVisualEncoder(visual, project=False)(images).shape == (2, 1 + 128, TINY_WIDTH)


def test_require_pretrained_without_weights_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"--weights FILE.*--random-init"):
        build_clip("tiny", (256, 128), None, require_pretrained=True)


def test_unknown_backbone_name() -> None:
    with pytest.raises(ValueError, match="unknown CLIP backbone"):
        build_clip("ViT-Nope", (256, 128), None, require_pretrained=False)


def test_saved_state_dict_loads_with_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_clip("tiny", (256, 128), None, require_pretrained=False).eval()
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)  # DDP-style wrap
    loaded = build_clip("tiny", (256, 128), path).eval()
    images = torch.randn(2, 3, 256, 128)
    torch.testing.assert_close(loaded.visual(images), source.visual(images), atol=0, rtol=0)


def test_square_checkpoint_is_interpolated_to_the_reid_grid(tmp_path: Path) -> None:
    source = build_clip("tiny", (224, 224), None, require_pretrained=False)
    path = tmp_path / "tiny224.pt"
    torch.save(source.state_dict(), path)
    loaded = build_clip("tiny", (256, 128), path)
    assert loaded.visual.positional_embedding.shape == (1 + 128, TINY_WIDTH)
    torch.testing.assert_close(loaded.visual.conv1.weight, source.visual.conv1.weight)


def test_checkpoint_of_another_size_names_the_file_and_the_mismatch(tmp_path: Path) -> None:
    wrong = build_clip("tiny", (256, 128), None, require_pretrained=False)
    state = wrong.state_dict()
    state["visual.conv1.weight"] = torch.zeros(48, 3, 16, 16)  # a different width
    state["extra.weight"] = torch.zeros(1)
    del state["logit_scale"]
    path = tmp_path / "other_size.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"other_size\.pt.*tiny") as info:
        build_clip("tiny", (256, 128), path)
    message = str(info.value)
    assert "visual.conv1.weight: file (48, 3, 16, 16) vs model (64, 3, 16, 16)" in message
    assert "missing: logit_scale" in message
    assert "unexpected: extra.weight" in message


def test_width_mismatch_in_position_embedding_is_reported(tmp_path: Path) -> None:
    state = build_clip("tiny", (224, 224), None, require_pretrained=False).state_dict()
    state["visual.positional_embedding"] = torch.zeros(1 + 196, 48)  # needs resizing and has the wrong width
    path = tmp_path / "bad_pos.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad_pos\.pt.*visual\.positional_embedding"):
        build_clip("tiny", (256, 128), path)


def test_missing_file_and_non_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.pt.*--random-init"):
        build_clip("tiny", (256, 128), tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        build_clip("tiny", (256, 128), junk)


def test_torchscript_archive_is_recognised_as_openai_and_gets_quickgelu(tmp_path: Path) -> None:
    """OpenAI's original .pt is a TorchScript archive; a scripted tiny QuickGELU CLIP stands in for it (offline)."""
    torch.manual_seed(2)
    source = build_clip("tiny-quickgelu", (224, 224), None, require_pretrained=False).eval()
    path = tmp_path / "openai_tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script/save are deprecated, still work
        torch.jit.save(torch.jit.script(source), str(path))
    assert is_torchscript_archive(path)
    _, is_openai = load_clip_state_dict(path)
    assert is_openai
    loaded = build_clip("tiny", (224, 224), path).eval()  # plain name: QuickGELU switched on by the archive
    images = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(loaded.visual(images), source.visual(images))
    gelu = build_clip("tiny", (224, 224), None, require_pretrained=False)
    gelu.load_state_dict(source.state_dict())
    assert not torch.allclose(gelu.eval().visual(images), source.visual(images))  # GELU would be wrong


def test_plain_state_dict_is_not_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(build_clip("tiny", (256, 128), None, require_pretrained=False).state_dict(), path)
    assert not is_torchscript_archive(path)
    assert load_clip_state_dict(path)[1] is False


# --- baseline -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(256, 128), (128, 256)])
def test_baseline_shapes_train_and_eval(size: tuple[int, int]) -> None:
    model = tiny_baseline(image_size=size)
    images = torch.randn(4, 3, 3, *size)
    out = model.train()(images)
    assert out["features"].shape == out["bn_features"].shape == (4, 3 * TINY_D)
    assert out["logits"].shape == (4, 5)
    out = model.eval()(images)
    assert "logits" not in out
    torch.testing.assert_close(out["retrieval"], out["features"])  # before the BNNeck, as the reference configs
    after = tiny_baseline(image_size=size, test_feature="bn").eval()(images)
    torch.testing.assert_close(after["retrieval"], after["bn_features"])


def test_one_backbone_shared_by_the_modalities() -> None:
    model = tiny_baseline().eval()
    assert sum(isinstance(m, ClipVisualEncoder) for m in model.modules()) == 1
    one = torch.randn(2, 3, 256, 128)
    images = torch.stack([one, one, one], dim=1)  # same image in every modality -> same class token thrice
    features = model(images)["features"].view(2, 3, TINY_D)
    torch.testing.assert_close(features[:, 1], features[:, 0])
    torch.testing.assert_close(features[:, 2], features[:, 0])


def test_sie_changes_features_only_with_cameras_and_camids() -> None:
    images = torch.randn(2, 3, 3, 256, 128)
    camids = torch.tensor([0, 2])
    plain = tiny_baseline().eval()
    with_sie = tiny_baseline(num_cameras=3).eval()
    assert with_sie.sie_embed.shape == (3, TINY_WIDTH)
    assert plain.sie_embed is None
    base = plain(images)["features"]
    torch.testing.assert_close(plain(images, camids)["features"], base)  # num_cameras=0: camids ignored
    torch.testing.assert_close(with_sie(images)["features"], base)  # same seed, no camids: no SIE
    changed = with_sie(images, camids)["features"]
    assert not torch.allclose(changed, base)
    off = tiny_baseline(num_cameras=3, sie_factor=0.0).eval()
    torch.testing.assert_close(off(images, camids)["features"], base)


def test_missing_modality_zeroes_its_input() -> None:
    model = tiny_baseline().eval()
    images = torch.randn(2, 3, 3, 256, 128)
    zeroed = images.clone()
    zeroed[:, 0] = 0
    out = model(images, missing=("rgb",))
    torch.testing.assert_close(out["retrieval"], model(zeroed)["retrieval"])
    assert out["retrieval"].shape == (2, 3 * TINY_D)
    assert model(images, missing=("nir", "tir"))["retrieval"].isfinite().all()
    with pytest.raises(ValueError, match="unknown modalities"):
        model(images, missing=("depth",))


def test_gradients_reach_backbone_and_classifier() -> None:
    model = tiny_baseline(num_cameras=2).train()
    out = model(torch.randn(4, 3, 3, 256, 128), torch.tensor([0, 1, 0, 1]))
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3])) + out["features"].pow(2).mean()
    loss.backward()
    for param in (
        model.classifier.weight,
        model.encoder.visual.conv1.weight,
        model.encoder.visual.class_embedding,
        model.sie_embed,
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert not model.bottleneck.bias.requires_grad


def test_baseline_loads_weights_through_the_registry(tmp_path: Path) -> None:
    clip = build_clip("tiny", (256, 128), None, require_pretrained=False)
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    model = create_model("baseline", num_classes=3, backbone="tiny", weights=path)
    torch.testing.assert_close(model.encoder.visual.conv1.weight, clip.visual.conv1.weight)
    with pytest.raises(ValueError, match="--random-init"):
        create_model("baseline", num_classes=3, backbone="tiny")

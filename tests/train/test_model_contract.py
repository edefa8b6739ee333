"""Every registered model honours the contract of ``reidtrain.batch`` (tiny backbone, random init, CPU)."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from reidtrain.batch import MODEL_INPUTS, model_inputs
from reidtrain.losses import ReIDObjective
from reidtrain.models import create_model, list_models

B, CLASSES, SIZE = 4, 3, (64, 32)
LABELS = torch.tensor([0, 0, 1, 1])
CAPTIONS = {
    key: ["A person seen from the back. The person is wearing a red top."] * B for key in ("rgb", "nir", "tir", "fused")
}


def _inputs(model: torch.nn.Module) -> dict[str, object]:
    inputs = model_inputs(model)
    kwargs: dict[str, object] = {}
    if "token_mask" in inputs:
        kwargs["token_mask"] = torch.rand(B, (SIZE[0] // 16) * (SIZE[1] // 16)) > 0.5  # (B, N)
    if "captions" in inputs:
        kwargs["captions"] = CAPTIONS
    if "labels" in inputs and model.training:
        kwargs["labels"] = LABELS
    return kwargs


# sha256 (first 16 hex digits) of every "key shape" line of the sorted state dict at tiny size, and the entry count:
# checkpoints keep loading only while these stay the same (a refactor must not rename or reshape an entry).
STATE_DICT_DIGESTS = {
    "baseline": ("a1eb366a170d9bd7", 39),
    "demo": ("193048acd783d255", 102),
    "dmpt": ("1860ffd953e8eebe", 86),
    "mambapro": ("e44b0db20917c366", 250),
    "next": ("14a8e21f8998c875", 218),
    "stmi": ("03b83c9f089648b8", 96),
}


def test_all_six_models_are_registered() -> None:
    assert {"baseline", "stmi", "next", "demo", "mambapro", "dmpt"} <= set(list_models())


@pytest.mark.parametrize("name", sorted(list_models()))
def test_training_reaches_every_trainable_parameter_and_eval_gives_a_retrieval_feature(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(
        name, num_classes=CLASSES, num_cameras=2, backbone="tiny", image_size=SIZE, require_pretrained=False
    )
    assert set(model_inputs(model)) <= set(MODEL_INPUTS)
    images, camids = torch.randn(B, 3, 3, *SIZE), torch.tensor([0, 1, 0, 1])
    out = model.train()(images, camids=camids, **_inputs(model))
    loss, terms = ReIDObjective(CLASSES)(out, LABELS)
    assert torch.isfinite(loss) and {"id", "triplet"} <= set(terms)
    loss.backward()
    # DDP (find_unused_parameters=False) needs every trainable parameter in the graph
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused or getattr(model, "ddp_find_unused", False), unused[:5]
    model.eval()
    with torch.no_grad():
        full = model(images, camids=camids, **_inputs(model))["retrieval"]
        partial = model(images, camids=camids, missing=("rgb",), **_inputs(model))["retrieval"]
    assert full.ndim == 2 and full.shape == partial.shape and full.shape[0] == B
    assert torch.isfinite(full).all() and not torch.equal(full, partial)
    with pytest.raises(ValueError, match="unknown modalities"):
        model(images, missing=("depth",), **_inputs(model))


@pytest.mark.parametrize("name", sorted(STATE_DICT_DIGESTS))
def test_state_dict_keys_and_shapes_are_pinned(name: str) -> None:
    model = create_model(
        name, num_classes=CLASSES, num_cameras=2, backbone="tiny", image_size=SIZE, require_pretrained=False
    )
    state = model.state_dict()
    text = "\n".join(f"{key} {tuple(value.shape)}" for key, value in sorted(state.items()))
    assert (hashlib.sha256(text.encode()).hexdigest()[:16], len(state)) == STATE_DICT_DIGESTS[name]


@pytest.mark.parametrize("name", sorted(list_models()))
def test_sie_follows_each_sample_through_the_modality_flattening(name: str) -> None:
    """Permuting the batch permutes the features when every sample has its own camera: the camera bias reaches the
    sample's own three images, whichever order (batch- or modality-major) the model flattens them in."""
    torch.manual_seed(0)
    model = create_model(
        name, num_classes=CLASSES, num_cameras=B, backbone="tiny", image_size=SIZE, require_pretrained=False
    ).eval()
    if getattr(model, "sie_embed", None) is None:
        pytest.skip(f"{name} has no SIE (it ignores camera ids, as its paper)")
    images, camids, perm = torch.randn(B, 3, 3, *SIZE), torch.arange(B), torch.tensor([2, 0, 3, 1])
    kwargs = _inputs(model)
    permuted = {k: v[perm] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}  # captions: all equal
    with torch.no_grad():
        out = model(images, camids=camids, **kwargs)["retrieval"]
        out_perm = model(images[perm], camids=camids[perm], **permuted)["retrieval"]
        other_cameras = model(images, camids=camids.flip(0), **kwargs)["retrieval"]
    torch.testing.assert_close(out_perm, out[perm])
    assert not torch.allclose(other_cameras, out)  # the camera does change the feature


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_standard_attention_calls_scaled_dot_product_attention(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``nn.MultiheadAttention`` a model runs in training (open_clip's blocks and ours pass
    ``need_weights=False``) goes through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on
    CUDA), never the explicit softmax(QK^T) path; only STMI's SFM layers compute their own scores (they need the
    score matrix). A counting wrapper around the real function tells which module called it."""
    calls: list[int] = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)  # looked up at call time by F's MHA
    torch.manual_seed(0)
    model = create_model(
        name, num_classes=CLASSES, num_cameras=2, backbone="tiny", image_size=SIZE, require_pretrained=False
    ).train()
    ran: dict[str, list[bool]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.register_forward_pre_hook(lambda m, a, n=module_name: ran.setdefault(n, []).append(len(calls)))
            module.register_forward_hook(lambda m, a, o, n=module_name: ran[n].append(len(calls) > ran[n].pop()))
    images, camids = torch.randn(B, 3, 3, *SIZE), torch.tensor([0, 1, 0, 1])
    model(images, camids=camids, **_inputs(model))
    assert ran, f"{name} ran no nn.MultiheadAttention"
    slow = sorted(n for n, used in ran.items() if not all(used))
    assert not slow, f"{name}: attention without scaled_dot_product_attention in {slow}"

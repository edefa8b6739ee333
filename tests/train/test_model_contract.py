"""Every registered model honours the contract of ``reidtrain.batch`` (tiny backbone, random init, CPU)."""

from __future__ import annotations

import pytest
import torch

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

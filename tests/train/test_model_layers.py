"""The layers every model shares (``reidtrain.models.layers``): SIE, the BNNeck, the retrieval-feature choice."""

from __future__ import annotations

import pytest
import torch

from reidtrain.models.layers.heads import BNNeck, bnneck_layers, check_test_feature, retrieval_feature
from reidtrain.models.layers.sie import camera_bias, camera_embedding


def test_camera_embedding_is_off_without_cameras_and_small_random_with() -> None:
    assert camera_embedding(0, 8) is None
    torch.manual_seed(0)
    embedding = camera_embedding(50, 64)
    assert embedding is not None and embedding.shape == (50, 64) and embedding.requires_grad
    assert 0.018 < embedding.std() < 0.022  # trunc_normal(std 0.02); its bounds (+-2) are absolute, far out
    with pytest.raises(ValueError, match="num_cameras"):
        camera_embedding(-1, 8)


@pytest.mark.parametrize("modality_major", [False, True])
def test_camera_bias_rows_follow_the_image_flattening(modality_major: bool) -> None:
    embedding = torch.randn(5, 4)
    camids = torch.tensor([3, 0, 4])  # B = 3
    bias = camera_bias(embedding, 0.5, camids, 2, modality_major=modality_major)
    assert bias is not None
    if modality_major:  # (M, B) flattened: all samples' first modality, then the second
        expected = [0.5 * embedding[camids[b]] for _ in range(2) for b in range(3)]
    else:  # (B, M) flattened: the two modalities of sample 0, then of sample 1, ...
        expected = [0.5 * embedding[camids[b]] for b in range(3) for _ in range(2)]
    torch.testing.assert_close(bias, torch.stack(expected))


def test_camera_bias_is_none_when_sie_is_off_or_cameras_unknown() -> None:
    assert camera_bias(None, 1.0, torch.tensor([0]), 3) is None
    assert camera_bias(torch.randn(2, 4), 1.0, None, 3) is None


def test_bnneck_layers_start_as_the_reference_repos() -> None:
    torch.manual_seed(0)
    bottleneck, classifier = bnneck_layers(256, 1000)
    assert torch.equal(bottleneck.weight, torch.ones(256)) and torch.equal(bottleneck.bias, torch.zeros(256))
    assert not bottleneck.bias.requires_grad and bottleneck.weight.requires_grad
    assert classifier.bias is None and classifier.weight.shape == (1000, 256)
    assert abs(classifier.weight.std().item() - 0.001) < 1e-4


def test_bnneck_classifies_the_normalised_features() -> None:
    neck = BNNeck(6, 3).eval()
    features = torch.randn(4, 6)
    bn, logits = neck(features)
    torch.testing.assert_close(bn, neck.bottleneck(features))
    torch.testing.assert_close(logits, bn @ neck.classifier.weight.T)


def test_retrieval_feature_picks_before_or_after_the_bnneck() -> None:
    pre, post = [torch.zeros(1)], [torch.ones(1)]
    assert retrieval_feature(pre, post, "pre_bn") is pre
    assert retrieval_feature(pre, post, "bn") is post
    check_test_feature("bn")
    with pytest.raises(ValueError, match=r"pre_bn, bn.*'after'"):
        check_test_feature("after")

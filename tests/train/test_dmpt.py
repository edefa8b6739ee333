"""DMPT: frozen backbone, modality / semantic prompts, PromptIBind (Eqs. 11-15), the contrastive (Eqs. 5-6) and center
MAE losses against direct computations, the switches, and one epoch of ``reidtrain fit`` + ``eval --missing``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidtrain.cli import app
from reidtrain.data.text import tokenize_captions
from reidtrain.models import create_model
from reidtrain.models.dmpt import (
    DMPT,
    BindCrossAttention,
    ModalityPromptProjector,
    center_mae_loss,
    modality_text_contrastive_loss,
    modality_text_prompts,
)
from reidtrain.optim import make_optimizer, param_groups

IMAGE = (64, 32)  # 8 patches on the tiny backbone
TINY_D, TINY_WIDTH, TINY_LAYERS = 32, 64, 2


def tiny_dmpt(**kwargs: object) -> DMPT:
    torch.manual_seed(0)
    kwargs = {
        "num_classes": 4,
        "backbone": "tiny",
        "image_size": IMAGE,
        "require_pretrained": False,
        "semantic_prompt_length": 3,
        **kwargs,
    }
    return create_model("dmpt", **kwargs)  # type: ignore[return-value]


# --- frozen backbone ------------------------------------------------------------------------------------------------


def test_backbone_and_text_encoder_stay_frozen_through_an_optimizer_step() -> None:
    model = tiny_dmpt().train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("encoder.", "text."))}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("semantic_prompts", "modality_prompts.", "interaction.", "neck.")) for n in trainable
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
    groups = param_groups(model, 1e-2, 1e-2, 1e-4, backbone_prefixes=["encoder"])  # the trainer's groups
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    optimizer = make_optimizer("adam", groups)
    out = model(torch.randn(4, 3, 3, *IMAGE), labels=torch.tensor([0, 0, 1, 1]))
    loss = out["logits"].logsumexp(-1).mean() + out["features"].pow(2).mean() + sum(out["losses"].values())
    loss.backward()
    optimizer.step()
    for name, value in frozen.items():
        param = dict(model.named_parameters())[name]
        assert param.grad is None, name
        assert torch.equal(param, value), name
    for name in ("semantic_prompts", "modality_prompts.layers.0.weight", "interaction.0.external.key.weight"):
        assert not torch.equal(dict(model.named_parameters())[name], before[name]), name
    assert not model.text.training  # the frozen text tower stays in eval mode


def test_trainable_fraction_is_reported_and_counts_only_new_parameters() -> None:
    model = tiny_dmpt()
    report = model.parameter_report()
    new = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("encoder.", "text.")))
    frozen_bn_bias = model.neck.bottleneck.bias.numel()
    assert report["trainable"] == new - frozen_bn_bias
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert report["fraction_of_model"] == pytest.approx(report["trainable"] / report["total"])
    assert report["fraction_three_streams"] == pytest.approx(
        report["trainable"] / (report["trainable"] + 3 * report["visual"])
    )


# --- prompts --------------------------------------------------------------------------------------------------------


def test_text_prompts_name_modality_and_object() -> None:
    assert modality_text_prompts("vehicle") == [
        "a visible photo of a vehicle.",
        "a near-infrared photo of a vehicle.",
        "a thermal-infrared photo of a vehicle.",
    ]
    person, vehicle = tiny_dmpt(), tiny_dmpt(object_word="vehicle")
    torch.testing.assert_close(person.text_tokens, tokenize_captions(modality_text_prompts("person")))
    assert not torch.equal(person.text_tokens, vehicle.text_tokens)
    assert not torch.allclose(person.text_features(), vehicle.text_features())
    with pytest.raises(ValueError, match="object_word"):
        modality_text_prompts(" ")


def test_modality_words_are_the_mean_token_embedding_of_each_phrase() -> None:
    model = tiny_dmpt()
    words = model.modality_words()
    assert words.shape == (3, model.text.token_embedding.embedding_dim)
    for m, phrase in enumerate(("a visible photo", "a near-infrared photo", "a thermal-infrared photo")):
        ids = [int(t) for t in tokenize_captions([phrase])[0] if int(t) not in (0, 49406, 49407)]  # no SOT/EOT/pad
        expected = model.text.token_embedding.weight[ids].mean(0)
        torch.testing.assert_close(words[m], expected)
    assert not torch.allclose(words[0], words[2])


def test_modality_projector_gives_m_tokens_per_layer_and_modality() -> None:
    torch.manual_seed(0)
    projector = ModalityPromptProjector(text_width=6, width=10, layers=3, length=2)
    words = torch.randn(3, 6)
    out = projector(words)
    assert out.shape == (3, 3, 2, 10)  # (L, modalities, M, width)
    layer = projector.layers[1]
    torch.testing.assert_close(out[1, 2], (words[2] @ layer.weight.t() + layer.bias).view(2, 10))


def test_prompts_are_injected_at_every_layer_per_modality() -> None:
    """Direct re-computation of Eqs. 7-10, one modality at a time, without the interaction layer."""
    model = tiny_dmpt(interaction_layers=0).eval()
    images = torch.randn(2, 3, 3, *IMAGE)
    tokens = model.encode(images)
    m_len, s_len, n = 1, 3, 8
    assert tokens.shape == (2, 3, 1 + m_len + s_len + n, TINY_WIDTH)
    prompts = model.layer_prompts()  # (L, 3, M + S, width)
    assert prompts.shape == (TINY_LAYERS, 3, m_len + s_len, TINY_WIDTH)
    for m in range(3):
        x = model.encoder.embed(images[:, m])  # (B, 1 + N, width)
        for layer, block in enumerate(model.encoder.blocks):
            p = prompts[layer, m].expand(2, -1, -1)
            x = block(torch.cat([x[:, :1], p, x[:, -n:]], dim=1))
        torch.testing.assert_close(tokens[:, m], x, atol=1e-5, rtol=1e-5)


def test_without_interaction_modalities_stay_separate_and_with_it_they_exchange() -> None:
    images = torch.randn(2, 3, 3, *IMAGE)
    for layers, nir_changes_rgb in ((0, False), (1, True)):
        model = tiny_dmpt(interaction_layers=layers).eval()
        base = model(images)["modality_features"]
        with torch.no_grad():
            model.semantic_prompts[-1, 1] += torch.randn(3, TINY_WIDTH)  # NIR's last-layer semantic prompts
        moved = (model(images)["modality_features"] - base).abs().amax(dim=(0, 2))  # (3,)
        assert bool(moved[1] > 1e-6)
        assert bool(moved[0] > 1e-6) == nir_changes_rgb and bool(moved[2] > 1e-6) == nir_changes_rgb


# --- PromptIBind ----------------------------------------------------------------------------------------------------


def test_bind_cross_attention_is_eqs_11_to_14() -> None:
    torch.manual_seed(5)
    d, s, b = 6, 4, 2
    bind = BindCrossAttention(d, 3)
    semantic = torch.randn(b, 3, s, d)
    out = bind(semantic)
    assert out.shape == semantic.shape
    s_bind = sum(semantic[:, m] @ bind.to_bind[m].weight.t() for m in range(3)) / 3  # Eq. 11
    torch.testing.assert_close(bind.bind(semantic), s_bind)
    kb = s_bind @ bind.key.weight.t()  # S~_bind = S_bind W_b, Eq. 13
    for m in range(3):
        q = semantic[:, m] @ bind.query[m].weight.t()  # S~_m = S_m W_m
        for i in range(b):
            weights = torch.softmax(q[i] @ kb[i].t() / math.sqrt(d), dim=-1)  # (S, S)
            torch.testing.assert_close(out[i, m], semantic[i, m] + weights @ kb[i], atol=1e-5, rtol=1e-5)


def test_interaction_layer_changes_only_through_coupled_prompts_and_self_attention() -> None:
    model = tiny_dmpt()
    layer = model.interaction[0]
    tokens = torch.randn(2, 3, 1 + 1 + 3 + 8, TINY_WIDTH)
    out = layer(tokens, start=2, length=3)
    coupled = layer.external(tokens[:, :, 2:5])
    expected_in = torch.cat([tokens[:, :, :2], coupled, tokens[:, :, 5:]], dim=2)
    for m in range(3):
        sa = layer.internal[m]
        x = sa.norm(expected_in[:, m])
        expected = expected_in[:, m] + sa.attention(x, x, x)[0]  # Eq. 15
        torch.testing.assert_close(out[:, m], expected, atol=1e-5, rtol=1e-5)


# --- losses ---------------------------------------------------------------------------------------------------------


def test_contrastive_loss_against_a_direct_computation() -> None:
    torch.manual_seed(6)
    b, d, scale = 4, 5, 10.0
    z, t = torch.randn(b, 3, d), torch.randn(3, d)
    loss = modality_text_contrastive_loss(z, t, scale)
    total = 0.0
    for m in range(3):
        per_sample = []
        for i in range(b):
            sims = [float(z[i, m] @ t[j] / (z[i, m].norm() * t[j].norm())) for j in range(3)]
            exps = [math.exp(scale * s) for s in sims]
            per_sample.append(-math.log(exps[m] / sum(exps)))
        total += sum(per_sample) / b
    assert float(loss) == pytest.approx(total, rel=1e-5)
    aligned = torch.eye(3).unsqueeze(0).expand(b, 3, 3) * 5  # z_m along its own text
    assert float(modality_text_contrastive_loss(aligned, torch.eye(3), scale)) < 1e-3


def test_center_mae_loss_against_a_direct_computation() -> None:
    torch.manual_seed(7)
    features = torch.randn(6, 3, 4)
    labels = torch.tensor([3, 3, 7, 7, 7, 9])
    loss = center_mae_loss(features, labels)
    expected = 0.0
    for m in range(3):
        errors = []
        for i in range(6):
            same = features[labels == labels[i], m]
            errors.append(float((features[i, m] - same.mean(0)).abs().mean()))
        expected += sum(errors) / 6
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    same_per_id = features[[0, 0, 2, 2, 2, 5]]  # every identity's samples identical
    assert float(center_mae_loss(same_per_id, labels)) == pytest.approx(0.0, abs=1e-7)


def test_model_losses_are_weighted_and_switchable() -> None:
    images, labels = torch.randn(4, 3, 3, *IMAGE), torch.tensor([0, 0, 1, 1])
    model = tiny_dmpt().train()
    out = model(images, labels=labels)
    assert set(out["losses"]) == {"contrastive", "center"}
    z = out["modality_features"]
    expected = modality_text_contrastive_loss(z, model.text_features(), model.logit_scale)
    torch.testing.assert_close(out["losses"]["contrastive"], expected)
    torch.testing.assert_close(out["losses"]["center"], center_mae_loss(z, labels))
    assert out["losses"]["contrastive"].requires_grad
    model.contrastive_weight, model.center_weight = 0.5, 2.0
    weighted = model(images, labels=labels)["losses"]
    torch.testing.assert_close(weighted["contrastive"], 0.5 * expected)
    torch.testing.assert_close(weighted["center"], 2.0 * center_mae_loss(z, labels))
    assert "center" not in tiny_dmpt().train()(images)["losses"]  # no labels: skipped
    assert "losses" not in tiny_dmpt(text_prompts=False).train()(images)


# --- model ----------------------------------------------------------------------------------------------------------


def test_switches_change_the_prompt_layout() -> None:
    no_modality = tiny_dmpt(modality_prompt_length=0, interaction_layers=0)
    assert no_modality.modality_prompts is None and len(no_modality.interaction) == 0
    assert no_modality.encode(torch.randn(1, 3, 3, *IMAGE)).shape == (1, 3, 1 + 3 + 8, TINY_WIDTH)
    two = tiny_dmpt(modality_prompt_length=2, interaction_layers=2)
    assert two.layer_prompts().shape == (TINY_LAYERS, 3, 2 + 3, TINY_WIDTH) and len(two.interaction) == 2
    with pytest.raises(ValueError, match="semantic_prompt_length"):
        tiny_dmpt(semantic_prompt_length=0)


def test_eval_outputs_and_missing_modalities() -> None:
    model = tiny_dmpt().eval()
    images = torch.randn(2, 3, 3, *IMAGE)
    out = model(images)
    assert out["retrieval"].shape == (2, 3 * TINY_D) and "logits" not in out and "losses" not in out
    torch.testing.assert_close(out["retrieval"], out["modality_features"].flatten(1))
    zeroed = images.clone()
    zeroed[:, 0] = 0.0
    torch.testing.assert_close(model(images, missing=("rgb",))["retrieval"], model(zeroed)["retrieval"])
    model.test_feature = "bn"
    torch.testing.assert_close(model(images)["retrieval"], model.neck.bottleneck(out["features"]))


# --- end to end -----------------------------------------------------------------------------------------------------


def test_fit_one_epoch_and_evaluate_with_missing_modalities(full_shards: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "dmpt"
    args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "dmpt", "--backbone", "tiny"]
    result = runner.invoke(
        app, [*args, "--random-init", "--recipe", "dmpt-tiny-demo", "--epochs", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(line["loss_contrastive"]) and math.isfinite(line["loss_id"]) and 0.0 <= line["mAP"] <= 1.0
    assert math.isfinite(line["loss_center"])  # the trainer passes the labels the model declares
    assert set(line["lrs"]) <= {"new", "new_bias"}  # the frozen encoder gets no group
    for missing in ("rgb", "rgb,nir"):
        before = {p: p.stat().st_mtime_ns for p in run.glob("eval*.json")}
        result = runner.invoke(app, ["eval", "--run", str(run), "--missing", missing])
        assert result.exit_code == 0, result.output
        written = [p for p in run.glob("eval*.json") if before.get(p) != p.stat().st_mtime_ns]
        assert len(written) == 1
        report = json.loads(written[0].read_text())
        assert report["missing"] == missing.split(",")
        assert all(0.0 <= record["mAP"] <= 1.0 for record in report.get("results", [report]))

"""DeMo: PIFE (Eq. 2), HDM (Eqs. 3-8), ATMoE (Eqs. 9-15) against direct re-computations, the model's switches,
missing modalities, and one epoch of ``reidtrain fit`` + ``reidtrain eval --missing`` on the synthetic shards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from reidtrain.cli import app
from reidtrain.losses import ReIDObjective
from reidtrain.models import create_model
from reidtrain.models.demo import (
    EXPERT_NAMES,
    EXPERT_SETS,
    AttentionTriggeredMoE,
    DeMo,
    HierarchicalDecoupling,
    PatchIntegratedExtractor,
)
from reidtrain.models.layers.heads import zero_missing_modalities

TINY_C = 32  # projected token size of the tiny backbone
IMAGE = (64, 32)  # 4 x 2 = 8 patches


def tiny_demo(**kwargs: object) -> DeMo:
    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "backbone": "tiny", "image_size": IMAGE, "require_pretrained": False, **kwargs}
    return create_model("demo", **kwargs)  # type: ignore[return-value]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- PIFE -----------------------------------------------------------------------------------------------------------


def test_pife_is_eq2_on_class_token_and_pooled_patches() -> None:
    torch.manual_seed(0)
    pife = PatchIntegratedExtractor(8)
    cls, patches = torch.randn(3, 8), torch.randn(3, 5, 8)
    x = torch.cat([cls, patches.sum(1) / 5], dim=-1)  # [f_cls, P(F)]
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    x = x * pife.norm.weight + pife.norm.bias
    x = x @ pife.proj.weight.t() + pife.proj.bias
    expected = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # GELU
    torch.testing.assert_close(pife(cls, patches), expected)
    assert pife.proj.weight.shape == (8, 16)  # W_pro: 2C -> C


# --- HDM ------------------------------------------------------------------------------------------------------------


def test_hdm_token_sets_are_the_seven_unimodal_bimodal_trimodal_sets() -> None:
    assert EXPERT_NAMES == ("R", "N", "T", "RN", "NT", "TR", "RNT")
    letters = "RNT"
    assert ["".join(letters[m] for m in s) for s in EXPERT_SETS] == list(EXPERT_NAMES)
    hdm = HierarchicalDecoupling(TINY_C)
    assert hdm.queries.shape == (7, TINY_C) and len(hdm.attention) == 7
    assert hdm.attention[0].num_heads == 1  # C // 64, at least 1 (8 for C = 512)
    assert HierarchicalDecoupling(512).attention[0].num_heads == 8


def test_hdm_key_tokens_concatenate_enhanced_and_patch_tokens_in_set_order() -> None:
    b, n, c = 2, 4, 6
    features, patches = torch.randn(b, 3, c), torch.randn(b, 3, n, c)
    keys = HierarchicalDecoupling.key_tokens(features, patches, (2, 0))  # K_TR, Eq. 5
    assert keys.shape == (b, 2 * (n + 1), c)  # 2 N_p + 2 tokens
    expected = torch.cat([features[:, 2:3], patches[:, 2], features[:, 0:1], patches[:, 0]], dim=1)
    torch.testing.assert_close(keys, expected)
    assert HierarchicalDecoupling.key_tokens(features, patches, (0, 1, 2)).shape == (b, 3 * (n + 1), c)  # Eq. 7


def test_hdm_output_is_the_cross_attention_of_each_query_over_its_token_set() -> None:
    torch.manual_seed(1)
    c, heads, n = 8, 2, 3
    hdm = HierarchicalDecoupling(c, heads=heads).eval()  # eval: no attention dropout
    features, patches = torch.randn(2, 3, c), torch.randn(2, 3, n, c)
    out = hdm(features, patches)
    assert out.shape == (2, 7, c)
    d = c // heads
    for s, modalities in enumerate(EXPERT_SETS):
        attn = hdm.attention[s]
        keys = torch.cat([torch.cat([features[:, m : m + 1], patches[:, m]], 1) for m in modalities], 1)
        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        q = (hdm.queries[s] @ wq.t() + bq).view(heads, d)  # (h, d), the same query for every sample
        k = (keys @ wk.t() + bk).view(2, -1, heads, d)  # (B, T, h, d)
        v = (keys @ wv.t() + bv).view(2, -1, heads, d)
        weights = torch.einsum("hd,bthd->bht", q, k).div(math.sqrt(d)).softmax(-1)  # (B, h, T)
        mixed = torch.einsum("bht,bthd->bhd", weights, v).reshape(2, c)
        expected = mixed @ attn.out_proj.weight.t() + attn.out_proj.bias
        torch.testing.assert_close(out[:, s], expected, atol=1e-5, rtol=1e-5)


def test_hdm_features_depend_only_on_the_modalities_of_their_set() -> None:
    torch.manual_seed(2)
    hdm = HierarchicalDecoupling(8, heads=2).eval()
    features, patches = torch.randn(2, 3, 8), torch.randn(2, 3, 4, 8)
    base = hdm(features, patches)
    features2, patches2 = features.clone(), patches.clone()
    features2[:, 1] += 1.0  # change NIR only
    patches2[:, 1] += 1.0
    changed = (hdm(features2, patches2) - base).abs().amax(dim=(0, 2)) > 1e-6  # (7,)
    expected = [1 in s for s in EXPERT_SETS]  # N, RN, NT, RNT change; R, T, TR do not
    assert changed.tolist() == expected


# --- ATMoE ----------------------------------------------------------------------------------------------------------


def test_atmoe_gates_sum_to_one_per_head_and_match_eqs_9_to_13() -> None:
    torch.manual_seed(3)
    c, h, b = 8, 4, 5
    moe = AttentionTriggeredMoE(c, 7, h).train()
    decoupled = torch.randn(b, 7, c)
    alpha = moe.gates(decoupled)
    assert alpha.shape == (b, h, 7)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(b, h))
    assert bool((alpha > 0).all())
    # direct: D_q = BN(GELU(W_red [D_1..D_7])) with batch statistics (train mode)
    lin, bn = moe.reduce[0], moe.reduce[2]
    r = F.gelu(decoupled.reshape(b, 7 * c) @ lin.weight.t() + lin.bias)
    dq = (r - r.mean(0)) / torch.sqrt(r.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    q = (dq @ moe.query.weight.t()).view(b, h, c // h)
    k = (decoupled @ moe.key.weight.t()).view(b, 7, h, c // h)
    expected = torch.empty(b, h, 7)
    for i in range(b):
        for head in range(h):
            logits = torch.stack([q[i, head] @ k[i, e, head] for e in range(7)]) / math.sqrt(c // h)
            expected[i, head] = logits.softmax(0)
    torch.testing.assert_close(alpha, expected, atol=1e-5, rtol=1e-5)


def test_atmoe_output_is_per_head_experts_weighted_by_their_gate() -> None:
    torch.manual_seed(4)
    c, h, b = 8, 2, 4
    moe = AttentionTriggeredMoE(c, 7, h).eval()
    with torch.no_grad():  # non-trivial running statistics for the experts' BatchNorm
        moe.expert_norm.running_mean.normal_()
        moe.expert_norm.running_var.uniform_(0.5, 2.0)
    decoupled = torch.randn(b, 7, c)
    f, alpha = moe(decoupled)
    assert f.shape == (b, 7 * c)
    cd = c // h
    norm = moe.expert_norm
    for e in range(7):
        for head in range(h):
            chunk = decoupled[:, e, head * cd : (head + 1) * cd]  # D_e^h
            out = F.gelu(chunk @ moe.expert_weight[e, head].t() + moe.expert_bias[e, head])  # Eq. 14
            ch = slice(e * c + head * cd, e * c + (head + 1) * cd)
            out = (out - norm.running_mean[ch]) / torch.sqrt(norm.running_var[ch] + norm.eps)
            out = out * norm.weight[ch] + norm.bias[ch]
            expected = out * alpha[:, head, e : e + 1]  # Eq. 15
            torch.testing.assert_close(f[:, ch], expected, atol=1e-5, rtol=1e-5)


def test_learnable_parameters_match_table5_for_vit_b16() -> None:
    """Table 5 (RGBNT201, 171 ids, ViT-B-16, H = 4): A 86.41 M, B 87.99 M, C 95.96 M, D/E 98.79 M learnable."""
    model = create_model("demo", num_classes=171, backbone="ViT-B-16", require_pretrained=False, num_cameras=2)

    def learnable(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    full = learnable(model)  # model D / E
    no_atmoe = full - learnable(model.atmoe)  # model C
    no_hdm = no_atmoe - learnable(model.hdm) - learnable(model.moe_neck)  # model B
    no_pife = no_hdm - learnable(model.pife)  # model A, the baseline
    assert [round(n / 1e6, 2) for n in (no_pife, no_hdm, no_atmoe, full)] == [86.41, 87.99, 95.96, 98.79]


def test_atmoe_refuses_heads_that_do_not_divide_the_features() -> None:
    with pytest.raises(ValueError, match="divide"):
        AttentionTriggeredMoE(10, 7, 4)


# --- the model ------------------------------------------------------------------------------------------------------


def test_demo_train_outputs_and_gradients_reach_every_module() -> None:
    model = tiny_demo(num_cameras=2).train()
    images = torch.randn(4, 3, 3, *IMAGE)
    out = model(images, camids=torch.tensor([0, 1, 0, 1]))
    f_cat, f_moe = out["features"]
    assert f_cat.shape == (4, 3 * TINY_C) and f_moe.shape == (4, 7 * TINY_C)
    assert [x.shape for x in out["logits"]] == [(4, 5), (4, 5)]
    assert out["expert_weights"].shape == (4, 4, 7)
    loss = sum(x.logsumexp(-1).sum() for x in out["logits"]) + f_cat.pow(2).sum() + f_moe.pow(2).sum()
    loss.backward()
    for name in ("encoder.visual.conv1.weight", "sie_embed", "pife.0.proj.weight", "hdm.queries"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ("atmoe.reduce.0.weight", "atmoe.query.weight", "atmoe.key.weight", "atmoe.expert_weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_demo_eval_retrieval_is_the_pre_bn_concatenation() -> None:
    model = tiny_demo().eval()
    images = torch.randn(3, 3, 3, *IMAGE)
    out = model(images)
    assert "logits" not in out
    torch.testing.assert_close(out["retrieval"], torch.cat(out["features"], dim=1))  # [f_R, f_N, f_T, f]
    model.test_feature = "moe"
    torch.testing.assert_close(model(images)["retrieval"], out["features"][1])
    model.test_feature = "modality"
    torch.testing.assert_close(model(images)["retrieval"], out["features"][0])


def test_demo_switches_follow_table5() -> None:
    images = torch.randn(2, 3, 3, *IMAGE)
    no_moe = tiny_demo(atmoe=False).train()  # model C: f = [D_R, ..., D_RNT]
    assert no_moe.atmoe is None and "expert_weights" not in no_moe(images)
    assert no_moe(images)["features"][1].shape == (2, 7 * TINY_C)
    only_pife = tiny_demo(hdm=False, atmoe=False).train()  # model B
    out = only_pife(images)
    assert len(out["features"]) == 1 and len(out["logits"]) == 1 and only_pife.moe_neck is None
    baseline = tiny_demo(pife=False, hdm=False, atmoe=False).eval()  # model A: class tokens only
    tokens = baseline.encoder(images.flatten(0, 1))[:, 0].reshape(2, 3 * TINY_C)
    torch.testing.assert_close(baseline(images)["retrieval"], tokens)
    with pytest.raises(ValueError, match="needs hdm"):
        tiny_demo(hdm=False, atmoe=True)
    assert tiny_demo(heads=8).atmoe.heads == 8  # Table 6


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # CLIP's QuickGELU


def test_quick_gelu_switch_reaches_pife_and_the_atmoe_reduction_and_experts() -> None:
    """activation="quick_gelu" (the authors' code): x * sigmoid(1.702 x) wherever Eq. 2, 10 and 14 apply omega."""
    torch.manual_seed(0)
    pife = PatchIntegratedExtractor(8, activation="quick_gelu")
    cls, patches = torch.randn(3, 8), torch.randn(3, 5, 8)
    x = pife.proj(pife.norm(torch.cat([cls, patches.mean(1)], dim=-1)))
    torch.testing.assert_close(pife(cls, patches), quick_gelu(x))
    assert not torch.allclose(pife(cls, patches), F.gelu(x), atol=1e-4)  # the switch really changes f_m
    torch.manual_seed(5)
    quick = AttentionTriggeredMoE(8, 7, 2, activation="quick_gelu").eval()
    torch.manual_seed(5)
    plain = AttentionTriggeredMoE(8, 7, 2).eval()
    decoupled = torch.randn(4, 7, 8)
    lin, bn = quick.reduce[0], quick.reduce[2]
    r = quick_gelu(decoupled.reshape(4, 56) @ lin.weight.t() + lin.bias)
    dq = (r - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias  # Eq. 10, eval BN
    q = (dq @ quick.query.weight.t()).view(4, 2, 1, 4)
    k = (decoupled @ quick.key.weight.t()).view(4, 7, 2, 4).transpose(1, 2)
    alpha = ((q @ k.transpose(-2, -1)).squeeze(2) / 2.0).softmax(-1)  # (B, H, 7), sqrt(c) = 2
    torch.testing.assert_close(quick.gates(decoupled), alpha)
    chunks = decoupled.view(4, 7, 2, 4)
    experts = quick_gelu(torch.einsum("behi,ehoi->beho", chunks, quick.expert_weight) + quick.expert_bias)
    norm = quick.expert_norm
    experts = (experts.reshape(4, 56) - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    expected = experts.view(4, 7, 2, 4) * alpha.transpose(1, 2).unsqueeze(-1)  # Eqs. 14-15
    torch.testing.assert_close(quick(decoupled)[0], expected.flatten(1))
    assert not torch.allclose(quick(decoupled)[0], plain(decoupled)[0], atol=1e-4)


def test_per_modality_supervision_adds_one_bnneck_and_loss_per_modality() -> None:
    """The authors' vehicle configs (DIRECT: 0): f_R, f_N, f_T each through its own BNNeck, each with CE + triplet."""
    concat = tiny_demo()
    assert hasattr(concat, "modality_neck") and not hasattr(concat, "modality_necks")  # default: keys unchanged
    model = tiny_demo(modality_supervision="per_modality").train()
    keys = set(model.state_dict())
    assert not any(k.startswith("modality_neck.") for k in keys)
    assert {f"modality_necks.{i}.classifier.weight" for i in range(3)} <= keys
    images, labels = torch.randn(6, 3, 3, *IMAGE), torch.tensor([0, 0, 1, 1, 2, 2])
    out = model(images)
    f_cat = model.modality_features(images)[0]  # (B, 3, C), recomputed (the tiny encoder has no dropout)
    assert [f.shape for f in out["features"]] == [(6, TINY_C)] * 3 + [(6, 7 * TINY_C)]
    assert [x.shape for x in out["logits"]] == [(6, 5)] * 4
    for i in range(3):
        neck = model.modality_necks[i]
        torch.testing.assert_close(out["logits"][i], neck.classifier(neck.bottleneck(out["features"][i])))
    torch.testing.assert_close(torch.stack(out["features"][:3], dim=1), f_cat)

    def ce(logits: torch.Tensor) -> torch.Tensor:  # label-smoothed CE, eps 0.1, by torch's own implementation
        return F.cross_entropy(logits, labels, label_smoothing=0.1)

    def triplet(f: torch.Tensor) -> torch.Tensor:  # batch-hard soft margin, written out
        d = torch.cdist(f, f)
        same = labels[:, None] == labels[None, :]
        return F.softplus(d.masked_fill(~same, -1).amax(1) - d.masked_fill(same, 1e9).amin(1)).mean()

    expected = sum(0.25 * ce(x) + triplet(f) for x, f in zip(out["logits"], out["features"], strict=True))
    total, _ = ReIDObjective(5, {"id": 0.25, "triplet": 1.0})(out, labels)
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-4)  # four (neck, loss) pairs: 3 modalities + f
    model.eval()
    out = model(images)
    torch.testing.assert_close(out["retrieval"], torch.cat(out["features"], dim=1))  # [f_R, f_N, f_T, f] as before
    with pytest.raises(ValueError, match="modality_supervision"):
        tiny_demo(modality_supervision="direct")


def test_demo_missing_modalities_are_zeroed_before_the_backbone() -> None:
    model = tiny_demo().eval()
    images = torch.randn(2, 3, 3, *IMAGE)
    zeroed = images.clone()
    zeroed[:, [0, 1]] = 0.0
    torch.testing.assert_close(model(images, missing=("rgb", "nir"))["retrieval"], model(zeroed)["retrieval"])
    assert not torch.allclose(model(images, missing=("rgb",))["retrieval"], model(images)["retrieval"])
    torch.testing.assert_close(zero_missing_modalities(images, ()), images)
    with pytest.raises(ValueError, match="unknown modalities"):
        model(images, missing=("depth",))


# --- end to end -----------------------------------------------------------------------------------------------------


def test_fit_one_epoch_and_evaluate_with_missing_modalities(full_shards: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "demo"
    args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "demo", "--backbone", "tiny"]
    result = runner.invoke(
        app, [*args, "--random-init", "--recipe", "demo-tiny-demo", "--epochs", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(line["loss_id"]) and math.isfinite(line["loss_triplet"]) and 0.0 <= line["mAP"] <= 1.0
    state = torch.load(run / "last.pt", weights_only=True)["model"]
    assert any(key.startswith("atmoe.") for key in state) and "hdm.queries" in state
    for missing in ("rgb", "rgb,nir"):
        report = eval_missing(runner, run, missing)
        assert report["missing"] == missing.split(",")
        assert all(0.0 <= record["mAP"] <= 1.0 for record in report.get("results", [report]))


def eval_missing(runner: CliRunner, run: Path, missing: str) -> dict:
    """``reidtrain eval --run RUN --missing M``; the JSON report it wrote (RUN/eval*.json)."""
    before = {path: path.stat().st_mtime_ns for path in run.glob("eval*.json")}
    result = runner.invoke(app, ["eval", "--run", str(run), "--missing", missing])
    assert result.exit_code == 0, result.output
    written = [p for p in run.glob("eval*.json") if before.get(p) != p.stat().st_mtime_ns]
    assert len(written) == 1, written
    return json.loads(written[0].read_text())

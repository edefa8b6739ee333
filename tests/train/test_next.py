"""NEXT: sentence sampling, TMSE / CSSE / MMFA against the paper's equations, the frozen text tower, the ablation
switches, and a tiny end-to-end `reidtrain fit --model next` + `reidtrain eval --missing rgb`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from reidtrain.cli import app
from reidtrain.data.text import tokenize_captions
from reidtrain.losses import ReIDObjective
from reidtrain.models import create_model
from reidtrain.models.next_experts import (
    ExpertAggregation,
    Modulation,
    SamplingRoute,
    SemanticExpert,
    StructureExperts,
    cosine_relevance,
    straight_through_mask,
    top_k_mask,
)
from reidtrain.models.next_model import NEXT
from reidtrain.models.next_text import encode_texts, expert_captions, sample_sentences, split_sentences
from reidtrain.optim import make_optimizer, param_groups
from reidtrain.recipes import load_recipe

TINY_D = 32  # the tiny CLIP's embed_dim: projected visual tokens and text features
SIZE = (64, 32)  # 4 x 2 patches of 16 pixels
N = 8
CAPTION = "A person seen from the back. The person is wearing a red top with black trousers. The image appears clear."
SENTENCES = [
    "A person seen from the back.",
    "The person is wearing a red top with black trousers.",
    "The image appears clear.",
]


def tiny_next(**options: object) -> NEXT:
    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "backbone": "tiny", "image_size": SIZE, "require_pretrained": False, **options}
    return create_model("next", **kwargs)  # type: ignore[return-value]


def captions_for(batch: int) -> dict[str, list[str]]:
    other = "A person seen from the side. The person is wearing a blue top. The image appears blurry."
    texts = [CAPTION if i % 2 == 0 else other for i in range(batch)]
    return {"rgb": texts, "nir": texts[::-1], "tir": texts, "fused": texts}


def mlp(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """FC(act(FC(x))) computed from the weights of a Linear-act-Linear sequence."""
    first, act, second = seq
    hidden = x @ first.weight.T + first.bias
    hidden = hidden.clamp(min=0) if isinstance(act, nn.ReLU) else nn.functional.gelu(hidden)
    return hidden @ second.weight.T + second.bias


def expert_ref(expert: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 in eval mode (dropout off): MLP(LN(x)) + x."""
    normed = nn.functional.layer_norm(x, (x.shape[-1],), expert.norm.weight, expert.norm.bias, expert.norm.eps)
    return mlp(expert.mlp, normed) + x


# --- sentences (Eq. 4) ----------------------------------------------------------------------------------------------


def test_split_sentences() -> None:
    assert split_sentences(CAPTION) == SENTENCES
    assert split_sentences("  One.  Two!Three? Four ") == ["One.", "Two!Three?", "Four"]  # needs space after the end
    assert split_sentences("") == [] and split_sentences(None) == [] and split_sentences("   ") == []
    assert split_sentences("no full stop") == ["no full stop"]


def test_random_subset_matches_a_direct_draw_and_keeps_caption_order() -> None:
    sentences = [f"s{i}." for i in range(6)]
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        got = sample_sentences(sentences, "random_subset", generator=generator)
        reference = torch.Generator().manual_seed(seed)
        k = int(torch.randint(1, 7, (1,), generator=reference))
        chosen = sorted(torch.randperm(6, generator=reference)[:k].tolist())
        assert got == [sentences[i] for i in chosen]
        assert 1 <= len(got) <= 6 and got == sorted(got, key=sentences.index)


def test_random_subset_sizes_are_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    sizes = [len(sample_sentences(list("abcd"), generator=generator)) for _ in range(4000)]
    counts = [sizes.count(k) for k in range(1, 5)]
    assert all(abs(c - 1000) < 120 for c in counts), counts  # about 4.5 standard deviations


def test_bernoulli_single_and_all() -> None:
    generator = torch.Generator().manual_seed(1)
    draws = [sample_sentences(SENTENCES, "bernoulli", keep_prob=0.5, generator=generator) for _ in range(2000)]
    assert all(draws) and all(d == sorted(d, key=SENTENCES.index) for d in draws)
    kept = sum(len(d) for d in draws) / (2000 * 3)
    assert 0.5 < kept < 0.65  # 0.5 plus the "at least one" correction (1/8 of rows get one extra: 0.5 + 1/24)
    assert sample_sentences(SENTENCES, "bernoulli", keep_prob=1.0) == SENTENCES
    assert all(len(sample_sentences(SENTENCES, "single", generator=generator)) == 1 for _ in range(20))
    assert sample_sentences(SENTENCES, "all") == SENTENCES
    assert sample_sentences([], "random_subset") == []
    with pytest.raises(ValueError, match="unknown sentence sampling"):
        sample_sentences(SENTENCES, "some")  # type: ignore[arg-type]


def test_sampling_uses_the_global_rng_deterministically() -> None:
    caps = captions_for(4)
    torch.manual_seed(7)
    first = expert_captions(caps, ("rgb", "nir", "tir"), 3, sample=True)
    state_after = torch.get_rng_state()
    torch.manual_seed(7)
    second = expert_captions(caps, ("rgb", "nir", "tir"), 3, sample=True)
    assert first == second and torch.equal(state_after, torch.get_rng_state())
    assert not torch.equal(state_after, torch.manual_seed(7).get_state())  # it did draw from the global RNG
    for expert in first:
        for m in ("rgb", "nir", "tir"):
            for text, caption in zip(expert[m], caps[m], strict=True):
                chosen = split_sentences(text)
                assert chosen and set(chosen) <= set(split_sentences(caption))
    assert len({tuple(e["rgb"]) for e in first}) > 1  # the experts read different subsets


def test_test_time_text_is_the_whole_caption_and_absent_modalities_read_nothing() -> None:
    caps = {"rgb": [CAPTION, "One.  Two."], "tir": ["", "x"]}
    texts = expert_captions(caps, ("rgb", "nir", "tir"), 2, sample=False)
    assert texts[0] == texts[1] == {"rgb": [CAPTION, "One. Two."], "nir": ["", ""], "tir": ["", "x"]}


def test_encode_texts_cuts_padding_without_changing_features_and_is_gradient_free() -> None:
    model = tiny_next()
    texts = [CAPTION, "", "A person.", CAPTION]
    got = encode_texts(model.text_encoder, texts, torch.device("cpu"))
    full = model.text_encoder(tokenize_captions(texts))  # all 77 positions
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert got.shape == (4, TINY_D) and not got.requires_grad
    torch.testing.assert_close(got[0], got[3])


# --- TMSE (Eq. 1-7) -------------------------------------------------------------------------------------------------


def test_route_and_threshold_are_two_layer_scores() -> None:
    torch.manual_seed(0)
    route = SamplingRoute(TINY_D)
    cls, tokens = torch.randn(2, TINY_D), torch.randn(2, N, TINY_D)
    alpha, sigma = route(cls, tokens)
    assert alpha.shape == (2, N) and sigma is not None and sigma.shape == (2,)
    torch.testing.assert_close(alpha, mlp(route.token_score, tokens).squeeze(-1))
    torch.testing.assert_close(sigma, mlp(route.threshold, cls).squeeze(-1))
    assert SamplingRoute(TINY_D, dynamic_threshold=False)(cls, tokens)[1] is None


def test_cosine_relevance_and_modulation() -> None:
    torch.manual_seed(0)
    text, tokens = torch.randn(2, TINY_D), torch.randn(2, N, TINY_D)
    beta = cosine_relevance(text, tokens)
    direct = (tokens @ text.unsqueeze(-1)).squeeze(-1) / (tokens.norm(dim=-1) * text.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(beta, direct)
    modulation = Modulation(hidden=5)
    alpha = torch.randn(2, N)
    gamma = modulation(alpha, beta)
    torch.testing.assert_close(gamma, mlp(modulation.net, torch.stack([alpha, beta], -1)).squeeze(-1) + alpha)


def test_straight_through_mask_is_hard_forward_and_soft_backward() -> None:
    torch.manual_seed(0)
    gamma = torch.randn(3, N, requires_grad=True)
    sigma = torch.randn(3, requires_grad=True)
    mask = straight_through_mask(gamma, sigma, temperature=0.5)
    assert torch.equal(mask, (gamma > sigma[:, None]).float())  # exactly 0 / 1
    upstream = torch.randn(3, N)
    (mask * upstream).sum().backward()
    s = torch.sigmoid((gamma.detach() - sigma.detach()[:, None]) / 0.5)
    local = s * (1 - s) / 0.5  # d sigmoid((g - t) / T) / d g
    torch.testing.assert_close(gamma.grad, upstream * local)
    torch.testing.assert_close(sigma.grad, -(upstream * local).sum(1))


def test_top_k_mask_keeps_half_of_the_tokens_with_gradients() -> None:
    torch.manual_seed(0)
    gamma = torch.randn(4, 9, requires_grad=True)
    mask = top_k_mask(gamma, ratio=0.5)
    assert mask.sum(1).tolist() == [5.0] * 4  # ceil(0.5 * 9)
    top = gamma.detach().topk(5, dim=1).indices
    assert torch.equal(mask.detach().bool(), torch.zeros(4, 9, dtype=torch.bool).scatter(1, top, True))
    mask.sum().backward()
    assert gamma.grad is not None and gamma.grad.abs().sum() > 0
    assert torch.equal(top_k_mask(torch.randn(2, 3), ratio=1.0), torch.ones(2, 3))


def semantic_inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(batch, 3, TINY_D), torch.randn(batch, 3, N, TINY_D), torch.randn(batch, 3, TINY_D)


@pytest.mark.parametrize("shared", [False, True])
def test_semantic_expert_matches_equations_1_to_7(shared: bool) -> None:
    torch.manual_seed(0)
    expert = SemanticExpert(TINY_D, shared_route=shared).eval()
    assert len(expert.routes) == (1 if shared else 3)
    cls, tokens, text = semantic_inputs()
    sampled, masks = expert(cls, tokens, text)
    assert sampled.shape == (2, 3 * N, TINY_D) and masks.shape == (2, 3, N)
    for m in range(3):
        route = expert.routes[0 if shared else m]
        alpha = mlp(route.token_score, tokens[:, m]).squeeze(-1)  # Eq. 2
        sigma = mlp(route.threshold, cls[:, m])  # (B, 1)
        beta = nn.functional.cosine_similarity(text[:, m, None], tokens[:, m], dim=-1)  # Eq. 5
        gamma = mlp(expert.modulation.net, torch.stack([alpha, beta], -1)).squeeze(-1) + alpha  # Eq. 6
        hard = (gamma > sigma).float()  # Eq. 3 with gamma
        assert torch.equal(masks[:, m], hard)
        expected = expert_ref(expert.expert, tokens[:, m]) * hard[..., None]  # Eq. 7
        torch.testing.assert_close(sampled[:, m * N : (m + 1) * N], expected, atol=1e-5, rtol=1e-5)


def test_the_text_changes_the_sampling_scores() -> None:
    torch.manual_seed(0)
    expert = SemanticExpert(TINY_D).eval()
    cls, tokens, text = semantic_inputs(8)
    gammas = []
    for t in (text, torch.randn_like(text)):
        alpha, _ = expert.route(0)(cls[:, 0], tokens[:, 0])
        gammas.append(expert.modulation(alpha, cosine_relevance(t[:, 0], tokens[:, 0])))
    assert not torch.allclose(gammas[0], gammas[1])
    off = SemanticExpert(TINY_D, text_modulation=False).eval()
    assert off.modulation is None
    torch.testing.assert_close(off(cls, tokens, None)[0], off(cls, tokens, torch.randn_like(text))[0])


def test_semantic_expert_gradients_reach_route_threshold_and_modulation() -> None:
    torch.manual_seed(0)
    expert = SemanticExpert(TINY_D).train()
    cls, tokens, text = semantic_inputs(4)
    tokens.requires_grad_(True)
    sampled, _ = expert(cls, tokens, text)
    sampled.pow(2).sum().backward()
    for name, param in expert.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("sampling", "kept"),
    [("all_token", lambda m: bool((m == 1).all())), ("top_k", lambda m: bool((m.sum(-1) == N // 2).all()))],
)
def test_all_token_and_top_k_sampling(sampling: str, kept) -> None:
    torch.manual_seed(0)
    expert = SemanticExpert(TINY_D, sampling=sampling).eval()  # type: ignore[arg-type]
    cls, tokens, text = semantic_inputs()
    _, masks = expert(cls, tokens, text)
    assert kept(masks)
    if sampling == "all_token":
        assert len(expert.routes) == 0 and expert.modulation is None


def test_fixed_sigma_thresholds_gamma_at_the_constant() -> None:
    torch.manual_seed(0)
    expert = SemanticExpert(TINY_D, sampling="fixed_sigma", fixed_sigma=0.1).eval()
    assert expert.routes[0].threshold is None
    cls, tokens, text = semantic_inputs()
    _, masks = expert(cls, tokens, text)
    alpha, _ = expert.routes[1](cls[:, 1], tokens[:, 1])
    gamma = expert.modulation(alpha, cosine_relevance(text[:, 1], tokens[:, 1]))
    assert torch.equal(masks[:, 1], (gamma > 0.1).float())


# --- CSSE (Eq. 8-9) and MMFA (Eq. 11) -------------------------------------------------------------------------------


def test_structure_experts_shared_router_matches_equations_8_and_9() -> None:
    torch.manual_seed(0)
    csse = StructureExperts(TINY_D, num_experts=3).eval()
    tokens = torch.randn(2, 3, N, TINY_D)
    out, omega = csse(tokens)
    flat = tokens.reshape(2, 3 * N, TINY_D)  # Concat over modalities
    router = csse.routers[0]
    logits = (flat @ router.weight.T + router.bias).mean(1)  # per-token FC, pooled over tokens
    torch.testing.assert_close(omega, logits.softmax(-1))
    expected = sum(omega[:, i, None, None] * expert_ref(e, flat) for i, e in enumerate(csse.experts))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(omega.sum(-1), torch.ones(2))


def test_structure_experts_modality_specific_routers() -> None:
    torch.manual_seed(0)
    csse = StructureExperts(TINY_D, num_experts=2, shared_route=False).eval()
    tokens = torch.randn(2, 3, N, TINY_D)
    out, omega = csse(tokens)
    assert omega.shape == (2, 3, 2) and len(csse.routers) == 3
    m = 2
    router = csse.routers[m]
    w = (tokens[:, m].mean(1) @ router.weight.T + router.bias).softmax(-1)  # (B, N_C)
    expected = sum(w[:, i, None, None] * expert_ref(e, tokens[:, m]) for i, e in enumerate(csse.experts))
    torch.testing.assert_close(out[:, m * N :], expected, atol=1e-5, rtol=1e-5)


def test_expert_aggregation_matches_equation_11() -> None:
    torch.manual_seed(0)
    heads = 2
    mmfa = ExpertAggregation(TINY_D, num_heads=heads).eval()
    query, tokens = torch.randn(2, 3, TINY_D), torch.randn(2, 5, TINY_D)
    out = mmfa(query, tokens)
    assert out.shape == (2, 3 * TINY_D)
    wq, wk, wv = mmfa.attn.in_proj_weight.chunk(3)
    bq, bk, bv = mmfa.attn.in_proj_bias.chunk(3)
    hd = TINY_D // heads
    split = lambda x: x.view(2, -1, heads, hd).transpose(1, 2)  # noqa: E731
    q, k, v = split(query @ wq.T + bq), split(tokens @ wk.T + bk), split(tokens @ wv.T + bv)
    attn = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v  # (B, heads, 3, hd)
    ca = attn.transpose(1, 2).reshape(2, 3, TINY_D) @ mmfa.attn.out_proj.weight.T + mmfa.attn.out_proj.bias
    normed = nn.functional.layer_norm(ca, (TINY_D,), mmfa.norm.weight, mmfa.norm.bias)
    torch.testing.assert_close(out, mlp(mmfa.ffn, normed).flatten(1), atol=1e-5, rtol=1e-5)


# --- the model ------------------------------------------------------------------------------------------------------


def test_registered_model_shapes_in_train_and_eval() -> None:
    model = tiny_next(num_cameras=2)
    images, caps = torch.randn(4, 3, 3, *SIZE), captions_for(4)
    out = model.train()(images, torch.tensor([0, 1, 0, 1]), captions=caps)
    width = (3 + 1) * 3 * TINY_D  # N_T + 1 experts, 3 class-token queries each
    assert out["features"].shape == out["bn_features"].shape == (4, width)
    assert out["logits"].shape == (4, 4)
    assert out["sampling_masks"].shape == (4, 3, 3, N) and out["structure_weights"].shape == (4, 3)
    assert set(out["sampling_masks"].unique().tolist()) <= {0.0, 1.0}
    out = model.eval()(images, captions=caps)
    assert "logits" not in out and out["retrieval"].shape == (4, width)
    torch.testing.assert_close(out["retrieval"], out["features"])  # before the BNNeck
    assert NEXT.inputs == ("captions",)


def test_the_text_encoder_is_frozen_and_unchanged_by_a_training_step() -> None:
    model = tiny_next().train()
    assert model.text_encoder.frozen and not model.text_encoder.training
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    encoder_before = model.encoder.visual.conv1.weight.detach().clone()
    groups = param_groups(model, 1e-3, 1e-3, 1e-4, 2.0, 1e-4, backbone_prefixes=["encoder"])
    optimizer = make_optimizer("adam", groups)
    objective = ReIDObjective(4)
    out = model(torch.randn(8, 3, 3, *SIZE), captions=captions_for(8))
    loss, _ = objective(out, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss.backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    optimizer.step()
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.encoder.visual.conv1.weight, encoder_before)  # the visual tower trains
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not grouped & {id(p) for p in model.text_encoder.parameters()}


def test_training_draws_sentences_from_the_seeded_global_rng_and_eval_is_deterministic() -> None:
    model = tiny_next(expert_dropout=0.0).train()
    images, caps = torch.randn(4, 3, 3, *SIZE), captions_for(4)
    torch.manual_seed(5)
    a = model(images, captions=caps)["features"]
    torch.manual_seed(5)
    b = model(images, captions=caps)["features"]
    torch.testing.assert_close(a, b)
    masks = []
    for seed in range(6):  # other sentence subsets change the text and so (some) sampling masks
        torch.manual_seed(seed)
        masks.append(model(images, captions=caps)["sampling_masks"])
    assert any(not torch.equal(masks[0], other) for other in masks[1:])
    model.eval()
    torch.testing.assert_close(model(images, captions=caps)["retrieval"], model(images, captions=caps)["retrieval"])


def test_missing_modality_zeroes_its_image_and_drops_its_caption() -> None:
    model = tiny_next().eval()
    images, caps = torch.randn(2, 3, 3, *SIZE), captions_for(2)
    zeroed = images.clone()
    zeroed[:, 0] = 0
    dropped = {**caps, "rgb": ["", ""]}
    out = model(images, missing=("rgb",), captions=caps)["retrieval"]
    torch.testing.assert_close(out, model(zeroed, captions=dropped)["retrieval"])
    cpu = torch.device("cpu")
    text = model.text_features(caps, 2, ("rgb",), cpu)  # (N_T, B, M, D)
    torch.testing.assert_close(text, model.text_features(dropped, 2, (), cpu))
    full = model.text_features(caps, 2, (), cpu)
    assert not torch.allclose(text[:, :, 0], full[:, :, 0])  # the RGB caption is gone
    torch.testing.assert_close(text[:, :, 1:], full[:, :, 1:])
    with pytest.raises(ValueError, match="unknown modalities"):
        model(images, missing=("depth",), captions=caps)


ABLATIONS = [
    pytest.param({"use_mmfa": False}, (1 + 4) * 3, id="no-mmfa"),  # class tokens + 4 experts
    pytest.param({"use_tmse": False}, 1 * 3, id="no-tmse"),
    pytest.param({"use_csse": False}, 3 * 3, id="no-csse"),
    pytest.param({"use_tmse": False, "use_csse": False}, 1 * 3, id="mmfa-only"),
    pytest.param({"use_mmfa": False, "use_tmse": False, "use_csse": False}, 1 * 3, id="baseline"),
    pytest.param({"semantic_route": "shared"}, 4 * 3, id="shared-semantic-route"),
    pytest.param({"structure_route": "specific"}, 4 * 3, id="specific-structure-route"),
    pytest.param({"sampling": "all_token"}, 4 * 3, id="all-token"),
    pytest.param({"sampling": "top_k"}, 4 * 3, id="top-k"),
    pytest.param({"sampling": "fixed_sigma"}, 4 * 3, id="fixed-sigma"),
    pytest.param({"num_semantic_experts": 1, "num_structure_experts": 5}, 2 * 3, id="experts-1-5"),
    pytest.param({"text_modulation": False}, 4 * 3, id="no-text"),
    pytest.param({"sentence_sampling": "bernoulli"}, 4 * 3, id="bernoulli-sentences"),
]


@pytest.mark.parametrize(("options", "parts"), ABLATIONS)
def test_each_ablation_switch_trains_one_step(options: dict[str, object], parts: int) -> None:
    model = tiny_next(**options).train()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    out = model(torch.randn(6, 3, 3, *SIZE), captions=captions_for(6))
    assert out["features"].shape == (6, parts * TINY_D)
    loss, _ = ReIDObjective(4)(out, labels)
    assert torch.isfinite(loss)
    loss.backward()
    conv = model.encoder.visual.conv1.weight.grad
    assert conv is not None and conv.abs().sum() > 0
    assert model.neck.classifier.weight.grad is not None


def test_without_mmfa_and_experts_the_feature_is_the_baselines() -> None:
    model = tiny_next(use_mmfa=False, use_tmse=False, use_csse=False).eval()
    baseline = create_model("baseline", num_classes=4, backbone="tiny", image_size=SIZE, require_pretrained=False)
    baseline.encoder.load_state_dict(model.encoder.state_dict())
    images = torch.randn(2, 3, 3, *SIZE)
    torch.testing.assert_close(model(images)["features"], baseline.eval()(images)["features"])


def test_bad_options_are_named() -> None:
    for options, word in (
        ({"sampling": "random"}, "sampling"),
        ({"semantic_route": "both"}, "semantic_route"),
        ({"sentence_sampling": "x"}, "sentence_sampling"),
    ):
        with pytest.raises(ValueError, match=word):
            tiny_next(**options)


def test_next_recipes_follow_appendix_a2_and_build() -> None:
    for name, size in (("next-person", (256, 128)), ("next-vehicle", (128, 256))):
        recipe = load_recipe(name)
        assert recipe.optimizer == "adam" and recipe.base_lr == recipe.backbone_lr == 3.5e-6
        assert recipe.weight_decay == 1e-4 and recipe.momentum == 0.9 and recipe.image_size == size
        assert recipe.base_lr * recipe.eta_min_factor == pytest.approx(3.5e-7)
        assert recipe.model_options["sampling"] == "dynamic_sigma"
        assert recipe.model_options["semantic_route"] == "specific"
        assert recipe.model_options["structure_route"] == "shared"
    demo = load_recipe("next-tiny-demo")
    model = tiny_next(**demo.model_options)
    assert len(model.semantic_experts) == 2 and len(model.structure_experts.experts) == 2


# --- end to end -----------------------------------------------------------------------------------------------------


def test_fit_one_epoch_and_eval_without_rgb(full_shards: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "next"
    args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "next", "--backbone", "tiny"]
    args += ["--random-init", "--recipe", "next-tiny-demo", "--epochs", "1", "--seed", "0", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(line["loss"]) and 0.0 <= line["mAP"] <= 1.0
    assert json.loads((run / "config.json").read_text())["recipe"]["model_options"]["num_semantic_experts"] == 2
    result = runner.invoke(app, ["eval", "--run", str(run), "--missing", "rgb", "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    (path,) = run.glob("eval*.json")
    payload = json.loads(path.read_text())
    assert payload["missing"] == ["rgb"]
    for record in payload.get("results", [payload]):  # one record per evaluated checkpoint
        assert 0.0 <= record["mAP"] <= 1.0 and record["num_query"] > 0 and record["epoch"] == 1


def test_resumed_next_run_equals_an_uninterrupted_one(full_shards: Path, tmp_path: Path) -> None:
    """Sentence subsets come from the trainer's seeded, checkpointed global RNG: resume is exact."""
    runner = CliRunner()

    def fit(run: Path, epochs: str) -> None:
        args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "next", "--backbone", "tiny"]
        args += ["--random-init", "--recipe", "next-tiny-demo", "--epochs", epochs, "--seed", "1", "--no-progress"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output

    fit(tmp_path / "straight", "2")
    fit(tmp_path / "pieces", "1")
    fit(tmp_path / "pieces", "2")
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "pieces" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key

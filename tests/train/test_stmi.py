"""STMI (the STMI paper, Eqs. 1-20): SFM, STR, CHI against direct re-computations, ablations, fit + eval end to end."""

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
from reidtrain.models.layers.clip import build_clip
from reidtrain.models.layers.hypergraph import HypergraphConv, HypergraphFusion, incidence_density, similarity_incidence
from reidtrain.models.stmi import (
    STMI,
    CrossModalMLP,
    SelfAttentionFusion,
    SemanticTokenReallocation,
    SFMGates,
    foreground_relation,
    modulated_scores,
    modulation,
    perturb_mask,
    sfm_attention,
    sfm_block,
)
from reidtrain.recipes import load_recipe

TINY_D = 32  # tiny CLIP embed_dim (visual proj and text feature)
SIZE = (64, 32)  # 4 x 2 patch grid
N = 8
CAPTIONS = ["a man in a red jacket", "", "a woman carrying a suitcase", "a person in dark trousers"]


def tiny_stmi(**options: object) -> STMI:
    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "backbone": "tiny", "image_size": SIZE, "require_pretrained": False, **options}
    return create_model("stmi", **kwargs)  # type: ignore[return-value]


def batch(b: int = 4, seed: int = 1) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(b, 3, 3, *SIZE, generator=g),
        "token_mask": torch.rand(b, N, generator=g) > 0.5,
        "captions": {"fused": CAPTIONS[:b], "rgb": [""] * b, "nir": [""] * b, "tir": [""] * b},
    }


def tiny_block(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_clip("tiny", SIZE, None, require_pretrained=False).visual.transformer.resblocks[0].eval()


# --- SFM ------------------------------------------------------------------------------------------------------------


def test_foreground_relation_counts_the_class_token_as_foreground() -> None:
    mask = torch.tensor([[True, False, True], [False, False, False]])
    r = foreground_relation(mask)
    assert r.shape == (2, 4, 4)
    m0 = torch.tensor([1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(r[0], torch.outer(m0, m0))  # R = m^T m, Eq. 6
    expected = torch.zeros(4, 4)
    expected[0, 0] = 1.0  # only the class-token pair is foreground without a foreground patch
    torch.testing.assert_close(r[1], expected)


def test_modulation_matches_equations_4_to_7_elementwise() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g) * 4
    relation = foreground_relation(torch.rand(2, 4, generator=g) > 0.5)
    alpha, beta = torch.tensor([0.3, 0.0, 1.2]), torch.tensor([0.5, 0.7, 0.0])
    s = modulation(logits, relation, alpha, beta)
    expected = torch.empty_like(logits)
    for b in range(2):
        for h in range(3):
            for i in range(5):
                row = logits[b, h, i]
                for j in range(5):
                    if relation[b, i, j] == 1:
                        expected[b, h, i, j] = alpha[h] * (row.max() - row[j])
                    else:
                        expected[b, h, i, j] = -beta[h] * (row[j] - row.min())
    torch.testing.assert_close(s, expected)


@pytest.mark.parametrize("per_head", [True, False])
def test_fused_scores_equal_the_paper_form_with_gradients(per_head: bool) -> None:
    """modulated_scores (one aminmax pass, two lerps) == A + modulation(A) (Eqs. 4-7 as written), values and the
    gradients of A, alpha and beta; and in bf16 within bf16 rounding of the fp32 result."""
    g = torch.Generator().manual_seed(4)
    scores = (torch.randn(3, 4, 9, 9, generator=g) * 3).requires_grad_()
    relation = foreground_relation(torch.rand(3, 8, generator=g) > 0.5)  # (3, 9, 9) 0/1
    width = 4 if per_head else 1
    alpha = (torch.rand(width, generator=g) * 0.5).requires_grad_()
    beta = (torch.rand(width, generator=g) * 0.5).requires_grad_()
    upstream = torch.randn(3, 4, 9, 9, generator=g)
    fused = modulated_scores(scores, relation.bool(), alpha, beta)
    reference = scores + modulation(scores, relation, alpha, beta)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad((fused * upstream).sum(), (scores, alpha, beta))
    expected = torch.autograd.grad((reference * upstream).sum(), (scores, alpha, beta))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    low = modulated_scores(scores.detach().bfloat16(), relation.bool(), alpha.detach(), beta.detach())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference.detach(), atol=0.1, rtol=2e-2)


def test_sfm_with_zero_gates_is_open_clips_own_block() -> None:
    block = tiny_block()
    x = torch.randn(3, 1 + N, 64)
    relation = foreground_relation(torch.rand(3, N) > 0.5)
    zero = torch.zeros(1)
    with torch.no_grad():
        reference = block(x)
        torch.testing.assert_close(sfm_block(block, x, relation, zero, zero), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sfm_block(block, x), reference, atol=1e-5, rtol=1e-5)  # no relation: plain


def _direct_sfm_attention(block: torch.nn.Module, x: torch.Tensor, relation: torch.Tensor, alpha, beta):
    """Eqs. 3-8 written out head by head from the block's raw in_proj / out_proj weights."""
    attn = block.attn
    width, heads = x.shape[-1], attn.num_heads
    d = width // heads
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width)
    outputs = []
    for b in range(x.shape[0]):
        per_head = []
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            q = x[b] @ w_q[cols].T + b_q[cols]
            k = x[b] @ w_k[cols].T + b_k[cols]
            v = x[b] @ w_v[cols].T + b_v[cols]
            a = q @ k.T  # Eq. 3
            m_pos = a.max(dim=1, keepdim=True).values - a  # Eq. 4
            m_neg = a - a.min(dim=1, keepdim=True).values  # Eq. 5
            r = relation[b]
            s = alpha[h % len(alpha)] * r * m_pos - beta[h % len(beta)] * (1 - r) * m_neg  # Eq. 7
            per_head.append(torch.softmax((a + s) / math.sqrt(d), dim=1) @ v)  # Eq. 8
        outputs.append(torch.cat(per_head, dim=1) @ attn.out_proj.weight.T + attn.out_proj.bias)
    return torch.stack(outputs)


@pytest.mark.parametrize("per_head", [False, True])
def test_sfm_attention_with_a_mask_matches_the_formula(per_head: bool) -> None:
    block = tiny_block(1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1 + N, 64, generator=g)
    relation = foreground_relation(torch.rand(2, N, generator=g) > 0.4)
    alpha = torch.tensor([0.4, 0.1]) if per_head else torch.tensor([0.3])
    beta = torch.tensor([0.2, 0.6]) if per_head else torch.tensor([0.5])
    with torch.no_grad():
        out = sfm_attention(block, x, relation, alpha, beta)
        torch.testing.assert_close(out, _direct_sfm_attention(block, x, relation, alpha, beta), atol=1e-5, rtol=1e-5)
        plain = sfm_attention(block, x)
    assert not torch.allclose(out, plain, atol=1e-4)


def test_sfm_moves_attention_to_foreground_keys() -> None:
    """A foreground query's attention on foreground keys grows with alpha, on background keys shrinks with beta."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 1, 5, 5, generator=g)
    relation = foreground_relation(torch.tensor([[True, True, False, False]]))
    plain = torch.softmax(logits, -1)[0, 0, 0]
    modulated = torch.softmax(logits + modulation(logits, relation, torch.tensor([0.5]), torch.tensor([0.5])), -1)
    assert modulated[0, 0, 0, :3].sum() > plain[:3].sum()  # class token + two foreground patches


def test_mask_perturbation_only_flips_background() -> None:
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(64, 128, generator=g) > 0.5
    assert torch.equal(perturb_mask(mask, 0.0), mask)
    assert bool(perturb_mask(mask, 1.0).all())
    out = perturb_mask(mask, 0.25, generator=torch.Generator().manual_seed(5))
    assert bool(out[mask].all())  # foreground stays foreground
    flipped = out[~mask].float().mean().item()
    assert 0.2 < flipped < 0.3


def test_sfm_gates_sharing_and_layers() -> None:
    layer = SFMGates(12, 8, "layer", "all", init=0.1)
    assert layer.alpha.shape == (12, 1) and layer.active_layers == tuple(range(12))
    assert layer(3)[0].shape == (1,) and torch.allclose(layer(3)[1], torch.tensor([0.1]))
    shared = SFMGates(12, 8, "all")
    assert shared.alpha.shape == (1, 1)
    shared(0)[0].sum().backward()
    shared(11)[0].sum().backward()
    assert shared.alpha.grad.item() == 2.0  # one parameter serves every layer
    head = SFMGates(12, 8, "head")
    assert head.alpha.shape == (12, 8) and head(5)[0].shape == (8,)
    early, late = SFMGates(12, 8, "layer", "early"), SFMGates(12, 8, "layer", "late")
    assert early.active_layers == tuple(range(6)) and late.active_layers == tuple(range(6, 12))
    assert early(6) is None and late(5) is None and early.alpha.shape == (6, 1)
    with pytest.raises(ValueError, match="sfm_sharing"):
        SFMGates(12, 8, "nope")  # type: ignore[arg-type]


# --- STR --------------------------------------------------------------------------------------------------------


def test_str_matches_a_direct_single_head_recomputation() -> None:
    torch.manual_seed(6)
    module = SemanticTokenReallocation(TINY_D, num_queries=3, num_modalities=3, num_heads=1).eval()
    patches, text = torch.randn(2, 3, N, TINY_D), torch.randn(2, TINY_D)
    with torch.no_grad():
        out = module(patches, text)
    assert out.shape == (2, 3, 4, TINY_D)
    cross, ffn = module.cross, module.ffn.net
    w_q, w_k, w_v = cross.attn.in_proj_weight.split(TINY_D)
    b_q, b_k, b_v = cross.attn.in_proj_bias.split(TINY_D)

    def layer_norm(x, norm):
        return F.layer_norm(x, (TINY_D,), norm.weight, norm.bias, norm.eps)

    with torch.no_grad():
        for b in range(2):
            for m in range(3):
                q_prime = torch.cat([module.queries[m], text[b : b + 1]])  # Eq. 11: [Q; T]
                kv = layer_norm(patches[b, m], cross.norm_context)
                q = layer_norm(q_prime, cross.norm_query) @ w_q.T + b_q
                attn = torch.softmax(q @ (kv @ w_k.T + b_k).T / math.sqrt(TINY_D), dim=1) @ (kv @ w_v.T + b_v)
                z = attn @ cross.attn.out_proj.weight.T + cross.attn.out_proj.bias + q_prime  # Eq. 12
                h = F.gelu(layer_norm(z, ffn[0]) @ ffn[1].weight.T + ffn[1].bias)
                expected = h @ ffn[3].weight.T + ffn[3].bias + z  # Eq. 13
                torch.testing.assert_close(out[b, m], expected, atol=1e-5, rtol=1e-5)


def test_str_keeps_modalities_apart_and_text_reaches_every_modality() -> None:
    torch.manual_seed(7)
    module = SemanticTokenReallocation(TINY_D, num_queries=4).eval()
    patches, text = torch.randn(2, 3, N, TINY_D), torch.randn(2, TINY_D)
    with torch.no_grad():
        base = module(patches, text)
        other = patches.clone()
        other[:, 0] += 1.0
        changed = module(other, text)
        assert not torch.allclose(changed[:, 0], base[:, 0]) and torch.equal(changed[:, 1:], base[:, 1:])
        moved = module(patches, text + 1.0)
        assert all(not torch.allclose(moved[:, m], base[:, m]) for m in range(3))
    patches.requires_grad_(True)
    text.requires_grad_(True)
    module(patches, text).square().sum().backward()
    assert module.queries.grad.abs().sum() > 0 and text.grad.abs().sum() > 0 and patches.grad.abs().sum() > 0


# --- CHI --------------------------------------------------------------------------------------------------------


def _nodes_with_cosines(angles_deg: list[float]) -> torch.Tensor:
    """Unit vectors in the plane at the given angles: cos(x_i, x_j) = cos(angle_i - angle_j)."""
    angles = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1).unsqueeze(0) * torch.tensor([[[3.0], [1.0], [2.0], [5.0]]])


def test_incidence_of_a_known_similarity_matrix() -> None:
    # angles 0, 30, 80, 180 degrees: cos(0-30)=0.87, cos(0-80)=0.17, cos(30-80)=0.64, cos(80-180)=-0.17, ...
    nodes = _nodes_with_cosines([0.0, 30.0, 80.0, 180.0])
    incidence = similarity_incidence(nodes, tau=0.5)
    expected = torch.tensor(
        [
            [1, 1, 0, 0],  # node 0 is in edges 0 (itself) and 1 (cos 0.87)
            [1, 1, 1, 0],  # node 1: edges 0, 1, 2 (cos 0.64 with node 2)
            [0, 1, 1, 0],
            [0, 0, 0, 1],  # node 3 is only in its own hyperedge
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(incidence[0], expected)
    assert torch.equal(similarity_incidence(nodes, tau=-1.0)[0], torch.ones(4, 4))
    assert torch.equal(similarity_incidence(nodes, tau=0.99)[0], torch.eye(4))


def test_incidence_density_counts_the_node_pairs_sharing_a_hyperedge() -> None:
    nodes = _nodes_with_cosines([0.0, 30.0, 80.0, 180.0])
    # tau 0.5: pairs (0,1) and (1,2) in both directions = 4 of the 12 ordered pairs
    torch.testing.assert_close(incidence_density(similarity_incidence(nodes, tau=0.5)), torch.tensor([4 / 12]))
    assert float(incidence_density(similarity_incidence(nodes, tau=-1.0))) == 1.0  # one hyperedge: CHI averages
    assert float(incidence_density(similarity_incidence(nodes, tau=0.99))) == 0.0
    conv = HypergraphConv(2, 4, tau=0.5)
    conv.train()
    conv(nodes)
    conv(torch.cat([nodes, nodes]))  # three samples, each 4/12
    assert conv.pop_epoch_stats() == pytest.approx({"density": 4 / 12})
    assert conv.pop_epoch_stats() == {}  # reset after reading
    conv.eval()
    conv(nodes)
    assert conv.pop_epoch_stats() == {}  # evaluation is not counted


def test_hypergraph_conv_matches_bai_et_al_matrix_form() -> None:
    torch.manual_seed(8)
    conv = HypergraphConv(TINY_D, num_nodes=6, tau=0.2)
    with torch.no_grad():
        conv.edge_weight.copy_(torch.randn(6))
        conv.node_bias.copy_(torch.randn(6, TINY_D) * 0.1)
    x = torch.randn(2, 6, TINY_D)
    with torch.no_grad():
        out = conv(x)
        for b in range(2):
            unit = F.normalize(x[b], dim=1)
            h = (unit @ unit.T >= 0.2).float()  # (V, E)
            w = torch.diag(F.softplus(conv.edge_weight))
            dv = torch.diag((h @ w).sum(1).rsqrt())
            de = torch.diag(1.0 / h.sum(0))
            inner = dv @ h @ w @ de @ h.T @ dv @ x[b] @ conv.theta.weight.T
            expected = x[b] + torch.relu(inner + conv.node_bias)  # Eqs. 15-16
            torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)


def test_hypergraph_shapes_and_gradients() -> None:
    torch.manual_seed(9)
    fusion = HypergraphFusion(TINY_D, num_nodes=15, tau=0.3, num_layers=2)
    tokens = torch.randn(2, 3, 5, TINY_D, requires_grad=True)
    out = fusion(tokens)
    assert out.shape == (2, 15, TINY_D)
    out.square().sum().backward()
    for layer in fusion.layers:
        assert layer.edge_weight.grad.abs().sum() > 0
        assert layer.theta.weight.grad.abs().sum() > 0 and layer.node_bias.grad.abs().sum() > 0
    assert tokens.grad.abs().sum() > 0


def test_table4_fusions_mix_what_they_should() -> None:
    torch.manual_seed(10)
    tokens = torch.randn(2, 3, 5, TINY_D)
    mlp = CrossModalMLP(TINY_D).eval()
    with torch.no_grad():
        base = mlp(tokens).view(2, 3, 5, TINY_D)
        other = tokens.clone()
        other[:, 0, 1] += 1.0  # modality 0, slot 1
        moved = mlp(other).view(2, 3, 5, TINY_D)
    assert not torch.allclose(moved[:, 2, 1], base[:, 2, 1])  # reaches slot 1 of the other modalities
    assert torch.equal(moved[:, :, 0], base[:, :, 0])  # never another slot
    sa = SelfAttentionFusion(TINY_D, num_heads=2, num_layers=2)
    assert sa(tokens).shape == (2, 15, TINY_D)


# --- the model ------------------------------------------------------------------------------------------------


def test_forward_shapes_inputs_and_retrieval() -> None:
    model = tiny_stmi(num_cameras=2)
    assert model.inputs == ("token_mask", "captions")
    data = batch()
    out = model(data["images"], camids=torch.tensor([0, 1, 0, 1]), **{k: data[k] for k in model.inputs})
    assert [f.shape for f in out["features"]] == [(4, 3 * TINY_D), (4, 3 * TINY_D), (4, TINY_D)]  # G, U, T
    assert [tuple(x.shape) for x in out["logits"]] == [(4, 5)] * 3 and "retrieval" not in out
    model.eval()
    with torch.no_grad():
        out = model(data["images"], token_mask=data["token_mask"], captions=data["captions"])
    torch.testing.assert_close(out["retrieval"], torch.cat(out["features"][:2], dim=1))  # G and U before the BNNecks
    assert "logits" not in out
    text_only = tiny_stmi(retrieval="text", test_feature="pre_bn").eval()
    with torch.no_grad():
        r = text_only(data["images"], token_mask=data["token_mask"], captions=data["captions"])["retrieval"]
    torch.testing.assert_close(r, text_only.encode_text(CAPTIONS, torch.device("cpu")))
    with pytest.raises(ValueError, match="retrieval"):
        tiny_stmi(use_str=False, retrieval="global+fused")


def test_missing_modality_is_zeroed_and_masks_change_sfm_features() -> None:
    model = tiny_stmi().eval()
    data = batch()
    zeroed = data["images"].clone()
    zeroed[:, 0] = 0
    with torch.no_grad():
        a = model(data["images"], missing=("rgb",), token_mask=data["token_mask"], captions=data["captions"])
        b = model(zeroed, token_mask=data["token_mask"], captions=data["captions"])
        torch.testing.assert_close(a["retrieval"], b["retrieval"])
        other = model(data["images"], token_mask=~data["token_mask"], captions=data["captions"])
        assert not torch.allclose(other["features"][0], b["features"][0])
    no_sfm = tiny_stmi(sfm=False).eval()
    assert no_sfm.inputs == ("captions",) and no_sfm.sfm is None
    with pytest.raises(ValueError, match="token_mask"):
        model(data["images"], captions=data["captions"])


def test_a_row_without_mask_counts_as_all_foreground() -> None:
    model = tiny_stmi()
    relation = model.eval().relation(torch.zeros(2, N, dtype=torch.bool), copies=3)
    assert relation.shape == (6, 1 + N, 1 + N) and bool((relation == 1).all())


def test_pretrained_weights_load_unchanged_and_zero_gates_give_the_baseline(tmp_path: Path) -> None:
    torch.manual_seed(11)
    source = build_clip("tiny", SIZE, None, require_pretrained=False)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    model = create_model("stmi", num_classes=5, backbone="tiny", image_size=SIZE, weights=path, sfm_init=0.0).eval()
    for key, value in source.visual.state_dict().items():
        assert torch.equal(model.encoder.visual.state_dict()[key], value), key
    assert torch.equal(model.text_encoder.token_embedding.weight, source.token_embedding.weight)
    baseline = create_model("baseline", num_classes=5, backbone="tiny", image_size=SIZE, weights=path).eval()
    data = batch()
    with torch.no_grad():
        g = model(data["images"], token_mask=data["token_mask"], captions=data["captions"])["features"][0]
        torch.testing.assert_close(g, baseline(data["images"])["features"], atol=1e-5, rtol=1e-5)


def test_every_parameter_trains_and_freeze_text_freezes() -> None:
    model = tiny_stmi(num_cameras=2)
    data = batch()
    out = model(data["images"], camids=torch.tensor([0, 1, 0, 1]), **{k: data[k] for k in model.inputs})
    loss, _ = ReIDObjective(5)(out, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    frozen = {"heads.global.bottleneck.bias", "heads.fused.bottleneck.bias", "heads.text.bottleneck.bias"}
    for name, param in model.named_parameters():
        if name in frozen:
            assert not param.requires_grad
            continue
        assert param.requires_grad, name
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    frozen_text = tiny_stmi(freeze_text=True)
    assert not any(p.requires_grad for p in frozen_text.text_encoder.parameters())
    assert not frozen_text.train().text_encoder.training


ABLATIONS = {
    "full": {},
    "no_sfm": {"sfm": False},  # STR + CHI without SFM
    "no_str": {"use_str": False, "retrieval": "global"},  # Table 3 B (SFM only)
    "baseline": {"sfm": False, "use_str": False, "retrieval": "global"},  # Table 3 A
    "concat": {"fusion": "concat"},  # Table 3 C = Table 4 A (no CHI)
    "mlp": {"fusion": "mlp"},  # Table 4 B
    "self_attention": {"fusion": "self_attention", "chi_layers": 2},  # Table 4 C
    "sfm_shared": {"sfm_sharing": "all"},  # Table 5 A
    "sfm_early": {"sfm_layers": "early"},  # Table 5 B
    "sfm_late": {"sfm_layers": "late"},  # Table 5 C
    "sfm_head": {"sfm_sharing": "head"},  # Table 5 D
    "two_chi_layers": {"chi_layers": 2, "tau": 0.0, "num_queries": 2},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_trains_one_step(name: str) -> None:
    model = tiny_stmi(**ABLATIONS[name]).train()
    data = batch()
    inputs = {k: data[k] for k in model.inputs}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(data["images"], **inputs)
    heads = 3 if model.use_str else 1
    assert len(out["features"]) == len(out["logits"]) == heads
    loss, terms = ReIDObjective(5)(out, torch.tensor([0, 0, 1, 1]))
    assert math.isfinite(float(loss.detach())) and set(terms) == {"id", "triplet"}
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoder.") for n in changed)
    if model.sfm is not None:
        assert {"sfm.alpha", "sfm.beta"} <= changed
    if model.use_str:
        assert "reallocation.queries" in changed and any(n.startswith("text_encoder.") for n in changed)
        if ABLATIONS[name].get("fusion") != "concat":  # concatenation has no parameters
            assert any(n.startswith("fusion.") for n in changed)
    model.eval()
    with torch.no_grad():
        retrieval = model(data["images"], **inputs)["retrieval"]
    assert retrieval.shape[0] == 4 and torch.isfinite(retrieval).all()


# --- recipes and the trainer ----------------------------------------------------------------------------------


def test_paper_recipes() -> None:
    expected = {
        "stmi-rgbnt201": (9, 8, (256, 128)),
        "stmi-msvr310": (8, 8, (128, 256)),
        "stmi-rgbnt100": (8, 16, (128, 256)),
    }
    for name, (p, k, size) in expected.items():
        recipe = load_recipe(name)
        assert (recipe.ids_per_batch, recipe.instances_per_id, tuple(recipe.image_size)) == (p, k, size)
        assert recipe.optimizer == "adam" and recipe.base_lr == recipe.backbone_lr == 3.5e-6
        assert recipe.eta_min_factor == pytest.approx(0.1)  # 3.5e-6 -> 3.5e-7
        assert recipe.model_options["num_queries"] == 4 and recipe.model_options["fusion"] == "hypergraph"
        tiny_stmi(**{k: v for k, v in recipe.model_options.items()})  # every option is a real keyword
    assert load_recipe("stmi-tiny-demo").image_size == SIZE


runner = CliRunner()


def test_fit_one_epoch_then_eval_with_a_missing_modality(full_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "stmi"
    args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "stmi", "--backbone", "tiny"]
    args += ["--random-init", "--recipe", "stmi-tiny-demo", "--epochs", "1", "--seed", "0", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert line["epoch"] == 1 and math.isfinite(line["loss"]) and 0.0 <= line["mAP"] <= 1.0
    assert 0.0 <= line["chi_density"] <= 1.0  # CHI's incidence density is logged per epoch
    assert json.loads((run / "config.json").read_text())["model"] == "stmi"
    result = runner.invoke(app, ["eval", "--run", str(run), "--missing", "rgb"])
    assert result.exit_code == 0, result.output
    payload = json.loads((run / "eval-missing-rgb.json").read_text())
    assert payload["missing"] == ["rgb"] and payload["results"]
    assert all(0.0 <= record["mAP"] <= 1.0 and record["epoch"] == 1 for record in payload["results"])

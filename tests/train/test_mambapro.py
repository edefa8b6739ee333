"""MambaPro: PFA (Eq. 3), SRP (Eqs. 5-9), MA (Eqs. 13-19), frozen CLIP, switches, parameter counts, fit + eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidtrain.cli import app
from reidtrain.losses import ReIDObjective
from reidtrain.models import create_model
from reidtrain.models.layers.clip import ClipVisualEncoder, build_clip_visual
from reidtrain.models.mambapro import MambaPro
from reidtrain.models.mambapro_ma import MambaAggregation
from reidtrain.models.mambapro_pfa import ParallelFeedForwardAdapter, run_block
from reidtrain.models.mambapro_srp import SynergisticResidualPrompt
from reidtrain.optim import make_optimizer, param_groups

TINY_D, TINY_WIDTH, SIZE = 32, 64, (64, 32)  # tiny CLIP: projected width, transformer width; 4x2 patch grid


def tiny_mambapro(**kwargs: object) -> MambaPro:
    torch.manual_seed(0)
    options = {"num_classes": 5, "backbone": "tiny", "require_pretrained": False, "image_size": SIZE, **kwargs}
    return create_model("mambapro", **options)  # type: ignore[return-value]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- the model ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 32), (32, 64)])
def test_shapes_in_train_and_eval(size: tuple[int, int]) -> None:
    model = tiny_mambapro(image_size=size)
    images = torch.randn(4, 3, 3, *size)
    out = model.train()(images)
    assert [f.shape for f in out["features"]] == [(4, 3 * TINY_D)] * 2  # f_cls, f_ma
    assert [f.shape for f in out["logits"]] == [(4, 5)] * 2
    out = model.eval()(images)
    assert "logits" not in out
    torch.testing.assert_close(out["retrieval"], out["features"][1])  # f_ma, before the BNNeck
    bn = tiny_mambapro(image_size=size, test_feature="bn").eval()(images)
    torch.testing.assert_close(bn["retrieval"], bn["bn_features"][1])


def test_without_ma_one_head_and_f_cls_retrieval() -> None:
    model = tiny_mambapro(ma=False)
    images = torch.randn(2, 3, 3, *SIZE)
    assert len(model.train()(images)["logits"]) == 1 and model.ma is None
    out = model.eval()(images)
    torch.testing.assert_close(out["retrieval"], out["features"][0])


def test_per_modality_class_token_supervision() -> None:
    """The authors' vehicle configs: each class token through one shared BNNeck and classifier, plus f_ma."""
    model = tiny_mambapro(cls_supervision="per_modality")
    images = torch.randn(4, 3, 3, *SIZE)
    out = model.train()(images)
    assert [f.shape for f in out["features"]] == [(4, TINY_D)] * 3 + [(4, 3 * TINY_D)]
    torch.testing.assert_close(out["logits"][1], model.classifier(model.bottleneck(out["features"][1])))
    off = tiny_mambapro(cls_supervision="per_modality", ma=False).eval()
    eval_out = off(images)
    torch.testing.assert_close(eval_out["retrieval"], torch.cat(eval_out["features"], dim=-1))  # f_cls, pre-BN


def test_clip_is_really_frozen_and_every_new_parameter_trains() -> None:
    model = tiny_mambapro(num_cameras=2).train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("encoder.") for n in trainable)
    groups = param_groups(model, 1e-3, 1e-3, 1e-4, backbone_prefixes=["encoder"])
    assert {g["name"] for g in groups} == {"new", "new_bias"}  # nothing of CLIP reaches the optimizer
    optimizer = make_optimizer("adam", groups)
    objective = ReIDObjective(5, {"id": 0.25, "triplet": 1.0})
    labels = torch.tensor([0, 0, 1, 1])
    loss, _ = objective(model(torch.randn(4, 3, 3, *SIZE), torch.tensor([0, 1, 0, 1])), labels)
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    optimizer.step()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert sorted(moved) == sorted(trainable)
    assert not model.bottleneck.bias.requires_grad
    assert any(p.requires_grad for p in tiny_mambapro(freeze_backbone=False).encoder.parameters())  # CLIP(F)


def test_all_switches_off_is_the_plain_clip_encoder() -> None:
    model = tiny_mambapro(pfa=False, srp=False, ma=False).eval()
    torch.manual_seed(0)  # the same random CLIP as the model's
    encoder = ClipVisualEncoder(build_clip_visual("tiny", SIZE, None, require_pretrained=False)).eval()
    images = torch.randn(2, 3, 3, *SIZE)
    expected = encoder(images.flatten(0, 1))[:, 0].reshape(2, 3 * TINY_D)  # [rgb | nir | tir] class tokens
    torch.testing.assert_close(model(images)["retrieval"], expected)
    assert count(model) == count(model.bottleneck) + count(model.classifier)


def test_prompted_encoder_follows_eqs_5_to_9() -> None:
    """Recompute the 2-layer prompted encoder with open_clip's own block forward (PFA off) and SIE by hand."""
    model = tiny_mambapro(pfa=False, ma=False, num_cameras=3, prompt_identity_paths=False).eval()
    srp, encoder = model.srp, model.encoder
    images, camids = torch.randn(2, 3, 3, *SIZE), torch.tensor([2, 0])
    per_modality = []
    for m in range(3):
        x = encoder.embed(images[:, m], model.sie_embed[camids])  # (B, 1 + N, width)
        length, fused = x.shape[1], None
        for layer, block in enumerate(encoder.blocks):
            own = srp.prompts[layer, m].expand(2, -1, -1)  # p_l^m
            if layer > 0:
                own = own + srp.residual[layer - 1](fused)  # Eq. 8
            groups = [
                own if j == m else srp.transfer[layer][j](srp.prompts[layer, j]).expand(2, -1, -1) for j in range(3)
            ]
            out = block(torch.cat([x, *groups], dim=1))  # Phi_l(F_l^m), Eqs. 5, 7, 9
            fused = out[:, length:].reshape(2, 3, srp.k, TINY_WIDTH).mean(dim=1)  # p_hat_l^f
            x = out[:, :length]
        per_modality.append(encoder.head(x)[:, 0])
    torch.testing.assert_close(model(images, camids)["retrieval"], torch.cat(per_modality, dim=-1))


def test_missing_modality_zeroes_its_input() -> None:
    model = tiny_mambapro().eval()
    images = torch.randn(2, 3, 3, *SIZE)
    zeroed = images.clone()
    zeroed[:, 0] = 0
    torch.testing.assert_close(model(images, missing=("rgb",))["retrieval"], model(zeroed)["retrieval"])
    assert model(images, missing=("nir", "tir"))["retrieval"].isfinite().all()
    with pytest.raises(ValueError, match="unknown modalities"):
        model(images, missing=("depth",))


def test_sie_changes_features_only_with_cameras_and_camids() -> None:
    images, camids = torch.randn(2, 3, 3, *SIZE), torch.tensor([0, 1])
    plain = tiny_mambapro().eval()
    with_sie = tiny_mambapro(num_cameras=2).eval()
    base = plain(images)["retrieval"]
    torch.testing.assert_close(plain(images, camids)["retrieval"], base)
    assert not torch.allclose(with_sie(images, camids)["retrieval"], with_sie(images)["retrieval"])


# --- PFA ------------------------------------------------------------------------------------------------------------


def test_pfa_is_parallel_to_the_ffn_eq_3() -> None:
    torch.manual_seed(0)
    block = build_clip_visual("tiny", SIZE, None, require_pretrained=False).transformer.resblocks[0]
    adapter = ParallelFeedForwardAdapter(TINY_WIDTH)
    assert adapter.up.out_features == 2 * TINY_WIDTH  # ascending, then descending
    x = torch.randn(2, 9, TINY_WIDTH)
    f_bar = x + block.attn(block.ln_1(x), block.ln_1(x), block.ln_1(x), need_weights=False)[0]  # Eq. 1
    pfa = adapter.down(torch.nn.functional.gelu(adapter.up(f_bar)))  # Eq. 2
    expected = block.mlp(block.ln_2(f_bar)) + pfa + f_bar  # Eq. 3
    torch.testing.assert_close(run_block(block, x, adapter), expected)
    torch.testing.assert_close(run_block(block, x), block(x))  # no adapter: the CLIP block unchanged
    torch.nn.init.zeros_(adapter.down.weight)
    torch.nn.init.zeros_(adapter.down.bias)
    torch.testing.assert_close(run_block(block, x, adapter), block(x))  # a silent PFA leaves the block unchanged


# --- SRP ------------------------------------------------------------------------------------------------------------


def test_srp_prompt_transfer_and_residual_follow_eqs_6_and_8() -> None:
    torch.manual_seed(0)
    srp = SynergisticResidualPrompt(width=16, num_layers=3, num_prompts=2, identity_paths=False)  # as printed
    gelu = torch.nn.functional.gelu

    def mlp(block, p):  # xi(delta(xi(p)))
        return block.fc2(gelu(block.fc1(p)))

    first = srp.layer_prompts(0, batch=3)  # (M, B, 3k, width)
    assert first.shape == (3, 3, 6, 16) and srp.tokens_per_modality == 6
    for m in range(3):
        for j in range(3):
            group = first[m, :, 2 * j : 2 * j + 2]
            expected = srp.prompts[0, m] if j == m else mlp(srp.transfer[0][j], srp.prompts[0, j])  # Eqs. 5-6
            torch.testing.assert_close(group, expected.expand(3, -1, -1))
    outputs = torch.randn(3, 3, 6, 16)  # what layer 0 gave back for the prompt tokens
    fused = srp.fuse(outputs)
    torch.testing.assert_close(fused, (outputs[:, :, 0:2] + outputs[:, :, 2:4] + outputs[:, :, 4:6]) / 3)  # p_hat^f
    second = srp.layer_prompts(1, batch=3, fused=fused)
    for m in range(3):
        own = srp.prompts[1, m] + mlp(srp.residual[0], fused[m])  # Eq. 8
        torch.testing.assert_close(second[m, :, 2 * m : 2 * m + 2], own)
        other = (m + 1) % 3
        torch.testing.assert_close(
            second[m, :, 2 * other : 2 * other + 2],
            mlp(srp.transfer[1][other], srp.prompts[1, other]).expand(3, -1, -1),
        )  # Eq. 9: transfer of the layer's raw prompt


def test_srp_modes_and_the_authors_identity_paths() -> None:
    torch.manual_seed(0)
    independent = SynergisticResidualPrompt(16, 3, 2, mode="independent")
    assert independent.layer_prompts(1, 2, None).shape == (3, 2, 2, 16) and len(independent.transfer) == 0
    torch.testing.assert_close(independent.layer_prompts(1, 2)[1], independent.prompts[1, 1].expand(2, -1, -1))
    synergistic = SynergisticResidualPrompt(16, 3, 2, mode="synergistic")
    assert len(synergistic.residual) == 0 and synergistic.fuse(torch.randn(3, 2, 6, 16)) is None
    torch.manual_seed(1)
    plain = SynergisticResidualPrompt(16, 3, 2, identity_paths=False)
    torch.manual_seed(1)
    identity = SynergisticResidualPrompt(16, 3, 2)  # the authors' identity terms are the default
    fused = torch.randn(3, 2, 2, 16)
    diff = identity.layer_prompts(1, 2, fused) - plain.layer_prompts(1, 2, fused)
    torch.testing.assert_close(diff[0, :, 0:2], fused[0])  # p + RP(p_hat) + p_hat
    torch.testing.assert_close(diff[0, :, 2:4], plain.prompts[1, 1].expand(2, -1, -1))  # p + T(p)
    late = SynergisticResidualPrompt(16, 3, 2, start_layer=1)
    assert not late.prompted(0) and late.prompted(2) and late.prompts.shape[0] == 2


def test_identity_paths_are_on_by_default_and_change_f_ma() -> None:
    model = tiny_mambapro().eval()
    assert model.srp is not None and model.srp.identity_paths
    printed = tiny_mambapro(prompt_identity_paths=False).eval()
    printed.load_state_dict(model.state_dict())  # the same weights: the switch adds no parameter
    images = torch.randn(2, 3, 3, *SIZE)
    assert not torch.allclose(model(images)["retrieval"], printed(images)["retrieval"], atol=1e-3)  # f_ma


def test_prompts_start_at_zero_as_the_authors_code_on_request() -> None:
    zeros = tiny_mambapro(prompt_init="zeros")
    assert zeros.srp is not None and torch.count_nonzero(zeros.srp.prompts) == 0
    random = tiny_mambapro()
    assert random.srp is not None and 0.01 < float(random.srp.prompts.detach().std()) < 0.03  # trunc_normal(0.02)
    with pytest.raises(ValueError, match="prompt init"):
        tiny_mambapro(prompt_init="ones")


def test_quick_gelu_switch_reaches_the_pfa_and_the_prompt_blocks() -> None:
    model = tiny_mambapro(activation="quick_gelu")
    assert model.pfa is not None and model.srp is not None
    x = 10 * torch.randn(2, 5, TINY_WIDTH)  # hidden values of order 1, where QuickGELU and GELU part
    for block, (first, second) in [
        (model.pfa[0], ("up", "down")),
        (model.srp.transfer[0][1], ("fc1", "fc2")),
        (model.srp.residual[0], ("fc1", "fc2")),
    ]:
        hidden = getattr(block, first)(x)
        expected = getattr(block, second)(hidden * torch.sigmoid(1.702 * hidden))  # QuickGELU
        torch.testing.assert_close(block(x), expected)
        assert not torch.allclose(block(x), getattr(block, second)(torch.nn.functional.gelu(hidden)), atol=1e-6)


# --- MA -------------------------------------------------------------------------------------------------------------


def test_ma_output_follows_eqs_18_and_19() -> None:
    torch.manual_seed(0)
    ma = MambaAggregation(dim=8, grid=(2, 3), num_blocks=2, d_state=4).eval()
    assert len(ma.mixers) == 4 and [m.joint for m in ma.mixers] == [False, True, False, True]
    cls, patches = torch.randn(2, 3, 8), torch.randn(2, 3, 6, 8)
    streams = list(patches.unbind(1))
    for mixer in ma.mixers:
        streams = mixer(streams)
    expected = torch.cat(
        [ma.reductions[m](ma.norms[m](torch.cat([cls[:, m], streams[m].mean(1)], -1))) for m in range(3)], -1
    )
    torch.testing.assert_close(ma(cls, patches), expected)


def test_intra_only_ma_keeps_modalities_apart() -> None:
    """Intra-MA never mixes modalities; inter-MA scans [rgb | nir | tir], so rgb reaches nir and tir."""
    torch.manual_seed(0)
    cls, patches = torch.randn(2, 3, 8), torch.randn(2, 3, 6, 8)
    changed = patches.clone()
    changed[:, 0] += 1.0  # rgb patches only
    for mode, mixes in (("intra", False), ("inter", True), ("intra+inter", True)):
        ma = MambaAggregation(8, (2, 3), num_blocks=1, mode=mode, d_state=4).eval()
        for name, param in ma.named_parameters():  # larger than the 0.02 init, so the cross-modal path shows
            if param.dim() > 1 and not name.endswith("A_log"):
                torch.nn.init.normal_(param, std=0.3)
        before, after = ma(cls, patches), ma(cls, changed)
        assert not torch.allclose(before[:, :8], after[:, :8]), mode  # rgb itself changes
        for part in (slice(8, 16), slice(16, 24)):  # nir, tir
            if mixes:
                assert (before[:, part] - after[:, part]).abs().max() > 1e-6, mode
            else:
                assert torch.equal(before[:, part], after[:, part]), mode


# --- parameter counts against the paper ---------------------------------------------------------------------------


def test_parameter_counts_match_the_papers_tables() -> None:
    """ViT-B-16 sizes (width 768, 12 layers, D 512, 16x8 grid): Table 3 C (PFA), Table 4/3 D (SRP), Table 6 (MA)."""
    pfa = sum(count(ParallelFeedForwardAdapter(768)) for _ in range(12))
    assert pfa == 28_339_200  # 28.34 M
    srp = SynergisticResidualPrompt(768, 12)
    rp_block = count(srp.residual[0])
    # 28.48 M in the paper: the authors' code also builds a residual block in the first layer, which never runs
    assert count(srp) + rp_block == 28_477_440 and rp_block == 590_976
    one_block = {mode: count(MambaAggregation(512, (16, 8), num_blocks=1, mode=mode)) for mode in ("intra", "inter")}
    assert round(one_block["intra"] / 1e6, 2) == 5.64 and round(one_block["inter"] / 1e6, 2) == 5.41
    assert round(count(MambaAggregation(512, (16, 8), num_blocks=1)) / 1e6, 2) == 9.47


# --- end to end -----------------------------------------------------------------------------------------------------


def test_fit_one_epoch_and_evaluate_with_missing_modalities(full_shards: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "mambapro"
    args = ["fit", "--shards", str(full_shards), "--output", str(run), "--model", "mambapro", "--backbone", "tiny"]
    result = runner.invoke(
        app, [*args, "--random-init", "--recipe", "mambapro-tiny-demo", "--epochs", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(line["loss_id"]) and math.isfinite(line["loss_triplet"]) and 0.0 <= line["mAP"] <= 1.0
    state = torch.load(run / "last.pt", weights_only=True)["model"]
    assert "srp.prompts" in state and any(key.startswith("ma.mixers.") for key in state)
    result = runner.invoke(app, ["eval", "--run", str(run), "--missing", "rgb"])
    assert result.exit_code == 0, result.output
    report = json.loads(next(run.glob("eval*missing*rgb*.json")).read_text())
    assert report["missing"] == ["rgb"]
    assert all(0.0 <= record["mAP"] <= 1.0 for record in report["results"])


def test_checkpoints_from_before_the_identity_paths_default_load_as_trained(tmp_path, capsys) -> None:
    """A run trained when prompt identity paths were off by default (its recipe record predates ``pixel_mean``)
    is rebuilt with them off, saying so; a current run gets the current default."""
    from reidtrain.evaluate import load_checkpoint

    model = tiny_mambapro(num_cameras=2)
    config = {"model": "mambapro", "num_classes": 5, "num_cameras": 2, "backbone": "tiny",
              "recipe": {"image_size": list(SIZE), "model_options": {}}}  # fmt: skip
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "old.pt")
    loaded, _, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.srp is not None and loaded.srp.identity_paths is False
    assert "built with prompt_identity_paths=false" in capsys.readouterr().err
    config["recipe"]["pixel_mean"] = [0.5, 0.5, 0.5]
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "new.pt")
    loaded, _, _ = load_checkpoint(tmp_path / "new.pt")
    assert loaded.srp is not None and loaded.srp.identity_paths is True

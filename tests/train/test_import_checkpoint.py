"""``reidtrain import-checkpoint``: the DeMo and MambaPro authors' state-dict names onto our models.

The authors' files are stood in for by state dicts written here with their key names and shapes (read from their
public code, github.com/924973292/DeMo and /MambaPro; none of it is run or copied). Each is made from one of our tiny
models with random weights by an inverse map spelled out below independently of the importer's rules, so a round trip
checks that every tensor lands where it came from and that the imported model computes what the original computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from reidtrain.cli import app
from reidtrain.evaluate import load_checkpoint
from reidtrain.importers import ImportRefused, import_checkpoint
from reidtrain.models import create_model
from reidtrain.recipes import resolve_recipe

TINY = {"backbone": "tiny", "image_size": [64, 32]}  # the authors' recipes on the 2-layer CPU ViT
TINY_VEHICLE = {"backbone": "tiny", "image_size": [32, 64]}
CLASSES, CAMERAS = 5, 4
RNT = ("r", "n", "t")
RGB_NIR_TIR = ("rgb", "nir", "tir")
# our DeMo experts R, N, T, RN, NT, TR, RNT -> the authors' names (their order is r, n, t, rn, rt, nt, rnt)
DEMO_EXPERT_NAMES = ("r", "n", "t", "rn", "nt", "rt", "rnt")
THEIR_EXPERT_ORDER = ("r", "n", "t", "rn", "rt", "nt", "rnt")


def _our_model(recipe: str, overrides: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """One of our models as the recipe builds it, every parameter and statistic random (nothing at its init)."""
    _, chosen = resolve_recipe(recipe, overrides)
    torch.manual_seed(seed)
    model = create_model(
        chosen.model, num_classes=CLASSES, num_cameras=CAMERAS, backbone=chosen.backbone,
        image_size=tuple(chosen.image_size), weights=None, require_pretrained=False, **chosen.model_options,
    )  # fmt: skip
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif key.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model.eval()


def _blocks(t: torch.Tensor, n: int, dim: int) -> list[torch.Tensor]:
    return list(t.chunk(n, dim=dim))


def demo_authors_state(model: Any) -> dict[str, torch.Tensor]:
    """Our DeMo's weights under the DeMo authors' names and shapes."""
    s = {k: v.clone() for k, v in model.state_dict().items()}
    dim, heads = model.feat_dim, model.atmoe.heads
    c = dim // heads
    ours_of = {name: i for i, name in enumerate(DEMO_EXPERT_NAMES)}
    theirs = {f"BACKBONE.base.{k.removeprefix('encoder.visual.')}": v for k, v in s.items() if k.startswith("encoder.")}
    theirs["BACKBONE.cv_embed"] = s["sie_embed"].unsqueeze(1)  # (cams, 1, width)
    for m, name in enumerate(RGB_NIR_TIR):
        for p in ("weight", "bias"):
            theirs[f"{name}_reduce.0.{p}"] = s[f"pife.{m}.norm.{p}"]
            theirs[f"{name}_reduce.1.{p}"] = s[f"pife.{m}.proj.{p}"]
    for ours, name in enumerate(DEMO_EXPERT_NAMES):
        theirs[f"generalFusion.{name}_token"] = s["hdm.queries"][ours].view(1, 1, dim)
        for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            theirs[f"generalFusion.{name}.{p}"] = s[f"hdm.attention.{ours}.{p}"]
    gate = "generalFusion.moe.gating_network.gate."
    columns = _blocks(s["atmoe.reduce.0.weight"], 7, 1)
    theirs[gate + "linear_re.0.weight"] = torch.cat([columns[ours_of[n]] for n in THEIR_EXPERT_ORDER], dim=1)
    theirs[gate + "linear_re.0.bias"] = s["atmoe.reduce.0.bias"]
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        theirs[gate + f"linear_re.2.{p}"] = s[f"atmoe.reduce.2.{p}"]
    theirs[gate + "q_.weight"], theirs[gate + "k_.weight"] = s["atmoe.query.weight"], s["atmoe.key.weight"]
    for t, name in enumerate(THEIR_EXPERT_ORDER):
        e = ours_of[name]
        for h in range(heads):
            head = f"generalFusion.moe.experts.{h}.expertHead.{t}.mlp."
            theirs[head + "0.weight"] = s["atmoe.expert_weight"][e, h]
            theirs[head + "0.bias"] = s["atmoe.expert_bias"][e, h]
            for p in ("weight", "bias", "running_mean", "running_var"):
                theirs[head + f"2.{p}"] = s[f"atmoe.expert_norm.{p}"][e * dim + h * c : e * dim + (h + 1) * c]
            theirs[head + "2.num_batches_tracked"] = s["atmoe.expert_norm.num_batches_tracked"]
    for p in ("weight", "bias", "running_mean", "running_var"):
        parts = _blocks(s[f"moe_neck.bottleneck.{p}"], 7, 0)
        theirs[f"bottleneck_moe.{p}"] = torch.cat([parts[ours_of[n]] for n in THEIR_EXPERT_ORDER])
    theirs["bottleneck_moe.num_batches_tracked"] = s["moe_neck.bottleneck.num_batches_tracked"]
    parts = _blocks(s["moe_neck.classifier.weight"], 7, 1)
    theirs["classifier_moe.weight"] = torch.cat([parts[ours_of[n]] for n in THEIR_EXPERT_ORDER], dim=1)
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    if model.per_modality:  # DIRECT 0
        for m, x in enumerate(RNT):
            theirs.update({f"bottleneck_{x}.{p}": s[f"modality_necks.{m}.bottleneck.{p}"] for p in bn})
            theirs[f"classifier_{x}.weight"] = s[f"modality_necks.{m}.classifier.weight"]
    else:  # DIRECT 1
        theirs.update({f"bottleneck.{p}": s[f"modality_neck.bottleneck.{p}"] for p in bn})
        theirs["classifier.weight"] = s["modality_neck.classifier.weight"]
    return theirs


def mambapro_authors_state(model: Any) -> dict[str, torch.Tensor]:
    """Our MambaPro's weights under the MambaPro authors' names and shapes, with the heads their mode leaves unused."""
    s = {k: v.clone() for k, v in model.state_dict().items()}
    theirs = {f"BACKBONE.base.{k.removeprefix('encoder.visual.')}": v for k, v in s.items() if k.startswith("encoder.")}
    for i in range(len(model.encoder.blocks)):
        block = f"BACKBONE.base.transformer.resblocks.{i}."
        for k, ours in (("0", "up"), ("2", "down")):
            theirs.update({block + f"adapter_ffn.{k}.{p}": s[f"pfa.{i}.{ours}.{p}"] for p in ("weight", "bias")})
        for m, (x, name) in enumerate(zip(RNT, RGB_NIR_TIR, strict=True)):
            theirs[block + f"adapter_prompt_{name}"] = s["srp.prompts"][i, m]
            for k, fc in (("0", "fc1"), ("3", "fc2")):
                for p in ("weight", "bias"):
                    theirs[block + f"adapter_{x}.{k}.{p}"] = s[f"srp.transfer.{i}.{m}.{fc}.{p}"]
        for k, fc in (("0", "fc1"), ("3", "fc2")):
            for p in ("weight", "bias"):  # block 0's copy is never called: random here
                theirs[block + f"adapter_transfer.{k}.{p}"] = (
                    s[f"srp.residual.{i - 1}.{fc}.{p}"] if i else torch.randn_like(s[f"srp.residual.0.{fc}.{p}"])
                )
    theirs["BACKBONE.cv_embed"] = s["sie_embed"]  # (cams, width)
    for b in range(len(model.ma.mixers) // 2):
        for kind, mixer in (("intra", 2 * b), ("inter", 2 * b + 1)):
            their, ours = f"AAM.ma_block.{b}.SSM_{kind}.", f"ma.mixers.{mixer}."
            for m, x in enumerate(RNT):
                theirs[their + f"in_proj_{x}.weight"] = s[ours + f"in_proj.{m}.weight"]
                for key in [k for k in s if k.startswith(ours + f"conv.{m}.")]:
                    theirs[their + f"conv2d_{x}." + key.removeprefix(ours + f"conv.{m}.")] = s[key]
            ssms = {f"SSM_{x}_f": m for m, x in enumerate(RNT)} if kind == "intra" else {"SSM_2_f": 0}
            for name, m in ssms.items():
                for key in [k for k in s if k.startswith(ours + f"ssm.{m}.")]:
                    theirs[their + f"{name}." + key.removeprefix(ours + f"ssm.{m}.")] = s[key]
            theirs[their + "out_proj.weight"] = s[ours + "out_proj.weight"]
    for m, x in enumerate(RNT):
        for p in ("weight", "bias"):
            theirs[f"AAM.linear_reduction_{x}.0.{p}"] = s[f"ma.norms.{m}.{p}"]
            theirs[f"AAM.linear_reduction_{x}.1.{p}"] = s[f"ma.reductions.{m}.{p}"]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    theirs.update({f"bottleneck_fuse.{p}": s[f"bottleneck_ma.{p}"] for p in bn})
    theirs["classifier_fuse.weight"] = s["classifier_ma.weight"]
    trained, unused = ("BACKBONE.", "") if model.cls_supervision == "per_modality" else ("", "BACKBONE.")
    theirs.update({f"{trained}bottleneck.{p}": s[f"bottleneck.{p}"] for p in bn})
    theirs[f"{trained}classifier.weight"] = s["classifier.weight"]
    other = model.feat_dim if trained == "" else 3 * model.feat_dim  # the untrained head: D (backbone's) or 3D
    theirs.update({f"{unused}bottleneck.{p}": torch.ones(other) for p in ("weight", "running_var")})
    theirs.update({f"{unused}bottleneck.{p}": torch.zeros(other) for p in ("bias", "running_mean")})
    theirs[f"{unused}bottleneck.num_batches_tracked"] = torch.tensor(0)
    theirs[f"{unused}classifier.weight"] = torch.randn(CLASSES, other)
    return theirs


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def _outputs(model: torch.nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """Eval-mode features of fixed random triplets with cameras."""
    height, width = model.encoder.visual.grid_size[0] * 16, model.encoder.visual.grid_size[1] * 16
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 3, height, width, generator=gen)
    with torch.no_grad():
        out = model.eval()(images, camids=torch.tensor([0, 3, 1]))
    return {"retrieval": out["retrieval"], **{f"feature{i}": f for i, f in enumerate(out["features"])}}


def _round_trip(model: Any, theirs: dict[str, torch.Tensor], tmp_path: Path, fmt: str, **kwargs: Any) -> Path:
    file = _save(theirs, tmp_path / "authors.pth")
    summary = import_checkpoint(file, fmt, tmp_path / "run", echo=lambda line: None, **kwargs)
    imported, config, state = load_checkpoint(summary.run / "last.pt")
    ours = model.state_dict()
    assert set(imported.state_dict()) == set(ours)
    wrong = [k for k, v in imported.state_dict().items() if not torch.equal(v, ours[k])]
    assert not wrong, f"tensors not where they came from: {wrong}"
    for name, value in _outputs(model).items():
        torch.testing.assert_close(_outputs(imported)[name], value, rtol=0, atol=0, msg=name)
    assert config["num_classes"] == CLASSES and config["num_cameras"] == CAMERAS and state["epoch"] is None
    assert config["provenance"]["imported_from"].startswith(f"{file.resolve()} (sha256 ")
    return summary.run


@pytest.mark.parametrize(("recipe", "overrides"), [("demo-rgbnt201", TINY), ("demo-rgbnt100", TINY_VEHICLE)])
def test_demo_round_trip(recipe: str, overrides: dict[str, Any], tmp_path: Path) -> None:
    """DIRECT 1 (RGBNT201, ATMoE heads 4) and DIRECT 0 (RGBNT100, heads 8): every tensor lands where it came from,
    the experts' order and the channel blocks of f included, and the imported model computes the same features."""
    model = _our_model(recipe, overrides)
    run = _round_trip(model, demo_authors_state(model), tmp_path, "demo", recipe=recipe, overrides=overrides)
    config = json.loads((run / "config.json").read_text())
    assert config["recipe_name"] == recipe and config["model_options"]["activation"] == "quick_gelu"
    assert config["camera_ids"] == [1, 2, 3, 4]  # the authors' RGBNT201 / RGBNT100 numbering: row = camera - 1


def test_demo_experts_follow_their_modality_sets(tmp_path: Path) -> None:
    """Their RT expert (attention over RGB and TIR tokens) becomes our expert whose token set is {RGB, TIR}, their NT
    ours over {NIR, TIR}; checked against the model's own token sets, not against the test's name table."""
    model = _our_model("demo-rgbnt201", TINY)
    theirs = demo_authors_state(model)
    theirs["generalFusion.rt.in_proj_bias"] = torch.full_like(theirs["generalFusion.rt.in_proj_bias"], 5.0)
    theirs["generalFusion.nt.in_proj_bias"] = torch.full_like(theirs["generalFusion.nt.in_proj_bias"], 6.0)
    import_checkpoint(_save(theirs, tmp_path / "a.pth"), "demo", tmp_path / "run", recipe="demo-rgbnt201",
                      overrides=TINY, echo=lambda line: None)  # fmt: skip
    imported = load_checkpoint(tmp_path / "run" / "last.pt")[0]
    for value, modalities in ((5.0, {0, 2}), (6.0, {1, 2})):
        (where,) = [i for i, a in enumerate(imported.hdm.attention) if bool((a.in_proj_bias == value).all())]
        assert set(imported.hdm.token_sets[where]) == modalities


@pytest.mark.parametrize(("recipe", "overrides"), [("mambapro-rgbnt201", TINY), ("mambapro-msvr310", TINY_VEHICLE)])
def test_mambapro_round_trip(recipe: str, overrides: dict[str, Any], tmp_path: Path) -> None:
    """DIRECT 1 (RGBNT201) and DIRECT 0 (MSVR310: the backbone's per-class-token head): prompts, transfer and
    residual blocks, PFA, both MA blocks and heads land where they came from; the unused copies are left out."""
    overrides = {**overrides, "model_options.scan_backend": "torch"}
    model = _our_model(recipe, overrides)
    lines: list[str] = []
    file = _save(mambapro_authors_state(model), tmp_path / "authors.pth")
    summary = import_checkpoint(file, "mambapro", tmp_path / "run", recipe=recipe, overrides=overrides,
                                echo=lines.append)  # fmt: skip
    unused = "" if model.cls_supervision == "per_modality" else "BACKBONE."
    assert set(summary.dropped) == {
        *(f"BACKBONE.base.transformer.resblocks.0.adapter_transfer.{k}.{p}" for k in "03" for p in ("weight", "bias")),
        *(f"{unused}bottleneck.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        f"{unused}classifier.weight",
    }
    assert any(line.startswith("left out") for line in lines)
    imported = load_checkpoint(summary.run / "last.pt")[0]
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in imported.state_dict().items())
    for name, value in _outputs(model).items():
        torch.testing.assert_close(_outputs(imported)[name], value, rtol=0, atol=0, msg=name)


def _refusal(theirs: dict[str, torch.Tensor], tmp_path: Path, fmt: str = "demo", *args: str) -> str:
    """The CLI's one-line refusal (exit 2) of an authors' file, and that nothing was written."""
    file = _save(theirs, tmp_path / "authors.pth")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import-checkpoint", str(file), "--format", fmt, "--output", str(run), *args])
    assert result.exit_code == 2, result.output
    assert not (run / "config.json").exists() and not (run / "last.pt").exists()
    return " ".join(result.output.split())  # rich wraps long lines


DEMO_TINY_ARGS = ("--dataset", "rgbnt201", "--set", "backbone=tiny", "--set", "image_size=[64,32]")


def test_refuses_an_extra_a_missing_key_and_a_wrong_shape_naming_each(tmp_path: Path) -> None:
    theirs = demo_authors_state(_our_model("demo-rgbnt201", TINY))
    theirs["generalFusion.extra_token"] = torch.zeros(1, 1, 32)  # not a DeMo parameter
    del theirs["generalFusion.moe.experts.2.expertHead.5.mlp.0.weight"]  # one (expert, head) block missing
    theirs["rgb_reduce.1.weight"] = torch.zeros(32, 63)  # PIFE reads 2C = 64 inputs
    line = _refusal(theirs, tmp_path, "demo", *DEMO_TINY_ARGS)
    assert "generalFusion.extra_token (no rule)" in line
    assert "atmoe.expert_weight (partly: 1728 of 1792 values)" in line  # their expert 5 (NT) is our 4: 8x8 left
    assert "rgb_reduce.1.weight (32, 63) -> pife.0.proj.weight (32, 64)" in line
    assert "pife.0.proj.weight" in line.split("left empty:")[1]


def test_refuses_the_other_direct_mode_with_the_way_out(tmp_path: Path) -> None:
    """A DIRECT 0 DeMo file under the DIRECT 1 recipe: its per-modality heads are named, and why."""
    theirs = demo_authors_state(_our_model("demo-rgbnt100", TINY_VEHICLE))
    as_the_file = ("--set", "image_size=[32,64]", "--set", "model_options.heads=8")  # only the supervision differs
    line = _refusal(theirs, tmp_path, "demo", "--recipe", "demo-rgbnt201", *DEMO_TINY_ARGS[2:], *as_the_file)
    first = line.split("builds it")[1].split(": ", 1)[1]
    assert first.startswith("the file was trained with DIRECT 0 (classifier_r) but the recipe's modality_supervision")
    assert "classifier_r.weight (no rule)" in line and "modality_neck.classifier.weight" in line.split("left empty")[1]
    assert "shape mismatches" not in line


def test_mambapro_refuses_a_head_trained_in_the_other_mode(tmp_path: Path) -> None:
    """Both class-token heads are in every MambaPro file, so the shapes cannot tell the mode: the batch counts do."""
    overrides = {**TINY_VEHICLE, "model_options.scan_backend": "torch"}
    theirs = mambapro_authors_state(_our_model("mambapro-msvr310", overrides))  # DIRECT 0
    args = ("--recipe", "mambapro-rgbnt201", "--set", "backbone=tiny", "--set", "image_size=[32,64]")
    theirs["bottleneck.weight"] = torch.ones(96)  # the untrained f_cls head (3D) of a DIRECT 0 file
    line = _refusal(theirs, tmp_path, "mambapro", *args)
    assert "trained with DIRECT 0 (BACKBONE.bottleneck saw 7 batches, bottleneck 0)" in line


def test_refuses_a_camera_count_that_contradicts_the_file(tmp_path: Path, full_shards: Path) -> None:
    theirs = demo_authors_state(_our_model("demo-rgbnt201", TINY))
    line = _refusal(theirs, tmp_path, "demo", *DEMO_TINY_ARGS, "--cameras", "6")
    assert "--cameras 6 but" in line and "has 4 rows" in line
    other = ("--dataset", "msvr310", "--recipe", "demo-rgbnt201", "--shards", str(full_shards))
    line = _refusal(theirs, tmp_path, "demo", *DEMO_TINY_ARGS[2:], *other)
    assert "--dataset msvr310 but the shards hold rgbnt201" in line
    theirs["BACKBONE.cv_embed"] = theirs["BACKBONE.cv_embed"][:3]
    line = _refusal(theirs, tmp_path, "demo", *DEMO_TINY_ARGS, "--shards", str(full_shards))
    assert "the shards have cameras [1, 2, 3, 4]" in line and "3 rows for cameras [1, 2, 3]" in line


def test_refuses_a_run_folder_that_holds_a_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    theirs = demo_authors_state(_our_model("demo-rgbnt201", TINY))
    with pytest.raises(ImportRefused, match="already holds a run"):
        import_checkpoint(_save(theirs, tmp_path / "a.pth"), "demo", tmp_path / "run", "rgbnt201", overrides=TINY)
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def test_eval_scores_an_imported_run(tmp_path: Path, full_shards: Path) -> None:
    """import-checkpoint --shards, then `reidtrain eval --run RUN` ranks the shards' query and gallery with it."""
    model = _our_model("demo-rgbnt201", TINY)
    file = _save({f"module.{k}": v for k, v in demo_authors_state(model).items()}, tmp_path / "a.pth")  # DDP names
    run = tmp_path / "run"
    args = ["import-checkpoint", str(file), "--format", "demo", "--output", str(run), *DEMO_TINY_ARGS]
    result = CliRunner().invoke(app, [*args, "--shards", str(full_shards)])
    assert result.exit_code == 0, result.output
    assert "camera ids [1, 2, 3, 4]: the shards' and the authors' numbering agree" in result.output
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads((run / "eval.json").read_text())["results"]
    assert record["checkpoint"] == "last" and 0.0 < record["mAP"] <= 1.0 and record["num_query"] > 0

"""Losses against direct computations, parameter groups, the warmup + cosine schedule, and the shipped recipes."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from reidtrain.losses import CrossEntropyLabelSmooth, ReIDObjective, TripletLoss
from reidtrain.optim import WarmupCosine, make_optimizer, param_groups, scheduler_for
from reidtrain.recipes import RecipeError, TrainRecipe, list_recipes, load_recipe, parse_recipe

# ---------------------------------------------------------------- losses


def test_label_smoothing_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])
    eps, c = 0.1, 5
    expected = 0.0
    for i in range(6):
        log_p = torch.log_softmax(logits[i], 0)
        for j in range(c):
            q = (1 - eps) * (j == int(labels[i])) + eps / c
            expected -= q * float(log_p[j])
    expected /= 6
    assert float(CrossEntropyLabelSmooth(c, eps)(logits, labels)) == pytest.approx(expected, rel=1e-5)
    # epsilon 0 is plain cross entropy
    plain = nn.functional.cross_entropy(logits, labels)
    assert float(CrossEntropyLabelSmooth(c, 0.0)(logits, labels)) == pytest.approx(float(plain), rel=1e-5)


def _brute_force(features: torch.Tensor, labels: torch.Tensor) -> tuple[list[float], list[float]]:
    ap, an = [], []
    for i in range(len(labels)):
        pos = [float(torch.dist(features[i], features[j])) for j in range(len(labels)) if labels[j] == labels[i]]
        neg = [float(torch.dist(features[i], features[j])) for j in range(len(labels)) if labels[j] != labels[i]]
        ap.append(max(pos))
        an.append(min(neg))
    return ap, an


@pytest.mark.parametrize("margin", [None, 0.3])
def test_batch_hard_triplet_matches_brute_force(margin):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(12, 8, generator=g, dtype=torch.float64)  # P=4, K=3
    labels = torch.arange(4).repeat_interleave(3)
    loss, dist_ap, dist_an = TripletLoss(margin)(features, labels)
    ap, an = _brute_force(features, labels)
    assert dist_ap.tolist() == pytest.approx(ap, abs=1e-5)
    assert dist_an.tolist() == pytest.approx(an, abs=1e-5)
    if margin is None:
        expected = sum(math.log1p(math.exp(a - n)) for a, n in zip(ap, an, strict=True)) / len(ap)
    else:
        expected = sum(max(0.0, a - n + margin) for a, n in zip(ap, an, strict=True)) / len(ap)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_soft_margin_equals_torch_soft_margin_loss_and_backprops():
    features = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss, dist_ap, dist_an = TripletLoss(None)(features, labels)
    reference = nn.SoftMarginLoss()(dist_an - dist_ap, torch.ones_like(dist_an))
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_triplet_needs_two_identities():
    with pytest.raises(ValueError, match="two identities"):
        TripletLoss()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_objective_weights_and_multi_head_sum():
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = [torch.randn(6, 3, generator=g) for _ in range(2)]
    features = [torch.randn(6, 5, generator=g) for _ in range(2)]
    ce, tri = CrossEntropyLabelSmooth(3, 0.1), TripletLoss(None)
    id_sum = sum(float(ce(x, labels)) for x in logits)
    tri_sum = sum(float(tri(f, labels)[0]) for f in features)

    objective = ReIDObjective(3, weights={"id": 0.5, "triplet": 2.0})
    total, parts = objective({"logits": logits, "features": features}, labels)
    assert parts["id"] == pytest.approx(id_sum, rel=1e-5)
    assert parts["triplet"] == pytest.approx(tri_sum, rel=1e-5)
    assert float(total) == pytest.approx(0.5 * id_sum + 2.0 * tri_sum, rel=1e-5)

    id_only, parts = ReIDObjective(3, weights={"id": 1.0})({"logits": logits[0]}, labels)  # no features needed
    assert set(parts) == {"id"} and float(id_only) == pytest.approx(float(ce(logits[0], labels)), rel=1e-6)

    with pytest.raises(ValueError, match="unknown loss terms"):
        ReIDObjective(3, weights={"id": 1.0, "center": 1.0})


# ---------------------------------------------------------------- optimizer and schedule


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_split_and_lrs():
    model = _Toy()
    groups = {g["name"]: g for g in param_groups(model, 3.5e-4, 5e-6, 1e-4, bias_lr_factor=2.0, weight_decay_bias=0)}
    assert set(groups) == {"backbone", "backbone_bias", "new", "new_bias"}
    assert groups["backbone"]["params"] == [model.backbone.weight]
    assert groups["backbone_bias"]["params"] == [model.backbone.bias]
    assert groups["new"]["params"] == [model.head.weight]
    assert groups["new_bias"]["params"] == [model.head.bias]  # frozen parameters are left out
    assert groups["backbone"]["lr"] == 5e-6 and groups["backbone_bias"]["lr"] == pytest.approx(1e-5)
    assert groups["new"]["lr"] == 3.5e-4 and groups["new_bias"]["lr"] == pytest.approx(7e-4)
    assert groups["new"]["weight_decay"] == 1e-4 and groups["new_bias"]["weight_decay"] == 0

    # explicit prefixes override the attribute; "head" now counts as backbone, "backbone" as new
    named = {g["name"]: g for g in param_groups(model, 1.0, 0.1, 0.0, backbone_prefixes=["head"])}
    assert named["backbone"]["params"] == [model.head.weight]
    assert named["new"]["params"] == [model.backbone.weight]

    for name, cls in [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]:
        opt = make_optimizer(name, param_groups(model, 3.5e-4, 5e-6, 1e-4), momentum=0.9)
        assert isinstance(opt, cls)
        assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(sorted([5e-6, 1e-5, 3.5e-4, 7e-4]))
    assert make_optimizer("sgd", param_groups(model, 1.0, 1.0, 0.0)).param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lamb", param_groups(model, 1.0, 1.0, 0.0))  # type: ignore[arg-type]


def _expected_factor(e: int, warmup: int = 10, total: int = 50, wf: float = 0.1, eta: float = 0.001) -> float:
    if e < warmup:
        return wf + (1 - wf) * e / warmup
    return eta + (1 - eta) * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (total - warmup)))


def test_warmup_then_cosine_values():
    model = _Toy()
    opt = make_optimizer("adam", param_groups(model, 3.5e-4, 5e-6, 1e-4))
    sched = WarmupCosine(opt, warmup_epochs=10, max_epochs=50, warmup_factor=0.1, eta_min_factor=0.001)
    base = [g["initial_lr"] for g in opt.param_groups]
    seen = {}
    for epoch in range(51):
        seen[epoch] = sched.get_last_lr()
        sched.step()
    for epoch in (0, 1, 5, 9, 10, 11, 30, 49, 50):
        assert seen[epoch] == pytest.approx([b * _expected_factor(epoch) for b in base], rel=1e-12)
    assert seen[0][0] == pytest.approx(0.1 * base[0])  # warmup starts at 0.1x
    assert seen[10][0] == pytest.approx(base[0])  # peak right after warmup
    assert seen[30][0] == pytest.approx(base[0] * (0.001 + 0.999 * 0.5))  # halfway down the cosine
    assert seen[50][0] == pytest.approx(0.001 * base[0])  # floor
    sched.step(100)  # beyond max_epochs stays at the floor
    assert sched.get_last_lr()[0] == pytest.approx(0.001 * base[0])


def test_scheduler_state_round_trip():
    def build() -> tuple[torch.optim.Optimizer, WarmupCosine]:
        torch.manual_seed(0)
        opt = make_optimizer("sgd", param_groups(_Toy(), 0.1, 0.01, 0.0))
        return opt, WarmupCosine(opt, warmup_epochs=2, max_epochs=10)

    opt, sched = build()
    for _ in range(5):
        sched.step()
    state, lrs = sched.state_dict(), sched.get_last_lr()
    assert "optimizer" not in state

    opt2, sched2 = build()
    assert sched2.get_last_lr() != lrs
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 5 and sched2.get_last_lr() == lrs
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()

    # resume order of a trainer: a fresh optimizer loads its state (lrs included), then the scheduler
    opt3, sched3 = build()
    opt3.load_state_dict(opt2.state_dict())
    sched3.load_state_dict(sched2.state_dict())
    assert sched3.get_last_lr() == sched2.get_last_lr()

    with pytest.raises(ValueError):
        WarmupCosine(opt, warmup_epochs=10, max_epochs=10)


@pytest.mark.parametrize(
    ("warmup_init", "noise"),
    [(0.1, (0, 50)), (0.01, None)],  # DeMo's solver/scheduler_factory.py; MambaPro's (0.01 x BASE_LR, no noise)
)
def test_timm_cosine_is_the_authors_timm_scheduler(warmup_init: float, noise: tuple[int, int] | None) -> None:
    """Oracle: timm's own CosineLRScheduler built as the authors' scheduler_factory builds it, stepped with the
    1-based epoch before each epoch as their processor does; our scheduler is stepped after each epoch."""
    from timm.scheduler.cosine_lr import CosineLRScheduler

    base_lr, epochs, warmup = 3.5e-4, 50, 10
    torch.manual_seed(0)
    ours_opt = make_optimizer("adam", param_groups(_Toy(), base_lr, 5e-6, 1e-4))
    theirs_opt = make_optimizer("adam", param_groups(_Toy(), base_lr, 5e-6, 1e-4))
    ours = WarmupCosine(
        ours_opt, warmup, epochs, warmup_init, 0.001, shape="timm_cosine", anchor_lr=base_lr,
        noise_pct=0.67 if noise else 0.0, noise_seed=42,
    )  # fmt: skip
    theirs = CosineLRScheduler(
        theirs_opt, t_initial=epochs, lr_min=0.001 * base_lr, cycle_mul=1.0, cycle_decay=0.1,  # t_mul, decay_rate
        warmup_lr_init=warmup_init * base_lr, warmup_t=warmup, cycle_limit=1, t_in_epochs=True,
        noise_range_t=noise, noise_pct=0.67, noise_std=1.0, noise_seed=42,
    )  # fmt: skip
    backbone_lrs = []
    for epoch in range(1, epochs + 1):
        theirs.step(epoch)
        expected = [group["lr"] for group in theirs_opt.param_groups]
        assert ours.get_last_lr() == pytest.approx(expected, rel=1e-12), epoch
        backbone_lrs.append(ours.get_last_lr()[0])
        ours.step()
    # the absolute warmup start: the 5e-6 backbone group starts ABOVE its lr (0.1 x 3.5e-4) and warms down to it
    assert (backbone_lrs[0] > 5e-6) == (warmup_init * base_lr > 5e-6)
    noisy = WarmupCosine(ours_opt, warmup, epochs, shape="timm_cosine", noise_pct=0.67)
    assert noisy.noise(epochs) == 0.0 and noisy.noise(1) != 0.0 and abs(noisy.noise(7)) < 0.67


def test_scheduler_for_reads_the_recipe() -> None:
    recipe = parse_recipe(
        {"schedule": "timm_cosine", "schedule_anchor": "base_lr", "lr_noise": 0.67, "base_lr": 1e-3, "epochs": 20}
    )
    sched = scheduler_for(make_optimizer("adam", param_groups(_Toy(), 1e-3, 1e-5, 0.0)), recipe)
    assert (sched.shape, sched.anchor_lr, sched.noise_pct, sched.noise_seed) == ("timm_cosine", 1e-3, 0.67, 42)
    default = scheduler_for(make_optimizer("adam", param_groups(_Toy(), 1e-3, 1e-5, 0.0)), parse_recipe({}))
    assert (default.shape, default.anchor_lr, default.noise_pct) == ("warmup_cosine", None, 0.0)  # today's behaviour


# ---------------------------------------------------------------- recipes


EXPECTED_RECIPES = {
    "baseline-tiny-demo",
    "demo-rgbnt201",
    "next-person",
    "next-vehicle",
    "stmi-msvr310",
    "stmi-rgbnt100",
    "stmi-rgbnt201",
}


def test_every_shipped_recipe_loads():
    names = list_recipes()
    assert set(names) >= EXPECTED_RECIPES
    for name in names:
        recipe = load_recipe(name)
        assert isinstance(recipe, TrainRecipe) and recipe.description
        assert recipe.warmup_epochs < recipe.epochs


def test_recipe_values_follow_the_papers():
    demo = load_recipe("demo-rgbnt201")
    assert (demo.base_lr, demo.backbone_lr, demo.epochs, demo.batch_size) == (3.5e-4, 5e-6, 50, 64)
    assert demo.triplet_margin is None and demo.label_smoothing == 0.1 and demo.augment.erase_p == 0.5
    stmi = load_recipe("stmi-rgbnt201")
    assert stmi.batch_size == 72 and stmi.instances_per_id == 8 and stmi.image_size == (256, 128)
    assert stmi.base_lr * stmi.eta_min_factor == pytest.approx(3.5e-7)
    assert load_recipe("stmi-rgbnt100").batch_size == 128 and load_recipe("stmi-msvr310").image_size == (128, 256)
    assert load_recipe("next-vehicle").image_size == (128, 256)


AUTHORS_RECIPES = [f"{model}-{ds}" for model in ("demo", "mambapro") for ds in ("rgbnt201", "rgbnt100", "msvr310")]
SOURCES = ("paper", "config", "defaults", "code", "ASSUMED")


@pytest.mark.parametrize("name", AUTHORS_RECIPES)
def test_authors_recipes_cite_a_source_for_every_key(name: str) -> None:
    """Every value of the DeMo / MambaPro dataset recipes says where it comes from (issue 18), and every recipe
    field is written out, so nothing falls back to a default silently."""
    from reidschemas.resources import read_text

    text = read_text(f"recipes/{name}.yaml")
    keys = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([a-z_]+):\s*(.*)$", line)
        if match is None or match.group(2) in ("description", "model") or not match.group(3):
            continue  # comments, the description, the model name and section headers
        keys.append(match.group(2))
        comment = match.group(3).partition("#")[2]
        assert any(source in comment for source in SOURCES), f"{name}: {line.strip()!r} cites no source"
    fields = set(TrainRecipe.model_fields) - {"description", "model", "augment", "model_options"}
    assert fields <= set(keys), f"{name} leaves {sorted(fields - set(keys))} at their defaults"


def test_authors_recipes_hold_the_authors_values() -> None:
    for name in AUTHORS_RECIPES:
        recipe = load_recipe(name)
        assert recipe.loss_weights == {"id": 0.25, "triplet": 1.0} and recipe.pixel_mean == (0.5, 0.5, 0.5), name
        assert (recipe.schedule, recipe.schedule_anchor) == ("timm_cosine", "base_lr"), name
        assert (recipe.augment.erase_fill, recipe.augment.geometry) == ("noise", "per_modality"), name
        assert recipe.model_options["activation"] == "quick_gelu", name
        vehicle = "rgbnt201" not in name
        supervision = recipe.model_options.get("modality_supervision", recipe.model_options.get("cls_supervision"))
        assert supervision == ("per_modality" if vehicle else "concat"), name  # DIRECT 0 on vehicles only
    demo100, demo310 = load_recipe("demo-rgbnt100"), load_recipe("demo-msvr310")
    assert (demo100.epochs, demo100.warmup_epochs, demo310.ids_per_batch, demo310.instances_per_id) == (30, 5, 16, 4)
    assert load_recipe("demo-rgbnt201").lr_noise == 0.67
    mambapro = load_recipe("mambapro-rgbnt201")
    assert (mambapro.warmup_factor, mambapro.lr_noise, mambapro.epochs) == (0.01, 0.0, 60)
    assert mambapro.model_options["prompt_init"] == "zeros" and mambapro.model_options["prompt_identity_paths"]


def test_vehicle_recipes_do_not_pad_small_identities() -> None:
    """MSVR310 (~6.7 images per id) and WMVEID863 (~5.8): K above that repeats images of every identity; only STMI
    keeps its paper's K=8 (noted in its recipe)."""
    for name in list_recipes():
        recipe = load_recipe(name)
        if ("msvr310" in name or "wmveid863" in name) and name != "stmi-msvr310":
            assert recipe.instances_per_id <= 6, name
        if recipe.model_options.get("object_word") == "vehicle" or "vehicle" in recipe.description:
            assert recipe.image_size[0] < recipe.image_size[1], name  # landscape, as fit's orientation check wants


def test_unknown_recipe_lists_available_names():
    with pytest.raises(RecipeError, match="unknown recipe 'nope'") as info:
        load_recipe("nope")
    assert "demo-rgbnt201" in str(info.value) and "stmi-msvr310" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"augment": {"flip": 0.5}}, "augment.flip"),
        ({"optimizer": "lamb"}, "optimizer"),
        ({"loss_weights": {"center": 1.0}}, "loss_weights.center"),
        ({"base_lr": -1.0}, "base_lr"),
    ],
)
def test_bad_key_is_named(raw, key):
    with pytest.raises(RecipeError, match=rf"'inline': {re.escape(key)}:"):
        parse_recipe(raw, "inline")


def test_cross_field_checks():
    with pytest.raises(RecipeError, match="warmup_epochs"):
        parse_recipe({"epochs": 5, "warmup_epochs": 5})
    with pytest.raises(RecipeError, match="loss_weights"):
        parse_recipe({"loss_weights": {"id": 0.0, "triplet": 0.0}})
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe([1, 2])


def test_every_shipped_recipe_names_a_registered_model_whose_builder_takes_its_options():
    import yaml

    from reidschemas.resources import read_text
    from reidtrain.models import list_models
    from reidtrain.models.registry import check_model_options

    for name in list_recipes():
        raw = yaml.safe_load(read_text(f"recipes/{name}.yaml"))
        assert {"model", "backbone"} <= raw.keys(), name  # stated in the file, not a default
        assert raw["model"] in list_models() and name.startswith(raw["model"]), name
        assert raw["backbone"] == ("tiny" if "demo" in name.removeprefix("demo-") else "ViT-B-16-quickgelu"), name
        check_model_options(raw["model"], raw.get("model_options") or {})


def test_a_run_recorded_before_the_new_recipe_keys_still_compares_equal() -> None:
    """Resuming compares config.json's recipe with the resolved one: keys added later (normalisation, erasing fill,
    geometry, schedule shape, anchor, lr noise) read as their defaults, which are the behaviour before them."""
    from reidtrain.trainer import _config_diff

    recipe = parse_recipe({"model": "demo", "epochs": 3, "warmup_epochs": 1}).model_dump(mode="json")
    old = dict(recipe)
    for key in ("pixel_mean", "pixel_std", "schedule_anchor", "lr_noise", "lr_noise_seed"):
        del old[key]
    old["augment"] = {k: v for k, v in recipe["augment"].items() if k not in ("erase_fill", "geometry")}
    assert _config_diff({"recipe": old}, {"recipe": recipe}) == []
    changed = {**recipe, "augment": {**recipe["augment"], "geometry": "per_modality"}}
    assert _config_diff({"recipe": old}, {"recipe": changed}) == ["recipe"]  # a real change is still refused

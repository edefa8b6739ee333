"""Parameter groups, optimizers and the warmup + cosine learning-rate schedule.

Parameter groups follow the reference repos' ``make_optimizer`` (TransReID lineage, DeMo): one group per
(backbone or new module) x (weight or bias). Backbone parameters get ``backbone_lr``, the rest ``base_lr``; a bias
(a parameter whose name ends in ``bias``) gets its group's lr times ``bias_lr_factor`` and ``weight_decay_bias``.
Frozen parameters (``requires_grad=False``) are left out.

``WarmupCosine`` steps once per EPOCH (the reference repos call ``scheduler.step(epoch)`` per epoch). With ``e`` the
number of completed epochs (0 at construction), each group's lr is ``initial_lr * factor(e)`` with::

    factor(e) = warmup_factor + (1 - warmup_factor) * e / warmup_epochs            for e < warmup_epochs
    factor(e) = eta_min_factor + (1 - eta_min_factor) * (1 + cos(pi * t)) / 2       otherwise,
                t = (e - warmup_epochs) / (max_epochs - warmup_epochs), clamped to [0, 1]

so the warmup ramps linearly from ``warmup_factor`` to 1 and the cosine then runs from 1 down to ``eta_min_factor`` at
``max_epochs`` (timm's ``CosineLRScheduler`` with ``warmup_prefix=True``). That is the default ``shape``.

``shape="timm_cosine"`` with ``anchor_lr`` reproduces the scheduler of the DeMo and MambaPro code (timm's
``CosineLRScheduler`` as their ``solver/scheduler_factory.py`` builds it, read for facts): the epoch about to run is
``t = e + 1`` (their loop calls ``scheduler.step(epoch)`` with the 1-based epoch before it), the warmup starts from the
ABSOLUTE ``init = warmup_factor * anchor_lr`` for every group (their ``warmup_lr_init = 0.1 * BASE_LR``, MambaPro
``0.01 * BASE_LR``; a group whose lr is below it, e.g. a 5e-6 backbone, warms DOWN to its lr) and the cosine spans the
whole run (no warmup prefix) down to the absolute ``eta_min_factor * anchor_lr``::

    lr_g(t) = init + t * (lr_g - init) / warmup_epochs                          for t < warmup_epochs
    lr_g(t) = floor + (lr_g - floor) * (1 + cos(pi * t / max_epochs)) / 2        otherwise

``noise_pct`` > 0 adds their per-epoch lr noise: for ``t < max_epochs`` every lr is multiplied by ``1 + n``, with ``n``
the first draw of ``torch.randn`` (generator seeded ``noise_seed + t``) whose magnitude is below ``noise_pct`` (timm's
``noise_range_t=(0, epochs)``, ``noise_pct=0.67``, ``noise_seed=42`` in DeMo; MambaPro has none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from reidtrain.recipes import TrainRecipe

__all__ = ["OptimizerName", "ScheduleShape", "WarmupCosine", "make_optimizer", "param_groups", "scheduler_for"]

OptimizerName = Literal["adam", "adamw", "sgd"]


def _is_backbone(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def param_groups(
    model: nn.Module,
    base_lr: float,
    backbone_lr: float,
    weight_decay: float,
    bias_lr_factor: float = 2.0,
    weight_decay_bias: float | None = None,
    backbone_prefixes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into up to four groups: {backbone, new} x {weight, bias}.

    The backbone is the parameters under ``backbone_prefixes`` (module names, e.g. ``["backbone", "text.proj"]``);
    when not given, the model's ``backbone`` attribute (if any, i.e. prefix ``"backbone"``). ``weight_decay_bias``
    defaults to ``weight_decay`` (the reference configs set both to 1e-4). Each group has ``params``, ``lr``,
    ``weight_decay`` and ``name`` (``backbone``, ``backbone_bias``, ``new``, ``new_bias``); empty groups are dropped.
    """
    if backbone_prefixes is None:
        backbone_prefixes = ["backbone"] if isinstance(getattr(model, "backbone", None), nn.Module) else []
    wd_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    groups: dict[str, dict[str, Any]] = {
        "backbone": {"lr": backbone_lr, "weight_decay": weight_decay},
        "backbone_bias": {"lr": backbone_lr * bias_lr_factor, "weight_decay": wd_bias},
        "new": {"lr": base_lr, "weight_decay": weight_decay},
        "new_bias": {"lr": base_lr * bias_lr_factor, "weight_decay": wd_bias},
    }
    for group_name, group in groups.items():
        group.update(name=group_name, params=[])
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = ("backbone" if _is_backbone(name, backbone_prefixes) else "new") + (
            "_bias" if name.endswith("bias") else ""
        )
        groups[key]["params"].append(param)
    return [group for group in groups.values() if group["params"]]


def make_optimizer(
    name: OptimizerName, groups: Iterable[dict[str, Any]], momentum: float = 0.9
) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over ``groups`` (from ``param_groups``); ``momentum`` is used by SGD only, as in the reference
    repos (Adam keeps its default betas)."""
    groups = list(groups)
    if not groups:
        raise ValueError("no trainable parameters")
    lr = groups[0]["lr"]  # every group sets its own lr; the default is only a required argument
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, adamw, sgd")


ScheduleShape = Literal["warmup_cosine", "timm_cosine"]


class WarmupCosine:
    """Per-epoch warmup then cosine decay of every group's lr (formulas in the module docstring).

    Construction sets the lrs for epoch 0; call ``step()`` once after each epoch (or ``step(epoch)`` to jump).
    ``state_dict`` / ``load_state_dict`` round-trip the position and the initial lrs for resume.
    ``anchor_lr`` None: ``warmup_factor`` and ``eta_min_factor`` scale each group's own lr; a number: they scale it
    for every group (the start of the warmup and the floor of the cosine are then the same absolute lr).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        warmup_factor: float = 0.1,
        eta_min_factor: float = 0.001,
        shape: ScheduleShape = "warmup_cosine",
        anchor_lr: float | None = None,
        noise_pct: float = 0.0,
        noise_seed: int = 42,
    ) -> None:
        if warmup_epochs < 0 or max_epochs <= warmup_epochs:
            raise ValueError("need 0 <= warmup_epochs < max_epochs")
        if not 0.0 < warmup_factor <= 1.0 or not 0.0 <= eta_min_factor <= 1.0:
            raise ValueError("need warmup_factor in (0, 1] and eta_min_factor in [0, 1]")
        if shape not in ("warmup_cosine", "timm_cosine"):
            raise ValueError(f"unknown schedule shape {shape!r}; known: warmup_cosine, timm_cosine")
        if (anchor_lr is not None and anchor_lr <= 0) or not 0.0 <= noise_pct < 1.0:
            raise ValueError("need anchor_lr > 0 (or None) and noise_pct in [0, 1)")
        self.optimizer = optimizer
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_factor, self.eta_min_factor = warmup_factor, eta_min_factor
        self.shape, self.anchor_lr = shape, anchor_lr
        self.noise_pct, self.noise_seed = noise_pct, noise_seed
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def factor(self, epoch: int) -> float:
        """Multiplier of the initial lr after ``epoch`` completed epochs (the default shape, no anchor, no noise)."""
        if epoch < self.warmup_epochs:
            return self.warmup_factor + (1.0 - self.warmup_factor) * epoch / self.warmup_epochs
        t = min(max((epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs), 0.0), 1.0)
        return self.eta_min_factor + (1.0 - self.eta_min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def lr(self, base: float, epoch: int) -> float:
        """The lr of a group whose initial lr is ``base`` after ``epoch`` completed epochs."""
        t = epoch + 1 if self.shape == "timm_cosine" else epoch
        anchor = base if self.anchor_lr is None else self.anchor_lr
        start, floor = self.warmup_factor * anchor, self.eta_min_factor * anchor
        if t < self.warmup_epochs:
            value = start + (base - start) * t / self.warmup_epochs
        elif self.shape == "timm_cosine":
            value = floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(t / self.max_epochs, 1.0)))
        else:
            progress = min(max((t - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs), 0.0), 1.0)
            value = floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return value * (1.0 + self.noise(t))

    def noise(self, t: int) -> float:
        """The relative lr noise of schedule step ``t`` (0 without noise or from ``max_epochs`` on)."""
        if self.noise_pct <= 0 or t >= self.max_epochs:
            return 0.0
        generator = torch.Generator().manual_seed(self.noise_seed + t)
        while True:  # redraw until |n| < noise_pct (timm's rejection loop; P(accept) >= 0.5 for pct 0.67)
            value = float(torch.randn(1, generator=generator))
            if abs(value) < self.noise_pct:
                return value

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr(base, self.last_epoch)

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch, or set the position to ``epoch`` completed epochs."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The lr of every group now."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (saved on its own)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` and set the optimizer's lrs to match it."""
        self.__dict__.update({key: value for key, value in state.items() if key != "optimizer"})
        self._apply()


def optimizer_for(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s parameter groups (its ``backbone`` / ``encoder`` at the backbone lr)."""
    prefixes = [name for name in ("backbone", "encoder") if isinstance(getattr(model, name, None), nn.Module)]
    groups = param_groups(
        model,
        recipe.base_lr,
        recipe.backbone_lr,
        recipe.weight_decay,
        recipe.bias_lr_factor,
        recipe.weight_decay_bias,
        backbone_prefixes=prefixes,
    )
    return make_optimizer(recipe.optimizer, groups, recipe.momentum)


def scheduler_for(optimizer: torch.optim.Optimizer, recipe: TrainRecipe) -> WarmupCosine:
    """The recipe's schedule over ``optimizer``: shape, warmup, floor, anchor (``schedule_anchor``) and lr noise."""
    return WarmupCosine(
        optimizer,
        recipe.warmup_epochs,
        recipe.epochs,
        recipe.warmup_factor,
        recipe.eta_min_factor,
        shape=recipe.schedule,
        anchor_lr=recipe.base_lr if recipe.schedule_anchor == "base_lr" else None,
        noise_pct=recipe.lr_noise,
        noise_seed=recipe.lr_noise_seed,
    )

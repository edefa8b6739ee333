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
``max_epochs`` (timm's ``CosineLRScheduler`` with ``warmup_prefix=True``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["OptimizerName", "WarmupCosine", "make_optimizer", "param_groups"]

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


class WarmupCosine:
    """Per-epoch linear warmup then cosine decay of every group's lr (formula in the module docstring).

    Construction sets the lrs for epoch 0; call ``step()`` once after each epoch (or ``step(epoch)`` to jump).
    ``state_dict`` / ``load_state_dict`` round-trip the position and the initial lrs for resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        warmup_factor: float = 0.1,
        eta_min_factor: float = 0.001,
    ) -> None:
        if warmup_epochs < 0 or max_epochs <= warmup_epochs:
            raise ValueError("need 0 <= warmup_epochs < max_epochs")
        if not 0.0 < warmup_factor <= 1.0 or not 0.0 <= eta_min_factor <= 1.0:
            raise ValueError("need warmup_factor in (0, 1] and eta_min_factor in [0, 1]")
        self.optimizer = optimizer
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_factor, self.eta_min_factor = warmup_factor, eta_min_factor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def factor(self, epoch: int) -> float:
        """Multiplier of the initial lr after ``epoch`` completed epochs."""
        if epoch < self.warmup_epochs:
            return self.warmup_factor + (1.0 - self.warmup_factor) * epoch / self.warmup_epochs
        t = min(max((epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs), 0.0), 1.0)
        return self.eta_min_factor + (1.0 - self.eta_min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _apply(self) -> None:
        scale = self.factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * scale

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

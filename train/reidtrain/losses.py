"""ReID losses: label-smoothed cross entropy, batch-hard triplet, and the weighted objective that combines them.

The formulas follow the multi-modal ReID reference repos (TransReID lineage: DeMo, MambaPro, TOP-ReID, IDEA):

- ``CrossEntropyLabelSmooth``: targets ``(1 - eps) * onehot + eps / C``, loss ``(-targets * log_softmax).mean(0).sum()``
- ``TripletLoss``: batch-hard mining on the *Euclidean* distance (``sqrt`` of the squared distance, clamped at 1e-12
  before the root, as the reference ``euclidean_dist``), features not normalised; per anchor the farthest positive
  (the anchor itself included, distance ~1e-6, as in the reference) and the nearest negative. ``margin=None`` is the
  soft margin ``softplus(d_ap - d_an)`` (= ``nn.SoftMarginLoss(d_an - d_ap, 1)``), else
  ``nn.MarginRankingLoss(margin)(d_an, d_ap, 1)`` = ``relu(d_ap - d_an + margin)``; both averaged over anchors.

Models return a dict; ``ReIDObjective`` reads ``logits`` and ``features`` from it (each a tensor or a list of tensors,
one per head, summed as in DeMo's multi-head loss), so models never branch on loss names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from reidtrain.recipes import TrainRecipe

__all__ = [
    "CrossEntropyLabelSmooth",
    "ReIDObjective",
    "TripletLoss",
    "euclidean_dist",
    "hard_example_mining",
    "objective_for",
]


class CrossEntropyLabelSmooth(nn.Module):
    """Cross entropy with label smoothing: targets ``(1 - epsilon) * onehot + epsilon / num_classes``."""

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1 or not 0.0 <= epsilon < 1.0:
            raise ValueError("need num_classes >= 1 and epsilon in [0, 1)")
        self.num_classes, self.epsilon = num_classes, epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C), ``labels`` (B,) int64 -> scalar."""
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, the loss was built for {self.num_classes}")
        log_probs = F.log_softmax(logits, dim=1)  # (B, C)
        onehot = torch.zeros_like(log_probs).scatter_(1, labels.unsqueeze(1), 1.0)  # (B, C)
        targets = (1.0 - self.epsilon) * onehot + self.epsilon / self.num_classes
        return (-targets * log_probs).mean(0).sum()


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances: ``x`` (M, D), ``y`` (N, D) -> (M, N); squared distance clamped at 1e-12."""
    xx = x.pow(2).sum(1, keepdim=True)  # (M, 1)
    yy = y.pow(2).sum(1, keepdim=True).t()  # (1, N)
    dist2 = xx + yy - 2.0 * (x @ y.t())  # (M, N)
    return dist2.clamp(min=1e-12).sqrt()


def hard_example_mining(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest positive (max distance, self included) and hardest negative (min distance) per anchor.

    ``dist`` (B, B), ``labels`` (B,) -> ``dist_ap`` (B,), ``dist_an`` (B,). Every anchor needs a negative in the batch.
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
    if bool(same.all(1).any()):
        raise ValueError("batch-hard triplet needs at least two identities in the batch")
    dist_ap = dist.masked_fill(~same, float("-inf")).amax(1)  # (B,)
    dist_an = dist.masked_fill(same, float("inf")).amin(1)  # (B,)
    return dist_ap, dist_an


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on Euclidean distances; ``margin=None`` -> soft margin ``softplus(d_ap - d_an)``."""

    def __init__(self, margin: float | None = None, normalize_feature: bool = False) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ValueError("margin must be >= 0 or None (soft margin)")
        self.margin, self.normalize_feature = margin, normalize_feature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``features`` (B, D), ``labels`` (B,) -> (scalar loss, ``dist_ap`` (B,), ``dist_an`` (B,))."""
        if self.normalize_feature:
            features = F.normalize(features, dim=-1)
        dist_ap, dist_an = hard_example_mining(euclidean_dist(features, features), labels)
        if self.margin is None:
            loss = F.softplus(dist_ap - dist_an).mean()
        else:
            loss = F.relu(dist_ap - dist_an + self.margin).mean()
        return loss, dist_ap, dist_an


def _as_list(value: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value)


def _sum(values: list[torch.Tensor]) -> torch.Tensor:
    """Sum of scalar tensors (keeps their device and dtype); refuses an empty list."""
    if not values:
        raise ValueError("a loss term got no heads (empty list of logits / features)")
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


class ReIDObjective(nn.Module):
    """Weighted sum of the ID (label-smoothed CE) and triplet losses over a model's output dict.

    ``outputs["logits"]``: (B, C) or a list of them; ``outputs["features"]``: (B, D) or a list of them. Each term is
    summed over the heads (as the reference repos do for multi-branch models), then multiplied by its weight; a term
    with weight 0 is skipped. Returns ``(total, {"id": ..., "triplet": ...})`` with detached per-term values
    (unweighted sums over heads).
    """

    TERMS = ("id", "triplet")

    def __init__(
        self,
        num_classes: int,
        weights: Mapping[str, float] | None = None,
        label_smoothing: float = 0.1,
        triplet_margin: float | None = None,
    ) -> None:
        super().__init__()
        weights = dict(weights) if weights is not None else {"id": 1.0, "triplet": 1.0}
        unknown = sorted(set(weights) - set(self.TERMS))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; known: {list(self.TERMS)}")
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.TERMS}
        self.id_loss = CrossEntropyLabelSmooth(num_classes, label_smoothing)
        self.triplet_loss = TripletLoss(triplet_margin)

    def forward(
        self, outputs: Mapping[str, torch.Tensor | Sequence[torch.Tensor]], labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``outputs`` with ``logits`` / ``features``, ``labels`` (B,) -> (total scalar, {term: value}).

        Heads are computed in fp32 whatever the autocast dtype of the model. ``outputs["losses"]`` (optional) holds
        model-specific scalar losses, already weighted by the model (e.g. DMPT's contrastive and center losses):
        they are added to the total and reported under their own names.
        """
        terms: dict[str, torch.Tensor] = {}
        if self.weights["id"]:
            terms["id"] = _sum([self.id_loss(x.float(), labels) for x in _as_list(outputs["logits"])])
        if self.weights["triplet"]:
            terms["triplet"] = _sum([self.triplet_loss(f.float(), labels)[0] for f in _as_list(outputs["features"])])
        if not terms:
            raise ValueError("every loss weight is 0")
        total = _sum([self.weights[name] * value for name, value in terms.items()])
        extra: dict[str, torch.Tensor] = dict(outputs.get("losses", {}))  # type: ignore[arg-type]
        clash = sorted(set(extra) & set(self.TERMS))
        if clash:
            raise ValueError(f"model losses {clash} clash with the objective's own terms")
        for value in extra.values():
            total = total + value.float()
        report = {name: float(value.detach()) for name, value in {**terms, **extra}.items()}
        return total, report


def objective_for(recipe: TrainRecipe, num_classes: int) -> ReIDObjective:
    """The recipe's ID + triplet objective over ``num_classes`` identities (its weights, smoothing and margin)."""
    weights = {str(term): weight for term, weight in recipe.loss_weights.items()}  # Literal keys -> str (Mapping)
    return ReIDObjective(num_classes, weights, recipe.label_smoothing, recipe.triplet_margin)

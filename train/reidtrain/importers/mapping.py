"""Place a foreign state dict onto one of our models by an explicit list of name rules, or say exactly why not.

A :class:`Rule` matches a key of the foreign file (a regular expression, full match) and names where it goes in our
model: a whole tensor, or a part of one (``index``: a row, a block of channels), after an optional ``transform`` (a
squeeze, a permutation of channel blocks). A rule whose target is None drops the key (a weight the authors' forward
never reads either). The first matching rule wins, so specific rules come before prefix renames.

:func:`place` applies the rules and checks everything before anything is used: every foreign key placed, every
element of every tensor of our model filled exactly once, every piece of the right shape. The parts of a tensor are
tracked with a coverage mask, so "left empty" also catches a tensor filled only in part (a missing expert).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["MODALITY", "Groups", "Placement", "Rule", "Unplaceable", "permute_blocks", "place", "squeeze_dims"]

MODALITY = {"r": 0, "n": 1, "t": 2, "rgb": 0, "nir": 1, "tir": 2}
"""The authors' modality suffixes (both repositories) -> our modality index (rgb, nir, tir)."""

Groups = dict[str, Any]
Index = tuple[Any, ...]


class Unplaceable(Exception):
    """Raised by a rule's target function: the key matched but has no place in the model as configured (why)."""


@dataclass(frozen=True)
class Rule:
    """One line of a name map: foreign key pattern -> our key (template, function of the groups, or None = dropped).

    ``target`` as a string is formatted with the pattern's named groups; as a function it gets the groups and returns
    our key (None: dropped) or raises :class:`Unplaceable`. ``index`` (a function of the groups) selects the part of
    our tensor the piece fills; ``transform`` turns the foreign tensor into that part.
    """

    pattern: str
    target: str | Callable[[Groups], str | None] | None
    index: Callable[[Groups], Index] | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def resolve(self, groups: Groups) -> str | None:
        if self.target is None or isinstance(self.target, str):
            return None if self.target is None else self.target.format(**groups)
        return self.target(groups)


@dataclass
class Placement:
    """What :func:`place` found: the filled state dict (complete only when ``ok``) and every problem, named."""

    state: dict[str, torch.Tensor]
    unplaced: list[str]  # foreign keys no rule placed, with why
    empty: list[str]  # our keys not (or only partly) filled
    shapes: list[str]  # "their_key (shape) -> our_key[index] (shape)"
    dropped: list[str]  # foreign keys deliberately left out

    @property
    def ok(self) -> bool:
        return not (self.unplaced or self.empty or self.shapes)

    def problems(self, limit: int = 8) -> str:
        """The refusal's lists as one line; each list shows ``limit`` names and how many more."""

        def listed(label: str, items: Sequence[str]) -> str:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            return f"{len(items)} {label}: {', '.join(items[:limit])}{more}"

        parts = [
            listed(label, items)
            for label, items in (
                ("shape mismatches", self.shapes),
                ("keys of the file not placed", self.unplaced),
                ("keys of our model left empty", self.empty),
            )
            if items
        ]
        return " | ".join(parts)


def squeeze_dims(*dims: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform removing the given size-1 axes; a tensor without them passes unchanged (the shape check names it)."""

    def squeeze(t: torch.Tensor) -> torch.Tensor:
        if t.dim() > max(dims) and all(t.shape[d] == 1 for d in dims):
            return t.squeeze(dims)
        return t

    return squeeze


def permute_blocks(order: Sequence[int], dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform moving equal blocks along ``dim``: block ``i`` of the input becomes block ``order[i]``."""

    def permute(t: torch.Tensor) -> torch.Tensor:
        if t.shape[dim] % len(order):
            return t  # not made of these blocks: left for the shape check
        blocks = t.chunk(len(order), dim=dim)
        out: list[torch.Tensor | None] = [None] * len(order)
        for source, destination in enumerate(order):
            out[destination] = blocks[source]
        return torch.cat([b for b in out if b is not None], dim=dim)

    return permute


def _position(i: Any) -> str:
    return f"{i.start}:{i.stop}" if isinstance(i, slice) else str(i)


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def place(
    foreign: Mapping[str, torch.Tensor],
    rules: Sequence[Rule],
    ours: Mapping[str, torch.Tensor],
    fields: Callable[[Groups], Groups] | None = None,
) -> Placement:
    """Fill tensors shaped and typed as ``ours`` (a model's state dict) from ``foreign`` by ``rules``.

    ``fields`` turns a match's named groups into the values the rules use (a modality letter into its index, a block
    number into our layer number); it may raise :class:`Unplaceable`.
    """
    filled: dict[str, torch.Tensor] = {}
    covered: dict[str, torch.Tensor] = {}  # our key -> bool mask of the elements already filled
    unplaced, shapes, dropped = [], [], []
    for key, tensor in foreign.items():
        rule, match = next(((r, m) for r in rules if (m := r.regex.fullmatch(key)) is not None), (None, None))
        if rule is None or match is None:
            unplaced.append(f"{key} (no rule)")
            continue
        try:
            groups = fields(match.groupdict()) if fields is not None else match.groupdict()
            target = rule.resolve(groups)
        except Unplaceable as why:
            unplaced.append(f"{key} ({why})")
            continue
        if target is None:
            dropped.append(key)
            continue
        if target not in ours:
            unplaced.append(f"{key} (our model has no {target})")
            continue
        index = rule.index(groups) if rule.index is not None else ()
        piece = rule.transform(tensor) if rule.transform is not None else tensor
        reference = ours[target]
        where = target + (f"[{', '.join(map(_position, index))}]" if index else "")
        try:
            slot = reference[index] if index else reference
        except IndexError:
            unplaced.append(f"{key} (our {target} {_shape(reference)} has no {where})")
            continue
        if tuple(piece.shape) != tuple(slot.shape):
            shapes.append(f"{key} {_shape(tensor)} -> {where} {_shape(slot)}")
            continue
        if target not in filled:
            filled[target] = torch.zeros_like(reference)
            covered[target] = torch.zeros(reference.shape, dtype=torch.bool)
        mask = covered[target][index] if index else covered[target]
        if bool(mask.any()):
            unplaced.append(f"{key} ({where} already filled by another key)")
            continue
        if index:
            filled[target][index] = piece.to(reference.dtype)
            covered[target][index] = True
        else:
            filled[target] = piece.to(reference.dtype).clone()
            covered[target].fill_(True)
    empty = []
    for key in ours:
        if key not in covered:
            empty.append(key)
        elif not bool(covered[key].all()):
            empty.append(f"{key} (partly: {int(covered[key].sum())} of {covered[key].numel()} values)")
    return Placement(filled, unplaced, empty, shapes, dropped)

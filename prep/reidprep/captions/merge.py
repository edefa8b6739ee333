"""NEXT's multi-modal merge and complement, and STMI's fused triplet set, over confidence-aware attribute sets.

1. ``best_of``: several MLLMs describe the same image. For each attribute the most confident known value wins.
2. ``complement`` (NEXT, per-modality captions): for each modality (rgb, nir, tir), an attribute that is unknown or
   below ``below`` confidence is filled from the other two modalities; the most confident known value is used. For
   the presence attributes (carrying, holding, handbag, backpack, suitcase) a negative answer ("not", "none", "not
   carrying") is also replaced by a more confident positive answer of another modality, however confident it was:
   NEXT's example is RGB "no backpack" at 0.6 against TIR's backpack at 0.9, which must give RGB the backpack. The
   composite is not a source here: NEXT complements from the other modalities only; the composite is STMI's input.
3. ``fuse_triplet`` (STMI, the fused caption): one set for the triplet over STMI's attributes (``load_stmi_set``: 13
   for persons, 6 for vehicles, ASSUMED). For each it takes the most confident value over all views, the composite
   included. The other attributes (view, lighting, time, clarity, ...) stay unknown: STMI's description has none.

All three apply the visibility rules of ``data/templates/attribute_visibility.json`` (each rule's reason is there):

- colour (pedestrian ``upper_clothing_color`` and ``lower_clothing_color``, vehicle ``color``): only RGB's own
  answer counts. NIR, TIR and composite colour answers are dropped and never copied. RGB's colour goes into NIR or
  TIR only when ``colours_in_infrared`` is true.
- per-image conditions (``illumination`` and ``target_clarity``): each modality keeps its own answer, and nothing is
  copied across. The NEXT examples show NIR "bright lighting" beside RGB "dim", and TIR "clear" beside RGB "blurry".
- not sensed (TIR: ``illumination`` and ``capture_time``): the thermal camera cannot see visible lighting, so TIR's
  own answers are dropped and nothing is copied in. The paper's TIR captions omit time and lighting.
  ``capture_time`` is the same instant for all three images, so RGB and NIR complement each other.

A known value with confidence 0 counts as unknown: the caption templates say "ignore any with 0 confidence".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from reidprep.captions.attributes import VIEWS, View
from reidschemas import MODALITIES, AttributeSet, AttributeValue, Modality, ObjectKind, load_stmi_set, load_template
from reidschemas.resources import read_text

Target = View | Literal["fused"]
"""What a caption describes: one view's image, or the whole triplet."""

UNKNOWN = AttributeValue(value=None, confidence=0.0)


@dataclass(frozen=True)
class Visibility:
    """What each modality can see, for one object kind (``attribute_visibility.json``)."""

    kind: ObjectKind
    colour: frozenset[str]
    """Colour attributes: from RGB only."""
    per_image: frozenset[str]
    """Attributes that depend on the sensor: never copied between views."""
    not_sensed: Mapping[Modality, frozenset[str]]
    """Attributes that a modality cannot observe. Its own answers are dropped and nothing is copied in."""
    colour_words: frozenset[str]
    """Words that name a colour (lower case). They must not appear in a NIR or TIR caption that carries no colour."""
    presence: frozenset[str] = frozenset()
    """Carried or held things: a negative answer gives way to a more confident positive one (``complement``)."""
    negative_words: frozenset[str] = frozenset()
    """Answers that say a presence attribute is absent ("none", "not", "not carrying"; lower case)."""
    fused: frozenset[str] = frozenset()
    """The attributes of STMI's fused caption (``attributes_stmi.json``); the fused caption carries no others."""

    def hidden(self, view: Target, *, colours: bool) -> frozenset[str]:
        """Attributes that ``view``'s caption never carries. ``colours``: whether NIR/TIR captions carry colours."""
        if view == "fused":
            return frozenset(load_template(self.kind).names) - self.fused
        if view in ("rgb", "composite"):
            return frozenset()
        unseen = self.not_sensed.get(view, frozenset()) if view == "nir" or view == "tir" else frozenset()
        return unseen | (frozenset() if colours else self.colour)

    def negative(self, value: str | None) -> bool:
        """Whether ``value`` says that a carried or held thing is absent ("none", "not", "no backpack")."""
        if value is None:
            return False
        text = " ".join(value.strip().lower().split()).rstrip(".!")
        return text in self.negative_words or text.startswith(("no ", "not "))


@cache
def visibility(kind: ObjectKind) -> Visibility:
    """The visibility rules for ``kind``. Every attribute that is named must be in the kind's template."""
    raw = json.loads(read_text("templates/attribute_visibility.json"))
    section = raw[kind]
    names = set(load_template(kind).names)
    groups = [section["colour"], section["per_image"], section["presence"], *section["not_sensed"].values()]
    unknown = {name for group in groups for name in group} - names
    if unknown:
        raise ValueError(f"attribute_visibility.json names attributes the {kind} template lacks: {sorted(unknown)}")
    return Visibility(
        kind=kind,
        colour=frozenset(section["colour"]),
        per_image=frozenset(section["per_image"]),
        not_sensed={m: frozenset(section["not_sensed"].get(m, ())) for m in MODALITIES},
        colour_words=frozenset(word.lower() for word in raw["colour_words"]),
        presence=frozenset(section["presence"]),
        negative_words=frozenset(word.lower() for word in raw["negative_words"]),
        fused=frozenset(load_stmi_set(kind).names),
    )


@dataclass(frozen=True)
class Merged:
    """An attribute set with provenance: which view each known value came from."""

    view: Target
    attributes: AttributeSet
    sources: Mapping[str, View] = field(default_factory=dict)
    """Each known attribute -> the view whose answer it is."""
    dropped: tuple[str, ...] = ()
    """This view's own known answers that the visibility rules removed (e.g. a NIR colour)."""

    @property
    def filled(self) -> dict[str, View]:
        """The attributes that were taken from another view -> that view (for the report)."""
        return {name: source for name, source in self.sources.items() if source != self.view}


def _usable(attribute: AttributeValue) -> bool:
    return attribute.value is not None and attribute.confidence > 0.0


def _model(sets: Iterable[AttributeSet]) -> type[AttributeSet]:
    types = {type(s) for s in sets}
    if len(types) != 1:
        raise ValueError(f"expected attribute sets of one kind, got {sorted(t.__name__ for t in types)}")
    return types.pop()


def best_of(answers: Sequence[AttributeSet]) -> AttributeSet:
    """Several MLLMs' answers for one image -> one set. For each attribute the most confident known value wins.

    Ties go to the earlier answer. When no answer knows an attribute, it stays unknown. Zero confidence counts as
    unknown.
    """
    if not answers:
        raise ValueError("best_of needs at least one answer")
    model = _model(answers)
    merged: dict[str, AttributeValue] = {}
    for name in model.model_fields:
        best = UNKNOWN
        for answer in answers:
            candidate = getattr(answer, name)
            if _usable(candidate) and candidate.confidence > best.confidence:
                best = candidate
        merged[name] = best
    return model(**merged)


def _check_kind(model: type[AttributeSet], kind: ObjectKind) -> None:
    if model.kind != kind:
        raise ValueError(f"attribute sets are {model.kind!r}, but kind={kind!r}")


def _visible(attribute: str, view: View, rules: Visibility) -> bool:
    """Whether ``view``'s own answer for ``attribute`` is usable at all. Colour is usable only from RGB."""
    if attribute in rules.colour:
        return view == "rgb"
    return view == "composite" or attribute not in rules.not_sensed.get(view, frozenset())


def complement(
    per_view: Mapping[View, AttributeSet],
    kind: ObjectKind,
    *,
    below: float,
    colours_in_infrared: bool,
) -> dict[Modality, Merged]:
    """NEXT's merge and complement: one complete attribute set per modality.

    ``per_view`` holds the sets of the views that were queried (each from ``best_of``); a composite in it is ignored
    (module docstring). A missing modality starts out unknown. For each modality, the visibility rules first drop
    the answers it cannot give. Then each attribute that is unknown or below ``below`` confidence is replaced by
    the most confident usable answer of another modality, if that answer is more confident; a presence attribute
    whose answer is negative is replaced by a more confident positive answer. Ties go to the first modality in
    ``MODALITIES`` order. Colour comes only from RGB, and only when ``colours_in_infrared`` is true. Per-image
    conditions and attributes the modality cannot sense are never filled.
    """
    if not per_view:
        raise ValueError("complement needs at least one view")
    model = _model(per_view.values())
    _check_kind(model, kind)
    rules = visibility(kind)
    result: dict[Modality, Merged] = {}
    for modality in MODALITIES:
        own = per_view.get(modality)
        values: dict[str, AttributeValue] = {}
        sources: dict[str, View] = {}
        dropped: list[str] = []
        for name in model.model_fields:
            current = getattr(own, name) if own is not None else UNKNOWN
            if _usable(current) and not _visible(name, modality, rules):
                dropped.append(name)
                current = UNKNOWN
            if not _usable(current):
                current = UNKNOWN
            source: View = modality
            fillable = (
                name not in rules.per_image
                and name not in rules.not_sensed[modality]
                and (name not in rules.colour or colours_in_infrared)
            )
            weak = not _usable(current) or current.confidence < below
            absent = name in rules.presence and rules.negative(current.value)
            if fillable and (weak or absent):
                for view in MODALITIES:
                    if view == modality or view not in per_view or not _visible(name, view, rules):
                        continue
                    candidate = getattr(per_view[view], name)
                    if not _usable(candidate) or candidate.confidence <= current.confidence:
                        continue
                    if weak or not rules.negative(candidate.value):  # a confident negative yields to positives only
                        current, source = candidate, view
            values[name] = current
            if _usable(current):
                sources[name] = source
        result[modality] = Merged(modality, model(**values), sources, tuple(dropped))
    return result


def fuse_triplet(per_view: Mapping[View, AttributeSet]) -> Merged:
    """STMI's fused triplet set, for the one fused caption. It reads the raw per-view sets (``best_of`` results).

    Only STMI's attributes (``load_stmi_set``) are filled; the rest stay unknown. For each of them it takes the most
    confident usable answer over all views, the composite included. Ties go to the first view in ``VIEWS`` order.
    Colours come from RGB only, and TIR's answers for what it cannot sense are ignored.
    """
    if not per_view:
        raise ValueError("fuse_triplet needs at least one view")
    model = _model(per_view.values())
    rules = visibility(model.kind)
    values: dict[str, AttributeValue] = {}
    sources: dict[str, View] = {}
    for name in model.model_fields:
        best, source = UNKNOWN, None
        for view in VIEWS if name in rules.fused else ():
            if view not in per_view or not _visible(name, view, rules):
                continue
            candidate = getattr(per_view[view], name)
            if _usable(candidate) and candidate.confidence > best.confidence:
                best, source = candidate, view
        values[name] = best
        if source is not None:
            sources[name] = source
    return Merged("fused", model(**values), sources)


def unknown_rate(sets: Iterable[AttributeSet], *, ignore: Iterable[str] = ()) -> float:
    """The fraction of unknown attributes (zero confidence counts as unknown) over all ``sets`` (STMI Figure 2c).

    Returns 0.0 when there are no attributes.

    ``ignore`` leaves out attributes that a modality never carries (``Visibility.hidden``). An example is colour
    in NIR/TIR: it is unknown by design, not for lack of information.
    """
    skipped = set(ignore)
    total = unknown = 0
    for attribute_set in sets:
        for name in type(attribute_set).model_fields:
            if name in skipped:
                continue
            total += 1
            unknown += not _usable(getattr(attribute_set, name))
    return unknown / total if total else 0.0

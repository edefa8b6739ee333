"""Confidence-aware attribute sets: the NEXT paper's templates (Figures 6 and 7) as pydantic models.

The templates live in ``data/templates/attributes_<kind>.json``; the prompt text and the schema are both built from
them. Each attribute is ``{value, confidence}``. An option string ``a | b | c`` is a closed vocabulary (values are
matched case-insensitively and stored in the template's spelling); one that starts with ``e.g.,`` is open. The
template's ``synonyms`` (ours, ASSUMED: "man" -> "male", "rear" -> "back") are accepted for a closed vocabulary too,
and the JSON schema of ``attribute_model`` lists each closed vocabulary as an ``enum``, so a server with structured
output can only answer with an option (or null).
Values that say "unknown" in any of the usual ways become ``None``, and a ``None`` value has confidence 0.

``load_stmi_set`` reads the attributes of STMI's one fused triplet description (``attributes_stmi.json``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from reidschemas.records import ObjectKind
from reidschemas.resources import read_text

# "unclear" is an option of capture_time and window_condition in the templates; it carries no information and is
# normalised to None like "unknown" (the captions stage relies on that to complement it from another modality).
_UNKNOWN_EXACT = {"", "?", "-", "n/a", "na", "null", "not sure", "uncertain", "undetermined", "indeterminate"}
_UNKNOWN_PREFIXES = (
    "unknow",
    "unclear",
    "cannot ",
    "can't ",
    "not determin",
    "not identifiable",
    "unidentif",
)


def is_unknown(value: str) -> bool:
    """Whether a free-text answer means "unknown" (e.g. "Unknown", "unclear", "unknowable due to low clarity")."""
    text = " ".join(value.strip().lower().split())
    return text in _UNKNOWN_EXACT or text.startswith(_UNKNOWN_PREFIXES)


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute line of a template."""

    name: str
    options_text: str
    """The template's value string, verbatim (``"child | teenager | adult | senior"``)."""
    options: tuple[str, ...] | None
    """The closed vocabulary, or ``None`` for an open attribute."""
    synonyms: Mapping[str, str] = field(default_factory=dict)
    """Other wordings of the options (lower case) -> the option (the template's ``synonyms``)."""

    def canonical(self, value: str) -> str | None:
        """The vocabulary's spelling of ``value`` or of the option it is a synonym of, or None if it is neither.

        Case, repeated whitespace and trailing punctuation are ignored.
        """
        assert self.options is not None
        wanted = " ".join(value.strip().lower().split()).rstrip(".!,;")
        for option in self.options:
            if option.lower() == wanted:
                return option
        return self.synonyms.get(wanted)


@dataclass(frozen=True)
class AttributeTemplate:
    kind: ObjectKind
    instruction: str
    closing: str
    specs: tuple[AttributeSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def spec(self, name: str) -> AttributeSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.kind} template has no attribute {name!r}")

    def prompt(self) -> str:
        """The instruction exactly as in the paper's figure: instruction, JSON skeleton, closing line."""
        lines = [f'  "{s.name}": {{"value": {json.dumps(s.options_text)}, "confidence": 0.0}}' for s in self.specs]
        skeleton = "{\n" + ",\n".join(lines) + "\n}"
        return f"{self.instruction}\n\n{skeleton}\n\n{self.closing}"


def _parse_options(text: str) -> tuple[str, ...] | None:
    if text.lstrip().lower().startswith("e.g."):
        return None
    return tuple(part.strip() for part in re.split(r"\s*\|\s*", text) if part.strip())


@cache
def load_template(kind: ObjectKind) -> AttributeTemplate:
    """Read ``data/templates/attributes_<kind>.json``."""
    if kind not in ("pedestrian", "vehicle"):
        raise ValueError(f"unknown object kind {kind!r}: expected 'pedestrian' or 'vehicle'")
    raw = json.loads(read_text(f"templates/attributes_{kind}.json"))
    synonyms: dict[str, dict[str, str]] = raw.get("synonyms", {})
    unknown = sorted(set(synonyms) - set(raw["attributes"]))
    if unknown:
        raise ValueError(f"attributes_{kind}.json: synonyms for attributes the template lacks: {unknown}")
    specs = []
    for name, text in raw["attributes"].items():
        options = _parse_options(text)
        mapping = {key.lower(): value for key, value in synonyms.get(name, {}).items()}
        if mapping and options is None:
            raise ValueError(f"attributes_{kind}.json: synonyms for the open attribute {name!r}")
        wrong = sorted(value for value in mapping.values() if options is not None and value not in options)
        if wrong:
            raise ValueError(f"attributes_{kind}.json: synonyms of {name!r} map to non-options {wrong}")
        specs.append(AttributeSpec(name, text, options, mapping))
    return AttributeTemplate(kind=kind, instruction=raw["instruction"], closing=raw["closing"], specs=tuple(specs))


@dataclass(frozen=True)
class FusedAttributes:
    """STMI's fused triplet description: which attributes it carries and how long it is (``attributes_stmi.json``)."""

    kind: ObjectKind
    names: tuple[str, ...]
    """A subset of the kind's NEXT template, in template order (13 for persons, 6 for vehicles; ASSUMED)."""
    target_words: int
    """The paper's average description length for the kind's datasets, read as words (ASSUMED)."""


@cache
def load_stmi_set(kind: ObjectKind) -> FusedAttributes:
    """Read ``kind``'s section of ``data/templates/attributes_stmi.json``; every name must be in the NEXT template."""
    section = json.loads(read_text("templates/attributes_stmi.json"))[kind]
    names = load_template(kind).names
    unknown = sorted(set(section["attributes"]) - set(names))
    if unknown:
        raise ValueError(f"attributes_stmi.json names attributes the {kind} template lacks: {unknown}")
    chosen = tuple(name for name in names if name in section["attributes"])
    return FusedAttributes(kind=kind, names=chosen, target_words=int(section["target_words"]))


class AttributeValue(BaseModel):
    """One attribute answer: a value (None when unknown) and a confidence in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str | None
    confidence: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _normalise_unknown(cls, data: Any) -> Any:
        """Collapse whitespace; an "unknown" value becomes None and a None value gets confidence 0."""
        if not isinstance(data, dict) or "value" not in data:
            return data
        value = data["value"]
        if isinstance(value, str):
            value = None if is_unknown(value) else " ".join(value.split())
        if value is None:
            return {**data, "value": None, "confidence": 0.0}
        return {**data, "value": value}

    @property
    def known(self) -> bool:
        return self.value is not None


UNKNOWN = AttributeValue(value=None, confidence=0.0)


class AttributeSet(BaseModel):
    """Base of the per-kind attribute models; every template attribute is a required field."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[ObjectKind]

    @field_validator("*", mode="after")
    @classmethod
    def _in_vocabulary(cls, attribute: AttributeValue, info: ValidationInfo) -> AttributeValue:
        assert info.field_name is not None  # a field validator always runs for a named field
        spec = load_template(cls.kind).spec(info.field_name)
        if attribute.value is None or spec.options is None:
            return attribute
        canonical = spec.canonical(attribute.value)
        if canonical is None:
            raise ValueError(f"{attribute.value!r} is not one of: {spec.options_text}")
        return attribute.model_copy(update={"value": canonical})

    @classmethod
    def unknown(cls) -> AttributeSet:
        """A set in which nothing is known."""
        return cls(**{name: UNKNOWN for name in cls.model_fields})

    def values(self) -> dict[str, str | None]:
        """Attribute name -> value (None when unknown)."""
        return {name: getattr(self, name).value for name in type(self).model_fields}

    def known_fraction(self) -> float:
        values = self.values()
        return sum(v is not None for v in values.values()) / len(values)


def _closed_schema(spec: AttributeSpec) -> dict[str, Any]:
    """``AttributeValue``'s JSON schema with ``value`` limited to the options of ``spec`` (or null for unknown)."""
    assert spec.options is not None
    schema = copy.deepcopy(AttributeValue.model_json_schema())
    schema["title"] = f"{spec.name} value"
    schema["properties"]["value"] = {"anyOf": [{"enum": list(spec.options), "type": "string"}, {"type": "null"}]}
    return schema


@cache
def attribute_model(kind: ObjectKind) -> type[AttributeSet]:
    """The pydantic model of ``kind``'s attribute set (``PedestrianAttributes`` or ``VehicleAttributes``).

    Its JSON schema (what ``response_format`` sends) gives each closed attribute's options as an ``enum``.
    Validation stays case-insensitive and accepts the template's synonyms (``AttributeSet._in_vocabulary``).
    """
    template = load_template(kind)
    fields: dict[str, Any] = {
        spec.name: (
            AttributeValue if spec.options is None else Annotated[AttributeValue, WithJsonSchema(_closed_schema(spec))],
            ...,
        )
        for spec in template.specs
    }
    model = create_model(f"{kind.capitalize()}Attributes", __base__=AttributeSet, **fields)
    model.kind = kind
    return model

"""Validation of every caption, whether rendered from the template or written by an LLM.

A caption is rejected when it is empty, says "unknown" (or "unclear", "unknowable", "n/a"), or has template
brackets or placeholders left in it, or when it contradicts its attributes. A contradiction is a pronoun that does
not match a known gender, a known colour missing where the caption carries colour, or a colour word in a NIR or TIR
caption that carries none. The fused triplet caption (STMI) must not speak of capture conditions (view, lighting,
time of day, image quality): STMI's description has none, and one caption of three sensors' images cannot hold one
sensor's conditions.
``repair_caption`` removes only what LLMs wrap around a caption (quotes, "Caption:", code fences).

Length is never a problem: a caption longer than CLIP's 77-token context is kept whole, and tokenisation truncates
it with the end-of-text token kept, as the reference code does (``length_note`` says so in the row's notes).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, computed_field, model_validator

from reidprep.captions.merge import Target, visibility
from reidschemas import AttributeSet, ObjectKind

CLIP_CONTEXT = 77
"""CLIP's text context: 75 BPE tokens plus the start and end tokens."""

_VAGUE = re.compile(r"\b(?:unknow\w*|unclear|n/a)(?![\w/])", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"[\[\]{}<>|]|\b[a-z]+_[a-z_]+\b", re.IGNORECASE)
_GENDER_WORDS = {
    "male": {"he", "him", "his", "himself", "man", "men", "boy", "boys", "gentleman", "male", "males"},
    "female": {"she", "her", "hers", "herself", "woman", "women", "girl", "girls", "lady", "female", "females"},
}
_WRAPPERS = re.compile(
    r"^\s*(?:(?:here\s+is|here's)\s+(?:the|a|your)\s+(?:generated\s+)?(?:caption|description)\s*[:\-]|"
    r"(?:final\s+)?(?:caption|description|output|answer)\s*[:\-])\s*",
    re.IGNORECASE,
)
_CONDITIONS = re.compile(
    r"\b(?:lighting|illumination|illuminated|daytime|nighttime|night-time|at night|blurry|blurred|"
    r"(?:seen|viewed|photographed) from|image appears)\b",
    re.IGNORECASE,
)
_SPELLING = {"grey": "gray", "colour": "color", "coloured": "colored"}
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»"}


@cache
def _tokenizer() -> Any:
    import open_clip

    return open_clip.get_tokenizer("ViT-B-16")


def clip_token_count(text: str) -> int:
    """The length of ``text`` for CLIP ViT-B-16's tokenizer. The count includes the start and end tokens.

    A caption fits when the count is at most ``CLIP_CONTEXT``. The tokenizer is loaded once (from the
    open_clip_torch package, offline).
    """
    return len(_tokenizer().encode(text)) + 2


def length_note(text: str, tokens: int | None = None) -> str | None:
    """The note for a caption longer than CLIP's context (``tokens``: its ``clip_token_count``, when known), or None
    when it fits. Such a caption is kept; the tokenizer keeps its first 76 tokens and the end-of-text token."""
    tokens = clip_token_count(text) if tokens is None else tokens
    if tokens <= CLIP_CONTEXT:
        return None
    return f"{tokens} CLIP tokens, truncated to {CLIP_CONTEXT} at tokenisation (end-of-text kept)"


def captionable(value: str, gender: str | None = None) -> bool:
    """Whether an attribute value can appear in a valid caption. It must not be vague ("jacket (unclear)"), must not
    have a placeholder or option list in it ("t-shirt | sweater"), and must not contradict ``gender``.

    The renderer leaves out values that fail this check, and the validator does not require them.
    """
    if _VAGUE.search(value) or _PLACEHOLDER.search(value):
        return False
    if gender not in ("male", "female", "non-binary"):
        return True
    words = set(_words(value))
    return not any(other != gender and words & wrong for other, wrong in _GENDER_WORDS.items())


def _words(text: str) -> list[str]:
    """Lower-case words; hyphens, slashes and other punctuation split words ("dark-blue" -> dark, blue)."""
    return re.findall(r"[a-z]+", text.lower())


def _contains(text: str, phrase: str) -> bool:
    """Whether ``phrase`` (less a leading article) occurs in ``text`` as whole words.

    Case, punctuation, spacing and grey/gray are ignored.
    """
    flat = " ".join(_SPELLING.get(w, w) for w in _words(text))
    phrase = re.sub(r"^\s*(?:a|an|the|some)\s+", "", phrase, flags=re.IGNORECASE)
    wanted = " ".join(_SPELLING.get(w, w) for w in _words(phrase))
    return bool(wanted) and re.search(rf"(?<![a-z]){re.escape(wanted)}(?![a-z])", flat) is not None


def validate_caption(
    text: str,
    attributes: AttributeSet,
    kind: ObjectKind,
    modality: Target,
    *,
    colours: bool | None = None,
) -> list[str]:
    """The problems of ``text`` as the caption of ``attributes`` for ``modality``. An empty list means it is valid.

    ``colours``: whether the caption may carry colour. None means yes for rgb, composite and fused, and no for nir
    and tir; pass ``captions.colours_in_infrared_captions`` for NIR/TIR. When it carries colour, every known
    colour attribute must appear. When it does not, no colour word may appear.
    """
    if type(attributes).kind != kind:
        raise ValueError(f"attributes are {type(attributes).kind!r}, but kind={kind!r}")
    if not text.strip():
        return ["empty caption"]
    problems = []
    vague = sorted({m.group(0).lower() for m in _VAGUE.finditer(text)})
    if vague:
        problems.append(f"says {', '.join(repr(v) for v in vague)} instead of leaving the phrase out")
    leftovers = sorted({m.group(0) for m in _PLACEHOLDER.finditer(text)})
    if leftovers:
        problems.append(f"template brackets or placeholders left: {' '.join(leftovers)}")

    conditions = sorted({m.group(0).lower() for m in _CONDITIONS.finditer(text)}) if modality == "fused" else []
    if conditions:
        problems.append(f"the fused caption describes the object only but says {', '.join(map(repr, conditions))}")

    words = set(_words(text))
    gender = attributes.gender.value if hasattr(attributes, "gender") and attributes.gender.confidence > 0 else None
    for other, wrong in _GENDER_WORDS.items():
        if gender in ("male", "female", "non-binary") and other != gender and words & wrong:
            problems.append(f"gender is {gender} but the caption says {', '.join(sorted(words & wrong))}")

    rules = visibility(kind)
    colours = modality in ("rgb", "composite", "fused") if colours is None else colours
    if colours:
        for name in sorted(rules.colour):
            attribute = getattr(attributes, name)
            value = attribute.value
            if value and attribute.confidence > 0 and captionable(value, gender) and not _contains(text, value):
                problems.append(f"{name} is {value!r} but the caption does not say so")
    else:
        found = sorted(words & rules.colour_words)
        if found:
            problems.append(f"colour words in a {modality} caption that carries no colour: {', '.join(found)}")
    return problems


class CaptionError(ValueError):
    """A caption that fails validation; ``problems`` lists the reasons."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check_caption(
    text: str, attributes: AttributeSet, kind: ObjectKind, modality: Target, *, colours: bool | None = None
) -> str:
    """``text`` if it is valid, else raise ``CaptionError`` with every problem."""
    problems = validate_caption(text, attributes, kind, modality, colours=colours)
    if problems:
        raise CaptionError(problems)
    return text


def _quoted_inside(text: str) -> bool:
    """Whether the outer quote characters also occur inside ``text`` (apostrophes within words do not count)."""
    inner = text[1:-1]
    for index, char in enumerate(inner):
        if char in (text[0], text[-1]):
            between_letters = 0 < index < len(inner) - 1 and inner[index - 1].isalpha() and inner[index + 1].isalpha()
            if not between_letters:
                return True
    return False


def repair_caption(text: str) -> str:
    """Remove what an LLM may wrap around a caption, and nothing else.

    It strips surrounding whitespace, code fences and a pair of quotes around the whole text (not 'a' and 'b'),
    and a leading "Caption:" ("Description:",
    "Output:", "Here is the caption:"). Inner whitespace and line breaks become single spaces. A caption that
    needs more than this is left for the validator to reject.
    """
    previous = None
    while text != previous:
        previous = text
        text = text.strip()
        text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
        text = _WRAPPERS.sub("", text, count=1)
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1] and not _quoted_inside(text):
            text = text[1:-1]
    return " ".join(text.split())


class ValidCaption(BaseModel):
    """A validated caption (the output row's text part). Construction fails with every problem when it is invalid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    kind: ObjectKind
    modality: Target
    attributes: SerializeAsAny[AttributeSet]
    colours: bool | None = None
    """Whether the caption may carry colour. None means the default for ``modality`` (see ``validate_caption``)."""

    @model_validator(mode="after")
    def _valid(self) -> ValidCaption:
        problems = validate_caption(self.text, self.attributes, self.kind, self.modality, colours=self.colours)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        """CLIP tokens, the start and end tokens included."""
        return clip_token_count(self.text)

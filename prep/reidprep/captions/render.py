"""Deterministic captions from the NEXT caption templates (Figures 8 and 9), in the style of the paper's examples.

The fused triplet caption (STMI) carries STMI's attributes only (``attributes_stmi.json``: no view, lighting, time
or clarity, as in STMI's Figure 2(b)); for a person its subject and clothing make one sentence, as there ("An adult
male is wearing a blue jacket ..."). Its LLM prompt (``llm_fusion_prompt(..., target="fused")``) is
``caption_stmi_<kind>.txt``, which asks for the paper's average length.

A phrase whose attributes are unknown is left out (the text never says "unknown"). Articles, plurals, pronouns and
capitals follow the values. The same attributes always give the same string. With ``max_tokens``, a caption longer than
that is shortened: attribute groups are dropped in a fixed order, least important first (``DROP_ORDER``); the stage
does this only with ``captions.shorten_to_clip`` and otherwise keeps the whole caption.

Visibility: a NIR or TIR caption carries no colour unless ``colours=True``. Without colour, the colour attributes
are left out and colour words are removed from open values ("white shirt" -> "shirt"). Attributes the sensor
cannot observe (TIR: illumination, capture_time) are always left out (``attribute_visibility.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reidprep.captions.merge import Merged, Target, visibility
from reidprep.captions.validate import CLIP_CONTEXT, captionable, clip_token_count
from reidschemas import AttributeSet, ObjectKind, load_stmi_set
from reidschemas.resources import read_text

Values = dict[str, str | None]

DROP_ORDER: dict[ObjectKind, tuple[tuple[str, ...], ...]] = {
    # Capture conditions go first, then details and accessories. Identity comes next. Colours go last: the
    # validator requires every known colour to appear in the caption.
    "pedestrian": (
        ("target_clarity",),
        ("illumination",),
        ("capture_time",),
        ("footwear_style",),
        ("hair_style",),
        ("glasses",),
        ("holding",),
        ("suitcase",),
        ("handbag",),
        ("footwear",),
        ("hair_length",),
        ("view",),
        ("age",),
        ("carrying", "backpack"),
        ("lower_clothing",),
        ("upper_clothing",),
        ("gender",),
        ("lower_clothing_color",),
        ("upper_clothing_color",),
    ),
    # The template's optional sections go first, in reverse order. Capture conditions come next, then wear and
    # state, then shapes.
    "vehicle": (
        ("exhaust_type",),
        ("roof_rack",),
        ("spoiler",),
        ("side_mirrors", "side_mirror_condition"),
        ("license_plate",),
        ("target_clarity",),
        ("illumination", "capture_time"),
        ("headlights_condition",),
        ("roof_condition",),
        ("tires_condition",),
        ("bumper_condition",),
        ("window_condition",),
        ("exterior_condition",),
        ("tire_size",),
        ("tires_type",),
        ("front_grille_edges",),
        ("window_style",),
        ("taillights_shape",),
        ("roof_type",),
        ("front_grille_shape",),
        ("headlights_shape",),
        ("view",),
        ("branding",),
        ("vehicle_type",),
        ("color",),
    ),
}
"""Attribute groups that the shortening drops, in this order, until the caption fits. Every attribute is listed."""

# Phrase tables: a template value -> its wording. Values that are missing here are used as they are.
_PRONOUN = {"male": "he", "female": "she"}  # anything else, unknown included: "the person"
_VEHICLE_VIEW = {"diagonal": "a diagonal angle"}  # else "the <view>"
_HEADLIGHTS_STATE = {"on": "lit", "off": "unlit"}
_ROOF_TYPE = {"dome": "domed"}
_PRESENT = {"present": True, "not present": False}
_EXHAUST = {"single": "a single exhaust pipe", "dual": "dual exhaust pipes", "hidden": "a hidden exhaust"}
_MASS_NOUNS = {"luggage", "baggage", "clothing", "footwear", "gear", "equipment", "sportswear", "outerwear", "water"}
_AN_PREFIXES = ("hour", "honest", "honor", "honour", "heir")
_A_PREFIXES = ("uni", "use", "usu", "uti", "ure", "one", "once", "eu", "ewe")
_AN_LETTERS = set("AEFHILMNORSX")  # initialisms said letter by letter: an SUV, an MG, a BMW


@dataclass(frozen=True)
class Rendered:
    text: str
    tokens: int | None
    """CLIP tokens (start and end included), or None when the length was not checked."""
    dropped: tuple[str, ...] = ()
    """Known attributes that the shortening left out to fit ``max_tokens``."""


# --- small English helpers -----------------------------------------------------------------------------------------


def _article(phrase: str) -> str:
    word = phrase.split()[0]
    lower = word.lower()
    if len(word) > 1 and word.isalpha() and word.isupper():
        return "an" if word[0] in _AN_LETTERS else "a"
    if lower.startswith(_AN_PREFIXES):
        return "an"
    if lower.startswith(_A_PREFIXES):
        return "a"
    return "an" if lower[:1] in "aeiou" else "a"


def _is_plural(phrase: str) -> bool:
    head = phrase.split(" of ")[0].split()[-1].lower()
    return head in _MASS_NOUNS or (head.endswith("s") and not head.endswith(("ss", "us", "is")))


def _noun_phrase(phrase: str) -> str:
    """``phrase`` with an indefinite article, unless it is plural or a mass noun ("jeans", "luggage")."""
    return phrase if _is_plural(phrase) else f"{_article(phrase)} {phrase}"


def _strip_article(phrase: str) -> str:
    return re.sub(r"^(?:a|an|the|some)\s+", "", phrase, flags=re.IGNORECASE)


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _words(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _clean(value: str, *, keep_case: bool) -> str:
    """Trim punctuation and a leading article. Lower-case each word, but keep initialisms (SUV).

    With ``keep_case`` (brand names) only the punctuation is trimmed.
    """
    value = value.strip().strip(".,;:!\"'").strip()
    if keep_case:
        return value
    value = _strip_article(value)
    return " ".join(word if len(word) > 1 and word.isupper() else word.lower() for word in value.split())


# --- the two templates ---------------------------------------------------------------------------------------------


def _pedestrian(v: Values, fused: bool) -> str:
    gender, age = v["gender"], v["age"]
    pronoun = _PRONOUN.get(gender or "", "the person")
    if gender in ("male", "female"):
        subject = f"{gender} {age}" if age in ("child", "teenager") else _words(age, gender)
    elif gender:
        subject = f"{gender} {age or 'person'}"
    else:
        subject = age or "person"
    first = f"{_article(subject)} {subject}"
    if v["view"]:
        first += f" seen from the {v['view']}"
    if v["capture_time"]:
        first += f" during {v['capture_time']}"
    if v["illumination"]:
        first += f" in {v['illumination']} lighting"
    sentences = [_sentence(first)]

    upper = _words(v["upper_clothing_color"], v["upper_clothing"] or (v["upper_clothing_color"] and "top"))
    lower = _words(v["lower_clothing_color"], v["lower_clothing"] or (v["lower_clothing_color"] and "bottoms"))
    feet = _words(v["footwear_style"], v["footwear"] or (v["footwear_style"] and "footwear"))
    clothes = " with ".join(_noun_phrase(part) for part in (upper, lower) if part)
    if clothes and feet:
        clothes += f", paired with {_noun_phrase(feet)}"
    elif feet:
        clothes = _noun_phrase(feet)
    if clothes and fused and not (v["view"] or v["capture_time"] or v["illumination"]):  # STMI: one sentence
        sentences = [_sentence(f"{first} is wearing {clothes}")]
    elif clothes:
        sentences.append(_sentence(f"{pronoun} is wearing {clothes}"))

    hair = _words(v["hair_length"], v["hair_style"])
    glasses = {"wearing glasses": "is wearing glasses", "not": "is not wearing glasses"}.get(v["glasses"] or "")
    if hair and glasses:
        sentences.append(_sentence(f"{hair} hair and {pronoun} {glasses}"))
    elif hair:
        sentences.append(_sentence(f"{pronoun} has {hair} hair"))
    elif glasses:
        sentences.append(_sentence(f"{pronoun} {glasses}"))

    nothing = visibility("pedestrian").negative
    carried: list[str] = []
    for item in (
        v["carrying"],
        "handbag" if v["handbag"] == "carrying handbag" else None,
        "backpack" if v["backpack"] == "carrying backpack" else None,
    ):
        item = _strip_article(item) if item else None
        if item and not nothing(item) and item.lower() not in {c.lower() for c in carried}:
            carried.append(item)
    dragging = v["suitcase"] == "dragging"
    if dragging:
        carried = [item for item in carried if item.lower() != "suitcase"]
    held = _strip_article(v["holding"]) if v["holding"] else None
    actions = []
    if carried:
        actions.append("carrying " + _join([_noun_phrase(item) for item in carried]))
    if held and not nothing(held) and held.lower() not in {c.lower() for c in carried}:
        actions.append(f"holding {_noun_phrase(held)}")
    if dragging:
        actions.append("dragging a suitcase")
    if actions:
        sentences.append(_sentence(f"{pronoun} is {_join(actions)}"))

    if v["target_clarity"]:
        sentences.append(_sentence(f"the image appears {v['target_clarity']}"))
    return " ".join(sentences)


def _vehicle(v: Values, fused: bool) -> str:
    subject = _words(v["color"], v["branding"], v["vehicle_type"] or "vehicle")
    first = f"{_article(subject)} {subject}"
    if v["view"]:
        first += f" viewed from {_VEHICLE_VIEW.get(v['view'], 'the ' + v['view'])}"
    light = _words(v["illumination"], v["capture_time"])
    if light:
        first += f" in {light} light"
    if v["target_clarity"]:
        first += f" (image appears {v['target_clarity']})"
    sentences = [_sentence(first)]

    windows = _words(v["window_condition"], v["window_style"])
    if v["exterior_condition"] and windows:
        sentences.append(_sentence(f"the vehicle looks {v['exterior_condition']}, with {windows} windows"))
    elif v["exterior_condition"]:
        sentences.append(_sentence(f"the vehicle looks {v['exterior_condition']}"))
    elif windows:
        sentences.append(_sentence(f"the vehicle has {windows} windows"))

    state = v["headlights_condition"]
    lights = [
        _words(_HEADLIGHTS_STATE.get(state or "", state), v["headlights_shape"]) + " headlights"
        if state or v["headlights_shape"]
        else "",
        f"{v['taillights_shape']} taillights" if v["taillights_shape"] else "",
    ]
    grille = _words(v["front_grille_shape"], "grille")
    grille = f"{_article(grille)} {grille}" + (
        f" with {v['front_grille_edges']} edges" if v["front_grille_edges"] else ""
    )
    has_grille = bool(v["front_grille_shape"] or v["front_grille_edges"])
    lights_text = _join([part for part in lights if part])
    if lights_text and has_grille:
        sentences.append(_sentence(f"it features {lights_text}, complemented by {grille}"))
    elif lights_text or has_grille:
        sentences.append(_sentence(f"it features {lights_text or grille}"))

    roof_type = v["roof_type"]
    if roof_type == "sunroof":
        roof = _words(v["roof_condition"], "roof with a sunroof")
    elif roof_type or v["roof_condition"]:
        roof = _words(v["roof_condition"], _ROOF_TYPE.get(roof_type or "", roof_type), "roof")
    else:
        roof = ""
    tires = _words(v["tires_condition"], v["tire_size"], v["tires_type"])
    tires = f"{tires} tires" if tires else ""
    bumpers = f"{v['bumper_condition']} bumpers" if v["bumper_condition"] else ""
    if roof and tires:
        sentences.append(_sentence(f"the {roof} sits above {tires}" + (f" with {bumpers}" if bumpers else "")))
    elif roof or tires or bumpers:
        sentences.append(_sentence("it has " + _join([p for p in (roof and _noun_phrase(roof), tires, bumpers) if p])))

    mirrors = _PRESENT.get(v["side_mirrors"] or "")
    if mirrors is False:
        sentences.append("It has no side mirrors.")
    elif v["side_mirror_condition"]:
        sentences.append(_sentence(f"side mirrors are {v['side_mirror_condition']}"))
    elif mirrors:
        sentences.append("It has side mirrors.")
    if v["license_plate"]:
        sentences.append(_sentence(f"the license plate is {v['license_plate']}"))
    extras = []
    for name, noun in (("spoiler", "spoiler"), ("roof_rack", "roof rack")):
        present = _PRESENT.get(v[name] or "")
        if present is not None:
            extras.append(f"a {noun}" if present else f"no {noun}")
    if v["exhaust_type"]:
        extras.append(_EXHAUST.get(v["exhaust_type"], f"{v['exhaust_type']} exhaust pipes"))
    if extras:
        sentences.append(_sentence(f"it has {_join(extras)}"))
    return " ".join(sentences)


_RENDERERS = {"pedestrian": _pedestrian, "vehicle": _vehicle}


# --- public API ----------------------------------------------------------------------------------------------------


def _strip_colour_words(value: str, colour_words: frozenset[str]) -> str | None:
    """``value`` without the words that name a colour ("blue-striped shirt" -> "shirt"), or None if none is left."""
    words = [w for w in value.split() if not set(re.findall(r"[a-z]+", w.lower())) & colour_words]
    return " ".join(words) or None


def caption_values(
    attributes: AttributeSet, kind: ObjectKind, target: Target, *, colours: bool | None = None
) -> Values:
    """The attribute values a caption of ``target`` uses: usable values only (confidence > 0), cleaned.

    Hidden attributes are set to None, and so are values that no valid caption can hold (``captionable``). Without
    colours, colour words are also stripped from open values.
    """
    if type(attributes).kind != kind:
        raise ValueError(f"attributes are {type(attributes).kind!r}, but kind={kind!r}")
    rules = visibility(kind)
    colours = target in ("rgb", "composite", "fused") if colours is None else colours
    hidden = rules.hidden(target, colours=colours)
    gender = getattr(attributes, "gender", None)
    gender = gender.value if gender is not None and gender.confidence > 0 else None
    values: Values = {}
    for name in type(attributes).model_fields:
        attribute = getattr(attributes, name)
        text = None
        if attribute.value and attribute.confidence > 0 and name not in hidden and captionable(attribute.value, gender):
            text = _clean(attribute.value, keep_case=name == "branding") or None
            if text and not colours:
                text = _strip_colour_words(text, rules.colour_words)
        values[name] = text
    return values


def render(
    attributes: AttributeSet | Merged,
    kind: ObjectKind,
    target: Target,
    *,
    colours: bool | None = None,
    max_tokens: int | None = CLIP_CONTEXT,
) -> Rendered:
    """Render ``kind``'s caption template for ``target`` (a view or ``"fused"``), shortened to ``max_tokens``.

    ``colours``: whether the caption carries colour. None means yes for rgb, composite and fused, and no for nir
    and tir; pass ``captions.colours_in_infrared_captions`` for NIR/TIR. ``max_tokens=None`` skips the CLIP length
    check, so open_clip is not imported, and renders the whole template (the stage's default: a caption longer than
    CLIP's context is kept and truncated at tokenisation). A caption that still does not fit after every group in
    ``DROP_ORDER`` is dropped comes back too long (only with absurdly long open values); it is kept too.
    """
    if isinstance(attributes, Merged):
        attributes = attributes.attributes
    values = caption_values(attributes, kind, target, colours=colours)
    fused = target == "fused"
    text = _RENDERERS[kind](values, fused)
    if max_tokens is None:
        return Rendered(text, None)
    tokens = clip_token_count(text)
    dropped: list[str] = []
    for group in DROP_ORDER[kind]:
        if tokens <= max_tokens:
            break
        known = [name for name in group if values[name] is not None]
        if not known:
            continue
        for name in known:
            values[name] = None
        dropped.extend(known)
        text = _RENDERERS[kind](values, fused)
        tokens = clip_token_count(text)
    return Rendered(text, tokens, tuple(dropped))


def render_caption(
    attributes: AttributeSet | Merged,
    kind: ObjectKind,
    modality: Target,
    *,
    colours: bool | None = None,
    max_tokens: int | None = CLIP_CONTEXT,
) -> str:
    """The caption text of ``render`` (same arguments)."""
    return render(attributes, kind, modality, colours=colours, max_tokens=max_tokens).text


def _attribute_lines(attributes: AttributeSet | Merged, indent: str, names: Sequence[str] | None = None) -> str:
    """``{name: {"value", "confidence"}}`` with one attribute per line, like the attribute template's skeleton.

    ``names``: only these attributes (all when None)."""
    if isinstance(attributes, Merged):
        attributes = attributes.attributes
    lines = []
    for name in type(attributes).model_fields if names is None else names:
        attribute = getattr(attributes, name)
        entry = {"value": attribute.value, "confidence": attribute.confidence}
        lines.append(f"{indent}  {json.dumps(name)}: {json.dumps(entry, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + f"\n{indent}}}"


def llm_fusion_prompt(
    attributes: AttributeSet | Merged | Mapping[str, AttributeSet | Merged],
    kind: ObjectKind,
    *,
    target: Target | None = None,
) -> str:
    """The ``--fusion llm`` prompt: a caption template verbatim, then the attribute JSON.

    For a modality (``target`` a view, or None) the template is NEXT's Figure 8/9 and every attribute is sent. For
    ``target="fused"`` it is STMI's (``caption_stmi_<kind>.txt``, the paper's average length filled in) and only
    STMI's attributes are sent, so the LLM has no view, lighting or clarity to mention. A single set is sent as
    ``{name: {"value", "confidence"}}``. A mapping (e.g. ``{"rgb": ..., "nir": ...}``, the "JSON datasets of the
    same vehicle" of Figure 9) is sent as ``{view: {name: {...}}}``. Unknown values are ``null`` with confidence 0,
    which the template tells the LLM to ignore.
    """
    if target == "fused":
        stmi = load_stmi_set(kind)
        template = read_text(f"templates/caption_stmi_{kind}.txt").strip()
        template = template.replace("{target_words}", str(stmi.target_words))
        names: Sequence[str] | None = stmi.names
    else:
        template, names = read_text(f"templates/caption_{kind}.txt").strip(), None
    items = {"": attributes} if isinstance(attributes, AttributeSet | Merged) else dict(attributes)
    for attribute_set in items.values():
        model = type(attribute_set.attributes if isinstance(attribute_set, Merged) else attribute_set)
        if model.kind != kind:
            raise ValueError(f"attributes are {model.kind!r}, but kind={kind!r}")
    if "" in items:
        data = _attribute_lines(items[""], "", names)
    else:
        parts = [f"  {json.dumps(str(view))}: {_attribute_lines(a, '  ', names)}" for view, a in items.items()]
        data = "{\n" + ",\n".join(parts) + "\n}"
    return f"{template}\n\n{data}"

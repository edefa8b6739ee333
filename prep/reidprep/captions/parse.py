"""Turning an MLLM's reply text into a validated attribute set, repairing only what is safe to repair.

Safe repairs (each recorded): a code fence or text around the JSON object; extra keys (ignored); a missing
attribute (unknown); a confidence given as a string or a percentage, or outside [0, 1] (clipped); "unknown",
"unclear" and the like (null, confidence 0, by the schema); a common synonym of a closed option ("man" -> "male",
the template's ``synonyms``). An attribute whose value is outside its closed vocabulary even then, or that has no
usable confidence, is set unknown and recorded. The whole reply is rejected, with the
reason, when it holds no JSON object or fewer than half of the template's attributes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from reidprep.captions.attributes import AttributeAnswer
from reidschemas import AttributeValue, ObjectKind, attribute_model, load_template

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
PARSER_VERSION = 2  # 2: synonyms of closed options are read as the option


class UnusableReply(ValueError):
    """The reply cannot be turned into an attribute set; the message is the ledger's reason."""


def extract_json_object(text: str) -> tuple[dict[str, Any], list[str]]:
    """The first JSON object in ``text`` and the repairs made to find it."""
    repairs: list[str] = []
    body = text.strip()
    fenced = _FENCE.search(body)
    if fenced:
        body = fenced.group(1).strip()
        repairs.append("removed a code fence")
    start = body.find("{")
    if start < 0:
        raise UnusableReply(f"no JSON object in the reply: {text[:80]!r}")
    try:
        data, end = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as exc:
        raise UnusableReply(f"malformed JSON in the reply ({exc.msg} at char {exc.pos})") from None
    if start > 0 or body[start + end :].strip():
        repairs.append("removed text around the JSON object")
    if not isinstance(data, dict):
        raise UnusableReply(f"the reply's JSON is a {type(data).__name__}, not an object")
    return data, repairs


def _confidence(raw: Any) -> tuple[float | None, str | None]:
    """A confidence in [0, 1] from a number or numeric string, with a repair note; None when unusable."""
    if isinstance(raw, bool) or raw is None:
        return None, "no confidence"
    text = str(raw).strip()
    percent = text.endswith("%")
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        return None, f"confidence {raw!r} is not a number"
    if math.isnan(value):
        return None, "confidence is NaN"
    note = None if isinstance(raw, (int, float)) else f"confidence {raw!r} read as a number"
    if percent or 2.0 <= value <= 100.0:  # 85 means 85 %; 1.2 is just out of range
        value /= 100.0
        note = f"confidence {raw!r} read as a percentage"
    if not 0.0 <= value <= 1.0:
        note = f"confidence {raw!r} clipped to [0, 1]"
        value = min(1.0, max(0.0, value))
    return value, note


def parse_attributes(text: str, kind: ObjectKind) -> AttributeAnswer:
    """Validate a reply against ``kind``'s template; raise ``UnusableReply`` when it cannot be used."""
    data, repairs = extract_json_object(text)
    template = load_template(kind)
    names = template.names
    present = [name for name in names if name in data]
    if len(present) * 2 < len(names):
        raise UnusableReply(f"only {len(present)} of the {len(names)} {kind} attributes are in the reply")
    extra = sorted(set(data) - set(names))
    if extra:
        repairs.append(f"ignored keys not in the template: {', '.join(extra)}")
    missing = [name for name in names if name not in data]
    if missing:
        repairs.append(f"missing attributes set unknown: {', '.join(missing)}")
    values: dict[str, AttributeValue] = {}
    for name in names:
        values[name] = AttributeValue(value=None, confidence=0.0)
        entry = data.get(name)
        if entry is None:
            continue
        if not isinstance(entry, dict) or "value" not in entry:
            repairs.append(f"{name}: not a {{value, confidence}} object; set unknown")
            continue
        value = entry["value"]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif value is not None and not isinstance(value, str):
            value = str(value)
        confidence, note = _confidence(entry.get("confidence"))
        if note:
            repairs.append(f"{name}: {note}")
        if confidence is None:
            if value is not None:
                repairs.append(f"{name}: set unknown for lack of a confidence")
            continue
        spec = template.spec(name)
        candidate = AttributeValue(value=value, confidence=confidence)
        if candidate.value is not None and spec.options is not None:
            canonical = spec.canonical(candidate.value)
            if canonical is None:
                repairs.append(f"{name}: {candidate.value!r} is not one of {spec.options_text}; set unknown")
                continue
            if canonical.lower() != candidate.value.lower():
                repairs.append(f"{name}: {candidate.value!r} read as {canonical!r}")
        values[name] = candidate
    try:
        attributes = attribute_model(kind)(**values)
    except ValidationError as exc:  # not expected after the checks above; keep the reason if it happens
        raise UnusableReply(f"attributes do not validate: {exc.errors()[0]['msg']}") from None
    return AttributeAnswer(attributes=attributes, repairs=tuple(repairs))

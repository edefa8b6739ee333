"""CLIP token counts without torch equal open_clip's own tokenizer's, and the fast validation equals its regexes."""

from __future__ import annotations

import random
import subprocess
import sys

from reidprep.captions import clip_tokens
from reidprep.captions.render import render
from reidprep.captions.validate import _PLACEHOLDER, _VAGUE, validate_caption
from reidschemas import AttributeSet, ObjectKind, attribute_model, load_template

_PIECES = (
    "a photo of a man in a dark-blue coat, carrying a backpack; he's 1.80 m tall. "
    "é ß ﬁ ０１ ’ “ ” — & &amp; &amp;amp; &lt;b&gt; <start_of_text> <end_of_text> !!<end_of_text>x 's 'S I'LL don't "
    "\n \t \r \x00 \x0b \x1c \x1b[31m 中文 😀 Ã© â€™ \u00a0 \u2028 \u212a n/a [x] {y} a_b supercalifragilistic 3.14159"
)


def _random_set(kind: ObjectKind, rng: random.Random) -> AttributeSet:
    """Each attribute unknown or one of its template options (open ones: a few free words), at random."""
    data: dict[str, dict[str, object]] = {}
    for spec in load_template(kind).specs:
        if rng.random() < 0.3:
            continue
        value = rng.choice(spec.options) if spec.options else rng.choice(["striped", "dark-blue", "a red logo"])
        data[spec.name] = {"value": value, "confidence": 0.9}
    return attribute_model(kind).model_validate(
        {name: data.get(name, {"value": None, "confidence": 0.0}) for name in attribute_model(kind).model_fields}
    )


def _texts(seed: int) -> list[str]:
    """Captions rendered from random attributes, and random text mixing the tricky pieces above with
    printable ASCII and arbitrary code points."""
    rng = random.Random(seed)
    words = _PIECES.split(" ") + list(_PIECES)
    texts = ["", " ", "a photo of a cat", "  A  Photo\nOF a CAT  "]
    kinds: tuple[ObjectKind, ...] = ("pedestrian", "vehicle")
    for kind in kinds:
        for _ in range(100):
            attributes = _random_set(kind, rng)
            texts += [render(attributes, kind, t, max_tokens=None).text for t in ("rgb", "nir", "tir", "fused")]
    texts += [
        "".join(rng.choice(words) + rng.choice(("", " ")) for _ in range(rng.randint(0, 40))) for _ in range(2000)
    ]
    texts += ["".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 90))) for _ in range(2000)]
    texts += ["".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 40))) for _ in range(1000)]
    return texts


def test_counts_equal_open_clips_tokenizer():
    import open_clip  # a required dependency (the oracle); imported here, not at collection

    reference = open_clip.get_tokenizer("ViT-B-16")
    texts = _texts(0)
    mine = [clip_tokens.clip_token_count(t) for t in texts]
    expected = [len(reference.encode(t)) + 2 for t in texts]
    wrong = [(t, m, e) for t, m, e in zip(texts, mine, expected, strict=True) if m != e]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:3]}"
    assert max(expected) > 77  # long captions are among them


def test_counting_imports_neither_open_clip_nor_torch():
    code = (
        "import sys; from reidprep.captions.validate import clip_token_count; "
        "assert clip_token_count('a photo of a cat') == 7; "
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _regex_only(text: str) -> list[str]:
    """The vague-word and placeholder problems as the two regexes alone find them (no substring pre-checks)."""
    problems = []
    vague = sorted({m.group(0).lower() for m in _VAGUE.finditer(text)})
    if vague:
        problems.append(f"says {', '.join(repr(v) for v in vague)} instead of leaving the phrase out")
    leftovers = sorted({m.group(0) for m in _PLACEHOLDER.finditer(text)})
    if leftovers:
        problems.append(f"template brackets or placeholders left: {' '.join(leftovers)}")
    return problems


def test_validation_pre_checks_change_no_verdict():
    unknown = attribute_model("vehicle").unknown()  # no attribute known: only the text's own problems remain
    extra = ["UNKNOWN colour", "un\u212anown", "N/A", "Unclear view", "{brand}", "a wheel_cap", "x|y", "unknowable"]
    found = 0
    for text in _texts(1) + extra:
        problems = validate_caption(text, unknown, "vehicle", "rgb")
        if text.strip():
            assert problems == _regex_only(text), text
            found += bool(problems)
    assert found > 100  # the corpus exercises both verdicts

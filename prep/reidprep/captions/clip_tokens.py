"""CLIP token counts, equal to ``len(open_clip.get_tokenizer("ViT-B-16").encode(text)) + 2``, without torch.

open_clip's tokenizer lives in a package whose import loads torch and torchvision (5-20 s), and it cleans and
splits every text in Python (about 190 us per caption). Counting needs neither. This module does the same steps
with the same data:

1. clean: ``ftfy.fix_text``, HTML unescaped twice, whitespace collapsed, lower case (open_clip's ``_clean_lower``).
   Printable ASCII without ``&`` skips ftfy and HTML, which leave such text unchanged;
2. split with open_clip's pattern (the ``regex`` package, as open_clip). No match spans a space, so the count of a
   text is the sum over its space-separated words, and each distinct word is counted once (``_word_tokens``,
   cached): captions repeat a small vocabulary, so a caption costs a split and a few dictionary look-ups;
3. byte-pair-encode each piece with open_clip's own merge list (``bpe_simple_vocab_16e6.txt.gz``, read from the
   installed package without importing it) through the ``tokenizers`` library's BPE, the implementation
   Hugging Face's CLIP tokenizers use; open_clip's special tokens count one each.

``tests/prep/test_clip_tokens.py`` checks equality with open_clip on captions and on random Unicode text.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import regex

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_PATTERN = regex.compile(
    "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
)  # open_clip.tokenizer.SimpleTokenizer.pat
_MERGES = 49152 - 256 - 2  # the merges open_clip uses: lines 1 .. 48894 of the vocabulary file


def _byte_chars() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (open_clip's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


_BYTE_CHARS = _byte_chars()


def _vocabulary_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locates the package; does not import it (nor torch)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("open_clip_torch is not installed; it provides CLIP's BPE vocabulary")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


@cache
def _bpe() -> Any:
    """CLIP's byte-pair encoder: open_clip's vocabulary and merges in a ``tokenizers`` BPE model."""
    from tokenizers.models import BPE

    with gzip.open(_vocabulary_file()) as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : _MERGES + 1]
    merges = [(first, second) for first, second in (line.split() for line in lines)]
    chars = list(_BYTE_CHARS.values())
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    return BPE({token: i for i, token in enumerate(vocab)}, merges, end_of_word_suffix="</w>")


def clean(text: str) -> str:
    """open_clip's ``_clean_lower``: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


@lru_cache(maxsize=1 << 17)
def _word_tokens(word: str) -> int:
    """BPE tokens of one cleaned, space-free word (several pieces of the pattern)."""
    count = 0
    for piece in _PATTERN.findall(word):
        if piece in SPECIAL_TOKENS:
            count += 1
        else:
            count += len(_bpe().tokenize("".join(_BYTE_CHARS[b] for b in piece.encode("utf-8"))))
    return count


def clip_token_count(text: str) -> int:
    """CLIP ViT-B-16's token count of ``text``, the start and end tokens included (open_clip's count)."""
    return sum(map(_word_tokens, clean(text).split(" "))) + 2

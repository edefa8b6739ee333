"""Caption tokenisation with CLIP's BPE tokenizer (open_clip), 77 tokens, end-of-text kept on truncation."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

__all__ = ["CONTEXT_LENGTH", "EOT_TOKEN_ID", "SOT_TOKEN_ID", "eot_positions", "tokenize_captions"]

CONTEXT_LENGTH = 77
SOT_TOKEN_ID = 49406  # <|startoftext|> in CLIP's vocabulary (checked against the tokenizer in the tests)
EOT_TOKEN_ID = 49407  # <|endoftext|>, the highest id: CLIP pools the text feature at tokens.argmax(-1)

# A caption that spells a special token would otherwise put an EOT id before the real end.
_SPECIAL = re.compile(r"<\|(?:startoftext|endoftext)\|>")


@functools.cache
def _tokenizer() -> SimpleTokenizer:
    """open_clip's tokenizer for ViT-B-16 (the package's BPE vocabulary; no network), built once per process."""
    from open_clip.tokenizer import SimpleTokenizer  # heavy import, only when captions are tokenised

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def tokenize_captions(texts: Sequence[str | None], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Captions -> (n, context_length) int64 CLIP tokens: [SOT, ..., EOT, 0, 0, ...].

    A caption longer than ``context_length - 2`` BPE tokens is truncated and its last token is set to EOT (open_clip
    3.x already does this; it is enforced here so a tokenizer change cannot silently drop it). ``None`` and empty or
    whitespace-only captions give the tokens of the empty string, [SOT, EOT, 0, ...]: a valid text whose feature
    the model can still compute; callers that must ignore missing captions keep their own flag.
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (SOT + EOT), got {context_length}")
    tokenizer = _tokenizer()
    clean = [_SPECIAL.sub(" ", text).strip() if text else "" for text in texts]
    tokens = tokenizer(clean, context_length=context_length) if clean else torch.zeros(0, context_length)
    tokens = tokens.long()  # (n, context_length)
    truncated = tokens[:, -1] != 0  # a full row: the caption filled (or overflowed) the context
    tokens[truncated, -1] = tokenizer.eot_token_id
    return tokens


def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
    """(n, L) tokens -> (n,) int64 index of the first end-of-text token (where CLIP pools the text feature).

    Equal to CLIP's ``tokens.argmax(-1)``, since EOT is the highest id, but does not depend on that; a row without
    an EOT raises ``ValueError``.
    """
    is_eot = tokens == EOT_TOKEN_ID  # (n, L)
    if not bool(is_eot.any(dim=-1).all()):
        raise ValueError("every token row needs an end-of-text token")
    return is_eot.to(torch.int8).argmax(dim=-1)

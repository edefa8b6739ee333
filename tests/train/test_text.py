"""Caption tokenisation: 77 CLIP tokens, EOT kept on truncation, None as the empty caption."""

from __future__ import annotations

import pytest
import torch

from reidtrain.data.text import EOT_TOKEN_ID, SOT_TOKEN_ID, eot_positions, tokenize_captions


def test_special_ids_match_open_clip():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (SOT_TOKEN_ID, EOT_TOKEN_ID)


def test_long_caption_is_truncated_with_eot_last():
    tokens = tokenize_captions(["a person in a red jacket " * 30])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.int64
    assert int(tokens[0, 0]) == SOT_TOKEN_ID and int(tokens[0, -1]) == EOT_TOKEN_ID
    assert int((tokens == EOT_TOKEN_ID).sum()) == 1 and int((tokens == 0).sum()) == 0
    assert int(eot_positions(tokens)[0]) == 76


def test_short_caption_is_padded_with_zeros():
    tokens = tokenize_captions(["a man in black"])
    position = int(eot_positions(tokens)[0])
    assert int(tokens[0, 0]) == SOT_TOKEN_ID and position == 5  # SOT + 4 words
    assert (tokens[0, position + 1 :] == 0).all() and (tokens[0, 1:position] > 0).all()


def test_none_and_empty_are_the_empty_caption():
    tokens = tokenize_captions([None, "", "   ", "a car"])
    assert tokens.shape == (4, 77)
    for row in range(3):
        assert tokens[row, :2].tolist() == [SOT_TOKEN_ID, EOT_TOKEN_ID] and (tokens[row, 2:] == 0).all()
    assert eot_positions(tokens).tolist() == [1, 1, 1, 3]


def test_special_token_text_is_not_an_early_eot():
    tokens = tokenize_captions(["a <|endoftext|> bus"])
    assert int((tokens == EOT_TOKEN_ID).sum()) == 1


def test_eot_positions_agree_with_clip_argmax_and_batch_shapes():
    tokens = tokenize_captions(["x " * 200, "a white van", None], context_length=77)
    assert torch.equal(eot_positions(tokens), tokens.argmax(dim=-1))
    assert tokenize_captions([]).shape == (0, 77)
    assert tokenize_captions(["a b c d e f"], context_length=5)[0].tolist()[-1] == EOT_TOKEN_ID
    with pytest.raises(ValueError):
        eot_positions(torch.zeros(2, 77, dtype=torch.long))


WORDS = ["a", "red", "sedan", "with", "round", "headlights,", "roof-rack", "tinted", "windows", "grey-blue", "kerb"]


@pytest.mark.parametrize("length", [10, 73, 74, 75, 76, 92, 113, 300])
def test_tokens_are_the_captions_first_75_bpe_tokens_then_eot(length: int):
    """Property against open_clip's BPE encoder (the oracle): for any caption, the row is SOT, its first 75 BPE
    tokens, EOT, then zero padding. A caption longer than CLIP's context (NEXT's vehicle template: about 92 tokens,
    MSVR310's released captions up to 113) is truncated, never rejected, and its end-of-text is kept."""
    import random

    import open_clip

    encode = open_clip.get_tokenizer("ViT-B-16").encode
    rng = random.Random(length)
    words: list[str] = []
    while len(encode(" ".join(words))) < length:
        words.append(rng.choice(WORDS))
    text = " ".join(words)
    bpe = encode(text)
    row = tokenize_captions([text])[0].tolist()
    body = bpe[:75]
    assert row == [SOT_TOKEN_ID, *body, EOT_TOKEN_ID] + [0] * (75 - len(body))
    assert int(eot_positions(torch.tensor([row]))[0]) == len(body) + 1

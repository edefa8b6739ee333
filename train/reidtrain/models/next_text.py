"""NEXT's text side (section 3.1, Eq. 4-5 inputs): sentence splitting, per-expert sentence sampling, frozen encoding.

Captions are split into sentences; during training every semantic expert draws its own random subset of each
modality's sentences (Eq. 4, "Sampling is a random probability distribution"), at test time every expert reads the
whole caption. Randomness comes from torch's global RNG (or an explicit ``generator``), which the trainer seeds and
saves in ``last.pt``, so a resumed run draws the same subsets as an uninterrupted one.

ASSUMED (the paper does not name the distribution): ``"random_subset"`` by default: a subset size k uniform in
1..n, then a uniform k-subset, sentences kept in caption order. ``"bernoulli"`` keeps each sentence with probability
``keep_prob`` (at least one), ``"single"`` one uniform sentence, ``"all"`` the whole caption (no sampling).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from reidtrain.data.text import eot_positions, tokenize_captions

__all__ = [
    "SENTENCE_SAMPLING",
    "SentenceSampling",
    "encode_texts",
    "expert_captions",
    "sample_sentences",
    "split_sentences",
]

SentenceSampling = Literal["random_subset", "bernoulli", "single", "all"]
SENTENCE_SAMPLING: tuple[str, ...] = ("random_subset", "bernoulli", "single", "all")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a split after ".", "!" or "?" followed by white space


@functools.lru_cache(maxsize=65536)
def _split(caption: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in _SENTENCE_END.split(caption.strip()) if part.strip())


def split_sentences(caption: str | None) -> list[str]:
    """A caption -> its sentences, ``X_{T,m} = {s^(1), ..., s^(n_m)}`` (section 3.1); None or blank -> []."""
    return list(_split(caption)) if caption else []


def sample_sentences(
    sentences: Sequence[str],
    mode: SentenceSampling = "random_subset",
    keep_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[str]:
    """One random subset ``hat X_{T,m}^(i) ~ Sampling(X_{T,m})`` (Eq. 4), in caption order; see the module docstring.

    Draws from ``generator`` (torch's global RNG when None). An empty list stays empty and draws nothing.
    """
    n = len(sentences)
    if mode not in SENTENCE_SAMPLING:
        raise ValueError(f"unknown sentence sampling {mode!r}; choose one of {SENTENCE_SAMPLING}")
    if n == 0 or mode == "all":
        return list(sentences)
    if mode == "random_subset":
        k = int(torch.randint(1, n + 1, (1,), generator=generator))
        chosen = torch.randperm(n, generator=generator)[:k].sort().values
    elif mode == "bernoulli":
        keep = torch.rand(n, generator=generator) < keep_prob  # (n,) bool
        if not bool(keep.any()):
            keep[torch.randint(n, (1,), generator=generator)] = True
        chosen = keep.nonzero().flatten()
    else:  # "single"
        chosen = torch.randint(n, (1,), generator=generator)
    return [sentences[i] for i in chosen.tolist()]


def expert_captions(
    captions: Mapping[str, Sequence[str]],
    modalities: Sequence[str],
    num_experts: int,
    sample: bool,
    mode: SentenceSampling = "random_subset",
    keep_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[dict[str, list[str]]]:
    """The text each semantic expert reads: ``[{modality: B strings}] * num_experts`` (Eq. 4).

    ``sample=True`` (training): an independent subset per expert, modality and sample, drawn in that loop order.
    ``sample=False`` (test): every expert gets the whole caption. A modality absent from ``captions`` reads "".
    """
    sizes = {len(texts) for texts in captions.values()}
    if len(sizes) > 1:
        raise ValueError(f"caption lists differ in length: {sorted(sizes)}")
    batch = sizes.pop() if sizes else 0
    split = {m: [split_sentences(text) for text in captions.get(m, [""] * batch)] for m in modalities}
    out: list[dict[str, list[str]]] = []
    for _ in range(num_experts):
        texts: dict[str, list[str]] = {}
        for m in modalities:
            if sample:
                texts[m] = [" ".join(sample_sentences(s, mode, keep_prob, generator)) for s in split[m]]
            else:
                texts[m] = [" ".join(s) for s in split[m]]
        out.append(texts)
    return out


@torch.no_grad()
def encode_texts(encoder: torch.nn.Module, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Texts -> EOT-pooled features ``f^cls_{T,m}`` (n, D) of a frozen ``ClipTextEncoder`` (section 3 overview).

    Each distinct text is tokenised and encoded once. Token rows are cut after the batch's last end-of-text token:
    CLIP's causal mask makes the pooled feature independent of the padding after it, so this changes nothing but
    the cost.
    """
    unique = list(dict.fromkeys(texts))
    tokens = tokenize_captions(unique)  # (u, 77)
    length = int(eot_positions(tokens).max()) + 1 if len(unique) else 1
    features = encoder(tokens[:, :length].to(device))  # (u, D)
    position = {text: i for i, text in enumerate(unique)}
    index = torch.tensor([position[text] for text in texts], device=features.device, dtype=torch.long)
    return features[index]  # (n, D)

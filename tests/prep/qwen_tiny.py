"""A tiny random-initialised Qwen2.5-VL (and Qwen2-VL) for tests (no weights or tokenizers can be downloaded).

Everything is built offline and saved with ``save_pretrained`` like a real checkpoint folder:

- tokenizer: a byte-level BPE ``Qwen2Tokenizer`` over the 256 byte symbols plus a few English merges, with the
  special tokens Qwen-VL uses (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``,
  ``<|vision_end|>``, ``<|image_pad|>``, ``<|video_pad|>``, ...) and Qwen2-VL's own chat template;
- image processor: ``Qwen2VLImageProcessor`` capped at 28*28*8 pixels, so an image becomes at most 32 patches
  (8 merged tokens for the language model);
- model: ``Qwen2_5_VLConfig`` with a 64-wide, 2-layer text model (4 heads of 16, ``mrope_section`` [2, 3, 3] = half
  the head width) and a 32-wide, 2-block vision tower (patch 14, merge 2, one windowed and one full-attention block).

``make_tiny_qwen2vl`` builds the same for Qwen2-VL (its vision tower: 32 wide, merger into 64).
About 0.2 M parameters (820 KB on disk); on one CPU thread, 20 greedy tokens for 3 prompts take well under 0.1 s
(the first call in a process pays a few seconds of transformers imports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Qwen2-VL's chat template (the one shipped with Qwen/Qwen2-VL-*-Instruct and Qwen2.5-VL): image parts become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands to one pad token per merged patch.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# A few merges over byte-level symbols ("Ġ" is the space byte), enough to exercise BPE; unknown words fall back
# to single bytes, which every byte-level vocabulary covers.
MERGES = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("e", "s"),
    ("Ġ", "c"),
    ("o", "r"),
    ("Ġ", "w"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "p"),
    ("Ġ", "o"),
    ("l", "o"),
    ("Ġc", "o"),
    ("Ġco", "lo"),
    ("Ġcolo", "r"),
    ("Ġp", "er"),
    ("Ġper", "s"),
    ("Ġpers", "on"),
]

TEXT_HIDDEN = 64
VISION_HIDDEN = 32
MAX_PIXELS = 28 * 28 * 8  # at most 8 merged tokens per image
MIN_PIXELS = 28 * 28 * 2


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable-character table (the byte-level BPE alphabet), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[byte] for byte in range(256)]


def make_tiny_tokenizer():
    """A byte-level ``Qwen2Tokenizer`` with Qwen-VL's special tokens (ids after the BPE vocabulary)."""
    from transformers import Qwen2Tokenizer

    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(MERGES),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        errors="replace",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


def make_tiny_qwen25vl(path: Path, seed: int = 0) -> Path:
    """Save a random tiny Qwen2.5-VL (model, tokenizer, processor) to ``path``; return ``path``.

    ``QwenBackend(QwenConfig(model_path=path, device="cpu"))`` loads it offline. The global RNG is left untouched.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    vision = {
        "depth": 2,
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,  # pixels: 2x2 merged tokens per attention window
        "out_hidden_size": TEXT_HIDDEN,  # the merger projects into the language model's width
        "fullatt_block_indexes": [1],  # block 0 windowed, block 1 full attention
    }
    return _save_tiny(path, seed, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, vision)


def make_tiny_qwen2vl(path: Path, seed: int = 0) -> Path:
    """The same for Qwen2-VL (its vision tower: ``embed_dim`` wide, ``hidden_size`` = the language model's width)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    vision = {
        "depth": 2,
        "embed_dim": VISION_HIDDEN,
        "hidden_size": TEXT_HIDDEN,
        "mlp_ratio": 2,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return _save_tiny(path, seed, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, vision)


def _save_tiny(
    path: Path, seed: int, config_class: type, model_class: type, processor_class: type, vision: dict[str, Any]
) -> Path:
    from transformers import GenerationConfig, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = make_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vocab_size = 64 * ((len(tokenizer) + 63) // 64)  # padded like real checkpoints (embeddings > tokenizer)
    pixels = {"size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}
    patches = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(**pixels, **patches),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels, **patches),  # required by the processor; never used
        chat_template=CHAT_TEMPLATE,
    )
    config = config_class(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,  # head width 16
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # M-RoPE: (temporal, height, width) sections of the 8 rotary frequencies (= head width / 2)
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path

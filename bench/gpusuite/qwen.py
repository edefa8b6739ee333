"""Section: attribute requests through the ``qwen`` backend, Qwen2.5-VL at the 3B and 7B configurations.

Each triplet makes four requests, one per view (RGB, NIR, TIR and the composite of the three side by side), with the
real attribute prompt (``reidprep.captions.mllm.attribute_prompt``, the NEXT template) and the image as JPEG, built by
``MLLMAttributeProvider.requests`` exactly as the captions stage builds them. The backend answers them greedily in
batches of 1, 8 and 32 requests; every request generates exactly ``tokens`` new tokens (``min_new_tokens`` =
``max_new_tokens`` in the folder's generation config, so random weights cannot stop early at an end token).

Weights are random: ``RandomQwenBackend`` builds the model from the folder's config.json directly on the device in
bf16 instead of reading safetensors (7B random weights would be 16 GB to write and read back). Everything else is
``QwenBackend``'s own code: processor, chat template, batching, left padding, decoding.

The tokenizer is the tests' byte-level BPE (``tests/prep/qwen_tiny.py``): Qwen's own tokenizer cannot be downloaded
here, and this one splits the prompt into about three times as many tokens, so prefill is heavier than with the real
tokenizer (the prompt tokens per request are reported). ``--qwen-processor DIR`` uses the processor and tokenizer
files of a real Qwen2.5-VL checkpoint folder instead (no weights are read from it).
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpusuite.common import Figure, Row, peak_memory, timed

from reidprep.captions.attributes import VIEWS, AttributeQuery, composite_image
from reidprep.captions.backends.base import ChatReply, ChatRequest
from reidprep.captions.backends.qwen_backend import QwenBackend
from reidprep.captions.mllm import MLLMAttributeProvider
from reidschemas.config import QwenConfig

# The language model and vision tower of the two checkpoints, from their config.json on the Hugging Face Hub:
# https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json and
# https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
QWEN25_VL: dict[str, dict[str, Any]] = {
    "3B": {
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 128000,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        },
        "vision": {**_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "7B": {
        "text": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 128000,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        },
        "vision": {**_VISION, "out_hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}
# preprocessor_config.json of both checkpoints: min_pixels 3136 (56x56), max_pixels 12845056; a 256x128 crop becomes
# 252x140 pixels, 18x10 patches, 45 tokens after the 2x2 merge; the 256x384 composite 126 tokens.
IMAGE_PIXELS = {"shortest_edge": 3136, "longest_edge": 12845056}


class RandomQwenBackend(QwenBackend):
    """``QwenBackend`` whose model is built from the folder's config with random weights, on the device."""

    def _load(self) -> tuple[Any, Any]:
        import transformers

        processor = transformers.AutoProcessor.from_pretrained(self.folder, local_files_only=True)
        processor.tokenizer.padding_side = "left"
        config = transformers.AutoConfig.from_pretrained(self.folder, local_files_only=True)
        with torch.device(self.device):
            model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=self.dtype)
        model.generation_config = transformers.GenerationConfig.from_pretrained(self.folder, local_files_only=True)
        return processor, model.eval()


def _full_folder(path: Path, size: str, processor_dir: Path | None) -> Path:
    """config.json (the ``size`` configuration), generation config and processor files; no weights."""
    from qwen_tiny import CHAT_TEMPLATE, make_tiny_tokenizer  # tests/prep (put on sys.path by gpu_suite.py)
    from transformers import (
        AutoProcessor,
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if processor_dir is not None:
        processor = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    else:
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(
                size=IMAGE_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
            ),
            tokenizer=make_tiny_tokenizer(),
            video_processor=Qwen2VLVideoProcessor(
                size=IMAGE_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
            ),
            chat_template=CHAT_TEMPLATE,
        )
    tokenizer = processor.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    spec = QWEN25_VL[size]
    config = Qwen2_5_VLConfig(
        text_config={
            **spec["text"],
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=spec["vision"],
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=spec["tie_word_embeddings"],
    )
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    processor.save_pretrained(path)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    ).save_pretrained(path)
    return path


def _force_length(folder: Path, tokens: int) -> None:
    """Every reply exactly ``tokens`` long: end tokens are suppressed until then (``min_new_tokens``)."""
    from transformers import GenerationConfig

    generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
    generation.min_new_tokens = tokens
    generation.max_new_tokens = tokens
    generation.save_pretrained(folder)


def attribute_requests(triplets: int, seed: int) -> list[ChatRequest]:
    """Four requests per triplet (RGB, NIR, TIR, composite) of random 256x128 person crops, the real prompt."""
    rng = np.random.default_rng(seed)
    queries = []
    for index in range(triplets):
        images = [rng.integers(0, 256, (256, 128, 3), dtype=np.uint8) for _ in range(3)]
        by_view = dict(zip(("rgb", "nir", "tir"), images, strict=True)) | {"composite": composite_image(images)}
        queries += [AttributeQuery(f"t{index}", view, "pedestrian", by_view[view]) for view in VIEWS]
    return MLLMAttributeProvider.requests(queries)


def qwen_rows(
    device: torch.device, tiny: bool, batches: tuple[int, ...], tokens: int, seed: int, processor_dir: Path | None
) -> list[Row]:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bars between the suite's lines
    rows: list[Row] = []
    sizes = ["tiny"] if tiny else list(QWEN25_VL)
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="gpu-suite-qwen-") as tmp:
            folder = Path(tmp) / f"qwen2.5-vl-{size}"
            if size == "tiny":
                from qwen_tiny import make_tiny_qwen25vl  # tests/prep

                make_tiny_qwen25vl(folder, seed=seed)
                backend_class: type[QwenBackend] = QwenBackend  # the real loading path: safetensors in the folder
            else:
                _full_folder(folder, size, processor_dir)
                backend_class = RandomQwenBackend
            _force_length(folder, tokens)
            config = QwenConfig(model_path=folder, device=device.type, dtype="auto", max_new_tokens=tokens)
            backend = backend_class(config)
            parameters = sum(p.numel() for p in backend._model.parameters())
            label = "tiny random Qwen2.5-VL (tests/prep/qwen_tiny.py)" if size == "tiny" else f"Qwen2.5-VL {size}"
            backend.batch_size = 1
            backend.generate(attribute_requests(1, seed)[:1])  # warm-up
            for batch in batches:
                backend.batch_size = batch
                requests = attribute_requests(max(1, -(-batch // len(VIEWS))), seed + batch)
                requests = requests[: max(batch, len(VIEWS))]  # batch 1: the four views of one triplet
                with peak_memory(device) as peak:
                    seconds, replies = timed(partial(backend.generate, requests), device)
                answered = [reply for reply in replies if isinstance(reply, ChatReply)]
                generated = sum(reply.output_tokens for reply in answered)
                prompt = np.mean([reply.input_tokens for reply in answered]) if answered else float("nan")
                exact = sum(reply.output_tokens == tokens for reply in answered)
                rows.append(
                    Row(
                        f"{label}: batch {batch}",
                        {
                            "requests_per_s": Figure(len(requests) / seconds, "requests/s"),
                            "tokens_per_s": Figure(generated / seconds, "generated tokens/s"),
                            "peak_memory": peak.figure,
                            "prompt_tokens": Figure(float(prompt), "tokens/request", label="prompt"),
                        },
                        note=(
                            f"{_count(parameters)} parameters, {str(backend.dtype).removeprefix('torch.')}; "
                            f"{len(requests)} requests, {exact}/{len(replies)} replies of exactly {tokens} tokens"
                        ),
                    )
                )
            del backend
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f} B" if parameters >= 1e9 else f"{parameters / 1e6:.2f} M"

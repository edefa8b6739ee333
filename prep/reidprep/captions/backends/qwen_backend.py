"""The ``qwen`` chat backend: Qwen2.5-VL or Qwen2-VL run locally with transformers, from a local folder.

The folder is what ``save_pretrained`` writes (or a Hugging Face snapshot): ``config.json`` whose ``model_type`` is
``qwen2_5_vl`` or ``qwen2_vl``, the safetensors weights, and the processor/tokenizer files. Nothing is downloaded.

Generation is greedy (``do_sample=False``, one beam; the checkpoint's ``repetition_penalty`` is kept), batched
``batch_size`` requests at a time with left padding; each request gets one user message holding its image (when it
has one) and then its prompt, in the checkpoint's chat template. Requests with and without an image can share a
batch: the processor expands each ``<|image_pad|>`` for its own image, in order. A batch is generated up to the
largest ``max_new_tokens`` of its requests (``min(request.max_tokens, max_new_tokens)``) and each reply is cut to its
own limit, which under greedy decoding equals generating it alone. Only the new tokens are decoded (special tokens
skipped); ``input_tokens`` counts the prompt including image tokens, ``output_tokens`` the new tokens up to and
including the end-of-turn token.

Failures: a batch that raises is retried one request at a time, and a request that still fails (e.g. an image that
does not decode) becomes a ``RequestFailure``. CUDA out-of-memory on a batch halves the batch size and retries the
same requests; the smaller size is kept for the rest of this backend's life (an OOM at one size usually repeats).
A single request that runs out of memory becomes a ``RequestFailure``.

``ChatRequest.response_model`` is ignored: there is no constrained decoding here, so replies are plain text that
the caller parses and repairs like any other backend's.

``identity()`` fingerprints the folder cheaply instead of hashing multi-GB weights on every run: SHA-256 over every
small text/JSON file in full (config, generation config, processor and tokenizer files, chat template, safetensors
index) plus, for each weight file, its name, size, first MiB (the safetensors header: tensor names, shapes, offsets)
and last MiB. Re-saved or re-initialised weights change it; an in-place edit of a shard's middle bytes would not.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reidprep.captions.backends.base import (
    ChatBackend,
    ChatReply,
    ChatRequest,
    FatalBackendError,
    RequestFailure,
    done_counter,
)
from reidschemas.config import QwenConfig

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}
"""Supported ``model_type`` values (config.json) -> the transformers class that loads them."""

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
_EDGE_BYTES = 1 << 20  # first/last MiB of each weight file in the fingerprint


def resolve_dtype(policy: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 on CPU; otherwise the named dtype."""
    if policy != "auto":
        return DTYPES[policy]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def folder_fingerprint(folder: Path) -> str:
    """A cheap content hash of a model folder (see the module docstring for what it covers)."""
    digest = hashlib.sha256()
    for path in sorted(item for item in folder.iterdir() if item.is_file() and not item.name.startswith(".")):
        name = path.name
        if name.endswith(WEIGHT_SUFFIXES):
            size = path.stat().st_size
            digest.update(f"weights {name} {size}\n".encode())
            with path.open("rb") as handle:
                digest.update(handle.read(_EDGE_BYTES))
                handle.seek(max(0, size - _EDGE_BYTES))
                digest.update(handle.read(_EDGE_BYTES))
        elif name.endswith(TEXT_SUFFIXES):
            digest.update(f"file {name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_model_type(folder: Path) -> str:
    """The folder's ``model_type``; ``FatalBackendError`` naming the folder when it is not a supported Qwen-VL."""
    expected = "a Qwen2.5-VL or Qwen2-VL model folder (config.json, *.safetensors, processor and tokenizer files)"
    if not folder.is_dir():
        raise FatalBackendError(
            f"Qwen-VL model folder not found: {folder} (captions.qwen.model_path); expected {expected}"
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FatalBackendError(f"{folder} has no config.json: expected {expected}")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise FatalBackendError(f"{config_file}: not a readable model config ({exc}); expected {expected}") from exc
    if model_type not in MODEL_CLASSES:
        raise FatalBackendError(
            f"{folder}: model_type {model_type!r} is not supported by the qwen backend; expected one of "
            f"{', '.join(MODEL_CLASSES)} ({expected})"
        )
    return model_type


_Prepared = tuple[ChatRequest, "Image.Image | None"]
_OOM_FAILURE = RequestFailure("CUDA out of memory on a single request", "OutOfMemoryError")


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def decode_image(jpeg: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as image:
        return image.convert("RGB")


def chat_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """One user message: an image part (when the request has one), then the prompt."""
    content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
    if request.image_jpeg is not None:
        content.insert(0, {"type": "image"})
    return [{"role": "user", "content": content}]


class QwenBackend(ChatBackend):
    """Qwen2.5-VL / Qwen2-VL from ``config.model_path``, greedy and batched on ``config.device``."""

    name = "qwen"

    def __init__(self, config: QwenConfig) -> None:
        if config.model_path is None:
            raise FatalBackendError("captions.qwen.model_path is not set: the qwen backend needs a local model folder")
        self.config = config
        self.folder = Path(config.model_path).expanduser().resolve()
        self.model_type = read_model_type(self.folder)
        self.device = torch.device(config.device)
        if self.device.type not in ("cuda", "cpu"):
            raise FatalBackendError(f"the qwen backend runs on cuda or cpu, got device {config.device!r}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FatalBackendError(
                "CUDA is not available: the qwen backend runs on the GPU by default; pass --device cpu "
                "(captions.qwen.device: cpu; very slow for real checkpoints)"
            )
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.batch_size = config.batch_size
        """Requests per generate call; halved for good after a CUDA out-of-memory error."""
        self._processor, self._model = self._load()
        self._generation = self._generation_config()
        self._fingerprint = folder_fingerprint(self.folder)

    def _load(self) -> tuple[Any, Any]:
        import transformers

        model_class = getattr(transformers, MODEL_CLASSES[self.model_type])
        try:
            processor = transformers.AutoProcessor.from_pretrained(self.folder, local_files_only=True)
        except Exception as exc:
            raise FatalBackendError(
                f"{self.folder}: could not load the Qwen-VL processor/tokenizer ({type(exc).__name__}: {exc}); "
                "expected preprocessor/processor and tokenizer files beside config.json"
            ) from exc
        processor.tokenizer.padding_side = "left"  # batched generation appends after the last prompt token
        try:
            model = model_class.from_pretrained(self.folder, dtype=self.dtype, local_files_only=True)
            model = model.to(self.device).eval()
        except torch.OutOfMemoryError as exc:
            raise FatalBackendError(
                f"{self.folder}: out of memory loading the model on {self.device} in {self.dtype}: {exc}"
            ) from exc
        except Exception as exc:
            raise FatalBackendError(
                f"{self.folder}: could not load {model_class.__name__} ({type(exc).__name__}: {exc})"
            ) from exc
        return processor, model

    def _generation_config(self) -> Any:
        """The checkpoint's generation config made greedy (its repetition penalty and stop tokens are kept)."""
        generation = copy.deepcopy(self._model.generation_config)
        generation.do_sample = False
        generation.num_beams = 1
        generation.temperature = None
        generation.top_p = None
        generation.top_k = None
        tokenizer = self._processor.tokenizer
        if generation.eos_token_id is None:
            generation.eos_token_id = tokenizer.eos_token_id
        if generation.pad_token_id is None:
            generation.pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            )
        return generation

    @property
    def model(self) -> str:
        return self.folder.name

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "model_type": self.model_type,
            "fingerprint": f"config+edges-sha256:{self._fingerprint}",
            "max_new_tokens": self.config.max_new_tokens,
            "dtype": f"{self.config.dtype}:{str(self.dtype).removeprefix('torch.')}",
            "decoding": "greedy",
            "repetition_penalty": self._generation.repetition_penalty or 1.0,
        }

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply | RequestFailure]:
        results: list[ChatReply | RequestFailure] = []
        start = 0
        done = done_counter()
        while start < len(requests):
            batch = requests[start : start + self.batch_size]
            try:
                results.extend(self._answer(batch))
            except torch.OutOfMemoryError:
                self._release_cuda_memory()
                self.batch_size = max(1, len(batch) // 2)
                log.warning("qwen: CUDA out of memory on %d requests; batch size now %d", len(batch), self.batch_size)
                continue  # the same requests again, in smaller batches
            start += len(batch)
            done(len(batch))
        return results

    def _answer(self, batch: Sequence[ChatRequest]) -> list[ChatReply | RequestFailure]:
        """Replies for one batch, with the one-by-one fallback; raises ``OutOfMemoryError`` for 2+ requests only."""
        prepared = [self._prepare(request) for request in batch]
        todo = [item for item in prepared if not isinstance(item, RequestFailure)]
        try:
            answers = self._generate_batch(todo)
        except torch.OutOfMemoryError:
            if len(todo) > 1:
                raise
            self._release_cuda_memory()
            answers = [_OOM_FAILURE]
        except Exception as exc:
            if len(todo) > 1:
                log.warning("qwen: a batch of %d failed (%s: %s); retrying one by one", len(todo), _name(exc), exc)
                answers = [self._generate_one(item) for item in todo]
            else:
                answers = [RequestFailure(f"{_name(exc)}: {exc}", _name(exc))]
        replies = iter(answers)
        return [item if isinstance(item, RequestFailure) else next(replies) for item in prepared]

    def _prepare(self, request: ChatRequest) -> _Prepared | RequestFailure:
        """The request with its decoded image (None when text-only); a failure when the image does not decode."""
        if request.image_jpeg is None:
            return request, None
        try:
            return request, decode_image(request.image_jpeg)
        except Exception as exc:
            return RequestFailure(f"the request's image does not decode ({_name(exc)})", "UnreadableImage")

    def _generate_one(self, item: _Prepared) -> ChatReply | RequestFailure:
        try:
            return self._generate_batch([item])[0]
        except torch.OutOfMemoryError:
            self._release_cuda_memory()
            return _OOM_FAILURE
        except Exception as exc:
            return RequestFailure(f"{_name(exc)}: {exc}", _name(exc))

    def _release_cuda_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _generate_batch(self, batch: Sequence[_Prepared]) -> list[ChatReply | RequestFailure]:
        """One ``generate`` call for ``batch`` (raises on any error; the caller falls back)."""
        if not batch:
            return []
        processor = self._processor
        requests = [request for request, _ in batch]
        images = [image for _, image in batch if image is not None]
        texts = [
            processor.apply_chat_template(chat_messages(request), add_generation_prompt=True) for request in requests
        ]
        inputs = processor(
            text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.device, dtype=self.dtype)  # casts pixel_values only; ids and masks stay integer
        # input_ids, attention_mask: [B, L] (left-padded); pixel_values: [patches, C*T*P*P]; image_grid_thw: [images, 3]
        limits = [max(1, min(request.max_tokens, self.config.max_new_tokens)) for request in requests]
        generation = copy.copy(self._generation)
        generation.max_new_tokens = max(limits)
        with torch.inference_mode():
            output = self._model.generate(**inputs, generation_config=generation)  # [B, L + new]
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_length:].tolist()  # [B][new]
        input_counts = inputs["attention_mask"].sum(dim=1).tolist()  # [B]
        stop = self._stop_ids()
        replies: list[ChatReply | RequestFailure] = []
        for tokens, limit, input_count in zip(new_tokens, limits, input_counts, strict=True):
            tokens = tokens[:limit]
            end = next((index for index, token in enumerate(tokens) if token in stop), None)
            text_tokens = tokens if end is None else tokens[:end]
            output_count = len(tokens) if end is None else end + 1
            text = processor.tokenizer.decode(text_tokens, skip_special_tokens=True)
            replies.append(ChatReply(text=text, input_tokens=int(input_count), output_tokens=output_count))
        return replies

    def _stop_ids(self) -> set[int]:
        """Tokens that end a reply: the generation config's end-of-sequence ids and the pad id it fills with."""
        eos = self._generation.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos])
        stop.add(self._generation.pad_token_id)
        return {int(token) for token in stop if token is not None}

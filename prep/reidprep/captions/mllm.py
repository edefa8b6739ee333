"""Attributes from a multimodal LLM: the template prompt and one image per request, the reply parsed and repaired."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from reidprep.captions.attributes import AttributeAnswer, AttributeProvider, AttributeQuery, View
from reidprep.captions.backends.base import ChatBackend, ChatRequest, RequestFailure, UsageCounter
from reidprep.captions.parse import PARSER_VERSION, UnusableReply, parse_attributes
from reidschemas import ObjectKind, attribute_model, load_template

JPEG_QUALITY = 90

_NOUN = {"pedestrian": "person", "vehicle": "vehicle"}


def attribute_prompt(kind: ObjectKind, view: View) -> str:
    """The NEXT template (Figure 6 or 7) verbatim; for the composite, one line first saying what the thirds are."""
    prompt = load_template(kind).prompt()
    if view == "composite":
        prompt = (
            f"The image shows the same {_NOUN[kind]} three times side by side: visible light (left), "
            "near-infrared (middle) and thermal infrared (right). Use all three to answer.\n\n" + prompt
        )
    return prompt


def encode_jpeg(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (deterministic: the same pixels give the same bytes, so the cache hits)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class MLLMAttributeProvider(AttributeProvider):
    """Any ``ChatBackend`` (OpenAI-compatible server, local Qwen-VL) used as an attribute extractor."""

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.name = backend.name  # type: ignore[misc]
        self.usage = UsageCounter()

    def identity(self) -> dict[str, Any]:
        prompts = {
            f"{kind}/{view}": hashlib.sha256(attribute_prompt(kind, view).encode()).hexdigest()[:16]
            for kind in ("pedestrian", "vehicle")
            for view in ("rgb", "composite")
        }
        return {"provider": self.backend.name, **self.backend.identity(), "prompts": prompts, "parser": PARSER_VERSION}

    @staticmethod
    def requests(queries: Sequence[AttributeQuery]) -> list[ChatRequest]:
        """The chat request of each query (also what ``--batch-api`` submits); a reply that does not parse into
        the kind's attributes is rejected, so it is never cached."""
        return [
            ChatRequest(
                prompt=attribute_prompt(q.kind, q.view),
                image_jpeg=encode_jpeg(q.image),
                response_model=attribute_model(q.kind),
                accept=partial(parse_attributes, kind=q.kind),
            )
            for q in queries
        ]

    def describe(self, queries: Sequence[AttributeQuery]) -> list[AttributeAnswer | RequestFailure]:
        requests = self.requests(queries)
        answers: list[AttributeAnswer | RequestFailure] = []
        for query, reply in zip(queries, self.backend.generate(requests), strict=True):
            self.usage.add(self.backend.model, reply)
            if isinstance(reply, RequestFailure):
                answers.append(reply)
                continue
            try:
                answers.append(parse_attributes(reply.text, query.kind))
            except UnusableReply as exc:
                answers.append(RequestFailure(f"unusable {self.backend.model} reply: {exc}", "UnusableReply"))
        return answers

"""The interface every chat backend implements (OpenAI-compatible servers, local Qwen-VL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from reidprep.stage import StageAbort

requests_done: ContextVar[Callable[[int], None] | None] = ContextVar("requests_done", default=None)
"""Set by the captions stage around a batch: backends call it with the number of requests just answered (or
failed, or found in the cache), so the progress bar moves while a chunk's requests are in flight."""


def done_counter() -> Callable[[int], None]:
    """The current batch's ``requests_done`` callback, or a no-op (capture it before handing work to threads)."""
    return requests_done.get() or (lambda _n: None)


@dataclass(frozen=True)
class ChatRequest:
    """One prompt, with zero or one image (JPEG bytes), to one model."""

    prompt: str
    image_jpeg: bytes | None = None
    response_model: type[BaseModel] | None = None
    """Ask for structured output in this schema where the server supports it (the reply is still text)."""
    max_tokens: int = 1024
    accept: Callable[[str], object] | None = field(default=None, compare=False, repr=False)
    """Raises ``ValueError`` (the reason) when a reply's text is unusable, e.g. JSON outside the schema; the request
    cache keeps only the replies it accepts. Not part of the request's identity."""

    def rejects(self, reply: ChatReply) -> str | None:
        """Why ``reply`` is unusable for this request, or None when it is usable (or nothing checks it)."""
        if self.accept is None:
            return None
        try:
            self.accept(reply.text)
        except ValueError as exc:
            return str(exc) or type(exc).__name__
        return None


@dataclass(frozen=True)
class ChatReply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    """True when it came from the request cache (no request was made)."""


@dataclass(frozen=True)
class RequestFailure:
    """A request that failed after the backend's retries; the sample is ledgered with this reason."""

    reason: str
    error_type: str


class FatalBackendError(StageAbort):
    """No later request can succeed (authentication, insufficient quota, a 4xx that is not a rate limit, a model
    that cannot load): the stage stops with this message. Never include the API key in it."""


class ChatBackend(ABC):
    """A chat model. ``generate`` answers a batch of requests (concurrently or batched, as the backend can)."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def model(self) -> str:
        """The model's name as the provider knows it (e.g. ``gpt-4o``, or the local folder's name)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes replies: backend, model, sampling parameters (never secrets). JSON-able."""

    @abstractmethod
    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply | RequestFailure]:
        """One reply or failure per request, in order. Raise ``FatalBackendError`` to stop the stage."""


@dataclass
class UsageCounter:
    """Requests, tokens and estimated cost of a run (printed in the stage summary)."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd_per_million: tuple[float, float] | None = None
    """(input, output) prices; None when unknown (local models cost no API money)."""
    by_model: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, reply: ChatReply | RequestFailure) -> None:
        if isinstance(reply, RequestFailure):
            self.failed += 1
            return
        if reply.cached:
            self.cached += 1
            return
        self.requests += 1
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.by_model[model] = self.by_model.get(model, 0) + 1

    @property
    def estimated_usd(self) -> float | None:
        if self.usd_per_million is None:
            return None
        price_in, price_out = self.usd_per_million
        return (self.input_tokens * price_in + self.output_tokens * price_out) / 1e6

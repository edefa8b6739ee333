"""The ``openai`` chat backend: GPT-4o, or any OpenAI-compatible server (vLLM, Ollama) through ``base_url``.

Retries are tenacity's (the SDK's own are off): 429 rate limits, timeouts, connection errors, 408/409 and 5xx are
retried with the server's ``Retry-After``/``retry-after-ms`` when it sends one, else exponential backoff with full
jitter; a request still failing after ``max_retries`` retries becomes a ``RequestFailure``. Errors no retry can fix
(bad key, no quota, unknown model, a rejected request) raise ``FatalBackendError``.

A dead server stops the stage instead of retrying forever: before its first request a backend asks the server for
its model list once (any HTTP answer proves it is there; no answer at all is fatal), and ``max_connection_failures``
attempts in a row that cannot connect (or time out), across all requests in flight, are fatal too. A stage stopped
this way keeps every chunk it finished; rerunning it resumes.

Structured output: with ``structured_output`` "on" or "auto" a request with a ``response_model`` is sent through
``chat.completions.parse`` (a strict JSON schema). In "auto", a server that rejects it (400/422 naming the response
format) is remembered for this backend instance and later requests use ``{"type": "json_object"}``, then no
response format at all. The reply TEXT is returned either way, unparsed: the caller validates and repairs it.

The API key is read from the environment variable named by ``api_key_env``, never from the config file. It is kept
out of every message, log line and identity. A ``base_url`` server that needs no key (a local vLLM) works without
the variable: the placeholder key ``EMPTY`` is sent.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Literal

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from reidprep.captions.backends.base import (
    ChatBackend,
    ChatReply,
    ChatRequest,
    FatalBackendError,
    RequestFailure,
    done_counter,
)
from reidschemas.config import OpenAIConfig

if TYPE_CHECKING:
    from openai import OpenAI

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"
"""Sent to a ``base_url`` server when the key variable is unset (vLLM and Ollama accept any key)."""

FormatLevel = Literal["json_schema", "json_object", "none"]
_LEVELS: tuple[FormatLevel, ...] = ("json_schema", "json_object", "none")
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured", "guided", "schema")


def read_api_key(config: OpenAIConfig) -> str:
    """The key from ``$<api_key_env>``; the placeholder for a ``base_url`` server when unset."""
    key = os.environ.get(config.api_key_env, "").strip()
    if key:
        return key
    if config.base_url is not None:
        log.info("$%s is not set: sending a placeholder key to %s", config.api_key_env, config.base_url)
        return PLACEHOLDER_KEY
    raise FatalBackendError(
        f"the OpenAI API key is missing: set the environment variable {config.api_key_env} "
        "(or point captions.openai.api_key_env at the variable that holds it)"
    )


def make_client(
    config: OpenAIConfig, *, max_retries: int = 0, timeout_s: float | None = None, api_key: str | None = None
) -> OpenAI:
    """An SDK client for ``config``, the key from the environment unless given. ``max_retries=0``: the caller
    retries (the Batch workflow may let the SDK retry). ``base_url`` None means api.openai.com, explicitly: the
    SDK's ``OPENAI_BASE_URL`` variable is not consulted, so the config alone says where requests go."""
    from openai import OpenAI

    return OpenAI(
        base_url=config.base_url or OPENAI_BASE_URL,
        api_key=api_key if api_key is not None else read_api_key(config),
        max_retries=max_retries,
        timeout=config.timeout_s if timeout_s is None else timeout_s,
    )


def chat_messages(request: ChatRequest, detail: str) -> list[dict[str, Any]]:
    """One user message: the image (a JPEG data URL) then the prompt; a plain string for text-only requests."""
    if request.image_jpeg is None:
        return [{"role": "user", "content": request.prompt}]
    url = "data:image/jpeg;base64," + base64.b64encode(request.image_jpeg).decode("ascii")
    content = [
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
        {"type": "text", "text": request.prompt},
    ]
    return [{"role": "user", "content": content}]


def chat_body(config: OpenAIConfig, request: ChatRequest) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body without ``response_format`` (shared by the online and Batch paths)."""
    return {
        "model": config.model,
        "messages": chat_messages(request, config.detail),
        "temperature": config.temperature,
        "max_tokens": min(request.max_tokens, config.max_tokens),
    }


def reply_from_completion(data: Any) -> ChatReply | RequestFailure:
    """A chat-completion JSON object (as the server sent it) -> reply text and token counts."""
    try:
        message = data["choices"][0]["message"]
        usage = data.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return RequestFailure("the server's reply is not a chat completion", "MalformedResponse")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        reason = f"the model refused: {refusal}" if refusal else "the reply has no text content"
        return RequestFailure(reason, "Refusal" if refusal else "EmptyReply")
    return ChatReply(text=text, input_tokens=input_tokens, output_tokens=output_tokens)


def retry_after_s(exc: BaseException) -> float | None:
    """The server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date), if the error carries one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _mentions_format(exc: BaseException) -> bool:
    """Whether a 400/422 is about the response format (the parameter, or the words in its message)."""
    if getattr(exc, "param", None) == "response_format":
        return True
    message = str(getattr(exc, "message", "")).lower()
    return any(word in message for word in _FORMAT_WORDS)


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "code", None) or getattr(exc, "type", None)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits (not ``insufficient_quota``), timeouts, connection errors, 408, 409, 5xx."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.RateLimitError):
        return "insufficient_quota" not in (str(getattr(exc, "code", "")), str(getattr(exc, "type", "")))
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409) or exc.status_code >= 500
    return False


class _Cancelled(Exception):
    """Another request raised a fatal error: stop retrying."""


class OpenAIBackend(ChatBackend):
    """An OpenAI-compatible chat server through the official SDK; ``max_concurrency`` requests in flight."""

    name = "openai"

    def __init__(
        self,
        config: OpenAIConfig,
        *,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_connection_failures: int = 10,
    ) -> None:
        """``backoff_base_s``: first backoff step (doubles per retry, full jitter); ``backoff_max_s`` caps every
        wait, ``Retry-After`` included; ``max_connection_failures``: attempts in a row that reach no server before
        the backend gives up with ``FatalBackendError``."""
        if max_connection_failures < 1:
            raise ValueError(f"max_connection_failures must be >= 1, got {max_connection_failures}")
        self.config = config
        self.max_connection_failures = max_connection_failures
        self._unreachable_in_a_row = 0
        self._reached = False  # the preflight answered
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._key = read_api_key(config)
        self._url = config.base_url or OPENAI_BASE_URL
        self._client = make_client(config, max_retries=0, api_key=self._key)
        self._level_lock = threading.Lock()
        self._level: FormatLevel = "json_object" if config.structured_output == "off" else "json_schema"
        self._stop = threading.Event()

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def format_level(self) -> FormatLevel:
        """The response format sent with a ``response_model``: lowered once the server rejects one (auto)."""
        return self._level

    def identity(self) -> dict[str, Any]:
        c = self.config
        return {
            "backend": self.name,
            "model": c.model,
            "base_url": c.base_url,
            "detail": c.detail,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "structured_output": c.structured_output,
        }

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply | RequestFailure]:
        if not requests:
            return []
        self._stop.clear()
        if not self._reached:
            self._preflight()
        workers = min(self.config.max_concurrency, len(requests))
        tick = done_counter()
        if workers == 1:
            replies = []
            for request in requests:
                replies.append(self._request(request))
                tick(1)
            return replies
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            futures = [pool.submit(self._request, r) for r in requests]
            for future in futures:
                future.add_done_callback(lambda _: tick(1))
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # a fatal error anywhere stops the batch
                for error in (f.exception() for f in done):
                    if error is not None:
                        raise error
                return [f.result() for f in futures]
            except BaseException:
                self._stop.set()  # requests still running give up at their next attempt or backoff
                for future in futures:
                    future.cancel()
                raise

    def _preflight(self) -> None:
        """One request before the first chat request: no answer from the server at all is fatal."""
        import openai

        try:
            self._client.models.list()
        except openai.APIStatusError:
            pass  # an HTTP answer of any kind: the server is there (the chat requests judge the rest)
        except openai.APIConnectionError as exc:
            raise FatalBackendError(
                f"openai backend: {self._describe(exc)} before the first request: start the server or fix "
                "captions.openai.base_url, then rerun (finished chunks are kept)"
            ) from None
        self._reached = True

    def _count_connection(self, exc: BaseException | None) -> None:
        """Track attempts in a row that reached no server; raise once there are ``max_connection_failures``."""
        import openai

        with self._level_lock:
            if not isinstance(exc, openai.APIConnectionError):
                self._unreachable_in_a_row = 0
                return
            self._unreachable_in_a_row += 1
            given_up = self._unreachable_in_a_row >= self.max_connection_failures
        if given_up:
            self._stop.set()
            raise FatalBackendError(
                f"openai backend: {self._describe(exc)}: {self.max_connection_failures} attempts in a row reached no "
                "server; check that it is running and reachable, then rerun (finished chunks are kept)"
            ) from None

    # -- one request -------------------------------------------------------------------------------------------

    def _request(self, request: ChatRequest) -> ChatReply | RequestFailure:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._send, request)
        except _Cancelled:
            return RequestFailure("cancelled after a fatal error in another request", "Cancelled")
        except Exception as exc:
            if not is_transient(exc):
                raise
            tries = self.config.max_retries + 1
            return RequestFailure(
                f"{self._describe(exc)} (gave up after {tries} attempt{'s' * (tries > 1)})", type(exc).__name__
            )

    def _send(self, request: ChatRequest) -> ChatReply | RequestFailure:
        """One attempt; walks down the response formats while the server rejects them (auto)."""
        import openai

        if self._stop.is_set():
            raise _Cancelled
        while True:
            level = self._level if request.response_model is not None else "none"
            try:
                reply = self._post(request, level)
                self._count_connection(None)
                return reply
            except openai.APIConnectionError as exc:
                self._count_connection(exc)
                raise
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                self._count_connection(None)  # the server answered
                if not self._may_lower(level) or not _mentions_format(exc):
                    raise self._fatal(exc) from None
                self._lower_format(level, self._describe(exc))
            except openai.APIStatusError as exc:
                self._count_connection(None)  # the server answered
                if is_transient(exc):
                    raise
                raise self._fatal(exc) from None
            except (TypeError, ValueError) as exc:
                # The SDK could not turn the response model into a strict schema (nothing was sent).
                if level != "json_schema":
                    raise
                if not self._may_lower(level):
                    raise FatalBackendError(
                        f"openai backend: no strict JSON schema for {request.response_model}: {exc}; "
                        "set structured_output to auto or off"
                    ) from None
                self._lower_format(level, f"no strict schema for {request.response_model}: {exc}")

    def _post(self, request: ChatRequest, level: FormatLevel) -> ChatReply | RequestFailure:
        body = chat_body(self.config, request)
        completions = self._client.chat.completions.with_raw_response
        if level == "json_schema" and request.response_model is not None:
            raw = completions.parse(**body, response_format=request.response_model)
        elif level == "json_object":
            raw = completions.create(**body, response_format={"type": "json_object"})
        else:
            raw = completions.create(**body)
        try:
            data = raw.http_response.json()
        except ValueError:
            return RequestFailure("the server's reply is not JSON", "MalformedResponse")
        # The text is returned unparsed: a reply outside the schema is the caller's to repair or reject.
        return reply_from_completion(data)

    # -- structured output fallback ----------------------------------------------------------------------------

    def _may_lower(self, level: FormatLevel) -> bool:
        """Whether a rejected ``level`` may fall back (never below "none"; "on" insists on the JSON schema)."""
        return level != "none" and not (level == "json_schema" and self.config.structured_output == "on")

    def _lower_format(self, rejected: FormatLevel, why: str) -> None:
        with self._level_lock:
            if self._level != rejected:
                return  # another thread lowered it already
            self._level = _LEVELS[_LEVELS.index(rejected) + 1]
        log.warning(
            "%s at %s rejected response_format %s (%s): using %s from now on",
            self.config.model,
            self._url,
            rejected,
            why,
            self._level,
        )

    # -- retries -----------------------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_s(exc) if exc is not None else None
        if hinted is not None:
            return min(hinted, self.backoff_max_s)
        return wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s)(state)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Cancelled

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: %s; retry %d/%d in %.2f s",
            self.config.model,
            self._describe(exc) if exc else "?",
            state.attempt_number,
            self.config.max_retries,
            wait,
        )

    # -- messages (never the key) ------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 6 else text

    def _describe(self, exc: BaseException) -> str:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {self.config.timeout_s:g} s"
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot connect to {self._url}"
        if isinstance(exc, openai.APIStatusError):
            message = getattr(exc, "message", "") or ""
            body = exc.body if isinstance(exc.body, dict) else {}
            message = str(body.get("message") or message)
            if len(message) > 500:
                message = message[:500] + "..."
            request_id = f", request id {exc.request_id}" if exc.request_id else ""
            code = _error_code(exc)
            code = f" {code}" if code else ""
            return self._scrub(f"HTTP {exc.status_code}{code}{request_id}: {message}")
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _fatal(self, exc: BaseException) -> FatalBackendError:
        """What went wrong and what to fix; the cause is not chained (its text may carry the key)."""
        import openai

        what = self._describe(exc)
        model, url, env = self.config.model, self._url, self.config.api_key_env
        if isinstance(exc, openai.AuthenticationError):
            hint = f"{url} rejected the API key: check ${env} (the key for this server)"
        elif isinstance(exc, openai.RateLimitError):
            hint = f"the account behind ${env} has no quota left at {url}: add credits or raise the limit"
        elif isinstance(exc, openai.PermissionDeniedError):
            hint = f"the key in ${env} may not use model {model!r} at {url}: check the project's model access"
        elif isinstance(exc, openai.NotFoundError):
            hint = f"model {model!r} was not found at {url}: check captions.openai.model and base_url"
        elif isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
            if self.config.structured_output == "on" and _mentions_format(exc):
                hint = f"{url} does not accept JSON-schema output for {model!r}: set structured_output to auto or off"
            else:
                hint = f"{url} rejected the request for {model!r}: check the model, max_tokens and the image size"
        else:
            hint = f"{url} refused the request for {model!r}"
        return FatalBackendError(self._scrub(f"openai backend: {hint} ({what})"))

"""The OpenAI Batch API for bulk runs (half price, results within 24 h), as a resumable workflow.

``prepare`` writes JSONL request files (at most 50,000 requests / 200 MB each), ``submit`` uploads them and creates
one batch per file, ``poll`` refreshes the batches' statuses and ``collect`` downloads the output and error files
and returns one reply or failure per custom id. Every step saves the state file atomically (file ids, batch ids,
statuses; never the key), so a process that stops anywhere resumes where it stopped: a file is uploaded again only
if its id was never saved, and before creating a batch for an uploaded file the server's batch list is searched
for one already made from it, so a batch is never submitted twice.

Request bodies are those of the online path (``chat_body``) with the plain-JSON response format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from reidprep.atomic import write_json
from reidprep.captions.backends.base import ChatReply, ChatRequest, RequestFailure
from reidprep.captions.backends.openai_backend import chat_body, reply_from_completion
from reidschemas.config import OpenAIConfig
from reidschemas.safeio import atomic_write_bytes, fsync_dir, remove_dead_temporaries, temporary_path

if TYPE_CHECKING:
    from openai import OpenAI

log = logging.getLogger(__name__)

ENDPOINT: Final = "/v1/chat/completions"
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200_000_000
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
STATE_VERSION = 1


def _close_durably(handle: Any) -> None:
    """Flush, fsync and close a request file being written."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


class BatchNotFinished(RuntimeError):
    """``collect`` was called while some batches are still running."""


class BatchJob:
    """One bulk job: its request files, uploads and batches, tracked in ``state_path`` (JSON).

    Files live beside the state file: ``<stem>.input-00000.jsonl``, ``<stem>.output-00000.jsonl``,
    ``<stem>.errors-00000.jsonl``.
    """

    def __init__(
        self,
        client_factory: Callable[[], OpenAI],
        state_path: Path,
        config: OpenAIConfig,
        *,
        max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        completion_window: Literal["24h"] = "24h",
        max_listed_batches: int = 1000,
    ) -> None:
        """``client_factory`` makes the SDK client when one is first needed (e.g. ``lambda: make_client(config,
        max_retries=3)``); ``max_listed_batches`` bounds the search for an already-created batch on resume."""
        self.client_factory = client_factory
        self.state_path = Path(state_path)
        self.config = config
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.completion_window = completion_window
        self.max_listed_batches = max_listed_batches
        self._client: OpenAI | None = None
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {"version": STATE_VERSION}
        )

    # -- files and state

    @property
    def client(self) -> OpenAI:
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    @property
    def parts(self) -> list[dict[str, Any]]:
        """One entry per request file: name, requests, file_id, batch_id, status, output and error file ids."""
        return self.state.setdefault("parts", [])

    def _path(self, kind: str, index: int) -> Path:
        return self.state_path.parent / f"{self.state_path.stem}.{kind}-{index:05d}.jsonl"

    def _save(self) -> None:
        write_json(self.state, self.state_path)

    def _lines(self, requests: Sequence[tuple[str, ChatRequest]]) -> Iterator[bytes]:
        seen: set[str] = set()
        for custom_id, request in requests:
            if custom_id in seen:
                raise ValueError(f"duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            body = chat_body(self.config, request)
            if request.response_model is not None:
                body["response_format"] = {"type": "json_object"}
            item = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
            yield json.dumps(item, separators=(",", ":")).encode() + b"\n"

    # -- steps

    def prepare(self, requests: Sequence[tuple[str, ChatRequest]]) -> list[Path]:
        """Write the request files (split by count and size). Idempotent: the same requests again are a no-op;
        different requests against an existing state raise ``ValueError``."""
        digest = hashlib.sha256()
        for line in self._lines(requests):
            digest.update(line)
        fingerprint = digest.hexdigest()
        if self.parts:
            if self.state.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.state_path} belongs to a different set of requests: finish or remove that job first"
                )
            paths = [self._path("input", i) for i in range(len(self.parts))]
            if any(p["file_id"] for p in self.parts) or all(path.exists() for path in paths):
                return paths  # already prepared (and perhaps submitted): never rewritten
        self.state["parts"] = []
        handle, count, size = None, 0, 0
        try:
            for line in self._lines(requests):
                if handle is None or count >= self.max_requests_per_file or size + len(line) > self.max_bytes_per_file:
                    if handle is not None:
                        _close_durably(handle)
                        self._finish_part(count)
                    index = len(self.parts)
                    self.parts.append({"name": self._path("input", index).name, "requests": 0})
                    remove_dead_temporaries(self.state_path.parent.glob(".*.tmp-*"))
                    handle = temporary_path(self._path("input", index)).open("wb")  # this process's own name
                    count, size = 0, 0
                handle.write(line)
                count, size = count + 1, size + len(line)
            if handle is not None:
                _close_durably(handle)
                self._finish_part(count)
        finally:
            if handle is not None and not handle.closed:  # stopped part way: no half file stays
                handle.close()
                Path(handle.name).unlink(missing_ok=True)
        self.state.update(fingerprint=fingerprint, endpoint=ENDPOINT, model=self.config.model)
        self._save()
        return [self._path("input", i) for i in range(len(self.parts))]

    def _finish_part(self, count: int) -> None:
        index = len(self.parts) - 1
        os.replace(temporary_path(self._path("input", index)), self._path("input", index))
        fsync_dir(self.state_path.parent)
        self.parts[index].update(
            requests=count,
            file_id=None,
            batch_id=None,
            status=None,
            output_file_id=None,
            error_file_id=None,
            request_counts=None,
            errors=None,
        )

    def submit(self) -> list[str]:
        """Upload every file not yet uploaded and create its batch (unless one exists). Returns the batch ids."""
        if not self.parts:
            raise RuntimeError("nothing to submit: call prepare() first")
        for index, part in enumerate(self.parts):
            if part["batch_id"]:
                continue
            resumed = part["file_id"] is not None
            if not resumed:
                with self._path("input", index).open("rb") as handle:
                    uploaded = self.client.files.create(file=(part["name"], handle), purpose="batch")
                part["file_id"] = uploaded.id
                self._save()
            batch = self._existing_batch(part["file_id"]) if resumed else None
            if batch is None:
                batch = self.client.batches.create(
                    input_file_id=part["file_id"],
                    endpoint=ENDPOINT,
                    completion_window=self.completion_window,
                    metadata={"job": self.state_path.stem, "part": f"{index:05d}"},
                )
            else:
                log.info("batch %s already exists for %s: not submitting it again", batch.id, part["name"])
            self._update(part, batch)
            self._save()
        return [p["batch_id"] for p in self.parts]

    def _existing_batch(self, file_id: str) -> Any:
        for seen, batch in enumerate(self.client.batches.list(limit=100)):
            if batch.input_file_id == file_id:
                return batch
            if seen + 1 >= self.max_listed_batches:
                break
        return None

    @staticmethod
    def _update(part: dict[str, Any], batch: Any) -> None:
        counts = batch.request_counts
        errors = getattr(batch, "errors", None)
        part.update(
            batch_id=batch.id,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            request_counts=None if counts is None else counts.model_dump(),
            errors=None if errors is None else [e.model_dump() for e in (errors.data or [])],
        )

    def poll(self) -> dict[str, int]:
        """Refresh the batches still running; the number of parts by status (``unsubmitted`` before submit)."""
        for part in self.parts:
            if part["batch_id"] and part["status"] not in TERMINAL:
                self._update(part, self.client.batches.retrieve(part["batch_id"]))
                self._save()
        return dict(Counter(p["status"] or "unsubmitted" for p in self.parts))

    @property
    def finished(self) -> bool:
        """Every part's batch has reached a terminal status (completed, failed, expired, cancelled)."""
        return bool(self.parts) and all(p["status"] in TERMINAL for p in self.parts)

    def request_counts(self) -> dict[str, int]:
        """Requests total / completed / failed over all batches, as last polled."""
        total: Counter[str] = Counter()
        for part in self.parts:
            total.update(part.get("request_counts") or {})
        return dict(total)

    def collect(self) -> dict[str, ChatReply | RequestFailure]:
        """Download (once) the output and error files; one reply or failure per custom id, in request order."""
        if not self.finished:
            statuses = dict(Counter(p["status"] or "unsubmitted" for p in self.parts))
            raise BatchNotFinished(f"batches not finished (as last polled): {statuses}; poll() until finished")
        results: dict[str, ChatReply | RequestFailure] = {}
        for index, part in enumerate(self.parts):
            found: dict[str, ChatReply | RequestFailure] = {}
            for kind in ("output", "error"):
                file_id = part[f"{kind}_file_id"]
                if file_id is None:
                    continue
                local = self._path("output" if kind == "output" else "errors", index)
                if not part.get(f"{kind}_downloaded"):
                    content = self.client.files.content(file_id).content
                    atomic_write_bytes(content, local)
                    part[f"{kind}_downloaded"] = True
                    self._save()
                for line in local.read_text().splitlines():
                    if line.strip():
                        item = json.loads(line)
                        found[item["custom_id"]] = _result(item)
            missing = RequestFailure(_missing_reason(part), f"Batch{part['status'].capitalize()}")
            for custom_id in self._custom_ids(index, found):
                results[custom_id] = found.get(custom_id, missing)
        return results

    def _custom_ids(self, index: int, found: dict[str, Any]) -> list[str]:
        path = self._path("input", index)
        if not path.exists():
            return list(found)
        with path.open() as handle:
            return [json.loads(line)["custom_id"] for line in handle if line.strip()]


def _result(item: dict[str, Any]) -> ChatReply | RequestFailure:
    """One line of an output or error file."""
    response = item.get("response") or {}
    error = item.get("error")
    status = response.get("status_code")
    if status == 200 and not error:
        return reply_from_completion(response.get("body"))
    if error:
        return RequestFailure(f"batch request failed: {error.get('message', error)}", str(error.get("code")))
    body = response.get("body") or {}
    message = (body.get("error") or {}).get("message", body) if isinstance(body, dict) else body
    return RequestFailure(f"batch request failed with HTTP {status}: {message}", f"HTTP{status}")


def _missing_reason(part: dict[str, Any]) -> str:
    status = part["status"]
    if status == "failed":
        messages = "; ".join(str(e.get("message")) for e in part.get("errors") or []) or "no reason given"
        return f"the batch failed: {messages}"
    return f"no result in the batch's output (batch {status})"

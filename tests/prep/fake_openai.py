"""A fake OpenAI-compatible server for tests: real HTTP on 127.0.0.1 (ephemeral port), scripted faults, a log.

Usage::

    with FakeOpenAI() as server:                      # starts a ThreadingHTTPServer in a daemon thread
        config = OpenAIConfig(base_url=server.base_url, model="gpt-4o", ...)
        server.add_faults(Fault.rate_limit(retry_after=1), Fault.server_error())
        ...
        server.chat_count, server.chat_bodies, server.max_in_flight

Endpoints: ``POST /v1/chat/completions``; ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}`` and
``/v1/files/{id}/content``; ``POST /v1/batches``, ``GET /v1/batches`` (list), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. A batch stays ``in_progress`` for ``batch_polls_to_complete`` retrievals, then
the server runs each line of its input file through the chat handler (faults included) and completes it.

The reply text comes from ``handler(body) -> str``; the default answers the NEXT attribute template (pedestrian or
vehicle, recognised from the prompt) with valid JSON, and other prompts with one sentence. Faults are queued per
path and consumed in arrival order (use ``max_concurrency=1`` where the order matters).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reidschemas import load_template

CHAT_PATH = "/v1/chat/completions"
Handler = Callable[[dict[str, Any]], str]


# -- replies ----------------------------------------------------------------------------------------------------


def template_reply(kind: str, confidence: float = 0.9) -> str:
    """A valid attribute JSON for ``kind``: the first option (closed vocabulary) or first example (open)."""
    answer = {}
    for spec in load_template(kind).specs:
        if spec.options is not None:
            value = spec.options[0]
        else:
            examples = spec.options_text.strip()[len("e.g.,") :].replace("|", ",")
            value = examples.split(",")[0].strip()
        answer[spec.name] = {"value": value, "confidence": confidence}
    return json.dumps(answer)


def prompt_text(body: dict[str, Any]) -> str:
    """The text parts of a chat body's messages, joined."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part.get("text", "") for part in content if part.get("type") == "text")
    return "\n".join(texts)


def image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``image_url`` objects (``{"url": ..., "detail": ...}``) of a chat body."""
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            parts.extend(part["image_url"] for part in content if part.get("type") == "image_url")
    return parts


def default_handler(body: dict[str, Any]) -> str:
    """Attribute JSON for a template prompt (pedestrian or vehicle), else a caption sentence."""
    text = prompt_text(body)
    for kind in ("pedestrian", "vehicle"):
        if all(f'"{name}"' in text for name in load_template(kind).names):
            return template_reply(kind)
    return "A person in a black jacket walks past."


# -- faults -----------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by the next request to ``path``."""

    status: int = 500
    body: Any = None
    """JSON error body (default: an OpenAI error object); a str is sent as-is (not JSON)."""
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0
    """Sleep before answering (past the client's timeout: the client gives up)."""
    reply_text: str | None = None
    """With status 200: answer normally but with this message content (e.g. malformed JSON)."""
    path: str = CHAT_PATH

    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        path: str = CHAT_PATH,
    ) -> Fault:
        body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return Fault(status=status, body=body, headers=headers or {}, path=path)

    @staticmethod
    def rate_limit(retry_after: float | None = 1, *, retry_after_ms: float | None = None) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = f"{retry_after_ms:g}"
        return Fault.error(
            429, "Rate limit reached for requests", type="requests", code="rate_limit_exceeded", headers=headers
        )

    @staticmethod
    def insufficient_quota() -> Fault:
        return Fault.error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
        )

    @staticmethod
    def server_error(status: int = 500, path: str = CHAT_PATH) -> Fault:
        return Fault.error(
            status, "The server had an error while processing your request.", type="server_error", path=path
        )

    @staticmethod
    def timeout(sleep_s: float) -> Fault:
        return Fault(status=200, sleep_s=sleep_s)

    @staticmethod
    def malformed(text: str = '{"age": {"value": "adult", "confidence": 0.9},') -> Fault:
        return Fault(status=200, reply_text=text)

    @staticmethod
    def unauthorized() -> Fault:
        return Fault(status=401)  # body built from the request's key (echoed, as a careless server would)

    @staticmethod
    def model_not_found(model: str = "gpt-missing") -> Fault:
        return Fault.error(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )

    @staticmethod
    def reject_json_schema() -> Fault:
        return Fault.error(
            400,
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
            param="response_format",
        )


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: Any
    """Parsed JSON, or the raw bytes for uploads."""


# -- the server -------------------------------------------------------------------------------------------------


class FakeOpenAI:
    """The fake server (a context manager). Attributes may be changed between requests."""

    def __init__(
        self,
        handler: Handler = default_handler,
        *,
        api_key: str | None = None,
        models: set[str] | None = None,
        reject_json_schema: bool = False,
        reject_json_object: bool = False,
        delay_s: float = 0.0,
        batch_polls_to_complete: int = 1,
    ) -> None:
        self.handler = handler
        self.api_key = api_key
        """When set, other bearer keys get 401 (the message echoes the key sent)."""
        self.models = models
        """When set, other models get 404."""
        self.reject_json_schema = reject_json_schema
        """Every json_schema response_format gets 400 (a server without structured output)."""
        self.reject_json_object = reject_json_object
        self.delay_s = delay_s
        """Processing time per chat request (to observe concurrency)."""
        self.batch_polls_to_complete = batch_polls_to_complete
        self.log: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeOpenAI:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_request_handler(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection

    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def requests_to(self, path: str, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.log if r.path == path and (method is None or r.method == method)]

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        """The bodies of every chat request received (online; batch lines are not HTTP requests)."""
        return [r.body for r in self.requests_to(CHAT_PATH, "POST")]

    @property
    def chat_count(self) -> int:
        return len(self.chat_bodies)

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()
            self.max_in_flight = 0

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.path):
                    self.faults.remove(fault)
                    return fault
        return None

    # -- chat

    def chat(self, body: dict[str, Any], auth: str | None) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, headers) for one chat request (HTTP or a batch line)."""
        fault = self._next_fault(CHAT_PATH)
        if fault is not None and fault.sleep_s:
            time.sleep(fault.sleep_s)
        if (fault is not None and fault.status == 401) or (self.api_key is not None and auth != self.api_key):
            return 401, _error(f"Incorrect API key provided: {auth}.", "invalid_request_error", "invalid_api_key"), {}
        if fault is not None and fault.status != 200:
            return (
                fault.status,
                fault.body if fault.body is not None else _error("fault", "server_error"),
                fault.headers,
            )
        model = body.get("model", "")
        if self.models is not None and model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return 404, _error(message, "invalid_request_error", "model_not_found"), {}
        kind = (body.get("response_format") or {}).get("type")
        if (kind == "json_schema" and self.reject_json_schema) or (kind == "json_object" and self.reject_json_object):
            message = f"Invalid parameter: 'response_format' of type '{kind}' is not supported with this model."
            return 400, _error(message, "invalid_request_error", None, param="response_format"), {}
        if self.delay_s:
            time.sleep(self.delay_s)
        text = fault.reply_text if fault is not None and fault.reply_text is not None else self.handler(body)
        prompt_tokens = 85 * len(image_parts(body)) + len(prompt_text(body).split())
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            },
        }
        return 200, completion, {}

    # -- files and batches

    def upload(self, content_type: str, data: bytes) -> tuple[int, Any]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + data
        )
        fields: dict[str, Any] = {}
        filename = "upload.jsonl"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
            fields[name] = part.get_payload(decode=True)
        if "file" not in fields:
            return 400, _error("missing file", "invalid_request_error", None)
        file_id = self._new_file(fields["file"], filename, (fields.get("purpose") or b"batch").decode())
        return 200, self._file_object(file_id)

    def _new_file(self, content: bytes, filename: str, purpose: str) -> str:
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        with self._lock:
            self.files[file_id] = {
                "content": content,
                "filename": filename,
                "purpose": purpose,
                "created_at": int(time.time()),
            }
        return file_id

    def _file_object(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(f["content"]),
            "created_at": f["created_at"],
            "filename": f["filename"],
            "purpose": f["purpose"],
            "status": "processed",
        }

    def create_batch(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("input_file_id") not in self.files:
            return 404, _error("No such File object", "invalid_request_error", None)
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint"),
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "errors": None,
            "_polls": 0,
        }
        with self._lock:
            self.batches[batch_id] = batch
        return 200, _public(batch)

    def retrieve_batch(self, batch_id: str) -> tuple[int, Any]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, _error("No such Batch object", "invalid_request_error", None)
        if batch["status"] in ("validating", "in_progress"):
            batch["_polls"] += 1
            if batch["_polls"] >= self.batch_polls_to_complete:
                self._run_batch(batch)
            else:
                batch["status"] = "in_progress"
        return 200, _public(batch)

    def _run_batch(self, batch: dict[str, Any]) -> None:
        lines = self.files[batch["input_file_id"]]["content"].decode().splitlines()
        outputs, errors = [], []
        for line in filter(None, lines):
            item = json.loads(line)
            status, body, _ = self.chat(item["body"], self.api_key)
            result = {
                "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                "custom_id": item["custom_id"],
                "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                "error": None,
            }
            (outputs if status == 200 else errors).append(json.dumps(result))
        for kind, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                batch[kind] = self._new_file(("\n".join(rows) + "\n").encode(), f"{kind}.jsonl", "batch_output")
        batch["request_counts"] = {
            "total": len(outputs) + len(errors),
            "completed": len(outputs),
            "failed": len(errors),
        }
        batch["status"] = "completed"


def _error(message: str, type: str, code: str | None, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _make_request_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = (
                payload
                if isinstance(payload, bytes)
                else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            )
            try:
                self.send_response(status)
                kind = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def _read(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _record(self, body: Any) -> None:
            with fake._lock:
                fake.log.append(
                    Recorded(
                        self.command, self.path.split("?")[0], {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )

        def _auth(self) -> str | None:
            value = self.headers.get("Authorization", "")
            return value.removeprefix("Bearer ") if value else None

        def do_POST(self) -> None:
            raw = self._read()
            path = self.path.split("?")[0]
            is_upload = path == "/v1/files"
            try:
                body = raw if is_upload else json.loads(raw or b"{}")
            except ValueError:
                self._record(raw)
                self._send(
                    400, _error("We could not parse the JSON body of your request.", "invalid_request_error", None)
                )
                return
            self._record(body)
            if path == CHAT_PATH:
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, payload, headers = fake.chat(body, self._auth())
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                self._send(status, payload, headers)
                return
            fault = fake._next_fault(path)
            if fault is not None:
                self._send(fault.status, fault.body or _error("fault", "server_error", None), fault.headers)
            elif is_upload:
                self._send(*fake.upload(self.headers.get("Content-Type", ""), raw))
            elif path == "/v1/batches":
                self._send(*fake.create_batch(body))
            elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
                batch = fake.batches.get(path.split("/")[3])
                if batch is None:
                    self._send(404, _error("No such Batch object", "invalid_request_error", None))
                else:
                    batch["status"] = "cancelled"
                    self._send(200, _public(batch))
            else:
                self._send(404, _error(f"Unknown path {path}", "invalid_request_error", None))

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            self._record(None)
            fault = fake._next_fault(path)
            parts = path.strip("/").split("/")
            if fault is not None:
                self._send(fault.status, fault.body or _error("fault", "server_error", None), fault.headers)
            elif path == "/v1/models":
                names = sorted(fake.models) if fake.models is not None else ["gpt-4o"]
                listed = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in names]
                self._send(200, {"object": "list", "data": listed})
            elif path == "/v1/batches":
                data = [_public(b) for b in reversed(list(fake.batches.values()))]
                first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                self._send(200, {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False})
            elif parts[:2] == ["v1", "batches"] and len(parts) == 3:
                self._send(*fake.retrieve_batch(parts[2]))
            elif parts[:2] == ["v1", "files"] and len(parts) >= 3 and parts[2] in fake.files:
                if len(parts) == 4 and parts[3] == "content":
                    self._send(200, fake.files[parts[2]]["content"])
                else:
                    self._send(200, fake._file_object(parts[2]))
            else:
                self._send(404, _error(f"Unknown path {path}", "invalid_request_error", None))

    return RequestHandler

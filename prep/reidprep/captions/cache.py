"""The request cache: chat replies in SQLite, keyed by a hash of everything that changes the reply.

The key covers the backend's identity (provider, model, sampling parameters), the prompt, the image bytes, the
response model (name and JSON schema) and ``max_tokens``: changing the prompt invalidates exactly the entries made
with that prompt. Failures are never cached, and neither is a reply its request rejects (``ChatRequest.accept``:
malformed JSON, too few attributes): a rerun asks again instead of replaying it, and a rejected reply found in the
cache (written before this check existed) is a miss, asked again and overwritten. WAL mode lets several shard
processes on one machine share the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reidprep.captions.backends.base import ChatBackend, ChatReply, ChatRequest, RequestFailure, done_counter

KEY_VERSION = 1
"""Bumped when the key's recipe changes (old entries then simply miss)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@cache
def _schema_digest(model: type[BaseModel]) -> str:
    schema = json.dumps(model.model_json_schema(), sort_keys=True, separators=(",", ":"))
    return _sha256(f"{model.__name__}\n{schema}".encode())


def request_key(backend_identity: dict[str, Any], request: ChatRequest) -> str:
    """SHA-256 (hex) over the backend identity, the prompt, the image bytes, the response model and max_tokens."""
    parts = {
        "version": KEY_VERSION,
        "backend": backend_identity,
        "prompt": _sha256(request.prompt.encode("utf-8")),
        "image": None if request.image_jpeg is None else _sha256(request.image_jpeg),
        "response_model": None if request.response_model is None else _schema_digest(request.response_model),
        "max_tokens": request.max_tokens,
    }
    return _sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode())


class RequestCache:
    """Reply text and token counts by request key, in one SQLite file (WAL; safe across processes)."""

    def __init__(self, path: Path, *, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies ("
            " key TEXT PRIMARY KEY, text TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
            " output_tokens INTEGER NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> ChatReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, input_tokens, output_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else ChatReply(row[0], row[1], row[2], cached=True)

    def get_many(self, keys: Sequence[str]) -> dict[str, ChatReply]:
        """The cached replies among ``keys``."""
        found: dict[str, ChatReply] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text, input_tokens, output_tokens FROM replies WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update({k: ChatReply(t, i, o, cached=True) for k, t, i, o in rows})
        return found

    def put(self, key: str, reply: ChatReply) -> None:
        self.put_many([(key, reply)])

    def put_many(self, items: Sequence[tuple[str, ChatReply]]) -> None:
        """Store replies in one transaction (a key already present is overwritten)."""
        if not items:
            return
        now = time.time()
        rows = [(k, r.text, r.input_tokens, r.output_tokens, now) for k, r in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def usable(items: Sequence[tuple[ChatRequest, str, ChatReply | RequestFailure]]) -> list[tuple[str, ChatReply]]:
    """The (key, reply) pairs worth caching among (request, key, reply): replies their request accepts."""
    return [(k, r) for q, k, r in items if isinstance(r, ChatReply) and q.rejects(r) is None]


class CachedBackend(ChatBackend):
    """Answers cached requests from ``cache`` and sends only the others (each distinct one once) to ``inner``."""

    name = "cached"

    def __init__(self, inner: ChatBackend, cache: RequestCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name  # type: ignore[misc]  # report as the provider it wraps

    @property
    def model(self) -> str:
        return self.inner.model

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply | RequestFailure]:
        identity = self.inner.identity()
        keys = [request_key(identity, r) for r in requests]
        stored = self.cache.get_many(keys)
        replies: dict[str, ChatReply | RequestFailure] = {
            k: stored[k] for k, r in zip(keys, requests, strict=True) if k in stored and r.rejects(stored[k]) is None
        }
        missing = {k: r for k, r in zip(keys, requests, strict=True) if k not in replies}
        done_counter()(len(requests) - len(missing))  # cached, or repeated within the batch: answered already
        if missing:
            fresh = self.inner.generate(list(missing.values()))
            replies.update(zip(missing, fresh, strict=True))
            self.cache.put_many(usable(list(zip(missing.values(), missing, fresh, strict=True))))
        out: list[ChatReply | RequestFailure] = []
        seen: set[str] = set()
        for key in keys:
            reply = replies[key]
            if key in seen and isinstance(reply, ChatReply):
                reply = replace(reply, cached=True)  # a repeat within the batch was not sent again
            seen.add(key)
            out.append(reply)
        return out

"""The request cache: reruns make no requests, a changed prompt re-requests exactly its entries."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Fault, prompt_text  # tests/prep/ is on sys.path

from reidprep.captions.backends.base import ChatReply, ChatRequest, RequestFailure
from reidprep.captions.backends.openai_backend import OpenAIBackend
from reidprep.captions.cache import CachedBackend, RequestCache, request_key
from reidschemas import attribute_model
from reidschemas.config import OpenAIConfig


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cache")
    with FakeOpenAI(handler=lambda body: "echo: " + prompt_text(body)) as fake:
        yield fake


def cached_backend(server: FakeOpenAI, path: Path, **overrides) -> CachedBackend:
    config = OpenAIConfig(**{"base_url": server.base_url, "max_retries": 0, "max_concurrency": 2, **overrides})
    return CachedBackend(OpenAIBackend(config, backoff_base_s=0.01), RequestCache(path))


def requests_with(prompt_b: str) -> list[ChatRequest]:
    return [
        ChatRequest("prompt A", b"image-0"),
        ChatRequest("prompt A", b"image-1"),
        ChatRequest(prompt_b, b"image-0"),
        ChatRequest(prompt_b, b"image-1"),
    ]


def test_a_rerun_makes_no_requests(server, tmp_path):
    first = cached_backend(server, tmp_path / "cache.sqlite").generate(requests_with("prompt B"))
    assert server.chat_count == 4 and not any(r.cached for r in first)
    # A new process: a new backend and a new connection to the same file.
    again = cached_backend(server, tmp_path / "cache.sqlite").generate(requests_with("prompt B"))
    assert server.chat_count == 4
    assert all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    assert [(r.input_tokens, r.output_tokens) for r in again] == [(r.input_tokens, r.output_tokens) for r in first]


def test_a_changed_prompt_re_requests_exactly_its_entries(server, tmp_path):
    cached_backend(server, tmp_path / "c.sqlite").generate(requests_with("prompt B"))
    server.reset_log()
    replies = cached_backend(server, tmp_path / "c.sqlite").generate(requests_with("prompt B, reworded"))
    assert sorted(prompt_text(b) for b in server.chat_bodies) == ["prompt B, reworded"] * 2
    assert [r.cached for r in replies] == [True, True, False, False]
    assert replies[2].text == "echo: prompt B, reworded"


def test_failures_are_not_cached(server, tmp_path):
    server.add_faults(Fault.server_error())
    backend = cached_backend(server, tmp_path / "c.sqlite", max_concurrency=1)
    [failed] = backend.generate([ChatRequest("p")])
    assert isinstance(failed, RequestFailure)
    [ok] = backend.generate([ChatRequest("p")])
    assert isinstance(ok, ChatReply) and not ok.cached and server.chat_count == 2


def _json_only(text: str) -> None:
    json.loads(text)  # JSONDecodeError is a ValueError: the request rejects the reply


def test_a_reply_its_request_rejects_is_not_cached_and_a_stored_one_is_asked_again(server, tmp_path):
    """A malformed reply (the server answers, the text is unusable) is never stored, so a rerun asks again; one
    stored before the check existed is a miss, asked again and overwritten (never replayed, even by --force)."""
    server.handler = lambda body: "not json" if "bad" in prompt_text(body) else '{"ok": 1}'
    backend = cached_backend(server, tmp_path / "c.sqlite", max_concurrency=1)
    requests = [ChatRequest("good", accept=_json_only), ChatRequest("bad", accept=_json_only)]
    first = backend.generate(requests)
    assert [r.text for r in first if isinstance(r, ChatReply)] == ['{"ok": 1}', "not json"]  # the caller decides
    assert len(backend.cache) == 1 and backend.cache.get(request_key(backend.identity(), requests[1])) is None
    server.reset_log()
    backend.generate(requests)
    assert [prompt_text(b) for b in server.chat_bodies] == ["bad"]  # exactly the rejected one
    server.handler = lambda body: '{"fixed": true}'
    backend.cache.put(request_key(backend.identity(), requests[1]), ChatReply("not json"))  # a legacy entry
    server.reset_log()
    again = backend.generate(requests)
    assert [prompt_text(b) for b in server.chat_bodies] == ["bad"]
    assert [(r.text, r.cached) for r in again if isinstance(r, ChatReply)] == [
        ('{"ok": 1}', True),
        ('{"fixed": true}', False),
    ]
    stored = backend.cache.get(request_key(backend.identity(), requests[1]))
    assert stored is not None and stored.text == '{"fixed": true}'
    # Without a check the reply is the caller's to judge and is cached as before.
    server.handler = lambda body: "not json"
    [plain] = backend.generate([ChatRequest("unchecked")])
    assert isinstance(plain, ChatReply) and plain.text == "not json" and len(backend.cache) == 3


def test_repeats_within_a_batch_are_sent_once(server, tmp_path):
    replies = cached_backend(server, tmp_path / "c.sqlite").generate([ChatRequest("same")] * 3)
    assert server.chat_count == 1
    assert [r.cached for r in replies] == [False, True, True]


def test_the_key_covers_what_changes_the_reply():
    identity = {"backend": "openai", "model": "gpt-4o", "temperature": 0.0}
    base = ChatRequest("prompt", b"jpeg", attribute_model("pedestrian"), max_tokens=512)
    key = request_key(identity, base)
    assert key == request_key(dict(identity), ChatRequest("prompt", b"jpeg", attribute_model("pedestrian"), 512))
    assert len(key) == 64 and int(key, 16) >= 0
    variants = [
        request_key({**identity, "model": "gpt-4o-mini"}, base),
        request_key({**identity, "temperature": 0.5}, base),
        request_key(identity, ChatRequest("prompt!", b"jpeg", attribute_model("pedestrian"), 512)),
        request_key(identity, ChatRequest("prompt", b"jpeg2", attribute_model("pedestrian"), 512)),
        request_key(identity, ChatRequest("prompt", None, attribute_model("pedestrian"), 512)),
        request_key(identity, ChatRequest("prompt", b"jpeg", attribute_model("vehicle"), 512)),
        request_key(identity, ChatRequest("prompt", b"jpeg", None, 512)),
        request_key(identity, ChatRequest("prompt", b"jpeg", attribute_model("pedestrian"), 256)),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_sqlite_in_wal_mode(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put("k", ChatReply("text", 3, 4))
    assert cache.get("k") == ChatReply("text", 3, 4, cached=True)
    assert cache.get("missing") is None
    cache.close()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_several_processes_share_one_cache(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from reidprep.captions.backends.base import ChatReply
        from reidprep.captions.cache import RequestCache
        cache = RequestCache(Path(sys.argv[1]))
        for i in range(100):
            cache.put(f"{sys.argv[2]}-{i}", ChatReply(f"reply {i}", i, i))
        """
    )
    path = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    cache = RequestCache(path)
    assert len(cache) == 300 and cache.get("b-99") == ChatReply("reply 99", 99, 99, cached=True)

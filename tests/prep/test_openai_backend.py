"""The openai chat backend against a fake OpenAI server on 127.0.0.1: real SDK, real HTTP."""

from __future__ import annotations

import base64
import json
import logging
import time
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, Fault, prompt_text  # tests/prep/ is on sys.path

from reidprep.captions.backends.base import ChatReply, ChatRequest, FatalBackendError, RequestFailure
from reidprep.captions.backends.openai_backend import OpenAIBackend, retry_after_s
from reidprep.captions.cache import CachedBackend, RequestCache
from reidschemas import attribute_model, load_template
from reidschemas.config import OpenAIConfig

KEY = "sk-test-LEAKCHECK-5f3c9a7e1d2b4c6a"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes\xff\xd9"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def backend_for(server: FakeOpenAI, **overrides) -> OpenAIBackend:
    settings = {"base_url": server.base_url, "timeout_s": 2.0, "max_retries": 2, "max_concurrency": 1, **overrides}
    return OpenAIBackend(OpenAIConfig(**settings), backoff_base_s=0.01, backoff_max_s=2.0)


def attribute_request(image: bytes | None = JPEG) -> ChatRequest:
    return ChatRequest(load_template("pedestrian").prompt(), image, attribute_model("pedestrian"))


def test_reply_text_and_tokens(server):
    [reply] = backend_for(server).generate([attribute_request()])
    assert isinstance(reply, ChatReply) and not reply.cached
    attribute_model("pedestrian").model_validate_json(reply.text)  # the default handler answers the template
    assert reply.input_tokens > 85 and reply.output_tokens == len(reply.text.split())
    assert server.chat_bodies[0]["model"] == "gpt-4o"


def test_image_as_data_url_with_detail_and_text_only_requests(server):
    backend = backend_for(server, detail="high")
    replies = backend.generate([attribute_request(), ChatRequest("Fuse these captions.", max_tokens=64)])
    assert all(isinstance(r, ChatReply) for r in replies)
    with_image, text_only = server.chat_bodies
    [text_part] = [p for p in with_image["messages"][0]["content"] if p["type"] == "text"]
    [image_part] = [p["image_url"] for p in with_image["messages"][0]["content"] if p["type"] == "image_url"]
    assert text_part["text"] == load_template("pedestrian").prompt()
    assert image_part["detail"] == "high"
    assert image_part["url"] == "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    assert text_only["messages"] == [{"role": "user", "content": "Fuse these captions."}]
    assert text_only["max_tokens"] == 64 and "response_format" not in text_only
    assert replies[1].text == "A person in a black jacket walks past."


def test_malformed_reply_text_is_returned_as_text(server):
    server.add_faults(Fault.malformed('{"age": {"value": "adult", "confid'))
    [reply] = backend_for(server).generate([attribute_request()])
    assert isinstance(reply, ChatReply) and reply.text == '{"age": {"value": "adult", "confid'


def test_retry_after_is_honoured(server):
    server.add_faults(Fault.rate_limit(retry_after=1))
    start = time.monotonic()
    [reply] = backend_for(server).generate([attribute_request()])
    waited = time.monotonic() - start
    assert isinstance(reply, ChatReply) and server.chat_count == 2
    assert 0.95 <= waited < 2.5  # the backoff base is 10 ms: only Retry-After explains a 1 s wait


def test_retry_after_ms_wins_and_waits_are_capped(server):
    server.add_faults(Fault.rate_limit(retry_after=30, retry_after_ms=200))
    start = time.monotonic()
    [reply] = backend_for(server).generate([attribute_request()])
    assert isinstance(reply, ChatReply) and 0.18 <= time.monotonic() - start < 1.5

    past = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert retry_after_s(past) == 0.0  # an HTTP date in the past
    server.add_faults(Fault.rate_limit(retry_after=30))
    start = time.monotonic()
    backend = OpenAIBackend(OpenAIConfig(base_url=server.base_url, max_retries=1), backoff_max_s=0.3)
    assert isinstance(backend.generate([attribute_request()])[0], ChatReply)
    assert time.monotonic() - start < 1.5  # Retry-After: 30 capped at backoff_max_s


def test_server_error_then_success(server):
    server.add_faults(Fault.server_error(500), Fault.server_error(503))
    [reply] = backend_for(server).generate([attribute_request()])
    assert isinstance(reply, ChatReply) and server.chat_count == 3


def test_timeout_then_success(server):
    server.add_faults(Fault.timeout(sleep_s=0.8))
    start = time.monotonic()
    [reply] = backend_for(server, timeout_s=0.3).generate([attribute_request()])
    assert isinstance(reply, ChatReply) and server.chat_count == 2
    assert time.monotonic() - start < 0.8 + 0.5  # the client gave up at 0.3 s; it did not wait for the slow reply


def test_retries_exhausted_is_a_request_failure_and_the_batch_goes_on(server, caplog):
    server.add_faults(*[Fault.server_error()] * 3)
    with caplog.at_level(logging.WARNING):
        failed, ok = backend_for(server, max_retries=2).generate([attribute_request(), attribute_request()])
    assert isinstance(failed, RequestFailure) and failed.error_type == "InternalServerError"
    assert "HTTP 500" in failed.reason and "3 attempts" in failed.reason
    assert isinstance(ok, ChatReply) and server.chat_count == 4
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


def test_timeouts_exhausted(server):
    server.add_faults(Fault.timeout(0.5), Fault.timeout(0.5))
    [failed] = backend_for(server, timeout_s=0.2, max_retries=1).generate([attribute_request()])
    assert isinstance(failed, RequestFailure) and failed.error_type == "APITimeoutError"
    assert "timed out" in failed.reason


def test_a_dead_server_is_fatal_before_the_first_request():
    with FakeOpenAI() as fake:
        url = fake.base_url  # nothing listens there once the server is closed
    backend = OpenAIBackend(OpenAIConfig(base_url=url, max_retries=5), backoff_base_s=0.01)
    start = time.monotonic()
    with pytest.raises(FatalBackendError, match=f"cannot connect to {url}.*before the first request"):
        backend.generate([attribute_request()] * 4)
    assert time.monotonic() - start < 1.0  # no retries, no backoff


def test_the_preflight_is_one_request_and_any_http_answer_passes(server):
    server.add_faults(Fault.server_error(503, path="/v1/models"))
    backend = backend_for(server)
    backend.generate([attribute_request()])
    backend.generate([attribute_request()])
    assert len(server.requests_to("/v1/models")) == 1 and server.chat_count == 2


def test_a_server_that_stops_answering_mid_run_stops_after_consecutive_connection_failures(server):
    backend = backend_for(server, timeout_s=0.2, max_retries=5, max_concurrency=2)
    backend.max_connection_failures = 3
    assert all(isinstance(r, ChatReply) for r in backend.generate([attribute_request()] * 2))
    server.add_faults(*[Fault.timeout(0.5)] * 48)  # every attempt of 8 requests x 6 attempts would hang
    start = time.monotonic()
    with pytest.raises(FatalBackendError, match=r"timed out after 0\.2 s: 3 attempts in a row reached no server"):
        backend.generate([attribute_request()] * 8)
    assert time.monotonic() - start < 3.0  # without the limit: 8 x 6 time-outs of 0.2 s plus backoff
    assert server.chat_count <= 2 + 3 + 1  # the first two, then at most one attempt past the limit in flight


def test_answers_between_connection_failures_reset_the_count(server):
    # Two time-outs, an answer, two time-outs, an answer: never three in a row.
    server.add_faults(Fault.timeout(0.5), Fault.timeout(0.5))
    backend = backend_for(server, timeout_s=0.2, max_retries=2)
    backend.max_connection_failures = 3
    [first] = backend.generate([attribute_request()])
    server.add_faults(Fault.timeout(0.5), Fault.timeout(0.5))
    [second] = backend.generate([attribute_request()])
    assert isinstance(first, ChatReply) and isinstance(second, ChatReply)
    server.add_faults(Fault.timeout(0.5), Fault.timeout(0.5), Fault.timeout(0.5))
    with pytest.raises(FatalBackendError, match=r"timed out after 0\.2 s: 3 attempts in a row"):
        backend.generate([attribute_request()])


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.insufficient_quota(), ["quota", "insufficient_quota", "OPENAI_API_KEY"]),
        (Fault.unauthorized(), ["rejected the API key", "OPENAI_API_KEY", "401"]),
        (Fault.model_not_found("gpt-4o"), ["'gpt-4o' was not found", "captions.openai.model", "404"]),
        (Fault.error(403, "not allowed"), ["may not use model", "403"]),
        (Fault.error(400, "Invalid image data"), ["rejected the request", "Invalid image data"]),
    ],
)
def test_fatal_errors_are_not_retried_and_say_what_to_fix(server, fault, words):
    server.add_faults(fault)
    with pytest.raises(FatalBackendError) as raised:
        backend_for(server).generate([attribute_request()])
    for word in words:
        assert word in str(raised.value)
    assert server.chat_count == 1


def test_unknown_model(server):
    server.models = {"gpt-4o"}
    with pytest.raises(FatalBackendError, match="'gpt-nope' was not found"):
        backend_for(server, model="gpt-nope").generate([ChatRequest("hi")])


def test_a_fatal_error_stops_a_concurrent_batch(server):
    # One request backs off for 30 s (Retry-After) while another fails fatally: generate() raises at once.
    server.add_faults(Fault.rate_limit(retry_after=30), Fault.unauthorized())
    backend = OpenAIBackend(OpenAIConfig(base_url=server.base_url, max_concurrency=2, max_retries=3), backoff_max_s=30)
    start = time.monotonic()
    with pytest.raises(FatalBackendError):
        backend.generate([attribute_request() for _ in range(8)])
    assert time.monotonic() - start < 5
    assert server.chat_count <= 3  # a worker may take one more request before the stop is seen


def test_structured_output_when_supported(server):
    backend = backend_for(server)
    [reply] = backend.generate([attribute_request()])
    fmt = server.chat_bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "PedestrianAttributes"
    assert set(fmt["json_schema"]["schema"]["required"]) == set(load_template("pedestrian").names)
    assert isinstance(reply, ChatReply) and backend.format_level == "json_schema"


def test_fallback_to_plain_json_when_the_server_rejects_json_schema(server, caplog):
    server.reject_json_schema = True
    backend = backend_for(server)
    with caplog.at_level(logging.WARNING):
        first = backend.generate([attribute_request()])
        second = backend.generate([attribute_request()])
    assert all(isinstance(r, ChatReply) for r in first + second)
    kinds = [(b.get("response_format") or {}).get("type") for b in server.chat_bodies]
    assert kinds == ["json_schema", "json_object", "json_object"]  # remembered: no second json_schema attempt
    assert backend.format_level == "json_object"
    assert any("rejected response_format json_schema" in r.getMessage() for r in caplog.records)


def test_fallback_to_no_response_format(server):
    server.reject_json_schema = server.reject_json_object = True
    backend = backend_for(server)
    [reply] = backend.generate([attribute_request()])
    assert isinstance(reply, ChatReply) and backend.format_level == "none"
    kinds = [(b.get("response_format") or {}).get("type") for b in server.chat_bodies]
    assert kinds == ["json_schema", "json_object", None]


def test_one_rejection_of_json_schema_in_auto(server):
    server.add_faults(Fault.reject_json_schema())
    backend = backend_for(server)
    assert isinstance(backend.generate([attribute_request()])[0], ChatReply)
    assert backend.format_level == "json_object"


def test_no_strict_schema_falls_back_in_auto(server, monkeypatch):
    import openai.lib._chat_completion_resources as resources

    def no_schema(response_format):
        raise TypeError("cannot make a strict schema")

    monkeypatch.setattr(resources, "_type_to_response_format", no_schema)
    backend = backend_for(server)
    assert isinstance(backend.generate([attribute_request()])[0], ChatReply)
    assert backend.format_level == "json_object" and server.chat_bodies[0]["response_format"]["type"] == "json_object"
    with pytest.raises(FatalBackendError, match="no strict JSON schema"):
        backend_for(server, structured_output="on").generate([attribute_request()])


def test_structured_output_on_refuses_to_fall_back_and_off_never_asks(server):
    server.reject_json_schema = True
    with pytest.raises(FatalBackendError, match="set structured_output to auto or off"):
        backend_for(server, structured_output="on").generate([attribute_request()])
    server.reset_log()
    assert isinstance(backend_for(server, structured_output="off").generate([attribute_request()])[0], ChatReply)
    assert [b["response_format"]["type"] for b in server.chat_bodies] == ["json_object"]


def test_concurrency_is_bounded_and_order_preserved():
    with FakeOpenAI(handler=lambda body: "echo: " + prompt_text(body), delay_s=0.15) as server:
        backend = backend_for(server, max_concurrency=3)
        requests = [ChatRequest(f"prompt {i}") for i in range(9)]
        start = time.monotonic()
        replies = backend.generate(requests)
        elapsed = time.monotonic() - start
    assert [r.text for r in replies] == [f"echo: prompt {i}" for i in range(9)]
    assert 1 < server.max_in_flight <= 3
    assert elapsed < 9 * 0.15  # not one at a time


def test_the_key_comes_from_the_environment_only(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(FatalBackendError, match="OPENAI_API_KEY"):
        OpenAIBackend(OpenAIConfig())
    with pytest.raises(FatalBackendError, match="MY_LLM_KEY"):
        OpenAIBackend(OpenAIConfig(api_key_env="MY_LLM_KEY"))
    # A local server (vLLM) without a key: the placeholder is sent.
    assert isinstance(backend_for(server).generate([ChatRequest("hi")])[0], ChatReply)
    assert server.log[-1].headers["authorization"] == "Bearer EMPTY"
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    backend_for(server, api_key_env="MY_LLM_KEY").generate([ChatRequest("hi")])
    assert server.log[-1].headers["authorization"] == f"Bearer {KEY}"


def test_identity(server):
    backend = backend_for(server, model="gpt-4o-mini", detail="low", temperature=0.2)
    assert backend.model == "gpt-4o-mini"
    assert backend.identity() == {
        "backend": "openai",
        "model": "gpt-4o-mini",
        "base_url": server.base_url,
        "detail": "low",
        "temperature": 0.2,
        "max_tokens": 1024,
        "structured_output": "auto",
    }
    assert backend_for(server, timeout_s=9, max_concurrency=5).identity()["model"] == "gpt-4o"
    assert backend_for(server, timeout_s=9).identity() == backend_for(server, timeout_s=1).identity()


def test_the_api_key_never_leaks(server, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    texts: list[str] = []
    cache = RequestCache(tmp_path / "cache.sqlite")
    backend = CachedBackend(backend_for(server, max_retries=1, timeout_s=0.3), cache)
    texts.append(json.dumps(backend.identity()))
    replies = backend.generate([attribute_request(), ChatRequest("hi")])  # successes, cached
    server.add_faults(Fault.server_error(), Fault.server_error(), Fault.timeout(0.5), Fault.timeout(0.5))
    replies += backend.generate([ChatRequest("a"), ChatRequest("b")])  # exhausted retries
    replies += backend.generate([ChatRequest("c")]) + backend.generate([ChatRequest("c")])  # from the cache
    server.add_faults(Fault.malformed(), Fault.rate_limit(retry_after=0))
    replies += backend.generate([ChatRequest("d")])
    texts += [r.reason if isinstance(r, RequestFailure) else r.text for r in replies]
    fatal = [
        Fault.unauthorized(),  # the fake echoes the key it received, as a careless server might
        Fault.insufficient_quota(),
        Fault.model_not_found(),
        Fault.error(403, "denied"),
        Fault.error(400, f"bad request from key {KEY}"),
        Fault.error(418, "teapot"),
    ]
    for fault in fatal:
        server.add_faults(fault)
        with pytest.raises(FatalBackendError) as raised:
            backend.generate([ChatRequest(f"fatal {fault.status}")])
        texts.append(str(raised.value))
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with FakeOpenAI() as closed:
        url = closed.base_url
    gone = OpenAIBackend(OpenAIConfig(base_url=url, max_retries=0))
    with pytest.raises(FatalBackendError) as raised:
        gone.generate([ChatRequest("x")])
    texts.append(str(raised.value))
    assert "***" in texts[-7]  # the echoed key was scrubbed from the 401 message
    assert sum(isinstance(r, RequestFailure) for r in replies) == 2
    cache.close()
    assert server.requests_to("/v1/chat/completions")[0].headers["authorization"] == f"Bearer {KEY}"
    for text in texts + [caplog.text] + [r.getMessage() for r in caplog.records]:
        assert KEY not in text
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes(), path

"""The Batch API workflow end to end against the fake server, including resumes after crashes."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAI, Fault  # tests/prep/ is on sys.path

from reidprep.captions.backends.base import ChatReply, ChatRequest, RequestFailure
from reidprep.captions.backends.openai_backend import chat_body, make_client
from reidprep.captions.batch_api import BatchJob, BatchNotFinished
from reidschemas import attribute_model, load_template
from reidschemas.config import OpenAIConfig
from reidschemas.safeio import temporary_path

KEY = "sk-test-LEAKCHECK-batch-77aa"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(batch_polls_to_complete=2) as fake:
        yield fake


def config_for(server: FakeOpenAI) -> OpenAIConfig:
    return OpenAIConfig(base_url=server.base_url, detail="low")


def job_for(server: FakeOpenAI, state_path, **kwargs) -> BatchJob:
    config = config_for(server)
    return BatchJob(lambda: make_client(config), state_path, config, max_requests_per_file=2, **kwargs)


def bulk_requests(n: int = 5) -> list[tuple[str, ChatRequest]]:
    prompt = load_template("pedestrian").prompt()
    requests = [
        (f"t{i:03d}/rgb", ChatRequest(prompt, f"jpeg-{i}".encode(), attribute_model("pedestrian"))) for i in range(n)
    ]
    return [*requests, ("fusion-0", ChatRequest("Fuse: a man; a man in black."))]


def poll_until_finished(job: BatchJob, limit: int = 10) -> dict[str, int]:
    for _ in range(limit):
        counts = job.poll()
        if job.finished:
            return counts
    raise AssertionError(f"not finished after {limit} polls: {counts}")


def test_prepare_writes_the_online_bodies_split_by_count(server, tmp_path):
    job = job_for(server, tmp_path / "batch.json")
    paths = job.prepare(bulk_requests())
    assert [p.name for p in paths] == [f"batch.input-{i:05d}.jsonl" for i in range(3)]
    lines = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    assert [len(p.read_text().splitlines()) for p in paths] == [2, 2, 2]
    assert lines[0]["method"] == "POST" and lines[0]["url"] == "/v1/chat/completions"
    request = bulk_requests()[0][1]
    assert lines[0]["body"] == {**chat_body(config_for(server), request), "response_format": {"type": "json_object"}}
    assert "response_format" not in lines[-1]["body"]
    assert job.prepare(bulk_requests()) == paths  # the same requests again: nothing rewritten
    with pytest.raises(ValueError, match="different set of requests"):
        job.prepare(bulk_requests(4))
    with pytest.raises(ValueError, match="duplicate custom_id"):
        job_for(server, tmp_path / "other.json").prepare(bulk_requests() + bulk_requests()[:1])


def test_prepare_stopped_part_way_leaves_no_temporary_and_a_rerun_writes_every_part(server, tmp_path):
    class StoppedWhileWriting(list):
        """The requests; Ctrl-C arrives after the third one while the files are written (the second pass)."""

        passes = 0

        def __iter__(self):
            self.passes += 1
            for i, item in enumerate(super().__iter__()):
                if self.passes == 2 and i == 3:
                    raise KeyboardInterrupt
                yield item

    ours = temporary_path(tmp_path / "batch.input-00001.jsonl")
    dead = ours.with_name(ours.name.rsplit("-", 1)[0] + "-999999999")  # this host, a process that is gone
    live = tmp_path / ".batch.input-00000.jsonl.tmp-otherhost-1"  # another host's writer: never touched
    dead.write_bytes(b"left by a killed run")
    live.write_bytes(b"written by a live process elsewhere")
    with pytest.raises(KeyboardInterrupt):
        job_for(server, tmp_path / "batch.json").prepare(StoppedWhileWriting(bulk_requests()))
    assert sorted(p.name for p in tmp_path.glob(".*tmp*")) == [live.name]  # ours removed, the dead one cleaned
    assert [p.name for p in tmp_path.glob("batch.input-*")] == ["batch.input-00000.jsonl"]  # the finished part
    paths = job_for(server, tmp_path / "batch.json").prepare(bulk_requests())
    assert sum(len(p.read_text().splitlines()) for p in paths) == len(bulk_requests())


def test_prepare_splits_by_size(server, tmp_path):
    config = config_for(server)
    job = BatchJob(lambda: make_client(config), tmp_path / "b.json", config, max_bytes_per_file=6000)
    paths = job.prepare(bulk_requests(8))
    assert len(paths) > 1 and all(p.stat().st_size <= 6000 for p in paths)
    assert sum(len(p.read_text().splitlines()) for p in paths) == 9


def test_the_workflow_end_to_end(server, tmp_path):
    server.add_faults(Fault.error(400, "Invalid image"))  # the first batch line fails
    job = job_for(server, tmp_path / "batch.json")
    job.prepare(bulk_requests())
    assert job.poll() == {"unsubmitted": 3}
    batch_ids = job.submit()
    assert len(set(batch_ids)) == 3 and len(server.files) == 3
    assert all(r.body.startswith(b"--") for r in server.requests_to("/v1/files", "POST"))  # multipart uploads
    with pytest.raises(BatchNotFinished):
        job.collect()
    assert job.poll() == {"in_progress": 3}
    assert job.poll() == {"completed": 3} and job.finished
    assert job.request_counts() == {"total": 6, "completed": 5, "failed": 1}
    results = job.collect()
    assert list(results) == [cid for cid, _ in bulk_requests()]
    failed = results["t000/rgb"]
    assert isinstance(failed, RequestFailure) and "HTTP 400" in failed.reason and "Invalid image" in failed.reason
    for cid in ["t001/rgb", "t004/rgb"]:
        reply = results[cid]
        assert isinstance(reply, ChatReply) and reply.input_tokens > 85
        attribute_model("pedestrian").model_validate_json(reply.text)
    assert results["fusion-0"].text == "A person in a black jacket walks past."
    downloads = len(server.requests_to("/v1/files")) - 3
    assert job.collect() == results  # read again from the local copies
    assert len(server.requests_to("/v1/files")) - 3 == downloads
    assert server.chat_count == 0  # all of it went through the Batch API
    state = (tmp_path / "batch.json").read_bytes()
    assert KEY.encode() not in state
    assert [p["batch_id"] for p in json.loads(state)["parts"]] == batch_ids


def test_resume_after_a_crash_between_submit_and_collect(server, tmp_path):
    first = job_for(server, tmp_path / "batch.json")
    first.prepare(bulk_requests())
    batch_ids = first.submit()
    first.poll()
    del first  # the process dies here

    resumed = job_for(server, tmp_path / "batch.json")
    resumed.prepare(bulk_requests())  # the stage runs from the top again: a no-op
    assert resumed.submit() == batch_ids  # nothing submitted twice
    assert len(server.requests_to("/v1/batches", "POST")) == 3 and len(server.files) == 3
    poll_until_finished(resumed)
    results = resumed.collect()
    assert len(results) == 6 and all(isinstance(r, ChatReply) for r in results.values())


def test_resume_after_crashes_inside_submit(server, tmp_path, monkeypatch):
    # Crash 1: the upload of the second file fails (the SDK does not retry here).
    job = BatchJob(
        lambda: make_client(config_for(server), max_retries=0),
        tmp_path / "batch.json",
        config_for(server),
        max_requests_per_file=2,
    )
    job.prepare(bulk_requests())
    calls = {"n": 0}
    real_create = job.client.files.create

    def flaky_create(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            server.add_faults(Fault.server_error(path="/v1/files"))
        return real_create(**kwargs)

    monkeypatch.setattr(job.client.files, "create", flaky_create)
    with pytest.raises(Exception, match="500"):
        job.submit()
    state = json.loads((tmp_path / "batch.json").read_text())
    assert [bool(p["batch_id"]) for p in state["parts"]] == [True, False, False]

    # Crash 2: the batch of the second file is created, but the process dies before the state is saved.
    job = job_for(server, tmp_path / "batch.json")
    real_save, saves = BatchJob._save, {"n": 0}

    def dying_save(self):
        saves["n"] += 1
        if saves["n"] == 2:  # 1: the upload's file id; 2: the batch id
            raise KeyboardInterrupt
        real_save(self)

    monkeypatch.setattr(BatchJob, "_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        job.submit()
    monkeypatch.setattr(BatchJob, "_save", real_save)
    assert len(server.requests_to("/v1/batches", "POST")) == 2

    # The third run finds the second file's batch on the server and submits only the third.
    job = job_for(server, tmp_path / "batch.json")
    ids = job.submit()
    assert len(set(ids)) == 3 and len(server.requests_to("/v1/batches", "POST")) == 3
    assert sorted(ids) == sorted(server.batches)
    poll_until_finished(job)
    assert all(isinstance(r, ChatReply) for r in job.collect().values())


def test_expired_and_failed_batches_give_failures(server, tmp_path):
    job = job_for(server, tmp_path / "batch.json")
    job.prepare(bulk_requests(3))  # two parts
    first, second = job.submit()
    server.batches[first]["status"] = "expired"
    server.batches[second].update(status="failed", errors={"object": "list", "data": [{"message": "bad line"}]})
    assert job.poll() == {"expired": 1, "failed": 1}
    results = job.collect()
    assert len(results) == 4 and all(isinstance(r, RequestFailure) for r in results.values())
    assert results["t000/rgb"].error_type == "BatchExpired"
    assert results["fusion-0"].error_type == "BatchFailed" and "bad line" in results["fusion-0"].reason

"""``reidprep captions --batch-api``: the openai attribute requests of this shard through the Batch API.

The requests the stage would send (every view of every triplet of this shard, minus those already in the request
cache) are submitted as Batch API jobs (half price, up to 24 h). Each call of the command polls; once the jobs
are finished their replies are written into the request cache, and the normal stage run that follows makes no
attribute request at all. The job state lives in ``captions/batch/<digest>.json``, so a crashed or interrupted
command resumes without submitting twice. Caption fusion by LLM (``--fusion llm``) still goes online.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from reidprep.captions.backends.base import ChatRequest
from reidprep.captions.batch_api import BatchJob
from reidprep.captions.cache import CachedBackend, request_key, usable
from reidprep.captions.mllm import MLLMAttributeProvider
from reidprep.captions.stage import CaptionsTask
from reidprep.manifest import read_manifest
from reidprep.stage import StageOptions, chunk_units, shard_chunks, work_units
from reidprep.workdir import Workdir


@dataclass(frozen=True)
class BatchPhase:
    ready: bool
    """All attribute requests of this shard are answered (in the cache): run the stage."""
    message: str


def _openai_provider(task: CaptionsTask) -> MLLMAttributeProvider:
    for provider in task.providers.attribute:
        backend = getattr(provider, "backend", None)
        if isinstance(backend, CachedBackend) and backend.inner.name == "openai":
            return provider  # type: ignore[return-value]
    raise ValueError("--batch-api needs the openai provider in captions.providers")


def run_batch_phase(task: CaptionsTask, workdir: Path, options: StageOptions) -> BatchPhase:
    """Submit, poll or collect the Batch API jobs for this shard's uncached attribute requests."""
    from reidprep.captions.backends.openai_backend import make_client, read_api_key

    provider = _openai_provider(task)
    backend = provider.backend
    assert isinstance(backend, CachedBackend)
    identity = backend.inner.identity()
    units = work_units(read_manifest(Workdir(workdir).manifest))
    chunks = chunk_units(units, options.chunk_size)
    pending: dict[str, ChatRequest] = {}
    for c in shard_chunks(chunks, options):
        for unit in chunks[c]:
            triplet = task.load_triplet(unit)
            if triplet.failures:
                continue  # ledgered by the stage run itself
            for request in provider.requests(task.queries(triplet)):
                pending.setdefault(request_key(identity, request), request)
    cached = backend.cache.get_many(list(pending))
    todo = [(k, request) for k, request in pending.items() if k not in cached or request.rejects(cached[k]) is not None]
    if not todo:
        return BatchPhase(True, f"batch API: all {len(pending)} attribute requests are answered")
    digest = hashlib.sha256("\n".join(key for key, _ in todo).encode()).hexdigest()[:16]
    config = backend.inner.config  # type: ignore[attr-defined]
    state = Workdir(workdir).stage_dir("captions") / "batch" / f"{digest}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    job = BatchJob(lambda: make_client(config, max_retries=2, api_key=read_api_key(config)), state, config)
    job.prepare(todo)
    job.submit()
    statuses = job.poll()
    if not job.finished:
        counts = job.request_counts()
        return BatchPhase(
            False,
            f"batch API: {len(todo)} requests in {len(job.parts)} batch(es), status {statuses}, requests {counts}; "
            f"run the same command again later to collect (state {state})",
        )
    results = job.collect()
    replies = usable([(pending[key], key, reply) for key, reply in results.items()])
    backend.cache.put_many(replies)
    failed = len(results) - len(replies)
    note = f"; {failed} failed or unusable and will be sent online" if failed else ""
    return BatchPhase(True, f"batch API: collected {len(replies)} replies into the request cache{note}")

"""The qwen chat backend on a tiny random Qwen2.5-VL (real transformers code paths, CPU; one GPU test).

The weights are random, so reply texts are garbage: the tests check shapes, order, determinism, batching and
errors, never what the text says.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from qwen_tiny import make_tiny_qwen2vl, make_tiny_qwen25vl  # tests/prep/ is on sys.path

from reidprep.captions.backends.base import ChatReply, ChatRequest, FatalBackendError, RequestFailure
from reidprep.captions.backends.qwen_backend import QwenBackend
from reidschemas.config import QwenConfig

SIZES = [(256, 128), (96, 48), (64, 64)]  # (H, W): 8, 6 and 4 merged image tokens with the tiny processor


@pytest.fixture(scope="module", autouse=True)
def offline_one_thread() -> Iterator[None]:
    """No hub access (the backend also passes local_files_only); tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen25vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen25vl")


def make_backend(path: Path, **fields: object) -> QwenBackend:
    return QwenBackend(QwenConfig(**{"model_path": path, "device": "cpu", "max_new_tokens": 20, **fields}))


@pytest.fixture(scope="module")
def backend(tiny: Path) -> QwenBackend:
    return make_backend(tiny, batch_size=3)


def jpeg(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def requests() -> list[ChatRequest]:
    """Three images of different sizes, a text-only prompt in the middle, one short max_tokens."""
    images = [jpeg(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    return [
        ChatRequest("Describe the person: gender, clothes, colours.", images[0]),
        ChatRequest("A text-only prompt, longer than the others so that the image prompts get padded.", None),
        ChatRequest("Describe.", images[1], max_tokens=5),
        ChatRequest("Describe the vehicle.", images[2]),
    ]


def replies_of(results: list[ChatReply | RequestFailure]) -> list[ChatReply]:
    assert all(isinstance(result, ChatReply) for result in results), results
    return results  # type: ignore[return-value]


def test_one_reply_per_request_in_order(backend: QwenBackend, requests: list[ChatRequest]) -> None:
    replies = replies_of(backend.generate(requests))
    assert len(replies) == len(requests)
    for reply, request in zip(replies, requests, strict=True):
        assert isinstance(reply.text, str)
        assert reply.input_tokens > 0
        assert 0 < reply.output_tokens <= min(request.max_tokens, 20)
        assert not reply.cached
    image_counts = [replies[0].input_tokens, replies[2].input_tokens, replies[3].input_tokens]
    assert len(set(image_counts)) == 3  # each image expands to its own number of tokens
    reversed_replies = backend.generate(requests[::-1])
    assert reversed_replies[::-1] == replies
    assert backend.generate([]) == []


def test_deterministic(backend: QwenBackend, requests: list[ChatRequest]) -> None:
    assert backend.generate(requests) == backend.generate(requests)


def test_image_changes_the_reply_and_the_prompt_length(backend: QwenBackend, requests: list[ChatRequest]) -> None:
    with_image, text_only = backend.generate([requests[0], ChatRequest(requests[0].prompt)])
    assert with_image.input_tokens > text_only.input_tokens


@pytest.mark.parametrize("batch_size", [1, 4])
def test_batched_equals_one_by_one(
    tiny: Path, backend: QwenBackend, requests: list[ChatRequest], batch_size: int
) -> None:
    """Left padding is right: batch size 3 (a batch of 3, then 1) gives what 1 and 4 give."""
    other = make_backend(tiny, batch_size=batch_size)
    assert other.generate(requests) == backend.generate(requests)


def test_text_only_batch_and_ignored_response_model(backend: QwenBackend, requests: list[ChatRequest]) -> None:
    from pydantic import BaseModel

    class Attributes(BaseModel):
        gender: str

    text_only = [ChatRequest("First question."), ChatRequest("A second, longer question about the colours.")]
    replies = replies_of(backend.generate(text_only))
    assert len(replies) == 2
    structured = ChatRequest(requests[0].prompt, requests[0].image_jpeg, response_model=Attributes)
    assert backend.generate([structured]) == backend.generate([requests[0]])


def test_unreadable_image_fails_alone(backend: QwenBackend, requests: list[ChatRequest]) -> None:
    broken = ChatRequest("Describe.", b"not a jpeg")
    results = backend.generate([requests[0], broken, requests[1]])
    assert isinstance(results[1], RequestFailure)
    assert results[1].error_type == "UnreadableImage"
    assert [results[0], results[2]] == backend.generate([requests[0], requests[1]])


def test_failing_batch_is_retried_one_by_one(
    tiny: Path, requests: list[ChatRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(tiny, batch_size=4)
    expected = backend.generate(requests)
    real = backend._generate_batch

    def flaky(batch):
        if len(batch) > 1:
            raise RuntimeError("a batch-only failure")
        if batch[0][0] is requests[2]:
            raise ValueError("this request always fails")
        return real(batch)

    monkeypatch.setattr(backend, "_generate_batch", flaky)
    results = backend.generate(requests)
    assert isinstance(results[2], RequestFailure)
    assert results[2].error_type == "ValueError"
    assert "always fails" in results[2].reason
    assert [results[i] for i in (0, 1, 3)] == [expected[i] for i in (0, 1, 3)]


def test_out_of_memory_halves_the_batch(
    tiny: Path, requests: list[ChatRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(tiny, batch_size=4)
    expected = backend.generate(requests)
    real = backend._generate_batch
    sizes: list[int] = []

    def small_gpu(batch):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    monkeypatch.setattr(backend, "_generate_batch", small_gpu)
    assert backend.generate(requests) == expected
    assert sizes[:3] == [4, 2, 1]
    assert backend.batch_size == 1

    monkeypatch.setattr(backend, "_generate_batch", lambda batch: (_ for _ in ()).throw(torch.OutOfMemoryError()))
    [failure] = backend.generate(requests[:1])
    assert isinstance(failure, RequestFailure)
    assert failure.error_type == "OutOfMemoryError"


def test_identity_stable_and_tracks_the_weights(tiny: Path, backend: QwenBackend, tmp_path: Path) -> None:
    identity = backend.identity()
    json.dumps(identity)
    assert identity["backend"] == "qwen"
    assert identity["model"] == backend.model == "tiny-qwen25vl"
    assert identity["model_type"] == "qwen2_5_vl"
    assert identity["max_new_tokens"] == 20
    assert identity["dtype"] == "auto:float32"
    assert make_backend(tiny, batch_size=1).identity() == identity  # batch size does not change replies

    copy = tmp_path / "copy" / tiny.name
    shutil.copytree(tiny, copy)
    assert make_backend(copy).identity() == identity  # same content, same folder name
    reseeded = make_tiny_qwen25vl(tmp_path / "reseeded" / tiny.name, seed=1)
    changed = make_backend(reseeded).identity()
    assert changed["fingerprint"] != identity["fingerprint"]
    assert {key: value for key, value in changed.items() if key != "fingerprint"} == {
        key: value for key, value in identity.items() if key != "fingerprint"
    }
    assert make_backend(tiny, max_new_tokens=64).identity() != identity


def test_qwen2_vl_loads_and_batches(tmp_path: Path, requests: list[ChatRequest]) -> None:
    path = make_tiny_qwen2vl(tmp_path / "tiny-qwen2vl")
    batched = make_backend(path, batch_size=4)
    assert batched.identity()["model_type"] == "qwen2_vl"
    replies = replies_of(batched.generate(requests))
    assert len(replies) == len(requests)
    assert make_backend(path, batch_size=1).generate(requests) == replies


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FatalBackendError, match="no-such-model"):
        make_backend(missing)
    with pytest.raises(FatalBackendError, match="model_path is not set"):
        QwenBackend(QwenConfig(device="cpu"))


def test_folder_that_is_not_a_qwen_vl_model(tmp_path: Path, tiny: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FatalBackendError, match=r"empty has no config\.json.*Qwen2\.5-VL or Qwen2-VL"):
        make_backend(empty)

    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FatalBackendError, match=r"bert.*model_type 'bert' is not supported.*qwen2_5_vl"):
        make_backend(other)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    with pytest.raises(FatalBackendError, match="garbage"):
        make_backend(garbage)

    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny / name, weights_only / name)
    with pytest.raises(FatalBackendError, match=r"weights-only.*processor"):
        make_backend(weights_only)

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FatalBackendError, match="no-weights"):
        make_backend(no_weights)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_without_cuda(tiny: Path) -> None:
    with pytest.raises(FatalBackendError, match="--device cpu"):
        QwenBackend(QwenConfig(model_path=tiny))  # device defaults to cuda


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_batched(tiny: Path, requests: list[ChatRequest]) -> None:
    gpu = QwenBackend(QwenConfig(model_path=tiny, device="cuda", batch_size=3, max_new_tokens=20))
    assert gpu.dtype == torch.bfloat16
    assert gpu.identity()["dtype"] == "auto:bfloat16"
    replies = replies_of(gpu.generate(requests))
    assert len(replies) == len(requests)
    assert all(reply.output_tokens > 0 for reply in replies)
    assert gpu.generate(requests) == replies

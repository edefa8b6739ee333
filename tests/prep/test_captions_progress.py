"""Caption progress counts triplets as their requests come back, not whole chunks."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from typer.testing import CliRunner

import reidprep.stage
from reidprep.cli import app
from reidprep.index import run_index
from reidprep.synth import generate_dataset

KEY = "sk-test-progress"


class RecordingCounter:
    """The progress bar's edge: records every move instead of drawing it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.moves: list[tuple[str, float]] = []

    def advance(self, amount: float) -> None:
        self.moves.append(("advance", amount))

    def set_completed(self, completed: float) -> None:
        self.moves.append(("completed", completed))


def test_caption_progress_moves_per_request_within_a_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_dataset(tmp_path / "data", kind="person", ids=4, images_per_id=3, seed=1)
    workdir = tmp_path / "w"
    run_index(workdir, "rgbnt201", tmp_path / "data")
    bars: list[RecordingCounter] = []

    @contextlib.contextmanager
    def counter(total: int, description: str, enabled: bool = True, unit: str = ""):
        assert enabled and unit == "triplets" and f"({total} triplets in 1 chunks)" in description
        bars.append(RecordingCounter(total))
        yield bars[-1]

    monkeypatch.setattr(reidprep.stage, "counter", counter)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as server:
        config = tmp_path / "pipeline.yaml"
        config.write_text(
            "captions:\n  providers: [openai]\n  chunk_size: 64\n  openai:\n"
            f"    base_url: {server.base_url}\n    max_concurrency: 2\n    max_retries: 0\n"
        )
        result = CliRunner().invoke(app, ["captions", "--workdir", str(workdir), "--config", str(config), "--progress"])
        assert result.exit_code == 0, result.output
        requests = server.chat_count
    (bar,) = bars
    triplets = bar.total
    advances = [amount for kind, amount in bar.moves if kind == "advance"]
    # one chunk holds every triplet, yet the bar moved with each of its 4 views' requests (cached repeats at once)
    assert bar.moves[-1] == ("completed", triplets) and len(bar.moves) - 1 == len(advances)
    assert len(advances) >= requests > 1
    assert sum(advances) == pytest.approx(triplets)  # four quarter-triplets make a triplet

"""`reidprep captions` end to end: heuristic, openai (local fake server), qwen (tiny model), batch API, import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAI, default_handler, prompt_text
from typer.testing import CliRunner

from reidprep.captions.validate import clip_token_count, validate_caption
from reidprep.cli import app
from reidprep.index import run_index
from reidprep.stage import read_stage_table
from reidprep.synth import generate_dataset
from reidschemas import attribute_model, load_stmi_set

runner = CliRunner()
KEY = "sk-test-captions-0123456789"
REIDPREP = str(Path(sys.executable).parent / "reidprep")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, kind="person", ids=4, images_per_id=3, seed=5)
    return out


@pytest.fixture
def workdir(dataset, tmp_path) -> Path:
    run_index(tmp_path / "w", "rgbnt201", dataset)
    return tmp_path / "w"


def _captions(workdir: Path, *args: str) -> str:
    result = runner.invoke(app, ["captions", "--workdir", str(workdir), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def _openai_config(tmp_path: Path, server: FakeOpenAI, extra: str = "") -> Path:
    return _config(
        tmp_path,
        "captions:\n  providers: [openai]\n  chunk_size: 4\n  openai:\n"
        f"    base_url: {server.base_url}\n    max_concurrency: 1\n    max_retries: 1\n    timeout_s: 20\n{extra}",
    )


def test_heuristic_template_captions_with_rates_and_accuracy(workdir):
    _ = runner.invoke(app, ["masks", "--workdir", str(workdir), "--no-progress"])
    output = _captions(workdir, "--chunk-size", "5")
    assert "captions: 12 done, 0 skipped, 0 failed" in output and "providers heuristic, fusion template" in output
    assert "unknown attributes rgb:" in output and "attribute accuracy vs ground truth (fused)" in output
    rows = read_stage_table(workdir, "captions").to_pylist()
    assert len(rows) == 12
    for row in rows:
        for target in ("rgb", "nir", "tir", "fused"):
            text = row[f"caption_{target}"]
            assert text and "unknown" not in text.lower() and "[" not in text and clip_token_count(text) <= 77
        attributes = json.loads(row["attributes"])
        assert set(attributes) == {"rgb", "nir", "tir", "fused"}
        assert attributes["nir"]["upper_clothing_color"]["value"] is None  # no colour in NIR
        known_fused = {name for name, a in attributes["fused"].items() if a["value"] is not None}
        assert known_fused <= set(load_stmi_set("pedestrian").names)  # STMI's attributes only
        nothing = attribute_model("pedestrian").unknown()
        assert validate_caption(row["caption_fused"], nothing, "pedestrian", "fused") == []  # no view, light, clarity
        assert set(json.loads(row["view_attributes"])) == {"rgb", "nir", "tir", "composite"}
        assert 0.0 <= row["unknown_after_nir"] <= row["unknown_before_nir"] <= 1.0
    summary = json.loads((workdir / "captions" / "summary.json").read_text())
    assert set(summary["unknown_rates"]) == {"rgb", "nir", "tir"}
    assert summary["groundtruth"]["fused"]["mean_accuracy"] > 0.3
    identity = json.loads(next((workdir / "captions" / "runs").iterdir()).joinpath("stage.json").read_text())
    assert identity["identity"]["masks"] is not None  # the thermal masks were used, and fingerprinted
    assert "0 done, 12 skipped" in _captions(workdir, "--chunk-size", "5")


def test_openai_end_to_end_rerun_makes_no_request(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as server:
        config = _openai_config(tmp_path, server)
        output = _captions(workdir, "--config", str(config))
        assert "captions: 12 done" in output and "openai: 48 requests, 0 from cache" in output
        assert "USD" in output
        assert server.chat_count == 48  # 12 triplets x (rgb, nir, tir, composite)
        bodies = [json.dumps(b) for b in server.chat_bodies]
        assert sum("three times side by side" in b for b in bodies) == 12
        assert all('"detail": "low"' in b for b in bodies)
        assert all('"enum": ["child", "teenager", "adult", "senior"]' in b for b in bodies)  # options in the schema
        output = _captions(workdir, "--config", str(config), "--force")
        assert server.chat_count == 48 and "0 requests, 48 from cache" in output
    rows = read_stage_table(workdir, "captions").to_pylist()
    assert all(r["caption_rgb"].startswith("A male child seen from the front") for r in rows)  # first options
    for path in (workdir / "captions").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_openai_malformed_and_failed_replies_fail_their_triplet_and_a_rerun_asks_only_them(
    workdir, tmp_path, monkeypatch
):
    from fake_openai import Fault

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as server:
        # One request at a time, in query order: triplet 0's rgb view gets malformed JSON, its nir view two server
        # errors (max_retries 1: it gives up), its tir view a rate limit and then its answer.
        server.add_faults(
            Fault.malformed(), Fault.server_error(), Fault.server_error(), Fault.rate_limit(retry_after=1)
        )
        config = _openai_config(tmp_path, server)
        output = _captions(workdir, "--config", str(config))
        assert "captions: 11 done, 0 skipped, 1 failed" in output
        ledger = pq.read_table(workdir / "captions" / "errors.parquet").to_pylist()
        samples = sorted({e["sample_id"] for e in ledger})  # the triplet's sample ids (query and gallery for test)
        for sample in samples:
            entries = [e for e in ledger if e["sample_id"] == sample]
            assert [(e["error_type"], e["reason"].split(" view:")[0]) for e in entries] == [
                ("UnusableReply", "rgb"),
                ("InternalServerError", "nir"),
            ]
            assert "malformed JSON" in entries[0]["reason"]
            assert "/NI/" in entries[1]["path"] and "/RGB/" in entries[0]["path"]
        assert len(ledger) == 2 * len(samples)
        server.reset_log()
        output = _captions(workdir, "--config", str(config))  # no flag: the chunk with provider failures again
        assert server.chat_count == 2 and "4 done, 8 skipped, 0 failed" in output
        assert pq.read_table(workdir / "captions" / "errors.parquet").num_rows == 0


def test_openai_fatal_error_stops_the_stage(workdir, tmp_path, monkeypatch):
    from fake_openai import Fault

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as server:
        server.add_faults(Fault.insufficient_quota())
        result = runner.invoke(
            app, ["captions", "--workdir", str(workdir), "--config", str(_openai_config(tmp_path, server))]
        )
    assert result.exit_code == 1 and "captions stopped" in result.output and KEY not in result.output
    monkeypatch.delenv("OPENAI_API_KEY")
    result = runner.invoke(app, ["captions", "--workdir", str(workdir), "--provider", "openai"])
    assert result.exit_code == 1 and "OPENAI_API_KEY" in result.output


def test_openai_crash_mid_stage_resumes_without_loss_or_duplicates(workdir, tmp_path):
    with FakeOpenAI(delay_s=0.03) as server:
        config = _openai_config(tmp_path, server)
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        proc = subprocess.Popen(
            [REIDPREP, "captions", "--workdir", str(workdir), "--config", str(config), "--no-progress"],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        parts = workdir / "captions" / "runs"
        while time.monotonic() < deadline and not list(parts.rglob("part-00000.parquet")):
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        written = len(list(parts.rglob("part-*.parquet")))
        assert 1 <= written < 3, "the kill must land mid-run"
        before = server.chat_count
        result = subprocess.run(
            [REIDPREP, "captions", "--workdir", str(workdir), "--config", str(config), "--no-progress"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert f"{12 - 4 * written} done, {4 * written} skipped, 0 failed" in result.stdout
        assert server.chat_count - before <= 48 - 16 * written + 16  # at most the chunk in flight is asked again
    rows = read_stage_table(workdir, "captions").to_pylist()
    assert len(rows) == len({r["triplet_key"] for r in rows}) == 12


def _caption_from_prompt(text: str) -> str:
    """What a faithful LLM writes for a caption prompt: the attributes in it rendered (the renderer stands in).

    The fused prompt (STMI) sends only its 13 / 6 attributes; the others are unknown."""
    from reidprep.captions.parse import extract_json_object
    from reidprep.captions.render import render_caption
    from reidschemas import attribute_model

    kind = "pedestrian" if "person" in text.split(".")[0] else "vehicle"
    data, _ = extract_json_object(text[text.index("{") :])
    model = attribute_model(kind)
    data = {name: data.get(name, {"value": None, "confidence": 0.0}) for name in model.model_fields}
    return render_caption(model(**data), kind, "fused", max_tokens=None)  # no tokenizer load


def _fusion_handler(bad_first: int):
    """Attributes as usual; captions written from the attributes in the prompt (the renderer stands in for the LLM),
    except a vague caption for the first ``bad_first`` distinct caption prompts."""
    seen: list[str] = []

    def handler(body: dict) -> str:
        text = prompt_text(body)
        if not text.startswith("Generate a natural"):
            return default_handler(body)
        if "previous caption was rejected" not in text and text not in seen:
            seen.append(text)
            if len(seen) <= bad_first:
                return "The unknown person wears something unclear."
        return _caption_from_prompt(text)

    return handler


def test_llm_fusion_regenerates_an_invalid_caption_once(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(handler=_fusion_handler(bad_first=1)) as server:
        config = _openai_config(tmp_path, server, "  fusion: llm\n")
        output = _captions(workdir, "--config", str(config))
        caption_prompts = [b for b in server.chat_bodies if prompt_text(b).startswith("Generate a natural")]
    assert "captions: 12 done, 0 skipped, 0 failed" in output
    # The fake answers every image alike, so the 48 caption prompts are a few distinct ones, each sent once thanks
    # to the request cache, plus one regeneration of the prompt that got a vague caption; that vague caption was
    # never cached, so the next triplet with the same prompt asks again (and gets a valid caption, then cached).
    plain = [prompt_text(b) for b in caption_prompts if "previous caption was rejected" not in prompt_text(b)]
    distinct = set(plain)
    assert 3 <= len(distinct) <= 4 and len(caption_prompts) - len(plain) == 1
    assert len(plain) == len(distinct) + 1 and plain.count(seen_first := plain[0]) == 2, seen_first
    assert f"fusion: {len(caption_prompts)} requests" in output
    rows = read_stage_table(workdir, "captions").to_pylist()
    assert all("unknown" not in r[f"caption_{t}"] for r in rows for t in ("rgb", "nir", "tir", "fused"))
    assert all(r["caption_rgb"].startswith("A male child") for r in rows)
    # only the triplets that shared the vague reply's request regenerated; later ones never saw it replayed
    regenerated = sum(any("caption regenerated" in n for n in json.loads(r["notes"])) for r in rows)
    assert 1 <= regenerated < len(rows)


def test_llm_fusion_invalid_twice_fails_the_triplet(workdir, tmp_path, monkeypatch):
    def always_vague(body: dict) -> str:
        text = prompt_text(body)
        return default_handler(body) if not text.startswith("Generate a natural") else "An unknown person."

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(handler=always_vague) as server:
        output = _captions(workdir, "--config", str(_openai_config(tmp_path, server, "  fusion: llm\n")))
    assert "0 done, 0 skipped, 12 failed" in output
    ledger = pq.read_table(workdir / "captions" / "errors.parquet").to_pylist()
    samples = pq.read_table(workdir / "index" / "manifest.parquet", columns=["sample_id"])["sample_id"].to_pylist()
    assert len(samples) > 12  # test triplets are query and gallery at once: one ledger entry per sample id
    assert sorted(e["sample_id"] for e in ledger) == sorted(samples)
    assert all(e["error_type"] == "InvalidLLMCaption" for e in ledger)
    assert "unknown" in ledger[0]["reason"]


def test_batch_api_submits_then_collects_into_the_cache(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(batch_polls_to_complete=2) as server:
        config = _openai_config(tmp_path, server)
        first = _captions(workdir, "--config", str(config), "--batch-api")
        assert "run the same command again later to collect" in first
        assert not (workdir / "captions" / "runs").exists()
        second = _captions(workdir, "--config", str(config), "--batch-api")
        if "collected" not in second:  # the fake finishes after two polls
            second = _captions(workdir, "--config", str(config), "--batch-api")
        assert "collected 48 replies into the request cache" in second
        assert "captions: 12 done" in second and "openai: 0 requests, 48 from cache" in second
        assert len(server.requests_to("/v1/batches", "POST")) == 1  # submitted once


def test_qwen_garbage_replies_are_ledgered_and_heuristic_still_answers(workdir, tmp_path):
    import torch
    from qwen_tiny import make_tiny_qwen25vl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_tiny_qwen25vl(tmp_path / "qwen")
        config = _config(
            tmp_path, f"captions:\n  views: [rgb]\n  qwen:\n    max_new_tokens: 16\n    model_path: {model}\n"
        )
        result = runner.invoke(
            app, ["captions", "--workdir", str(workdir), "--config", str(config), "--provider", "qwen",
                  "--device", "cpu", "--no-progress"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "0 done, 0 skipped, 12 failed" in result.output
        reason = pq.read_table(workdir / "captions" / "errors.parquet").to_pylist()[0]["reason"]
        assert reason.startswith("rgb view: no valid answer (qwen: UnusableReply: unusable")
        both = _captions(workdir, "--config", str(config), "--provider", "qwen", "--provider", "heuristic",
                         "--device", "cpu")  # fmt: skip
        assert "12 done" in both
    finally:
        torch.set_num_threads(threads)


def test_import_released_captions(workdir, dataset, tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    root = dataset / "RGBNT201"
    for split, folder in (("train", "train_171"), ("test", "test")):
        for mod in ("RGB", "NI", "TI"):
            items = [
                {"item": p.name, "description": f"A person ({mod})."}
                for p in sorted((root / folder / mod).glob("*.jpg"))
            ]
            (release / f"{split}_{mod}.json").write_text(json.dumps(items))
    output = _captions(workdir, "--provider", "import", "--import-dir", str(release))
    assert "12 done" in output
    row = read_stage_table(workdir, "captions").to_pylist()[0]
    assert (row["caption_nir"], row["caption_fused"], row["attributes"]) == ("A person (NI).", "A person (RGB).", None)
    both = ["--provider", "import", "--provider", "heuristic", "--import-dir", str(release)]
    result = runner.invoke(app, ["captions", "--workdir", str(workdir), *both])
    assert result.exit_code == 2 and "cannot be mixed" in result.output


def test_llm_fusion_with_a_separate_text_model(workdir, tmp_path, monkeypatch):
    """Attributes from one server (the MLLM), captions from another (a text-only LLM, as NEXT uses DeepSeek-V3)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as mllm, FakeOpenAI(handler=_fusion_handler(bad_first=0)) as text_model:
        extra = (
            "  fusion: llm\n  fusion_openai:\n    model: deepseek-chat\n"
            f"    base_url: {text_model.base_url}\n    usd_per_million_input: 0.27\n    usd_per_million_output: 1.1\n"
        )
        output = _captions(workdir, "--config", str(_openai_config(tmp_path, mllm, extra)))
        assert "captions: 12 done" in output
        assert mllm.chat_count == 48 and all(b["model"] == "gpt-4o" for b in mllm.chat_bodies)
        assert text_model.chat_count >= 3 and all(b["model"] == "deepseek-chat" for b in text_model.chat_bodies)
        assert all(prompt_text(b).startswith("Generate a natural") for b in text_model.chat_bodies)


def test_openai_max_connection_failures_from_the_config_stops_the_stage_and_keeps_done_chunks(
    workdir, tmp_path, monkeypatch
):
    """``captions.openai.max_connection_failures`` reaches the backend: once the server stops answering, the stage
    stops after that many attempts in a row (not after max_retries per request), with the finished chunk kept."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    answered = 0

    def hangs_after_one_chunk(body: dict) -> str:
        nonlocal answered
        answered += 1
        if answered > 16:  # chunk 1 = 4 triplets x 4 views answered; then the server hangs
            time.sleep(1.0)
        return default_handler(body)

    with FakeOpenAI(handler=hangs_after_one_chunk) as server:
        extra = "    max_connection_failures: 2\n"
        config = _openai_config(tmp_path, server, extra)
        config.write_text(
            config.read_text().replace("max_retries: 1", "max_retries: 8").replace("timeout_s: 20", "timeout_s: 0.3")
        )
        start = time.monotonic()
        result = runner.invoke(app, ["captions", "--workdir", str(workdir), "--config", str(config), "--no-progress"])
        elapsed = time.monotonic() - start
        chats = server.chat_count
    assert result.exit_code == 1, result.output
    assert "captions stopped" in result.output and "2 attempts in a row reached no server" in result.output
    assert chats <= 16 + 2 + 1  # the limit, not 8 retries per request (at most one attempt past it in flight)
    assert elapsed < 15
    parts = list((workdir / "captions" / "runs").rglob("part-*.parquet"))
    assert len(parts) == 1 and pq.read_metadata(parts[0]).num_rows == 4  # the finished chunk is kept


@pytest.fixture
def vehicle_workdir(tmp_path_factory, tmp_path) -> Path:
    dataset = tmp_path_factory.mktemp("vehicles")
    generate_dataset(dataset, kind="vehicle", ids=4, images_per_id=2, seed=3)
    run_index(tmp_path / "v", "msvr310", dataset)
    return tmp_path / "v"


def test_a_template_caption_over_77_tokens_is_kept_noted_counted_and_in_its_shard_row(
    vehicle_workdir, tmp_path, monkeypatch
):
    """Every vehicle attribute known (the fake MLLM answers the whole template): NEXT's full vehicle template renders
    about 92 CLIP tokens. The caption is kept whole, noted, counted in the summary, and its row reaches the shards;
    ``shorten_to_clip`` instead leaves out the least important attributes, noted too."""
    from fake_openai import template_reply

    from reidprep.captions.render import render
    from reidschemas import attribute_model

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    workdir = vehicle_workdir
    runner.invoke(app, ["masks", "--workdir", str(workdir), "--no-progress"])
    full = attribute_model("vehicle")(**json.loads(template_reply("vehicle")))
    expected = render(full, "vehicle", "rgb", max_tokens=None).text  # the oracle: the whole template
    assert clip_token_count(expected) > 77
    with FakeOpenAI() as server:
        config = _openai_config(tmp_path, server)
        output = _captions(workdir, "--config", str(config))
        assert "captions: 8 done, 0 skipped, 0 failed" in output
        assert "captions over 77 CLIP tokens (kept, truncated at tokenisation with end-of-text kept): rgb 8" in output
        rows = read_stage_table(workdir, "captions").to_pylist()
        summary = json.loads((workdir / "captions" / "summary.json").read_text())
        assert summary["long_captions"] == {
            "limit": 77,
            "per_target": {t: sum(r[f"tokens_{t}"] > 77 for r in rows) for t in ("rgb", "nir", "tir", "fused")},
        }
        for row in rows:
            assert row["caption_rgb"] == expected and row["tokens_rgb"] == clip_token_count(expected)
            notes = json.loads(row["notes"])
            assert f"rgb caption: {row['tokens_rgb']} CLIP tokens, truncated to 77 at tokenisation" in " | ".join(notes)
        result = runner.invoke(app, ["build-shards", "--workdir", str(workdir), "--no-progress"])
        assert result.exit_code == 0, result.output
        files = sorted((workdir / "shards").glob("shard-*.parquet"))
        shards = [r for f in files for r in pq.read_table(f, columns=["sample_id", "caption_rgb"]).to_pylist()]
        assert sorted(r["sample_id"] for r in shards) == sorted(r["sample_id"] for r in rows)
        assert {r["caption_rgb"] for r in shards} == {expected}
        assert runner.invoke(app, ["report", "--workdir", str(workdir)]).exit_code == 0
        html = (workdir / "report.html").read_text()
        assert 'id="long-captions"' in html and '<span data-target="rgb">RGB 8</span>' in html

        config.write_text(config.read_text().replace("captions:\n", "captions:\n  shorten_to_clip: true\n"))
        output = _captions(workdir, "--config", str(config))
        assert "captions: 8 done" in output and "rgb 0, nir 0, tir 0, fused 0" in output
        for row in read_stage_table(workdir, "captions").to_pylist():
            assert row["tokens_rgb"] <= 77 < clip_token_count(expected)
            [note] = [n for n in json.loads(row["notes"]) if n.startswith("rgb caption shortened")]
            assert note.startswith(f"rgb caption shortened to {row['tokens_rgb']} CLIP tokens: left out exhaust_type")


def _long_caption_handler(shorter_on_retry: bool):
    """Attributes as usual; every caption prompt gets a valid caption padded past 77 CLIP tokens, and a request for a
    shorter one gets the rendered caption alone (``shorter_on_retry``) or the long one again."""

    def handler(body: dict) -> str:
        text = prompt_text(body)
        if not text.startswith("Generate a natural"):
            return default_handler(body)
        caption = _caption_from_prompt(text[: text.rindex("}") + 1])
        if shorter_on_retry and "Write a shorter caption" in text:
            return caption
        return caption + " The person walks along the street at an even pace." * 8

    return handler


@pytest.mark.parametrize("shorter_on_retry", [True, False])
def test_llm_fusion_asks_once_for_a_shorter_caption_then_keeps_the_long_one(
    workdir, tmp_path, monkeypatch, shorter_on_retry
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(handler=_long_caption_handler(shorter_on_retry)) as server:
        output = _captions(workdir, "--config", str(_openai_config(tmp_path, server, "  fusion: llm\n")))
        prompts = [prompt_text(b) for b in server.chat_bodies if prompt_text(b).startswith("Generate a natural")]
    assert "captions: 12 done, 0 skipped, 0 failed" in output  # length never fails a triplet
    first = [p for p in prompts if "Write a shorter caption" not in p]
    shorter = [p for p in prompts if "Write a shorter caption" in p]
    assert len(set(first)) == len(first) and len(shorter) == len(first)  # once each (the cache dedupes the rest)
    rows = read_stage_table(workdir, "captions").to_pylist()
    for row in rows:
        notes = " | ".join(json.loads(row["notes"]))
        for target in ("rgb", "nir", "tir", "fused"):
            assert f"{target} caption of " in notes and "asked once for a shorter one" in notes
            long = "walks along the street" in row[f"caption_{target}"]
            assert long is not shorter_on_retry
            assert (row[f"tokens_{target}"] > 77) is long
            assert (f"{target} caption: {row[f'tokens_{target}']} CLIP tokens, truncated to 77" in notes) is long

"""PipelineConfig: the shipped pipeline.yaml, errors that name the bad key, CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidschemas import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_pipeline_yaml_validates_and_resolves_paths_against_its_folder():
    config = load_config(REPO / "pipeline.yaml")
    assert config.workdir == REPO / "runs" / "demo"
    assert config.dataset.root == REPO / "runs" / "demo" / "synth"
    assert config.dataset.layout == "rgbnt201"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("dataset:\n  layout: market1501\n", "dataset.layout"),
        ("index:\n  strcit: true\n", "index.strcit: unknown key"),
        ("synth:\n  ids: 1\n", "synth.ids"),
        ("masks_stage: {}\n", "masks_stage: unknown key"),
        ("synth:\n  kind: cat\n", "synth.kind"),
    ],
)
def test_errors_name_the_bad_key(tmp_path, text, named):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert named in str(info.value) and str(path) in str(info.value)


def test_not_yaml_or_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "dataset: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_win_and_unset_options_keep_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, "workdir: w\ndataset:\n  layout: msvr310\n  root: data\nindex:\n  strict: true\n")
    monkeypatch.chdir(tmp_path.parent)
    config = load_config(path, {"dataset.layout": "wmveid863", "index.strict": None, "workdir": Path("other")})
    assert config.dataset.layout == "wmveid863"
    assert config.index.strict is True
    assert config.dataset.root == tmp_path / "data"
    assert config.workdir == tmp_path.parent / "other"
    with pytest.raises(ConfigError, match=r"index\.colour"):
        load_config(path, {"index.colour": "red"})
    with pytest.raises(ConfigError, match=r"dataset\.layout"):
        load_config(path, {"dataset.layout": "nope"})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("captions:\n  chunk_size: true\n", "captions.chunk_size: Input should be a valid integer"),
        ("index:\n  strict: 'yes'\n", "index.strict: Input should be a valid boolean"),
        ("shards:\n  person_size: [0, 0]\n", "shards.person_size.0: Input should be greater than 0"),
        ("shards:\n  vehicle_size: [true, 2]\n", "shards.vehicle_size.0"),
        ("shards:\n  target_shard_mb: .inf\n", "shards.target_shard_mb: Input should be a finite number"),
        ("shards:\n  target_shard_mb: '256'\n", "shards.target_shard_mb: Input should be a valid number"),
        ("synth:\n  ids: 12.0\n", "synth.ids: Input should be a valid integer"),
    ],
)
def test_config_is_strict_about_types_and_sizes(tmp_path, text, named):
    """YAML's coercions that pydantic's lax mode would accept (true -> 1, 'yes' -> True) are refused by key."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert named in str(info.value) and str(path) in str(info.value)


def test_strict_mode_still_reads_paths_pairs_and_ints_as_floats(tmp_path):
    config = load_config(
        _write(tmp_path, "dataset:\n  root: d\nshards:\n  person_size: [64, 32]\n  target_shard_mb: 1\n")
    )
    assert config.dataset.root == tmp_path / "d"
    assert config.shards.person_size == (64, 32)
    assert config.shards.target_shard_mb == 1.0


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = _write(tmp_path, "captions:\n  chunk_size: 8\n  views: [rgb]\n  chunk_size: 16\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: key 'chunk_size' is given twice (lines 2 and 4); keep one"


def test_non_utf8_and_empty_files_are_refused(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_bytes("workdir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 12): save it as UTF-8"
    for text in ("", "# only a comment\n\n"):
        with pytest.raises(ConfigError, match="the file is empty \\(or only comments\\)"):
            load_config(_write(tmp_path, text))

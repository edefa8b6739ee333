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

"""``reidtrain.load(...).embed``: the API against the eval path, its inputs, errors and cameras; the README example."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import reidtrain
from reidtrain.api import DEFAULT_CAMERA_INDEX, ReidModel
from reidtrain.data.shards import ShardDataset
from reidtrain.evaluate import rank_gallery

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def stmi(stmi_run: Path) -> tuple[ReidModel, list[str]]:
    lines: list[str] = []
    return reidtrain.load(stmi_run / "best.pt", device="cpu", echo=lines.append), lines


def _rows(shards: Path, split: str) -> list[dict[str, Any]]:
    dataset = ShardDataset(shards, split)
    return [dataset[i] for i in range(len(dataset))]


def _embed_rows(model: ReidModel, rows: list[dict[str, Any]], **kwargs: Any) -> np.ndarray:
    return model.embed(
        [r["images"][0] for r in rows],
        [r["images"][1] for r in rows],
        [r["images"][2] for r in rows],
        mask=[r["mask"] for r in rows],
        caption=[r["captions"]["fused"] for r in rows],
        **kwargs,
    )


def test_embed_equals_the_features_eval_ranks(stmi: tuple[ReidModel, list[str]], full_shards: Path) -> None:
    model, _ = stmi
    ranking = rank_gallery(model.network, full_shards, model.transform.size, torch.device("cpu"))
    for split, expected in (("query", ranking.query_feats), ("gallery", ranking.gallery_feats)):
        rows = _rows(full_shards, split)
        feats = _embed_rows(model, rows, camera=[r["camid"] for r in rows])
        assert feats.dtype == np.float32 and feats.shape == expected.shape
        np.testing.assert_allclose(feats, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


def test_embed_uses_the_recipes_normalisation_as_eval_does(stmi_run: Path, full_shards: Path, tmp_path) -> None:
    """A run trained with other pixel statistics (the authors' 0.5/0.5) is embedded with them, as eval ranks it."""
    state = torch.load(stmi_run / "best.pt", weights_only=False)
    state["config"]["recipe"].update(pixel_mean=[0.5, 0.5, 0.5], pixel_std=[0.5, 0.5, 0.5])
    torch.save(state, tmp_path / "half.pt")
    model = reidtrain.load(tmp_path / "half.pt", device="cpu", echo=lambda _: None)
    stats = ([0.5] * 3, [0.5] * 3)
    ranking = rank_gallery(model.network, full_shards, model.transform.size, torch.device("cpu"), pixel_stats=stats)
    rows = _rows(full_shards, "query")
    feats = _embed_rows(model, rows, camera=[r["camid"] for r in rows])
    np.testing.assert_allclose(feats, ranking.query_feats, atol=1e-5)
    default = rank_gallery(model.network, full_shards, model.transform.size, torch.device("cpu"))
    assert not np.allclose(feats, default.query_feats, atol=1e-3)  # the statistics matter


def test_one_triplet_from_paths_pil_or_arrays(stmi: tuple[ReidModel, list[str]], full_shards: Path, tmp_path) -> None:
    model, _ = stmi
    row = _rows(full_shards, "query")[0]
    batch = _embed_rows(model, [row], camera=row["camid"])  # (1, D)
    paths = []
    for name, image in zip(("rgb", "nir", "tir"), row["images"], strict=True):
        Image.fromarray(image).save(tmp_path / f"{name}.png")  # lossless
        paths.append(tmp_path / f"{name}.png")
    Image.fromarray(row["mask"].astype(np.uint8) * 255).save(tmp_path / "mask.png")
    caption = row["captions"]["fused"]
    from_paths = model.embed(*map(str, paths), mask=tmp_path / "mask.png", caption=caption, camera=row["camid"])
    pil = [Image.open(p) for p in paths]
    from_pil = model.embed(*pil, mask=Image.open(tmp_path / "mask.png"), caption=caption, camera=row["camid"])
    assert from_paths.shape == (batch.shape[1],)
    np.testing.assert_allclose(from_paths, batch[0], atol=1e-5)
    np.testing.assert_allclose(from_pil, batch[0], atol=1e-5)
    # grey NIR / TIR given as (H, W): expanded to three channels as reidprep reads grey files
    grey = [np.ascontiguousarray(im[..., 0]) for im in row["images"]]
    expanded = [np.repeat(g[..., None], 3, axis=2) for g in grey]
    mask, cam = row["mask"], row["camid"]
    np.testing.assert_allclose(
        model.embed(*grey, mask=mask, caption=caption, camera=cam),
        model.embed(*expanded, mask=mask, caption=caption, camera=cam),
        atol=1e-6,
    )


def test_a_missing_mask_or_caption_says_what_to_pass(stmi: tuple[ReidModel, list[str]], full_shards: Path) -> None:
    model, _ = stmi
    row = _rows(full_shards, "query")[0]
    images = tuple(row["images"])
    with pytest.raises(ValueError, match=r"stmi reads the triplet's foreground mask.*pass mask="):
        model.embed(*images, caption="a person")
    with pytest.raises(ValueError, match=r"stmi reads captions: pass the fused caption: caption="):
        model.embed(*images, mask=row["mask"])
    with pytest.raises(ValueError, match=r"missing: fused"):
        model.embed(*images, mask=row["mask"], caption={"rgb": "a person"})
    assert "mask=" in model.needs() and "caption=" in model.needs() and "mask=" in repr(model)


def test_bad_images_are_one_clear_line(stmi: tuple[ReidModel, list[str]], full_shards: Path, tmp_path) -> None:
    model, _ = stmi
    row = _rows(full_shards, "query")[0]
    rgb, nir, tir = row["images"]
    kw = {"mask": row["mask"], "caption": "a person"}
    with pytest.raises(FileNotFoundError, match=r"rgb image of triplet 0: .*nope.png does not exist"):
        model.embed(tmp_path / "nope.png", nir, tir, **kw)
    with pytest.raises(ValueError, match=r"nir image of triplet 0: a float32 array; pass uint8"):
        model.embed(rgb, nir.astype(np.float32), tir, **kw)
    with pytest.raises(ValueError, match=r"the three images differ in size \(rgb 256x128, nir 128x64"):
        model.embed(rgb, nir[::2, ::2], tir, **kw)
    with pytest.raises(ValueError, match=r"mask of triplet 0 is 128x64, its images 256x128"):
        model.embed(rgb, nir, tir, mask=row["mask"][::2, ::2], caption="a person")
    with pytest.raises(ValueError, match=r"rgb, nir and tir hold 2, 1 and 1 images"):
        model.embed([rgb, rgb], [nir], [tir], mask=[row["mask"]] * 2, caption=["a"] * 2)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"text.png is not an image PIL can read"):
        model.embed(rgb, tmp_path / "text.png", tir, **kw)


def test_cameras_default_to_the_first_training_camera(
    stmi: tuple[ReidModel, list[str]], full_shards: Path, stmi_run: Path
) -> None:
    model, lines = stmi
    camids = sorted({int(c) for c in ShardDataset(full_shards, ("train", "query", "gallery"), columns=()).camids})
    assert model.camera_ids == tuple(camids)  # recorded in the checkpoint, the trainer's numbering
    assert any("camera ids from the checkpoint" in line for line in lines)
    row = _rows(full_shards, "query")[0]
    args = (*row["images"],)
    kw = {"mask": row["mask"], "caption": row["captions"]["fused"]}
    first = model.embed(*args, camera=camids[DEFAULT_CAMERA_INDEX], **kw)
    lines.clear()
    np.testing.assert_allclose(model.embed(*args, **kw), first, atol=1e-6)
    assert lines == [f"reidtrain: no camera given: using camera {camids[0]}'s (index 0) embedding, as DeMo's code does "
                     "without a camera"]  # fmt: skip
    lines.clear()
    np.testing.assert_allclose(model.embed(*args, camera=99, **kw), first, atol=1e-6)
    assert lines and lines[0].startswith("reidtrain: camera 99 was not seen in training: using camera")
    other = model.embed(*args, camera=camids[-1], **kw)
    assert not np.allclose(other, first, atol=1e-4)  # the camera embedding is used, not ignored


@pytest.fixture(scope="module")
def next_model(full_shards: Path, tmp_path_factory: pytest.TempPathFactory, fit_tiny) -> ReidModel:
    run = fit_tiny(full_shards, tmp_path_factory.mktemp("next") / "next", "next-tiny-demo")
    return reidtrain.load(run / "last.pt", device="cpu", echo=lambda line: None)


def test_next_reads_one_caption_per_modality(next_model: ReidModel, full_shards: Path) -> None:
    ranking = rank_gallery(next_model.network, full_shards, next_model.transform.size, torch.device("cpu"))
    rows = _rows(full_shards, "query")
    images = tuple(rows[0]["images"])
    with pytest.raises(ValueError, match=r"next reads one caption per modality: pass caption=\{'rgb'"):
        next_model.embed(*images, caption="a person")
    with pytest.raises(ValueError, match=r"next reads captions: pass caption=\{rgb, nir, tir\}"):
        next_model.embed(*images)
    feats = next_model.embed(  # no mask needed
        [r["images"][0] for r in rows],
        [r["images"][1] for r in rows],
        [r["images"][2] for r in rows],
        caption=[r["captions"] for r in rows],
        camera=[r["camid"] for r in rows],
    )
    np.testing.assert_allclose(feats, ranking.query_feats, atol=1e-5)


def test_import_reidtrain_stays_light() -> None:
    code = "import sys, reidtrain; assert 'torch' not in sys.modules; reidtrain.load; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _readme_example() -> str:
    """The first python block of README's "Use a trained model" section."""
    text = README.read_text()
    section = text[text.index("## Use a trained model") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README's Use a trained model section has no python block"
    return match.group(1)


def test_readme_example_runs(stmi_run: Path, full_shards: Path, tmp_path, monkeypatch) -> None:
    code = _readme_example()
    checkpoint = re.search(r'reidtrain\.load\("([^"]+)"', code)
    assert checkpoint is not None
    target = tmp_path / checkpoint.group(1)
    target.parent.mkdir(parents=True)
    shutil.copy(stmi_run / "best.pt", target)  # a copy outside its run folder: it loads on its own
    query, gallery = _rows(full_shards, "query"), _rows(full_shards, "gallery")
    same = next(r for r in gallery if r["pid"] == query[0]["pid"])
    other = next(r for r in gallery if r["pid"] != query[0]["pid"])
    for folder, row in (("query", query[0]), ("gallery/0", other), ("gallery/1", same)):
        (tmp_path / folder).mkdir(parents=True)
        for name, image in zip(("rgb", "nir", "tir"), row["images"], strict=True):
            Image.fromarray(image).save(tmp_path / folder / f"{name}.png")
        Image.fromarray(row["mask"].astype(np.uint8) * 255).save(tmp_path / folder / "mask.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the documented example, run as written
    model, q, g = namespace["model"], namespace["query"], namespace["gallery"]
    assert q.ndim == 1 and g.shape == (2, q.shape[0])
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(namespace["scores"], g @ q, atol=1e-6)
    ranked = namespace["ranked"]
    assert sorted(ranked) == [0, 1] and namespace["scores"][ranked[0]] >= namespace["scores"][ranked[1]]
    # the example's files give the features of the arrays they hold
    caption = namespace["caption"]
    direct = model.embed(*query[0]["images"], mask=query[0]["mask"], caption=caption, camera=1)
    np.testing.assert_allclose(q, direct, atol=1e-5)

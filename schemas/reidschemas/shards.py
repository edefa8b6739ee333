"""The training shards: the contract between ``reidprep build-shards`` and ``reidtrain``.

One row per manifest record (RGBNT201's test triplets appear as query and as gallery). Images are encoded
(JPEG or PNG) at the stored size; the triplet mask is bit-packed at that size (``reidschemas.maskcodec``); the
token mask is the fraction of foreground pixels under every ViT patch (row-major over the patch grid) and its
thresholded form. ``dataset.json`` beside the shards indexes them; its ``protocol`` ("camera" or "scene") and
``dataset`` (the layout that declared it) say how query and gallery are scored (``read_protocol``).

``dataset.json``'s shape and arithmetic (``index_problems``, ``read_index``) and a shard file's size and SHA-256
(``shard_file_problem``) are checked here, once for both sides: ``reidprep validate-shards`` and the trainer's
reader (``reidtrain.data.shards.ShardIndex.load``) refuse the same faults with the same words.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from reidschemas.digest import file_sha256
from reidschemas.records import PROTOCOLS, Protocol

INDEX_NAME = "dataset.json"
SHARD_GLOB = "shard-*.parquet"

SHARD_SCHEMA_VERSION = "1"

SHARD_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("triplet_key", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("pid", pa.int64(), nullable=False),
        pa.field("camid", pa.int32(), nullable=False),
        pa.field("sceneid", pa.int32()),
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("rgb", pa.binary(), nullable=False),
        pa.field("nir", pa.binary(), nullable=False),
        pa.field("tir", pa.binary(), nullable=False),
        pa.field("mask", pa.binary()),
        pa.field("token_grid", pa.list_(pa.int32(), 2)),
        pa.field("token_fraction", pa.list_(pa.float32())),
        pa.field("token_mask", pa.list_(pa.bool_())),
        pa.field("caption_rgb", pa.string()),
        pa.field("caption_nir", pa.string()),
        pa.field("caption_tir", pa.string()),
        pa.field("caption_fused", pa.string()),
        pa.field("attributes", pa.string()),
    ],
    metadata={"reid.shard_schema_version": SHARD_SCHEMA_VERSION},
)
"""``height`` x ``width`` is the stored size of the three images and of the mask; with ``image_format`` "raw"
an image is its (height, width, 3) uint8 pixels, row-major (``decode_image`` reads every format). ``token_grid`` is
(rows, cols) of the patch grid; ``token_fraction`` has rows * cols values in [0, 1]. ``mask``, the token fields,
the captions and ``attributes`` (merged attributes as JSON) are null where the stage did not produce them and the
build was told to include such samples."""


class ShardEntry(BaseModel):
    """One shard as ``dataset.json`` lists it (other keys are allowed and kept)."""

    model_config = ConfigDict(strict=True, extra="allow")

    file: str = Field(pattern=r"^shard-\d{5,}\.parquet$")  # a plain name inside the shards folder
    rows: NonNegativeInt
    bytes: NonNegativeInt  # the file's size
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows_per_split: dict[str, NonNegativeInt]


class ShardSetIndex(BaseModel):
    """The keys of ``dataset.json`` that readers rely on (``build-shards`` writes more: inputs, config, ...)."""

    model_config = ConfigDict(strict=True, extra="allow")

    schema_version: str
    rows: NonNegativeInt
    rows_per_split: dict[str, NonNegativeInt]
    shards: list[ShardEntry]


class ShardIndexError(ValueError):
    """``dataset.json`` is malformed or contradicts itself or its shards; the message is one line."""


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v}


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def index_problems(info: object) -> list[str]:
    """What is wrong with a parsed ``dataset.json`` on its own (shape, schema version, sums); empty when sound.

    The sums catch a tampered ``rows`` or ``rows_per_split`` and a shard dropped from the list.
    """
    if not isinstance(info, dict):
        return [f"holds a JSON {type(info).__name__}, not an object"]
    version = info.get("schema_version")
    if "schema_version" in info and version != SHARD_SCHEMA_VERSION:  # absent: named with the other missing keys
        return [f"shard schema version {version}, this code reads {SHARD_SCHEMA_VERSION}"]
    try:
        index = ShardSetIndex.model_validate(info)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg'].lower()}"
            + ("" if e["type"] == "missing" else f" (got {_short(e['input'])})")
            for e in exc.errors()
        ][:10]
    problems: list[str] = []
    files = Counter(s.file for s in index.shards)
    problems += [f"{name} is listed {n} times" for name, n in sorted(files.items()) if n > 1]
    for shard in index.shards:
        if sum(shard.rows_per_split.values()) != shard.rows:
            problems.append(f"{shard.file}: rows_per_split adds up to {sum(shard.rows_per_split.values())}, "
                            f"rows says {shard.rows}")  # fmt: skip
    listed = sum(s.rows for s in index.shards)
    if listed != index.rows:
        problems.append(f"rows says {index.rows}, the listed shards hold {listed} (a shard dropped or rows changed)")
    summed: Counter[str] = Counter()
    for shard in index.shards:
        summed.update(shard.rows_per_split)
    if _nonzero(dict(summed)) != _nonzero(index.rows_per_split):
        problems.append(f"rows_per_split says {_nonzero(index.rows_per_split)}, the listed shards hold "
                        f"{_nonzero(dict(summed))}")  # fmt: skip
    return problems


def read_index(shards_dir: Path) -> tuple[dict[str, Any], ShardSetIndex]:
    """``dataset.json`` of ``shards_dir``, raw and validated. FileNotFoundError when absent; ``ShardIndexError``
    (one line naming the file, what is wrong and the way out) when it is not valid JSON or ``index_problems``."""
    path = Path(shards_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {INDEX_NAME} in {shards_dir}: not a shards folder, or its build did not finish; "
            "write it with `reidprep build-shards`"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardIndexError(
            f"{path} is not valid JSON ({exc}): rebuild with `reidprep build-shards --force`"
        ) from exc
    problems = index_problems(info)
    if problems:
        raise ShardIndexError(f"{path}: {'; '.join(problems)}: rebuild with `reidprep build-shards --force`")
    return info, ShardSetIndex.model_validate(info)


def shard_file_problem(path: Path, entry: ShardEntry) -> str | None:
    """Why the shard file at ``path`` is not the one ``entry`` lists (size, then SHA-256 of every byte), or None."""
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{size} bytes, dataset.json says {entry.bytes} (the file changed or is another shard)"
    if file_sha256(path) != entry.sha256:
        return "checksum differs from dataset.json (SHA-256: the file changed, is corrupt, or is another shard)"
    return None


def read_protocol(info: dict[str, Any], path: object) -> tuple[Protocol, str]:
    """(protocol, dataset) of a ``dataset.json`` (``path`` names it in errors); never guessed from the rows.

    Raises ValueError for shards built before the protocol was recorded (rebuilding them rewrites ``dataset.json``
    only: the shard files come out byte-identical) or for an unknown protocol.
    """
    protocol = info.get("protocol")
    if protocol is None:
        raise ValueError(
            f"{path} does not say which evaluation protocol its dataset uses (shards built by an older reidprep): "
            "rerun `reidprep build-shards` (the shard files stay the same; dataset.json gains `protocol`)"
        )
    if protocol not in PROTOCOLS:
        raise ValueError(f"{path}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return cast(Protocol, protocol), str(info.get("dataset", "?"))


def decode_image(data: bytes, image_format: str, height: int, width: int):
    """A shard image as an (H, W, 3) uint8 numpy array, whatever its format."""
    import io

    import numpy as np

    if image_format == "raw":
        expected = height * width * 3
        if len(data) != expected:
            raise ValueError(f"a raw {height}x{width} image has {expected} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_batch(table, modalities=("rgb", "nir", "tir")):
    """A row group (pyarrow Table) -> ``{modality: (n, H, W, 3) uint8, "mask": (n, H, W) bool or None}``.

    Rows of one batch share the stored size (``size: model``). Raw images and masks are read straight from the
    Arrow buffers, with no per-row Python object; JPEG/PNG images are decoded one by one.
    """
    import numpy as np

    heights = table.column("height").to_numpy()
    widths = table.column("width").to_numpy()
    n = table.num_rows
    if n == 0:
        raise ValueError("empty batch")
    if (heights != heights[0]).any() or (widths != widths[0]).any():
        raise ValueError("decode_batch needs rows of one stored size; decode_image reads mixed sizes")
    h, w = int(heights[0]), int(widths[0])
    formats = set(table.column("image_format").to_pylist())
    out = {}
    for modality in modalities:
        column = table.column(modality).combine_chunks()
        if formats == {"raw"}:
            out[modality] = _fixed_width_view(column, h * w * 3).reshape(n, h, w, 3)
        else:
            out[modality] = np.stack(
                [
                    decode_image(data, fmt, h, w)
                    for data, fmt in zip(column.to_pylist(), table.column("image_format").to_pylist(), strict=True)
                ]
            )
    masks = table.column("mask").combine_chunks()
    if masks.null_count == 0:
        packed = _fixed_width_view(masks, (h * w + 7) // 8).reshape(n, -1)  # (n, bytes)
        out["mask"] = np.unpackbits(packed, axis=1, count=h * w).reshape(n, h, w).astype(bool)
    else:
        out["mask"] = None
    return out


def _fixed_width_view(column, width: int):
    """The values of a binary Arrow array whose every value has ``width`` bytes, as one uint8 array (no copy)."""
    import numpy as np

    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    if not (np.diff(offsets) == width).all():
        raise ValueError(f"values are not all {width} bytes long")
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)
    return data[offsets[0] : offsets[-1]]

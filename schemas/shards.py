"""The training shards: the contract between ``reidprep build-shards`` and ``reidtrain``.

One row per manifest record (RGBNT201's test triplets appear as query and as gallery). Images are encoded
(JPEG or PNG) at the stored size; the triplet mask is bit-packed at that size (``reidschemas.maskcodec``); the
token mask is the fraction of foreground pixels under every ViT patch (row-major over the patch grid) and its
thresholded form. ``dataset.json`` beside the shards indexes them.
"""

from __future__ import annotations

import pyarrow as pa

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
"""``height`` x ``width`` is the stored size of the three images and of the mask. ``token_grid`` is
(rows, cols) of the patch grid; ``token_fraction`` has rows * cols values in [0, 1]. ``mask``, the token fields,
the captions and ``attributes`` (merged attributes as JSON) are null where the stage did not produce them and the
build was told to include such samples."""

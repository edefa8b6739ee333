"""The record of one aligned RGB/NIR/TIR triplet, as written to the manifest by ``reidprep index``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["rgb", "nir", "tir"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)
Split = Literal["train", "query", "gallery"]
SPLITS: tuple[Split, ...] = get_args(Split)
DatasetName = Literal["rgbnt201", "rgbnt100", "msvr310", "wmveid863", "generic"]
"""The four benchmarks, and ``generic``: the user's own data, listed in a CSV/Parquet manifest."""
DATASETS: tuple[DatasetName, ...] = get_args(DatasetName)
ObjectKind = Literal["pedestrian", "vehicle"]

#: Which attribute template (and model input size) a benchmark uses; a generic record names its own.
DATASET_KIND: dict[str, ObjectKind] = {
    "rgbnt201": "pedestrian",
    "rgbnt100": "vehicle",
    "msvr310": "vehicle",
    "wmveid863": "vehicle",
}

Protocol = Literal["camera", "scene"]
"""A benchmark's evaluation protocol: which gallery items are removed for a query before ranking."""
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
PROTOCOL_RULES: dict[Protocol, str] = {
    "camera": "same id and same camera removed",
    "scene": "same id and same scene removed, cameras ignored",
}


def describe_protocol(protocol: Protocol, source: str) -> str:
    """Which protocol and why, e.g. ``scene rule (msvr310 layout: same id and same scene removed, ...)``."""
    return f"{protocol} rule ({source}: {PROTOCOL_RULES[protocol]})"


Box = tuple[int, int, int, int]
"""A crop box ``(left, top, right, bottom)`` in pixels, right and bottom exclusive (PIL's convention)."""


class SampleRecord(BaseModel):
    """One aligned triplet in one split.

    ``sample_id`` is ``<dataset>/<split>/<file stem>`` (MSVR310 and WMVEID863 add the id folder): stable across
    machines and reruns, unique within a manifest. Where query and gallery are the same folder (RGBNT201's
    ``test/``), each triplet appears twice, once per split; ``triplet_key`` names the images whatever the split,
    so stages that pay per image (masks, captions) can key their work on it.
    Ids are the numbers in the file names, unchanged (cameras are not shifted to start at 0).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_id: str = Field(min_length=1)
    triplet_key: str = Field(min_length=1)
    dataset: DatasetName
    split: Split
    pid: int = Field(description="person or vehicle id")
    camid: int = Field(description="camera (view) id as in the file name")
    sceneid: int | None = Field(default=None, description="scene (time span) id: MSVR310 and WMVEID863")
    rgb_path: str
    nir_path: str
    tir_path: str
    rgb_box: Box | None = Field(default=None, description="RGBNT100: the RGB part of the side-by-side file")
    nir_box: Box | None = None
    tir_box: Box | None = None
    object_kind: ObjectKind | None = Field(
        default=None, description="generic data only: pedestrian or vehicle (a benchmark's kind is its dataset's)"
    )

    @model_validator(mode="after")
    def _kind_is_known(self) -> SampleRecord:
        if self.dataset == "generic" and self.object_kind is None:
            raise ValueError(f"{self.sample_id}: a generic record needs object_kind (pedestrian or vehicle)")
        if self.dataset != "generic" and self.object_kind not in (None, DATASET_KIND[self.dataset]):
            raise ValueError(f"{self.sample_id}: {self.dataset} holds {DATASET_KIND[self.dataset]}s")
        return self

    @model_validator(mode="after")
    def _boxes_are_sane(self) -> SampleRecord:
        boxes = [self.rgb_box, self.nir_box, self.tir_box]
        if any(b is None for b in boxes) and any(b is not None for b in boxes):
            raise ValueError(f"{self.sample_id}: crop boxes must be given for all three modalities or none")
        for box in boxes:
            if box is not None and not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
                raise ValueError(f"{self.sample_id}: crop box {box} is empty or negative")
        return self

    @property
    def kind(self) -> ObjectKind:
        return self.object_kind or DATASET_KIND[self.dataset]

    def path(self, modality: Modality) -> str:
        return {"rgb": self.rgb_path, "nir": self.nir_path, "tir": self.tir_path}[modality]

    def box(self, modality: Modality) -> Box | None:
        return {"rgb": self.rgb_box, "nir": self.nir_box, "tir": self.tir_box}[modality]


class LedgerEntry(BaseModel):
    """One problem met by a stage: a failed record (``error``) or one kept with a remark (``warning``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    severity: Literal["error", "warning"]
    error_type: str = Field(description="short machine-readable kind, e.g. missing_modality, unparsable_name")
    reason: str
    path: str | None = None
    sample_id: str | None = None

"""Your own data (``--layout generic``): a CSV or Parquet manifest with one row per triplet and split.

Columns (a header row names them; order does not matter, unknown columns are warned about and ignored):

=========  ========  ==================================================================================
split      required  ``train``, ``query`` or ``gallery``
pid        required  identity (integer)
camid      required  camera (integer)
sceneid    optional  scene / time span (integer); required for every row under ``--protocol scene``
rgb        required  image paths, relative to the manifest's folder (or absolute)
nir        required
tir        required
box        optional  crop box ``left,top,right,bottom`` in pixels (right/bottom exclusive) for all three
rgb_box    optional  per-modality crop boxes (all three or none), instead of ``box``
nir_box
tir_box
=========  ========  ==================================================================================

The object kind (``--kind person|vehicle``) and the evaluation protocol (``--protocol camera|scene``) are the
user's to state: nothing is guessed. A row listed as query and gallery with the same images and ids is one
triplet processed once (like RGBNT201's ``test/``). Every bad row (unknown split, non-integer id, missing file,
bad box, duplicate) goes to the index ledger with its line number; ``--strict`` stops at them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar, cast

import pyarrow.parquet as pq

from reidprep.layouts.base import Candidate, Layout, ScanResult
from reidschemas import MODALITIES, SPLITS, Box, Modality, ObjectKind, Protocol, Split

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
REQUIRED = ("split", "pid", "camid", "rgb", "nir", "tir")
OPTIONAL = ("sceneid", "box", "rgb_box", "nir_box", "tir_box")
KINDS: dict[str, ObjectKind] = {"person": "pedestrian", "vehicle": "vehicle"}
TEST_FOLDER = "test"
"""The candidate folder of a triplet listed as query and gallery at once."""


class GenericLayout(Layout):
    name = "generic"
    split_folders: ClassVar[dict[str, tuple[Split, ...]]] = {
        "train": ("train",),
        "query": ("query",),
        "gallery": ("gallery",),
        TEST_FOLDER: ("query", "gallery"),
    }

    def __init__(self, kind: str | None = None, protocol: Protocol | None = None) -> None:
        missing = []
        if kind is None:
            missing.append("dataset.kind (--kind person|vehicle)")
        if protocol is None:
            missing.append("dataset.protocol (--protocol camera|scene)")
        if missing:
            raise ValueError(
                f"the generic layout needs {' and '.join(missing)}: nothing is guessed for your own data "
                "(camera = a query's gallery items of the same id and camera are removed, as in RGBNT201; "
                "scene = those of the same id and scene, as in MSVR310)"
            )
        if kind not in KINDS:
            raise ValueError(f"dataset.kind must be person or vehicle, got {kind!r}")
        self.object_kind: ObjectKind = KINDS[kind]
        self.protocol = cast(Protocol, protocol)  # type: ignore[misc]  # the instance states it; benchmarks fix it per class

    def locate(self, root: Path) -> Path:
        """The manifest file: ``root`` itself, or ``manifest.csv`` / ``manifest.parquet`` inside it."""
        if root.is_file():
            return root
        for name in MANIFEST_NAMES:
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(
            f"no generic manifest at {root}: give the CSV/Parquet file itself, or a folder holding "
            f"{' or '.join(MANIFEST_NAMES)} (columns: {', '.join(REQUIRED)}; optional {', '.join(OPTIONAL)})"
        )

    def scan(self, dataset_dir: Path) -> ScanResult:
        result = ScanResult()
        rows = _read_rows(dataset_dir)
        if not rows:
            raise ValueError(f"{dataset_dir}: the manifest has no rows")
        absent = [c for c in REQUIRED if c not in rows[0][1]]
        if absent:
            raise ValueError(
                f"{dataset_dir}: missing column(s) {', '.join(absent)}; a generic manifest has {', '.join(REQUIRED)} "
                f"(optional {', '.join(OPTIONAL)})"
            )
        unknown = sorted(set(rows[0][1]) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            result.report("warning", "unknown_column", f"column(s) {', '.join(unknown)} ignored", dataset_dir)
        by_key: dict[str, dict[str, Candidate]] = {}
        for line, row in rows:
            candidate = _candidate(row, line, dataset_dir, result)
            if candidate is None:
                continue
            splits = by_key.setdefault(candidate.key, {})
            if candidate.split_folder in splits:
                result.report(
                    "error", "duplicate_row", f"line {line}: {candidate.key} is listed twice in "
                    f"{candidate.split_folder}", dataset_dir,
                )  # fmt: skip
                continue
            splits[candidate.split_folder] = candidate
        for key in sorted(by_key):
            result.candidates.extend(_merge_test(by_key[key], dataset_dir, result))
        return result


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs; CSV lines count the header as line 1, Parquet rows count from 1."""
    if path.suffix.lower() == ".parquet":
        return [(i + 1, row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [(i + 2, row) for i, row in enumerate(csv.DictReader(handle))]


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    return int(text) if text.lstrip("-").isdigit() else None


def _box(value: Any) -> Box | str | None:
    """A box from ``"l,t,r,b"`` or a 4-list; None when empty; an error text when malformed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value if isinstance(value, list | tuple) else str(value).replace(" ", "").split(",")
    numbers = [_integer(p) for p in parts]
    if len(numbers) != 4 or any(n is None for n in numbers):
        return f"crop box {value!r} is not left,top,right,bottom"
    left, top, right, bottom = (int(n) for n in numbers)  # type: ignore[arg-type]
    if not (0 <= left < right and 0 <= top < bottom):
        return f"crop box {value!r} is empty or negative"
    return left, top, right, bottom


def _candidate(row: dict[str, Any], line: int, manifest: Path, result: ScanResult) -> Candidate | None:
    def bad(error_type: str, reason: str, path: Path | None = None) -> None:
        """Ledger the row's problem; the caller then returns None (the row is left out)."""
        result.report("error", error_type, f"line {line}: {reason}", path or manifest)

    split = str(row.get("split") or "").strip()
    if split not in SPLITS:
        bad("bad_split", f"split {split!r} is not one of {', '.join(SPLITS)}")
        return None
    ids = {name: _integer(row.get(name)) for name in ("pid", "camid")}
    for name, value in ids.items():
        if value is None:
            bad("bad_id", f"{name} {row.get(name)!r} is not an integer")
            return None
    scene_text = row.get("sceneid")
    sceneid = None if scene_text in (None, "") else _integer(scene_text)
    if scene_text not in (None, "") and sceneid is None:
        bad("bad_id", f"sceneid {scene_text!r} is not an integer")
        return None
    paths: dict[Modality, Path] = {}
    for modality in MODALITIES:
        text = str(row.get(modality) or "").strip()
        if not text:
            bad("missing_modality", f"no {modality} path")
            return None
        path = Path(text) if Path(text).is_absolute() else manifest.parent / text
        if not path.is_file():
            bad("missing_file", f"{modality} file not found", path)
            return None
        paths[modality] = path.resolve()
    boxes = _boxes(row)
    if isinstance(boxes, str):
        bad("bad_box", boxes)
        return None
    key = Path(str(row["rgb"]).strip()).with_suffix("").as_posix().lstrip("/")
    if boxes is not None:
        key += "@" + "-".join(map(str, boxes["rgb"]))
    return Candidate(split, key, int(ids["pid"]), int(ids["camid"]), sceneid, paths, boxes=boxes)  # type: ignore[arg-type]


def _boxes(row: dict[str, Any]) -> dict[Modality, Box] | str | None:
    shared = _box(row.get("box"))
    own = {m: _box(row.get(f"{m}_box")) for m in MODALITIES}
    for value in (shared, *own.values()):
        if isinstance(value, str):
            return value
    given = [m for m in MODALITIES if own[m] is not None]
    if shared is not None and given:
        return "give box or rgb_box/nir_box/tir_box, not both"
    if shared is not None:
        return dict.fromkeys(MODALITIES, shared)  # type: ignore[arg-type]
    if not given:
        return None
    if len(given) != 3:
        return f"crop boxes must be given for all three modalities or none (got {', '.join(given)})"
    return {m: own[m] for m in MODALITIES}  # type: ignore[misc]


def _merge_test(by_split: dict[str, Candidate], manifest: Path, result: ScanResult) -> list[Candidate]:
    """A triplet listed as query and gallery with the same ids becomes one candidate of both (processed once)."""
    query, gallery = by_split.get("query"), by_split.get("gallery")
    if query is None or gallery is None:
        return list(by_split.values())
    if (query.pid, query.camid, query.sceneid) != (gallery.pid, gallery.camid, gallery.sceneid):
        result.report(
            "error", "conflicting_rows", f"{query.key} is query (pid {query.pid}, camid {query.camid}) and gallery "
            f"(pid {gallery.pid}, camid {gallery.camid}) with other ids; both left out", manifest,
        )  # fmt: skip
        return [c for split, c in by_split.items() if split == "train"]
    merged = Candidate(TEST_FOLDER, query.key, query.pid, query.camid, query.sceneid, query.paths, boxes=query.boxes)
    return [*(c for split, c in by_split.items() if split == "train"), merged]

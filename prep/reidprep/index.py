"""The ``index`` stage: a dataset layout -> the manifest of triplets, an errors ledger and a summary."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from reidprep.atomic import write_json
from reidprep.layouts import Candidate, Layout, ScanResult, get_layout
from reidprep.ledger import count_by_type, write_ledger
from reidprep.manifest import write_manifest
from reidprep.marker import Marker, fingerprint_of
from reidprep.progress import track
from reidprep.workdir import Workdir
from reidschemas import MODALITIES, PROTOCOL_RULES, LedgerEntry, Protocol, SampleRecord
from reidschemas.digest import file_sha256

STAGE = "index"


class StrictIndexError(RuntimeError):
    """``--strict``: the dataset has problems; nothing was written but the ledger."""


@dataclass
class IndexResult:
    dataset_dir: Path
    records: list[SampleRecord]
    problems: list[LedgerEntry]
    protocol: Protocol
    """The layout's evaluation protocol, which ``build-shards`` carries into ``dataset.json``."""

    @property
    def errors(self) -> list[LedgerEntry]:
        return [p for p in self.problems if p.severity == "error"]


def image_problem(path: Path) -> tuple[str, str, tuple[int, int] | None]:
    """``(error_type, reason, size)``: error_type is "" for a readable image, whose size is (width, height)."""
    try:
        if path.stat().st_size == 0:
            return "empty_image", "image file is empty (0 bytes)", None
        with Image.open(path) as image:
            return "", "", image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return "unreadable_image", f"cannot read image: {exc}", None


def _check_images(scan: ScanResult, progress: bool) -> list[tuple[Candidate, tuple[int, int] | None]]:
    """Open every image header (threads: the work is I/O); drop candidates with a bad image."""
    paths = sorted({path for c in scan.candidates for path in c.paths.values()})
    with ThreadPoolExecutor(max_workers=8) as pool:
        checked = dict(
            zip(paths, track(pool.map(image_problem, paths), len(paths), "checking images", progress), strict=True)
        )
    kept = []
    for candidate in scan.candidates:
        bad = [(p, checked[p]) for p in dict.fromkeys(candidate.paths.values()) if checked[p][0]]
        for path, (error_type, reason, _) in bad:
            scan.report("error", error_type, reason, path)
        if not bad:
            kept.append((candidate, checked[candidate.paths["rgb"]][2]))
    return kept


def _side_by_side_boxes(size: tuple[int, int] | None) -> list[tuple[int, int, int, int]] | None:
    width, height = size if size is not None else (768, 128)
    if width % 3:
        return None
    third = width // 3
    return [(i * third, 0, (i + 1) * third, height) for i in range(3)]


def _records(layout: Layout, candidate: Candidate, size, scan: ScanResult):
    layout_name, splits = layout.name, layout.split_folders
    boxes: list | None = None if candidate.boxes is None else [candidate.boxes[m] for m in MODALITIES]
    if candidate.side_by_side:
        boxes = _side_by_side_boxes(size)
        if boxes is None:
            scan.report(
                "error", "bad_side_by_side_size",
                f"side-by-side file is {size[0]}x{size[1]}; its width must split into three (768x128)",
                candidate.paths["rgb"],
            )  # fmt: skip
            return []
    box_fields = {} if boxes is None else dict(zip(("rgb_box", "nir_box", "tir_box"), boxes, strict=True))
    return [
        SampleRecord(
            sample_id=f"{layout_name}/{split}/{candidate.key}",
            triplet_key=f"{layout_name}/{candidate.split_folder}/{candidate.key}",
            dataset=layout_name,
            split=split,
            pid=candidate.pid,
            camid=candidate.camid,
            sceneid=candidate.sceneid,
            rgb_path=str(candidate.paths["rgb"]),
            nir_path=str(candidate.paths["nir"]),
            tir_path=str(candidate.paths["tir"]),
            object_kind=layout.object_kind,
            **box_fields,
        )
        for split in splits[candidate.split_folder]
    ]


def _require_scenes(layout: Layout, scan: ScanResult) -> None:
    """Under the scene protocol (MSVR310) a candidate without a scene id cannot be scored: an index error."""
    if layout.protocol != "scene":
        return
    kept = []
    for candidate in scan.candidates:
        if candidate.sceneid is not None:
            kept.append(candidate)
            continue
        split = layout.split_folders[candidate.split_folder][0]
        fix = (
            "give the row a sceneid"
            if layout.name == "generic"
            else "this name has no scene id (_sNNN_); rename the file or remove the triplet"
        )
        scan.report(
            "error",
            "missing_scene",
            f"{layout.name} is scored with the scene rule (same id and same scene removed): {fix}",
            candidate.paths["rgb"],
            sample_id=f"{layout.name}/{split}/{candidate.key}",
        )
    scan.candidates = kept


def _overlapping_ids(records: list[SampleRecord], scan: ScanResult, drop_from_train: bool) -> list[SampleRecord]:
    """Report ids present in train and in query/gallery; optionally drop them from train."""
    train_ids = {r.pid for r in records if r.split == "train"}
    test_ids = {r.pid for r in records if r.split != "train"}
    overlap = sorted(train_ids & test_ids)
    action = "dropped from train" if drop_from_train else "kept (use --drop-overlapping-ids to drop from train)"
    for pid in overlap:
        scan.report("warning", "id_in_train_and_test", f"id {pid} appears in train and in query/gallery; {action}")
    if drop_from_train and overlap:
        records = [r for r in records if not (r.split == "train" and r.pid in overlap)]
    return records


def build_index(
    layout_name: str,
    root: Path,
    *,
    kind: str | None = None,
    protocol: Protocol | None = None,
    check_images: bool = True,
    drop_overlapping_train_ids: bool = False,
    progress: bool = False,
) -> IndexResult:
    """Scan ``root`` with the named layout; the records and every problem met (nothing is written)."""
    layout = get_layout(layout_name, kind, protocol)
    dataset_dir = layout.locate(root.resolve())
    scan = layout.scan(dataset_dir)
    _require_scenes(layout, scan)
    checked = _check_images(scan, progress) if check_images else [(c, None) for c in scan.candidates]
    records = [r for c, size in checked for r in _records(layout, c, size, scan)]
    records = _overlapping_ids(records, scan, drop_overlapping_train_ids)
    if not records:
        raise ValueError(f"no usable triplet found under {dataset_dir} ({len(scan.problems)} problems)")
    return IndexResult(dataset_dir, records, scan.problems, layout.protocol)


def split_counts(records: Sequence[SampleRecord]) -> dict[str, dict[str, Any]]:
    """Per split: triplets, ids, cameras, scenes."""
    groups: dict[str, list[SampleRecord]] = defaultdict(list)
    for record in records:
        groups[record.split].append(record)
    return {
        split: {
            "triplets": len(rows),
            "ids": len({r.pid for r in rows}),
            "cameras": sorted({r.camid for r in rows}),
            "scenes": len({r.sceneid for r in rows if r.sceneid is not None}),
        }
        for split, rows in groups.items()
    }


def run_index(
    workdir: Path,
    layout_name: str,
    root: Path,
    *,
    kind: str | None = None,
    protocol: Protocol | None = None,
    strict: bool = False,
    check_images: bool = True,
    drop_overlapping_train_ids: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Index a dataset into ``workdir/index/``; skipped when done with the same parameters unless ``force``.

    Writes ``manifest.parquet``, ``errors.parquet`` and ``summary.json``, then the ``_SUCCESS`` marker last (its
    fingerprint hashes the parameters; its ``output`` is the manifest's digest, which the later steps record).
    Returns the summary (with ``"skipped": True`` when nothing was redone).
    """
    wd = Workdir(workdir)
    params = {
        "layout": layout_name,
        "root": str(root.resolve()),
        **({"kind": kind, "protocol": protocol} if layout_name == "generic" else {}),
        "check_images": check_images,
        "drop_overlapping_train_ids": drop_overlapping_train_ids,
    }
    fingerprint = fingerprint_of({"stage": STAGE, "params": params})
    marker = Marker(wd.done_marker(STAGE))
    if not force and marker.matching(fingerprint) and wd.manifest.is_file() and wd.summary(STAGE).is_file():
        return {**json.loads(wd.summary(STAGE).read_text()), "skipped": True}
    marker.clear()
    start = time.perf_counter()
    result = build_index(
        layout_name,
        root,
        kind=kind,
        protocol=protocol,
        check_images=check_images,
        drop_overlapping_train_ids=drop_overlapping_train_ids,
        progress=progress,
    )
    write_ledger(result.problems, wd.ledger(STAGE))
    if strict and result.errors:
        first = result.errors[0]
        raise StrictIndexError(
            f"--strict: {len(result.errors)} problem(s) in {result.dataset_dir}, the first: {first.path}: "
            f"{first.reason}. All are listed in {wd.ledger(STAGE)}; nothing else was written."
        )
    write_manifest(result.records, wd.manifest)
    summary = {
        "stage": STAGE,
        "params": params,
        "dataset_dir": str(result.dataset_dir),
        "records": len(result.records),
        "protocol": {"name": result.protocol, "layout": layout_name, "rule": PROTOCOL_RULES[result.protocol]},
        "splits": split_counts(result.records),
        "problems": count_by_type(result.problems),
        "errors": len(result.errors),
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(summary, wd.summary(STAGE))
    output = manifest_fingerprint(workdir)
    marker.write(fingerprint, {"stage": STAGE, "records": len(result.records), "output": output})
    return {**summary, "skipped": False}


def manifest_fingerprint(workdir: Path) -> str | None:
    """16 hex digits of the manifest's SHA-256: the index output the later steps record; None without one."""
    manifest = Workdir(workdir).manifest
    return file_sha256(manifest)[:16] if manifest.is_file() else None

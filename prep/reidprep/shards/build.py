"""``reidprep build-shards``: manifest + masks + captions -> size-bounded Parquet shards and ``dataset.json``.

Records stream through in the manifest's canonical order, a row group at a time, so memory stays bounded whatever
the dataset size: images are decoded, resized and encoded by ``shards.workers`` worker processes (one per core by
default; threads did not scale, see :mod:`reidprep.pool`) while this process writes the row groups in order. The
new set (shards, ``errors.parquet``, ``dataset.json``) is written and fsynced under this process's temporary names
(``.NAME.tmp-HOST-PID``), then swapped in by renames, ``dataset.json`` last, so a reader never sees a half-built set
and a full disk (``DiskFull``, one line) leaves the previous set as it was. A failure, Ctrl-C or SIGTERM removes
this build's temporaries; a SIGKILLed build's are removed by the next start. The same inputs and settings give
byte-identical shards, whatever the number of workers.

A query or gallery sample is never left out silently: a missing input or an unreadable image there makes
``build_shards`` refuse (``QueryGalleryExcluded``, naming the rows) unless ``allow_test_exclusions``; the previous set
stays as it was. Train samples may be excluded; every exclusion is ledgered and counted per split.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from reidprep.images import load_modality
from reidprep.index import manifest_fingerprint
from reidprep.layouts import get_layout
from reidprep.ledger import write_ledger
from reidprep.manifest import read_manifest, sort_records
from reidprep.marker import Marker, fingerprint_of
from reidprep.masks.fusion import resize_mask
from reidprep.pool import ordered_map, resolve_workers
from reidprep.progress import track
from reidprep.stage import current_run_dir, read_stage_table
from reidprep.step import StepFailed
from reidprep.workdir import Workdir
from reidschemas import MODALITIES, PROTOCOLS, LedgerEntry, Protocol, SampleRecord
from reidschemas.config import ShardsConfig
from reidschemas.digest import file_sha256
from reidschemas.maskcodec import decode_mask, encode_mask
from reidschemas.safeio import disk_full_guard, fsync_dir, remove_dead_temporaries, temporary_path
from reidschemas.shards import INDEX_NAME, SHARD_GLOB, SHARD_SCHEMA, SHARD_SCHEMA_VERSION, index_problems
from reidschemas.signals import sigterm_raises
from reidschemas.tokens import patch_grid, token_fractions, token_mask

STAGE = "shards"


SHOWN_EXCLUSIONS = 5
"""Query/gallery rows named in a refusal (then a count of the rest)."""


class QueryGalleryExcluded(StepFailed):
    """Query or gallery samples would be excluded and ``allow_test_exclusions`` is off (exit 1)."""

    def __init__(self, entries: Sequence[LedgerEntry], splits: dict[str, str]) -> None:
        counts = Counter(splits[e.sample_id or ""] for e in entries)
        named = "; ".join(f"{splits[e.sample_id or '']} {e.sample_id} ({e.reason})" for e in entries[:SHOWN_EXCLUSIONS])
        more = f"; and {len(entries) - SHOWN_EXCLUSIONS} more" if len(entries) > SHOWN_EXCLUSIONS else ""
        super().__init__(
            f"build-shards: refusing to exclude {len(entries)} test sample(s) "
            f"({', '.join(f'{split} {n}' for split, n in sorted(counts.items()))}), which would change the benchmark: "
            f"{named}{more}. Give them their inputs (e.g. `reidprep captions --retry-failed`, see each stage's "
            "errors.parquet), or pass --allow-test-exclusions (shards.allow_test_exclusions: true) to exclude them; "
            "any previous shards are unchanged"
        )
        self.entries = list(entries)


@dataclass
class BuildSummary:
    out_dir: Path
    rows: int
    excluded: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    excluded_per_split: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    skipped: bool = False
    protocol: str = ""  # the evaluation protocol dataset.json records ("camera" or "scene")
    cleaned: list[Path] = field(default_factory=list)  # temporaries of killed builds removed at the start
    workers: int = 1  # processes that encoded the rows (1: this one)
    worker_peak_mb: float = 0.0  # the largest peak memory of a worker process

    def line(self) -> str:
        cleaned = f"; removed {len(self.cleaned)} temporary file(s) left by a stopped build" if self.cleaned else ""
        if self.skipped:
            return f"build-shards: already built for these inputs in {self.out_dir} (use --force to rebuild){cleaned}"
        splits = ", ".join(f"{k} {v}" for k, v in self.rows_per_split.items())
        excluded = ", ".join(f"{k} {v}" for k, v in self.excluded_per_split.items())
        workers = f" (+ up to {self.worker_peak_mb:.0f} MB in each worker)" if self.workers > 1 else ""
        return (
            f"build-shards: {self.rows} rows ({splits}) in {len(self.shards)} shard(s), {self.excluded} excluded"
            f"{f' ({excluded})' if excluded else ''}, {self.seconds:.1f}s with {self.workers} worker(s), peak memory "
            f"{self.peak_rss_mb:.0f} MB{workers}; evaluation protocol: {self.protocol} rule{cleaned}"
        )


def _stage_rows(workdir: Path, stage: str, columns: list[str]) -> tuple[dict[str, dict], str | None]:
    """The current run's rows of ``stage`` by triplet key, and its run fingerprint; empty when it never ran."""
    run = current_run_dir(workdir, stage)
    if run is None or not any((run / "parts").glob("part-*.parquet")):
        return {}, None
    table = read_stage_table(workdir, stage, columns=["triplet_key", *columns])
    return {row["triplet_key"]: row for row in table.to_pylist()}, run.name


def _encode(image: Image.Image, config: ShardsConfig) -> bytes:
    if config.image_format == "raw":  # row-major (H, W, 3) uint8; Parquet's zstd compresses the column
        return np.asarray(image.convert("RGB")).tobytes()
    buffer = io.BytesIO()
    if config.image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=config.jpeg_quality)
    else:
        image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class _Builder:
    def __init__(self, config: ShardsConfig, masks: dict[str, dict], captions: dict[str, dict]) -> None:
        self.config = config
        self.masks = masks
        self.captions = captions

    def subset(self, records: Sequence[SampleRecord]) -> _Builder:
        """A builder holding only the masks and captions of ``records`` (what a worker needs for one row group)."""
        keys = {r.triplet_key for r in records}
        return _Builder(
            self.config,
            {k: self.masks[k] for k in keys if k in self.masks},
            {k: self.captions[k] for k in keys if k in self.captions},
        )

    def stored_size(self, record: SampleRecord, rgb: np.ndarray) -> tuple[int, int]:
        if self.config.size == "original":
            return int(rgb.shape[0]), int(rgb.shape[1])
        return self.config.person_size if record.kind == "pedestrian" else self.config.vehicle_size

    def missing(self, record: SampleRecord) -> LedgerEntry | None:
        """The ledger entry excluding ``record`` for a missing required input (``missing: exclude``), or None."""
        c = self.config
        rows = (("masks", self.masks), ("captions", self.captions))
        missing = [s for s, by_key in rows if s in c.require and record.triplet_key not in by_key]
        if missing and c.missing == "exclude":
            return self._excluded(record, f"no {' and no '.join(missing)} output for this triplet", "missing_input")
        return None

    def row(self, record: SampleRecord) -> dict[str, Any] | LedgerEntry:
        """One shard row, or the ledger entry saying why the record is left out."""
        c = self.config
        mask_row = self.masks.get(record.triplet_key)
        caption_row = self.captions.get(record.triplet_key)
        excluded = self.missing(record)
        if excluded is not None:
            return excluded
        try:
            arrays = {m: load_modality(record, m) for m in MODALITIES}
        except (OSError, ValueError) as exc:
            return self._excluded(record, f"cannot read an image: {exc}", type(exc).__name__)
        height, width = self.stored_size(record, arrays["rgb"])
        bicubic = Image.Resampling.BICUBIC
        encoded: dict[str, bytes] = {
            m: _encode(Image.fromarray(a).resize((width, height), bicubic) if a.shape[:2] != (height, width)
                       else Image.fromarray(a), c)
            for m, a in arrays.items()
        }  # fmt: skip
        row: dict[str, Any] = {
            "sample_id": record.sample_id,
            "triplet_key": record.triplet_key,
            "dataset": record.dataset,
            "split": record.split,
            "pid": record.pid,
            "camid": record.camid,
            "sceneid": record.sceneid,
            "image_format": c.image_format,
            "height": height,
            "width": width,
            **encoded,
            "mask": None,
            "token_grid": None,
            "token_fraction": None,
            "token_mask": None,
        }
        if mask_row is not None:
            mask = resize_mask(decode_mask(mask_row["mask"], mask_row["height"], mask_row["width"]), height, width)
            fractions = token_fractions(mask, c.patch_size, c.patch_stride)  # (rows, cols)
            row.update(
                mask=encode_mask(mask),
                token_grid=list(patch_grid(height, width, c.patch_size, c.patch_stride)),
                token_fraction=fractions.ravel().tolist(),
                token_mask=token_mask(fractions, c.token_threshold).ravel().tolist(),
            )
        for target in ("rgb", "nir", "tir", "fused"):
            row[f"caption_{target}"] = None if caption_row is None else caption_row[f"caption_{target}"]
        row["attributes"] = None if caption_row is None else caption_row["attributes"]
        return row

    @staticmethod
    def _excluded(record: SampleRecord, reason: str, error_type: str) -> LedgerEntry:
        return LedgerEntry(
            stage=STAGE, severity="error", error_type=error_type, reason=reason,
            path=record.rgb_path, sample_id=record.sample_id,
        )  # fmt: skip


class _ShardWriter:
    """Row groups into shards of about ``target_bytes``, each under this process's temporary name
    (``.shard-00000.parquet.tmp-HOST-PID``) until the new set is swapped in; ``discard`` removes them all."""

    def __init__(self, out_dir: Path, target_bytes: int, compression: dict[str, str]) -> None:
        self.out_dir = out_dir
        self.target_bytes = target_bytes
        self.compression = compression
        self.writer: pq.ParquetWriter | None = None
        self.final: Path | None = None
        self.splits: Counter[str] = Counter()
        self.finished: list[tuple[Path, Path, Counter[str]]] = []

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.final = self.out_dir / f"shard-{len(self.finished):05d}.parquet"
            with disk_full_guard(self.final, self.target_bytes):
                self.writer = pq.ParquetWriter(temporary_path(self.final), SHARD_SCHEMA, compression=self.compression)
            self.splits = Counter()
        assert self.final is not None
        with disk_full_guard(self.final, self.target_bytes):
            self.writer.write_table(table, row_group_size=table.num_rows)
        self.splits.update(table["split"].to_pylist())
        if temporary_path(self.final).stat().st_size >= self.target_bytes:
            self.close()

    def close(self) -> None:
        if self.writer is None:
            return
        assert self.final is not None
        writer, self.writer = self.writer, None
        with disk_full_guard(self.final, self.target_bytes):
            writer.close()
            tmp = temporary_path(self.final)
            with tmp.open("rb+") as handle:  # durable before the rename that publishes it
                os.fsync(handle.fileno())
        self.finished.append((tmp, self.final, self.splits))

    def discard(self) -> None:
        """Remove every temporary file of this writer (after a failure, a refusal or an interrupt)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk may fail the footer; the file goes anyway
                self.writer.close()
            self.writer = None
        if self.final is not None:
            temporary_path(self.final).unlink(missing_ok=True)
        for tmp, _, _ in self.finished:
            tmp.unlink(missing_ok=True)


def column_compression(config: ShardsConfig) -> dict[str, str]:
    """zstd everywhere, except raw pixel columns: lz4 decompresses several times faster for 5% more bytes
    (bench/loader.py), and reading speed is why one stores raw pixels."""
    codecs = dict.fromkeys(SHARD_SCHEMA.names, "zstd")
    if config.image_format == "raw":
        codecs.update(rgb="lz4", nir="lz4", tir="lz4")
    return codecs


def _blocks(records: Sequence[SampleRecord], size: int) -> Iterator[Sequence[SampleRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def dataset_protocol(records: Sequence[SampleRecord], manifest: Path) -> tuple[Protocol, str]:
    """(protocol, layout name): the evaluation protocol the manifest's layout declares (never read from the rows)."""
    datasets = sorted({r.dataset for r in records})
    if len(datasets) != 1:
        raise ValueError(
            f"{manifest} holds records of {len(datasets)} datasets ({', '.join(datasets) or 'none'}); a shard set "
            "holds one dataset, whose layout gives its evaluation protocol: index each dataset in its own workdir"
        )
    if datasets[0] == "generic":  # the user stated the protocol at index time; its summary records it
        summary = manifest.parent / "summary.json"
        protocol = json.loads(summary.read_text()).get("protocol", {}).get("name") if summary.is_file() else None
        if protocol not in PROTOCOLS:
            raise ValueError(f"{summary} does not record the evaluation protocol: rerun `reidprep index --force`")
        return cast(Protocol, protocol), "generic"
    layout = get_layout(datasets[0])
    return layout.protocol, layout.name


def _fingerprint(
    workdir: Path, config: ShardsConfig, masks_fp: str | None, captions_fp: str | None, protocol: str
) -> str:
    payload = {
        "schema": SHARD_SCHEMA_VERSION,
        "protocol": protocol,
        "config": config.model_dump(mode="json", exclude={"workers"}),
        "manifest": file_sha256(Workdir(workdir).manifest),
        "masks": masks_fp,
        "captions": captions_fp,
    }
    return fingerprint_of(payload)


def build_shards(
    workdir: Path, config: ShardsConfig, *, out_dir: Path | None = None, force: bool = False, progress: bool = False
) -> BuildSummary:
    """Write ``<workdir>/shards/`` (or ``out_dir``); skipped when built from the same inputs unless ``force``."""
    start = time.perf_counter()
    wd = Workdir(workdir)
    out = out_dir or wd.stage_dir(STAGE)
    # temporaries of builds that were killed (SIGKILL, power cut) go first, whether or not this one is skipped
    cleaned = remove_dead_temporaries(out.glob(".*.tmp-*")) if out.is_dir() else []
    records = sort_records(read_manifest(wd.manifest))
    protocol, dataset = dataset_protocol(records, wd.manifest)
    masks, masks_fp = _stage_rows(workdir, "masks", ["mask", "height", "width"])
    captions, captions_fp = _stage_rows(
        workdir, "captions", [f"caption_{t}" for t in ("rgb", "nir", "tir", "fused")] + ["attributes"]
    )
    fingerprint = _fingerprint(workdir, config, masks_fp, captions_fp, protocol)
    index_path = out / INDEX_NAME
    marker = Marker(index_path)  # dataset.json is the marker: written last, it records the fingerprint
    done = None if force else _finished(marker, fingerprint)
    # dataset.json without `protocol` (written before it was recorded) is rebuilt whatever its fingerprint
    if done is not None and done.get("protocol") == protocol:
        return BuildSummary(out, done["rows"], done["excluded"], done["shards"], done["rows_per_split"],
                            done.get("excluded_per_split", {}), skipped=True, protocol=protocol,
                            cleaned=cleaned)  # fmt: skip
    builder = _Builder(config, masks, captions)
    split_of: dict[str, str] = {r.sample_id: r.split for r in records}
    if not config.allow_test_exclusions:  # refuse before encoding anything when test inputs are already missing
        early = [e for r in records if r.split != "train" and (e := builder.missing(r)) is not None]
        if early:
            raise QueryGalleryExcluded(early, split_of)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, int(config.target_shard_mb * 2**20), column_compression(config))
    staged = [temporary_path(out / "errors.parquet"), temporary_path(index_path)]
    try:
        with sigterm_raises():  # SIGTERM, like Ctrl-C, ends in `except` below: no temporary file stays
            excluded, workers, worker_peak = _write_rows(builder, records, config, writer, progress)
            test_excluded = [e for e in excluded if split_of[e.sample_id or ""] != "train"]
            if test_excluded and not config.allow_test_exclusions:  # an unreadable test image: drop the new set
                raise QueryGalleryExcluded(test_excluded, split_of)
            shards = [_entry(tmp, final, splits) for tmp, final, splits in writer.finished]
            index = {
                "schema_version": SHARD_SCHEMA_VERSION,
                "dataset": dataset,
                "protocol": protocol,
                "inputs": {"index": manifest_fingerprint(workdir), "masks_run": masks_fp, "captions_run": captions_fp},
                "config": config.model_dump(mode="json", exclude={"workers"}),  # the same shards for any count
                **_counts(records, excluded, shards, split_of),
            }
            write_ledger(excluded, staged[0])  # everything that takes space is written before the old set goes
            Marker(staged[1]).write(fingerprint, index)
            _swap(out, writer.finished, staged, marker)
    except BaseException:
        writer.discard()
        for path in staged:
            path.unlink(missing_ok=True)
        raise
    peak = _peak_mb()
    return BuildSummary(
        out,
        index["rows"],
        len(excluded),
        shards,
        index["rows_per_split"],
        index["excluded_per_split"],
        time.perf_counter() - start,
        peak,
        protocol=protocol,
        cleaned=cleaned,
        workers=workers,
        worker_peak_mb=worker_peak,
    )


def _finished(marker: Marker, fingerprint: str) -> dict[str, Any] | None:
    """The set's ``dataset.json`` when it records ``fingerprint``, is well formed and every shard has its recorded
    size (the checksums are the readers' and validate-shards' job); None (rebuild) otherwise."""
    try:
        done = marker.matching(fingerprint)
    except (ValueError, UnicodeDecodeError):  # not JSON: rebuilt
        return None
    if done is None or index_problems(done):
        return None
    out = marker.path.parent
    sizes = [(out / s["file"], s["bytes"]) for s in done["shards"]]
    return done if all(p.is_file() and p.stat().st_size == size for p, size in sizes) else None


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build_block(item: tuple[_Builder, Sequence[SampleRecord]]) -> tuple[list[dict[str, Any] | LedgerEntry], float]:
    """The rows of one row group (or each record's exclusion), and the peak memory of the process that built them."""
    builder, block = item
    return [builder.row(record) for record in block], _peak_mb()


def _write_rows(
    builder: _Builder, records: Sequence[SampleRecord], config: ShardsConfig, writer: _ShardWriter, progress: bool
) -> tuple[list[LedgerEntry], int, float]:
    """Encode every record into ``writer``'s temporary shards (closed at the end), a row group per task of
    ``config.workers`` processes, written in order. Returns the ledger of excluded records, the worker count and
    the largest peak memory of a worker (MB)."""
    excluded: list[LedgerEntry] = []
    blocks = list(_blocks(records, config.row_group_rows))
    workers = min(resolve_workers(config.workers), len(blocks)) or 1
    worker_peak = 0.0
    built = ordered_map(_build_block, ((builder.subset(block), block) for block in blocks), workers)
    with contextlib.closing(built):
        description = f"build-shards ({len(records)} records, {workers} worker(s))"
        for results, peak in track(built, len(blocks), description, progress):
            worker_peak = max(worker_peak, peak)
            rows: list[dict[str, Any]] = []
            for result in results:
                if isinstance(result, LedgerEntry):
                    excluded.append(result)
                else:
                    rows.append(result)
            if rows:
                writer.write(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA))
    writer.close()
    return excluded, workers, worker_peak


def _entry(tmp: Path, final: Path, splits: Counter[str]) -> dict[str, Any]:
    """``dataset.json``'s entry for the shard written at ``tmp`` that will be renamed to ``final``."""
    return {"file": final.name, "rows": pq.read_metadata(tmp).num_rows, "bytes": tmp.stat().st_size,
            "sha256": file_sha256(tmp), "rows_per_split": dict(sorted(splits.items()))}  # fmt: skip


def _counts(
    records: Sequence[SampleRecord], excluded: list[LedgerEntry], shards: list[dict[str, Any]], split_of: dict[str, str]
) -> dict[str, Any]:
    """The counting part of ``dataset.json``: rows, exclusions and the shard list."""
    split_counts: Counter[str] = Counter()
    for shard in shards:
        split_counts.update(shard["rows_per_split"])
    excluded_splits = Counter(split_of[e.sample_id or ""] for e in excluded)
    return {
        "rows": sum(s["rows"] for s in shards),
        "excluded": len(excluded),
        "excluded_per_split": {s: excluded_splits[s] for s in sorted({r.split for r in records})},
        "rows_per_split": dict(sorted(split_counts.items())),
        "shards": shards,
    }


def _swap(out: Path, finished: list[tuple[Path, Path, Counter[str]]], staged: list[Path], marker: Marker) -> None:
    """Replace the old set by the staged one with renames and unlinks only (no space needed): the old index goes
    first, so a crash in between leaves no index and the next run rebuilds; the new index comes last."""
    marker.clear()
    for old in out.glob(SHARD_GLOB):
        old.unlink()
    for tmp, final, _ in finished:
        os.replace(tmp, final)
    errors_tmp, index_tmp = staged
    os.replace(errors_tmp, out / "errors.parquet")
    os.replace(index_tmp, marker.path)
    fsync_dir(out)

"""Reading a prep workdir's completion markers without importing ``reidprep``: is a shard set stale?

``build-shards`` records in ``dataset.json`` the upstream outputs it read (``inputs``: ``index`` = the manifest's
digest, ``masks_run`` / ``captions_run`` = the run fingerprints of those stages). The current complete outputs are
``index/_SUCCESS`` (its ``output``) and ``<stage>/current.json`` -> ``runs/<fingerprint>/_SUCCESS``. A shard set is
stale when a recorded input differs from the current complete one (the same rule as ``reidprep status``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RECORDED_INPUTS", "current_outputs", "is_workdir", "stale_inputs"]

RECORDED_INPUTS = {"index": "index", "masks_run": "masks", "captions_run": "captions"}
"""dataset.json ``inputs`` key -> the prep stage it names."""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def is_workdir(folder: Path) -> bool:
    """``folder`` holds a prep workdir's index (so its stages' markers can be read)."""
    return (folder / "index" / "manifest.parquet").is_file()


def _stage_output(workdir: Path, stage: str) -> str | None:
    """The fingerprint of ``stage``'s current run when that run is complete, else None."""
    pointer = _read_json(workdir / stage / "current.json")
    if pointer is None:
        return None
    run_dir = workdir / stage / pointer["run_dir"]
    return run_dir.name if (run_dir / "_SUCCESS").is_file() else None


def current_outputs(workdir: Path) -> dict[str, str | None]:
    """Stage name -> the fingerprint of its current complete output (None: none), for index, masks, captions."""
    marker = _read_json(workdir / "index" / "_SUCCESS")
    index = marker.get("output") if marker is not None and is_workdir(workdir) else None
    return {"index": index, "masks": _stage_output(workdir, "masks"), "captions": _stage_output(workdir, "captions")}


def stale_inputs(recorded: dict[str, str | None], workdir: Path) -> list[str]:
    """One reason per recorded input of a shard set (``dataset.json`` ``inputs``) that differs from ``workdir``'s
    current complete output, e.g. "masks: built on run 1a2b..., current is run 3c4d..."; empty when fresh."""
    current = current_outputs(workdir)
    reasons = []
    for key, stage in RECORDED_INPUTS.items():
        if key in recorded and recorded[key] != current[stage]:
            reasons.append(f"{stage}: built on {_describe(recorded[key])}, current is {_describe(current[stage])}")
    return reasons


def _describe(fingerprint: str | None) -> str:
    return "no complete run" if fingerprint is None else f"run {fingerprint}"

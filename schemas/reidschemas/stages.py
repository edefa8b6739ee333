"""Reading a prep workdir's completion markers without importing ``reidprep``: is a shard set stale?

``build-shards`` records in ``dataset.json`` the upstream outputs it read (``inputs``: ``index`` = the manifest's
digest, ``masks_run`` / ``captions_run`` = the run fingerprints of those stages). The current complete outputs are
``index/_SUCCESS`` (its ``output``) and ``<stage>/current.json`` -> ``runs/<fingerprint>/_SUCCESS``. A shard set is
stale when a recorded input differs from the current complete one. :func:`stale_reasons` is that rule, once: ``reidprep
status`` applies it to every step and ``reidtrain fit`` to the shard set it trains on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RECORDED_INPUTS", "current_outputs", "is_workdir", "recorded_stages", "stale_inputs", "stale_reasons"]

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


def stale_reasons(inputs: Mapping[str, str | None], current: Mapping[str, str | None]) -> list[str]:
    """One reason per upstream stage whose recorded fingerprint (``inputs``: stage -> the fingerprint an output was
    built on) differs from its current complete output (``current``), e.g. "built on masks run 1a2b..., current is
    run 3c4d..."; empty when fresh."""
    return [
        f"built on {stage} {_describe(built_on)}, current is {_describe(current.get(stage))}"
        for stage, built_on in inputs.items()
        if built_on != current.get(stage)
    ]


def recorded_stages(recorded: Mapping[str, str | None]) -> dict[str, str | None]:
    """A shard set's ``dataset.json`` ``inputs`` keyed by the stage they name (``masks_run`` -> ``masks``)."""
    return {stage: recorded[key] for key, stage in RECORDED_INPUTS.items() if key in recorded}


def stale_inputs(recorded: Mapping[str, str | None], workdir: Path) -> list[str]:
    """:func:`stale_reasons` of a shard set (its ``dataset.json`` ``inputs``) against ``workdir``'s current outputs."""
    return stale_reasons(recorded_stages(recorded), current_outputs(workdir))


def _describe(fingerprint: str | None) -> str:
    return "no complete run" if fingerprint is None else f"run {fingerprint}"

"""The completion contract every step shares: a fingerprint of what determines the output, and a marker written last.

A step computes the fingerprint of its run (its own parameters plus the fingerprints of the upstream outputs it
reads), writes its outputs atomically, and writes the marker last: a JSON file holding that fingerprint. A rerun
whose fingerprint equals the marker's is skipped; any other fingerprint redoes the work (the marker is removed
first, so a crash in between leaves no marker and the next run redoes it). ``run_stage`` (per-triplet, chunked)
writes its ``_SUCCESS`` the same way; ``index``, ``build-shards`` and ``synth`` go through :class:`Marker`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidprep.atomic import write_json


def fingerprint_of(payload: Any) -> str:
    """16 hex digits of SHA-256 over ``payload`` as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Marker:
    """A completion marker: a JSON file with at least ``{"fingerprint": ...}``, written after every output."""

    path: Path

    def read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None

    def matching(self, fingerprint: str) -> dict[str, Any] | None:
        """The marker's content when it records ``fingerprint`` (the work is done), else None."""
        data = self.read()
        return data if data is not None and data.get("fingerprint") == fingerprint else None

    def clear(self) -> None:
        """Remove the marker before redoing the work."""
        self.path.unlink(missing_ok=True)

    def write(self, fingerprint: str, data: dict[str, Any]) -> None:
        """Write the marker (call last, after every output is in place)."""
        write_json({**data, "fingerprint": fingerprint}, self.path)

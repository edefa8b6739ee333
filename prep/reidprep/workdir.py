"""Where each stage keeps its outputs inside a workdir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workdir:
    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    @property
    def manifest(self) -> Path:
        return self.root / "index" / "manifest.parquet"

    def ledger(self, stage: str) -> Path:
        return self.stage_dir(stage) / "errors.parquet"

    def summary(self, stage: str) -> Path:
        return self.stage_dir(stage) / "summary.json"

    def done_marker(self, stage: str) -> Path:
        """Written last by a stage that completed; its absence means the stage has not finished."""
        return self.stage_dir(stage) / "_SUCCESS"

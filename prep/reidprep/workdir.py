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

    def require_manifest(self) -> Path:
        """The manifest's path; ``FileNotFoundError`` naming the command that makes it when there is none."""
        return require_manifest(self.manifest)

    def ledger(self, stage: str) -> Path:
        return self.stage_dir(stage) / "errors.parquet"

    def summary(self, stage: str) -> Path:
        return self.stage_dir(stage) / "summary.json"

    def done_marker(self, stage: str) -> Path:
        """Written last by a stage that completed; its absence means the stage has not finished."""
        return self.stage_dir(stage) / "_SUCCESS"


def require_manifest(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run `reidprep index` for this workdir first")
    return path

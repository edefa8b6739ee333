"""``reidprep status``: how many samples each stage has done, failed and left pending in a workdir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from reidprep.ledger import read_ledger
from reidprep.stage import stage_status
from reidprep.workdir import Workdir


def _index_status(wd: Workdir) -> dict[str, Any]:
    errors = sum(e.severity == "error" for e in read_ledger(wd.ledger("index")))
    warnings = sum(e.severity == "warning" for e in read_ledger(wd.ledger("index")))
    if wd.done_marker("index").is_file() and wd.manifest.is_file():
        done = pq.read_metadata(wd.manifest).num_rows
        return {"state": "complete", "done": done, "failed": errors, "warnings": warnings, "pending": 0}
    state = "not run" if not wd.stage_dir("index").exists() else "incomplete"
    return {"state": state, "done": 0, "failed": errors, "warnings": warnings, "pending": None}


def _shards_status(wd: Workdir) -> dict[str, Any]:
    index = wd.stage_dir("shards") / "dataset.json"
    if not index.is_file():
        return {"state": "not run", "done": 0, "failed": 0, "warnings": 0, "pending": None}
    data = json.loads(index.read_text())
    return {"state": "complete", "done": data["rows"], "failed": data["excluded"], "warnings": 0, "pending": 0}


#: Stage name -> its status reader, in pipeline order. Each later stage adds its reader here.
STAGE_STATUS: dict[str, Callable[[Workdir], dict[str, Any]]] = {
    "index": _index_status,
    "masks": lambda wd: stage_status(wd.root, "masks"),
    "captions": lambda wd: stage_status(wd.root, "captions"),
    "shards": _shards_status,
}


def workdir_status(workdir: Path) -> dict[str, Any]:
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist: run `reidprep index --workdir {workdir}` first")
    wd = Workdir(workdir)
    return {
        "workdir": str(workdir.resolve()),
        "stages": {name: read(wd) for name, read in STAGE_STATUS.items()},
    }


def status_json(workdir: Path) -> str:
    return json.dumps(workdir_status(workdir), indent=2)

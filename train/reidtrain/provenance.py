"""Where a run came from: the package version, the git commit of the source, the shards and the weights file.

``fit`` writes :func:`provenance` into config.json and every checkpoint. Nothing here fails a run: without git, or
outside a checkout, the commit is None.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

import reidtrain
from reidschemas.digest import file_sha256

__all__ = ["git_state", "provenance"]


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):  # git absent or hanging
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """``{"commit": HEAD or None, "dirty": bool or None}`` of the checkout that tracks ``folder`` (default: this
    package's source); None when git is absent or the package is not a tracked file of a checkout (installed)."""
    folder = Path(reidtrain.__file__).resolve().parent if folder is None else folder
    if _git(folder, "ls-files", "--error-unmatch", "--", str(folder)) is None:
        return {"commit": None, "dirty": None}
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def provenance(shards_info: dict[str, Any], weights: Path | None) -> dict[str, Any]:
    """The run's provenance: ``package_version``, ``git_commit``, ``git_dirty``, ``torch_version``,
    ``dataset_fingerprint`` (the shards' dataset.json ``fingerprint``) and ``weights_sha256`` (None: random init)."""
    git = git_state()
    return {
        "package_version": reidtrain.__version__,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "torch_version": str(torch.__version__),
        "dataset_fingerprint": shards_info.get("fingerprint"),
        "weights_sha256": None if weights is None else file_sha256(weights),
    }

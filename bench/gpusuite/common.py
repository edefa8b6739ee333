"""What the GPU suite's sections share: figures with units, rows, timing with CUDA syncs, peak memory, peak FLOP/s.

A section returns ``Row`` objects; a row holds named ``Figure`` values, each with its unit, or a ``skipped`` reason
(then it has no figures). ``None`` as a figure's value means "not available here" and carries a note saying why
(MFU on a CPU, which has no entry in the peak FLOP/s table).
"""

from __future__ import annotations

import os
import resource
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

MIB = 1024**2

# Dense bf16 tensor-core peak per GPU, FLOP/s: the datasheets' "BF16 Tensor Core" figures are with 2:4 sparsity, so
# they are halved. NVIDIA H100 datasheet (SXM 1,979 / PCIe 1,513 / NVL 1,671 TFLOPS sparse) and H200 datasheet
# (SXM 1,979 / NVL 1,671). Matched against torch.cuda.get_device_name, most specific first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835.5e12),
    ("H200", 989.5e12),  # "NVIDIA H200" (SXM)
    ("H100 NVL", 835.5e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.5e12),  # "NVIDIA H100 80GB HBM3" (SXM)
)


def peak_bf16_flops(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, what it is) for ``device``; None on a CPU or a GPU missing from the table."""
    if device.type != "cuda":
        return None, "n/a on CPU (no peak FLOP/s table entry)"
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in name.lower():
            return flops, f"{name}: {flops / 1e12:.1f} TFLOP/s dense bf16 (datasheet)"
    return None, f"n/a: {name} is not in the peak FLOP/s table (bench/gpusuite/common.py)"


@dataclass(frozen=True)
class Figure:
    value: float | None
    unit: str
    note: str = ""
    label: str = ""
    """Shown before the value in the table where the unit alone does not say what it is ("MFU", "peak")."""

    def text(self) -> str:
        if self.value is None:
            number = "n/a"
        elif 0 < abs(self.value) < 0.01:
            number = f"{self.value:.1e}"
        else:
            digits = 0 if abs(self.value) >= 1000 else 1 if abs(self.value) >= 10 else 2
            number = f"{self.value:,.{digits}f}"
        unit = self.unit if self.value is not None else ""
        return " ".join(part for part in (self.label, number, unit) if part)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "unit": self.unit}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Row:
    """One measured case of a section (a model, a batch size, a path)."""

    case: str
    figures: dict[str, Figure] = field(default_factory=dict)
    skipped: str | None = None
    """Why this case was not measured here (e.g. a package that is not installed)."""
    error: str | None = None
    """The exception that stopped this case (the suite goes on and exits 1)."""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case, "figures": {k: f.as_json() for k, f in self.figures.items()}}
        if self.skipped is not None:
            out["skipped"] = self.skipped
        if self.error is not None:
            out["error"] = self.error
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Section:
    name: str
    title: str
    budget_s: float
    """The planned seconds of the full (non-tiny) run on one H100 (the sum stays under 8 minutes)."""
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    setup: dict[str, Any] = field(default_factory=dict)
    """What was run: sizes, counts, precision (JSON-able)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "budget_s": self.budget_s,
            "seconds": round(self.seconds, 3),
            "setup": self.setup,
            "rows": [row.as_json() for row in self.rows],
        }


def guarded(case: str, measure: Callable[[], Row]) -> Row:
    """``measure()``, or a row carrying the exception's one-line description when it raises."""
    try:
        return measure()
    except Exception as exc:  # one broken case must not lose the others' figures
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Row(case, error=f"{type(exc).__name__}: {first}"[:400])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def _rss_bytes() -> int:
    """This process's resident set size now (Linux /proc); the peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` on a GPU; on a CPU the process's RSS sampled every 5 ms
    (allocated tensors are not tracked there, so it includes the interpreter and every loaded library)."""

    bytes: int = 0

    @property
    def figure(self) -> Figure:
        return Figure(self.bytes / MIB, "MiB", label="peak")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    peak = PeakMemory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            yield peak
        finally:
            synchronize(device)
            peak.bytes = torch.cuda.max_memory_allocated(device)
        return
    stop = threading.Event()
    samples = [_rss_bytes()]

    def sample() -> None:
        while not stop.wait(0.005):
            samples.append(_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        samples.append(_rss_bytes())
        peak.bytes = max(samples)


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the timed calls"
    return "process resident set size (RSS) sampled every 5 ms over the timed calls (CPU: no allocator statistics)"

"""The GPU benchmark suite (issue 19): one command, one table, one JSON file of figures with units.

    make bench-gpu                                   # = python bench/gpu_suite.py --device cuda
    python bench/gpu_suite.py --device cpu --tiny    # the CI smoke run: tiny models, under a minute on 2 cores

Sections (``bench/gpusuite/``; each module's docstring says what it measures and how), with the planned seconds of
the full run on one H100 (7.3 minutes in all, under the 8-minute budget):

=========  =====  ========================================================================================
sam2         60   SAM 2.1 hiera-l and hiera-t (packaged configs, random weights), 64 crops of 256x128: per-image
                  loop vs batched (bf16), images/s and peak memory
qwen        150   Qwen2.5-VL 3B and 7B configurations (random weights), four views per triplet, the real attribute
                  prompt, 64 generated tokens, batches of 1, 8 and 32: requests/s, tokens/s, peak memory
train       120   training steps of the six models at ViT-B/16, 256x128, bf16, the recipes' batch sizes, workers on
                  synthetic shards: triplets/s, MFU (FlopCounterMode), peak memory, data-wait share
scan         20   mamba-ssm's selective-scan kernel against the PyTorch scan: equal outputs and gradients, speed
fit          60   ``reidtrain fit``, two epochs in bf16 and in fp16 of the six models (tiny-demo recipes)
(shards)     30   the synthetic shards ``train`` and ``fit`` read (24 persons x 8, through ``reidprep run``)
=========  =====  ========================================================================================

``--tiny`` swaps in the tests' tiny models (tiny random SAM 2.1 and Qwen2.5-VL, the tiny CLIP backbone with the
tiny-demo recipes, small scans) and fewer steps; full sizes need ``--device cuda``. The JSON goes to
``bench/results-<date>-<device>.json`` (``-tiny`` added for a tiny run; ``--out`` names another folder or file).
A section or case that raises is recorded with its error and the suite goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "prep")]  # gpusuite/, selective_scan.py; the tiny models

import torch  # noqa: E402
from gpusuite.common import Row, Section, memory_kind, peak_bf16_flops  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from reidschemas.safeio import atomic_write_text  # noqa: E402

SECTIONS = ("sam2", "qwen", "train", "scan", "fit")
MODELS = ("baseline", "demo", "dmpt", "mambapro", "next", "stmi")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def results_path(out: Path | None, device: torch.device, tiny: bool, today: dt.date) -> Path:
    """``out`` when it names a .json file; else ``results-<date>-<device>[-tiny].json`` in ``out`` (default bench/)."""
    if out is not None and out.suffix == ".json":
        return out
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-") or device.type
    return (out or HERE) / f"results-{today.isoformat()}-{slug}{'-tiny' if tiny else ''}.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models and short runs (CI smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON file, or a .json path")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cuda 8, cpu 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --tiny)")
    parser.add_argument("--fit-models", nargs="+", choices=MODELS, default=None, help="default: all six (cpu: stmi)")
    parser.add_argument("--qwen-processor", type=Path, default=None, help="processor/tokenizer of a real checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Sizes and counts of every section for this run (full or ``--tiny``)."""
    tiny = args.tiny
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (min(8, cores) if device.type == "cuda" else 2)
    return {
        "workers": workers,
        "shards": {"ids": 8, "images_per_id": 4} if tiny else {"ids": 24, "images_per_id": 8},
        "sam2": {"images": 8 if tiny else 64, "batch_size": 4 if tiny else 8},
        "qwen": {"batches": (1, 8, 32), "tokens": 16 if tiny else 64},
        "train": {"warmup": 1 if tiny else 3, "steps": 2 if tiny else 12, "models": list(MODELS)},
        "scan": (
            {"batch": 2, "channels": 64, "state": 8, "lengths": (32,), "repeats": 2}
            if tiny
            else {"batch": 64, "channels": 1024, "state": 16, "lengths": (128, 384), "repeats": 3}
        ),
        "fit": {"models": args.fit_models or (list(MODELS) if device.type == "cuda" else ["stmi"])},
    }


BUDGETS = {"sam2": 60, "qwen": 150, "train": 120, "scan": 20, "fit": 60}
SHARDS_BUDGET = 30
TITLES = {
    "sam2": "SAM 2.1 masks: per-image loop vs batched",
    "qwen": "Qwen2.5-VL attribute requests",
    "train": "training steps",
    "scan": "selective scan: mamba-ssm vs PyTorch",
    "fit": "reidtrain fit, 2 epochs",
}


class Shards:
    """The synthetic shards of ``train`` and ``fit``, built on first use (under ``root``), timed."""

    def __init__(self, root: Path, ids: int, images_per_id: int, seed: int) -> None:
        self.root, self.ids, self.images_per_id, self.seed = root, ids, images_per_id, seed
        self.path: Path | None = None
        self.seconds = 0.0

    def __call__(self) -> Path:
        if self.path is None:
            from gpusuite.training import build_shards

            start = time.perf_counter()
            self.path = build_shards(self.root, self.ids, self.images_per_id, self.seed)
            self.seconds = time.perf_counter() - start
        return self.path


def run_section(
    name: str, sizes: dict[str, Any], args: argparse.Namespace, device: torch.device, shards: Shards
) -> list[Row]:
    """The rows of section ``name`` (imports inside: a section's heavy libraries load only when it runs)."""
    if name == "sam2":
        from gpusuite.masks_sam2 import sam2_rows

        return sam2_rows(device, args.tiny, sizes["sam2"]["images"], sizes["sam2"]["batch_size"], args.seed)
    if name == "qwen":
        from gpusuite.qwen import qwen_rows

        q = sizes["qwen"]
        return qwen_rows(device, args.tiny, q["batches"], q["tokens"], args.seed, args.qwen_processor)
    if name == "train":
        from gpusuite.training import step_rows

        t = sizes["train"]
        return step_rows(t["models"], shards(), device, args.tiny, sizes["workers"], t["warmup"], t["steps"])
    if name == "scan":
        from gpusuite.scan import scan_rows

        return scan_rows(device, **sizes["scan"])
    from gpusuite.training import fit_rows

    return fit_rows(sizes["fit"]["models"], shards(), device, sizes["workers"])


def table(sections: list[Section], device: str) -> str:
    """One table of every row: section, case, figures with units, note (markdown, so it pastes into RESULTS.md)."""
    out = Table(box=box.MARKDOWN)
    for column in ("section", "case", "figures", "note"):
        out.add_column(column)
    for section in sections:
        for row in section.rows:
            if row.error is not None:
                figures, note = "FAILED", row.error
            elif row.skipped is not None:
                figures, note = "skipped", row.skipped
            else:
                figures = "; ".join(figure.text() for figure in row.figures.values())
                note = row.note
            out.add_row(section.name, row.case, figures, note)
    console = Console(width=10_000, color_system=None)  # one line per row, whatever the terminal's width
    with console.capture() as captured:
        console.print(out)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    return "\n".join([f"GPU suite on {device}", "", *(line for line in lines if line)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but CUDA is not available; on a CPU run --device cpu --tiny", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.tiny:
        print(
            "gpu_suite: full sizes need --device cuda (7B random weights, ViT-B/16 batches); add --tiny",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    threads = args.threads or (1 if args.tiny and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    sizes = plan(args, device)
    started, today = time.perf_counter(), dt.date.today()
    path = results_path(args.out, device, args.tiny, today)
    name = device_name(device)
    peak, peak_note = peak_bf16_flops(device)
    meta = {
        "date": today.isoformat(),
        "device": name,
        "device_type": device.type,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "tiny": args.tiny,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "peak_bf16_flops": peak,
        "peak_note": peak_note,
        "memory": memory_kind(device),
    }
    print(
        f"gpu_suite: {name} ({device.type}), {'tiny' if args.tiny else 'full'} run, "
        f"sections {' '.join(args.sections)}, "
        f"{sizes['workers']} DataLoader workers, torch threads {torch.get_num_threads()}; JSON -> {path}",
        file=sys.stderr,
    )
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="gpu-suite-shards-") as tmp:
        shards = Shards(Path(tmp), seed=args.seed, **sizes["shards"])
        for index, key in enumerate(args.sections, 1):
            print(f"[{index}/{len(args.sections)}] {TITLES[key]} ...", file=sys.stderr, flush=True)
            section = Section(key, TITLES[key], BUDGETS[key], setup=_jsonable(sizes.get(key, {})))
            before = shards.seconds
            start = time.perf_counter()
            try:
                section.rows = run_section(key, sizes, args, device, shards)
            except Exception as exc:  # the other sections' figures are still written
                traceback.print_exc()
                first = (str(exc).strip().splitlines() or [""])[0]
                section.rows = [Row(f"{key} (whole section)", error=f"{type(exc).__name__}: {first}"[:400])]
            section.seconds = time.perf_counter() - start - (shards.seconds - before)
            sections.append(section)
        meta["shards"] = {**sizes["shards"], "seconds": round(shards.seconds, 3), "budget_s": SHARDS_BUDGET}
    meta["seconds"] = round(time.perf_counter() - started, 3)
    meta["cpu_seconds"] = round(time.process_time(), 3)
    document = {"meta": meta, "sections": {section.name: section.as_json() for section in sections}}
    atomic_write_text(json.dumps(document, indent=2) + "\n", path)
    print(table(sections, name))
    spent = ", ".join(f"{s.name} {s.seconds:.1f} s (budget {s.budget_s:g})" for s in sections)
    print(f"seconds per section: {spent}; shards {shards.seconds:.1f} s (budget {SHARDS_BUDGET}); budgets: full run")
    print(f"{meta['seconds']:.1f} s in all ({meta['cpu_seconds']:.1f} s CPU in this process); wrote {path}")
    failed = [f"{s.name}/{row.case}" for s in sections for row in s.rows if row.error is not None]
    if failed:
        print(f"gpu_suite: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


if __name__ == "__main__":
    sys.exit(main())

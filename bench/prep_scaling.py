"""Prep at the real benchmarks' scale: the captions import before and after issue 19, and 1 vs N workers for the
thermal masks and build-shards, each pair measured side by side in one run.

    python bench/prep_scaling.py                          # full scale; workers 1 and 2
    python bench/prep_scaling.py --fraction 0.05 --workers 1 2 4

- import: ``reidprep captions --provider import`` on RGBNT100's 18,965 file names (``bench/prep_data.py``), the
  code of ``--baseline`` (a git revision, unpacked with ``git archive``) against this working tree, each in a fresh
  process on a copy of the same index; the parts must be byte-identical.
- the CPU-bound stages on RGBNT201's 4,787 triplets (5,623 records), each with ``--workers N``: thermal masks,
  heuristic captions, then build-shards (JPEG) from those. The outputs of every worker count must be
  byte-identical. "busiest process": the largest share of the command's CPU time in one process (100% with one
  worker; about 1/N when N workers share the work evenly), which shows the split whatever the machine's load.

Times are the wall clock of the whole command (interpreter start and imports included); ``cores busy`` is the
CPU time of the command and its children over that wall time.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from prep_data import rgbnt100, rgbnt201

from reidprep.index import run_index

REPO = Path(__file__).resolve().parents[1]
BASELINE = "070845779654316ca110511b23998f8b75ddaeb8"
"""main before issue 19 point 4 (open_clip's tokenizer, every caption validated and tokenised per record)."""


def _tree(rev: str, out: Path) -> Path:
    """The ``prep`` and ``schemas`` folders of git revision ``rev``, unpacked under ``out``."""
    out.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "prep", "schemas"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def _cpu_seconds(root: int, seen: dict[int, float]) -> None:
    """Record in ``seen`` the CPU seconds (user + system, all threads) of ``root`` and each of its descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    for pid in family & times.keys():
        seen[pid] = max(seen.get(pid, 0.0), times[pid])


def _reidprep(tree: Path, args: list[str]) -> tuple[float, float, float, str]:
    """Run ``reidprep ARGS`` with the code of ``tree``: (wall seconds, cores busy, the busiest process's share of the
    CPU time, output). Cores busy: the CPU time of the command and every process it starts (forkserver workers
    included; sampled from /proc every 0.2 s, so each process's last 0.2 s may be missed) over the wall time."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'prep'}{os.pathsep}{tree / 'schemas'}"}
    command = [sys.executable, "-c", "from reidprep.cli import main; main()", *args]
    seen: dict[int, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        while process.poll() is None:
            _cpu_seconds(process.pid, seen)
            time.sleep(0.2)
        wall = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if process.returncode != 0:
        raise RuntimeError(f"reidprep {' '.join(args)} failed ({process.returncode}):\n{output}")
    total = sum(seen.values()) or 1.0
    return wall, total / wall, max(seen.values(), default=0.0) / total, output


def _digests(folder: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob(pattern))
        if p.is_file()
    }


def _fresh(base: Path, out: Path) -> Path:
    """A workdir holding a copy of ``base``'s index (and nothing else)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base / "index", out / "index")
    return out


def _row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def _rows(wd: Path) -> list[dict]:
    """The captions rows of ``wd``'s run, in chunk order (whatever the chunk size)."""
    return [
        row for p in sorted((wd / "captions" / "runs").rglob("part-*.parquet")) for row in pq.read_table(p).to_pylist()
    ]


def bench_import(tmp: Path, fraction: float, baseline: str, repeats: int) -> None:
    records = rgbnt100(tmp / "rgbnt100", tmp / "release100", fraction)
    base = tmp / "w100"
    run_index(base, "rgbnt100", tmp / "rgbnt100", check_images=False)
    before = _tree(baseline, tmp / "before")
    runs = {  # label: (code, extra options)
        f"before ({baseline[:7]}), 32 triplets per part": (before, []),
        "after, 32 triplets per part": (REPO, ["--chunk-size", "32"]),
        "after, default (1024 per part)": (REPO, []),
    }
    print(f"\n## captions --provider import: RGBNT100, {records:,} records, best of {repeats}\n")
    _row(["code", "seconds", "records/s", "cores busy", "speed-up"])
    _row(["---"] * 5)
    best: dict[str, tuple[float, float]] = {}
    parts: dict[str, dict[str, str]] = {}
    rows: dict[str, list[dict]] = {}
    for _ in range(repeats):  # alternated, so all see the same load
        for label, (tree, extra) in runs.items():
            wd = _fresh(base, tmp / "w100-run")
            args = ["captions", "--workdir", str(wd), "--provider", "import", "--import-dir", str(tmp / "release100")]
            wall, busy, _, _ = _reidprep(tree, [*args, *extra, "--no-progress"])
            if label not in best or wall < best[label][0]:
                best[label] = (wall, busy)
            parts[label] = _digests(wd / "captions" / "runs", "part-*.parquet")
            rows[label] = _rows(wd)
    first = next(iter(best.values()))[0]
    for label, (wall, busy) in best.items():
        _row([label, f"{wall:.1f}", f"{records / wall:,.0f}", f"{busy:.2f}", f"{first / wall:.2f}x"])
    labels = list(runs)
    same_parts = parts[labels[0]] == parts[labels[1]]
    same_rows = rows[labels[0]] == rows[labels[1]] == rows[labels[2]]
    print(f"\nparts byte-identical before and after at 32 per part: {same_parts} ({len(parts[labels[0]])} parts)")
    print(f"rows equal in all three runs: {same_rows} ({len(rows[labels[0]])} rows)")


def bench_workers(tmp: Path, fraction: float, workers: list[int]) -> None:
    counts = rgbnt201(tmp / "rgbnt201", fraction)
    base = tmp / "w201"
    run_index(base, "rgbnt201", tmp / "rgbnt201", check_images=False)
    triplets, records = sum(counts.values()), counts["train_171"] + 2 * counts["test"]  # test: query and gallery
    print(f"\n## CPU-bound stages: RGBNT201, {triplets:,} triplets, {records:,} records\n")
    _row(["stage", "workers", "seconds", "per second", "cores busy", "busiest process", "speed-up", "peak MB"])
    _row(["---"] * 8)
    wd = _fresh(base, tmp / "w201-run")
    stages = {  # label: (arguments, unit count, unit, output folder, output files)
        "masks (thermal)": (["masks", "--provider", "thermal"], triplets, "triplets", "masks/runs", "part-*"),
        "captions (heuristic)": (["captions", "--provider", "heuristic"], triplets, "triplets", "captions/runs",
                                 "part-*"),
        "build-shards (jpeg)": (["build-shards"], records, "rows", "shards", "shard-*.parquet"),
    }  # fmt: skip
    for label, (args, units, unit, folder, pattern) in stages.items():
        outputs, first = [], 0.0
        for n in workers:
            command = [*args, "--workdir", str(wd), "--workers", str(n), "--force", "--no-progress"]
            wall, busy, share, output = _reidprep(REPO, command)
            first = first or wall
            peak = re.search(r"peak memory (\d+ MB.*?);", output)
            _row([label, str(n), f"{wall:.1f}", f"{units / wall:,.0f} {unit}", f"{busy:.2f}", f"{100 * share:.0f}%",
                  f"{first / wall:.2f}x", peak[1] if peak else ""])  # fmt: skip
            outputs.append(_digests(wd / folder, pattern))
        same = all(o == outputs[0] for o in outputs)
        print(f"{label}: outputs byte-identical for workers {', '.join(map(str, workers))}: {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=1.0, help="of the real counts (1.0: full scale)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' import")
    parser.add_argument("--repeats", type=int, default=1, help="import runs per code version (best kept)")
    parser.add_argument("--only", choices=["import", "workers"], help="one half of the bench")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load} at the start, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.only in (None, "import"):
            bench_import(tmp, args.fraction, args.baseline, args.repeats)
        if args.only in (None, "workers"):
            bench_workers(tmp, args.fraction, args.workers)
    print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Prep at the real benchmarks' scale: the captions import before and after issue 19, and 1 vs N workers for the
thermal masks and build-shards, each pair measured side by side in one run.

    python bench/prep_scaling.py                          # full scale; workers 1 and 2
    python bench/prep_scaling.py --fraction 0.05 --workers 1 2 4

- import: ``reidprep captions --provider import`` on RGBNT100's 18,965 file names (``bench/prep_data.py``), the
  code of ``--baseline`` (a git revision, unpacked with ``git archive``) against this working tree, each in a fresh
  process on a copy of the same index; the parts must be byte-identical.
- masks: ``reidprep masks --provider thermal --workers N`` on RGBNT201's 4,787 triplets (5,623 records);
- build-shards: ``reidprep build-shards --workers N`` on the same workdir (thermal masks, imported captions).
  The outputs of every worker count must be byte-identical.

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


def _reidprep(tree: Path, args: list[str]) -> tuple[float, float, str]:
    """Run ``reidprep ARGS`` with the code of ``tree``: (wall seconds, cores busy, output). Cores busy: the CPU time
    of the command and every process it starts (forkserver workers included; sampled from /proc every 0.2 s, so
    each process's last 0.2 s may be missed) over the wall time."""
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
    return wall, sum(seen.values()) / wall, output


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


def bench_import(tmp: Path, fraction: float, baseline: str, repeats: int) -> None:
    records = rgbnt100(tmp / "rgbnt100", tmp / "release100", fraction)
    base = tmp / "w100"
    run_index(base, "rgbnt100", tmp / "rgbnt100", check_images=False)
    trees = {f"before ({baseline[:7]})": _tree(baseline, tmp / "before"), "after (this tree)": REPO}
    print(f"\n## captions --provider import: RGBNT100, {records:,} records, best of {repeats}\n")
    _row(["code", "seconds", "records/s", "cores busy", "speed-up"])
    _row(["---"] * 5)
    best: dict[str, tuple[float, float]] = {}
    parts: dict[str, dict[str, str]] = {}
    for _ in range(repeats):  # alternated, so both see the same load
        for label, tree in trees.items():
            wd = _fresh(base, tmp / "w100-run")
            args = ["captions", "--workdir", str(wd), "--provider", "import", "--import-dir", str(tmp / "release100")]
            wall, busy, _ = _reidprep(tree, [*args, "--no-progress"])
            if label not in best or wall < best[label][0]:
                best[label] = (wall, busy)
            parts[label] = _digests(wd / "captions" / "runs", "part-*.parquet")
    before = next(iter(best.values()))[0]
    for label, (wall, busy) in best.items():
        _row([label, f"{wall:.1f}", f"{records / wall:,.0f}", f"{busy:.2f}", f"{before / wall:.2f}x"])
    same = len({tuple(p.items()) for p in parts.values()}) == 1
    print(f"\nparts byte-identical before and after: {same} ({len(next(iter(parts.values())))} parts)")


def bench_workers(tmp: Path, fraction: float, workers: list[int]) -> None:
    counts = rgbnt201(tmp / "rgbnt201", tmp / "release201", fraction)
    base = tmp / "w201"
    run_index(base, "rgbnt201", tmp / "rgbnt201", check_images=False)
    triplets, records = sum(counts.values()), counts["train_171"] + 2 * counts["test"]  # test: query and gallery
    print(f"\n## thermal masks and build-shards: RGBNT201, {triplets:,} triplets, {records:,} records\n")
    _row(["stage", "workers", "seconds", "per second", "cores busy", "speed-up", "peak MB"])
    _row(["---"] * 7)
    wd = _fresh(base, tmp / "w201-run")
    outputs: dict[str, dict[int, dict[str, str]]] = {"masks": {}, "build-shards": {}}
    first: dict[str, float] = {}
    for n in workers:
        args = ["masks", "--workdir", str(wd), "--provider", "thermal", "--workers", str(n), "--force"]
        wall, busy, _ = _reidprep(REPO, [*args, "--no-progress"])
        first.setdefault("masks", wall)
        _row(["masks (thermal)", str(n), f"{wall:.1f}", f"{triplets / wall:,.0f} triplets", f"{busy:.2f}",
              f"{first['masks'] / wall:.2f}x", ""])  # fmt: skip
        outputs["masks"][n] = _digests(wd / "masks" / "runs", "part-*")
    release = str(tmp / "release201")
    _reidprep(
        REPO, ["captions", "--workdir", str(wd), "--provider", "import", "--import-dir", release, "--no-progress"]
    )
    for n in workers:
        args = ["build-shards", "--workdir", str(wd), "--workers", str(n), "--force", "--no-progress"]
        wall, busy, output = _reidprep(REPO, args)
        rows = int(re.search(r"build-shards: (\d+) rows", output)[1])  # type: ignore[index]
        peak = re.search(r"peak memory (\d+) MB", output)[1]  # type: ignore[index]
        first.setdefault("build-shards", wall)
        _row(["build-shards (jpeg)", str(n), f"{wall:.1f}", f"{rows / wall:,.0f} rows", f"{busy:.2f}",
              f"{first['build-shards'] / wall:.2f}x", peak])  # fmt: skip
        outputs["build-shards"][n] = _digests(wd / "shards", "shard-*.parquet")
    for stage, by_workers in outputs.items():
        same = len({tuple(d.items()) for d in by_workers.values()}) == 1
        print(f"{stage}: outputs byte-identical for workers {', '.join(map(str, workers))}: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=1.0, help="of the real counts (1.0: full scale)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
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

"""Whole-process wall time and peak memory: `gradfit demo` against the seed article's own script.

Runs the two commands alternately (so drift in machine load hits both alike), each in a
fresh folder, and reports medians and the ratio gradfit/article. Results go to
docs/BENCHMARKS.md between this benchmark's markers.

    .venv/bin/python bench/bench_demo.py            # 9 runs of each
    .venv/bin/python bench/bench_demo.py --runs 3   # quicker
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine, write_section

ARTICLE = Path(__file__).resolve().parent / "seed_article_code.py"  # the seed article's code, as it stands


def measure(cmd: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (default 9)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs alone")
    args = parser.parse_args()

    commands = {
        "seed article script": [sys.executable, str(ARTICLE)],
        "gradfit demo": [sys.executable, "-m", "gradfit", "demo", "--out", "out"],
    }
    results = {name: {"wall": [], "rss": []} for name in commands}
    measure(commands["gradfit demo"], tempfile.mkdtemp())  # warm the file cache once for both
    measure(commands["seed article script"], tempfile.mkdtemp())
    for _ in range(args.runs):
        for name, cmd in commands.items():
            with tempfile.TemporaryDirectory() as cwd:
                wall, rss = measure(cmd, cwd)
            results[name]["wall"].append(wall)
            results[name]["rss"].append(rss)

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    art, gf = med["seed article script"], med["gradfit demo"]
    lines = [
        f"### `gradfit demo` against the seed article's script ({datetime.date.today()})",
        "",
        f"Command: `.venv/bin/python bench/bench_demo.py --runs {args.runs}` "
        f"({args.runs} alternating runs of each, medians; whole processes, imports included).",
        f"Machine: {machine()}.",
        "",
        "| command | wall time (s) | peak memory (MiB) |",
        "|---|---:|---:|",
        f"| seed article script | {art['wall']:.2f} | {art['rss']:.0f} |",
        f"| gradfit demo | {gf['wall']:.2f} | {gf['rss']:.0f} |",
        f"| **ratio gradfit / article** | **{gf['wall'] / art['wall']:.2f}x** | **{gf['rss'] / art['rss']:.2f}x** |",
        "",
        "Target: at most 1.1x on both. gradfit also writes data.png and history.csv, which the "
        "article's script does not.",
        "",
        "Runs (s): article "
        + ", ".join(f"{v:.2f}" for v in results["seed article script"]["wall"])
        + "; gradfit "
        + ", ".join(f"{v:.2f}" for v in results["gradfit demo"]["wall"])
        + ".",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_demo", lines)


if __name__ == "__main__":
    main()

"""What a newcomer waits for: the command line's start-up, and the first fit_many on a machine.

1. Whole processes, alternating: `gradfit --help`, `gradfit --version`, a refused option, `import
   gradfit`, and `gradfit fit seed.csv --model quadratic`, against `python -c "import torch"` (the
   floor any torch program pays). Targets: help, version and refusals well under 0.5 s; the fit at
   most 1.3x torch's import.
2. The first `fit_many` of 2,000 Gaussian peaks in a process whose numba cache is empty (a fresh
   machine), against the same call with the cache filled (a later process), each timed around the
   call alone in a fresh process. Target: cold at most 3x warm + 1 s.

    .venv/bin/python bench/bench_startup.py [--runs 7] [--no-write]
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

from _report import ROOT, machine, write_section

GRADFIT = [sys.executable, "-m", "gradfit"]

FIT_MANY = """
import json, sys, time
import numpy as np
import gradfit
rng = np.random.default_rng(0)
x = np.linspace(-5, 5, 50)
true = np.stack([rng.uniform(2, 4, 2000), rng.uniform(-1, 1, 2000), rng.uniform(0.5, 1.5, 2000)], 1)
Y = true[:, :1] * np.exp(-(x - true[:, 1:2]) ** 2 / (2 * true[:, 2:] ** 2)) + 0.05 * rng.normal(size=(2000, 50))
t0 = time.perf_counter()
r = gradfit.fit_many("gaussian", x, Y, backend=sys.argv[1])
seconds = time.perf_counter() - t0
from gradfit.solvers import compiled
if compiled._background is not None:
    compiled._background.wait()  # the compile started for later fits: let it finish before the next process
print(json.dumps({"seconds": seconds, "converged": float(r.converged.mean())}))
"""


def wall(cmd: list[str], cwd: str, env=None, ok=(0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


def startup(runs: int, work: str) -> dict[str, list[float]]:
    import json

    golden = json.loads((ROOT / "tests" / "data" / "seed_golden.json").read_text())
    Path(work, "seed.csv").write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(golden["X"], golden["Y"])))
    commands = {
        "python -c 'import torch'": ([sys.executable, "-c", "import torch"], (0,)),
        "gradfit fit seed.csv --model quadratic": ([*GRADFIT, "fit", "seed.csv", "--model", "quadratic"], (0,)),
        "python -c 'import gradfit'": ([sys.executable, "-c", "import gradfit"], (0,)),
        "gradfit --help": ([*GRADFIT, "--help"], (0,)),
        "gradfit --version": ([*GRADFIT, "--version"], (0,)),
        "gradfit fit --help": ([*GRADFIT, "fit", "--help"], (0,)),
        "gradfit fit seed.csv --lr -1 (refused)": ([*GRADFIT, "fit", "seed.csv", "--lr", "-1"], (2,)),
        "gradfit fit seed.csv --method adamm (refused)": ([*GRADFIT, "fit", "seed.csv", "--method", "adamm"], (2,)),
    }
    times = {name: [] for name in commands}
    for name, (cmd, ok) in commands.items():  # warm the file cache once
        wall(cmd, work, ok=ok)
    for _ in range(runs):
        for name, (cmd, ok) in commands.items():
            times[name].append(wall(cmd, work, ok=ok))
    return times


def first_fit_many(work: str) -> dict[str, float]:
    import json

    cache = tempfile.mkdtemp(prefix="numba-cache-")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = {}
    for name, backend in (("cold cache (auto)", "auto"), ("warm cache (auto)", "auto"), ("torch backend", "torch")):
        proc = subprocess.run(
            [sys.executable, "-c", FIT_MANY, backend], cwd=work, env=env, capture_output=True, text=True, check=True
        )
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="alternating runs of each command (default 7)")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave docs alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        times = startup(args.runs, work)
        first = first_fit_many(work)
    med = {name: statistics.median(v) for name, v in times.items()}
    torch_s = med["python -c 'import torch'"]
    lines = [
        f"### Start-up and the first fit_many on a machine ({datetime.date.today()})",
        "",
        (
            f"Command: `.venv/bin/python bench/bench_startup.py --runs {args.runs}` ({args.runs} alternating runs of "
            f"each command, medians; whole processes). Machine: {machine()}."
        ),
        "",
        "| command | wall time (s) | vs `import torch` |",
        "|---|---:|---:|",
        *(f"| `{name}` | {s:.2f} | {s / torch_s:.2f}x |" for name, s in med.items()),
        "",
        (
            "Targets: help, version and refused options well under 0.5 s (torch, matplotlib, pyarrow and numba are "
            "imported only where used); `gradfit fit` of the seed data at most 1.3x `import torch`: "
            f"**{med['gradfit fit seed.csv --model quadratic'] / torch_s:.2f}x**."
        ),
        "",
        (
            'The first `fit_many("gaussian", x, Y)` of 2,000 peaks of 50 points, the call alone timed in a fresh '
            "process (importing torch, and numba where it runs, inside it: `import gradfit` loads neither): "
            "with numba's cache empty (a fresh machine: `auto` fits with torch and compiles the solver in a "
            "background process for later fits), then with it filled (a later process: compiled), and with "
            '`backend="torch"` for reference.'
        ),
        "",
        "| first fit_many in a process | seconds |",
        "|---|---:|",
        *(f"| {name} | {s:.2f} |" for name, s in first.items()),
        "",
        (
            f"Target: cold at most 3x warm + 1 s = {3 * first['warm cache (auto)'] + 1:.2f} s: "
            f"**{first['cold cache (auto)']:.2f} s**."
        ),
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_startup", lines)


if __name__ == "__main__":
    main()

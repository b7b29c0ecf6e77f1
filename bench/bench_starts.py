"""Many starts against scipy's global optimizers, on problems with several minima, in one run.

Problems: two Gaussian peaks (200 points) started at random between and beside the true peaks; a sine whose
frequency starts at a random wrong value; NIST StRD's higher-difficulty sets BoxBOD, Rat42, Rat43, MGH09 from
NIST's start 1. For each start, the fit counts as a success when its χ² is within 1e-4 (relative) of the global
minimum's (the fit from the true or certified parameters; the other minima are far above it).

Methods, each from the same start:
- gradfit `fit` (one start: Levenberg–Marquardt, `auto` with its restarts);
- gradfit `fit(starts=64)` (64 starts around the given one, fitted as one batch, the best polished);
- gradfit `fit(starts=64, bounds=box)` (starts spread over the same box differential_evolution searches);
- scipy `basinhopping` (100 hops, each a BFGS minimisation of χ²) from the start;
- scipy `differential_evolution` (its defaults, then polished by L-BFGS-B) over a box: per parameter from the
  smaller of the start and the truth minus w to the larger plus w, w the larger of their difference and their
  sizes (a box that holds the answer: DE needs one).

    .venv/bin/python bench/bench_starts.py [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

from _report import machine, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # NIST's data sets live with the tests

STARTS = 64
SUCCESS = 1e-4  # relative χ² above the global minimum's that still counts as having found it
TRIALS = 5  # random starts per synthetic problem


def problems():
    import torch
    from nist_strd import PROBLEMS

    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)

    def peaks(x, a1, c1, s1, a2, c2, s2):
        return a1 * torch.exp(-((x - c1) ** 2) / (2 * s1**2)) + a2 * torch.exp(-((x - c2) ** 2) / (2 * s2**2))

    def sine(x, a, w, phi):
        return a * torch.sin(w * x + phi)

    truth = [3.0, 2.0, 0.4, 2.0, 7.0, 0.5]
    y = peaks(torch.as_tensor(x), *truth).numpy() + rng.normal(0, 0.05, len(x))
    starts = [[1.0, rng.uniform(0, 10), 1.0, 1.0, rng.uniform(0, 10), 1.0] for _ in range(TRIALS)]
    out = [("two Gaussian peaks", peaks, x, y, truth, starts)]
    truth = [2.0, 3.7, 0.5]
    y = sine(torch.as_tensor(x), *truth).numpy() + rng.normal(0, 0.1, len(x))
    out.append(("sine frequency", sine, x, y, truth, [[1.0, rng.uniform(0.3, 1.5), 0.0] for _ in range(TRIALS)]))
    for name in ("BoxBOD", "Rat42", "Rat43", "MGH09"):
        p = PROBLEMS[name]
        out.append((f"NIST {name}", p["f"], np.array(p["x"]), np.array(p["y"]), p["certified"], [p["start1"]]))
    return out


def chi2_of(f, x, y):
    import torch

    xt = torch.as_tensor(x, dtype=torch.float64)

    def chi2(p):
        with torch.no_grad():
            r = f(xt, *[float(v) for v in p]).numpy() - y
        value = float(r @ r)
        return value if np.isfinite(value) else 1e300

    return chi2


def box(start, truth):
    """Per parameter: from the smaller of start and truth minus w to the larger plus w, w the larger of their
    difference and their sizes (a box that holds both, and room around them)."""
    low, high = np.minimum(start, truth), np.maximum(start, truth)
    w = np.maximum.reduce([high - low, np.abs(low), np.abs(high), np.full(len(low), 1e-3)])
    return list(zip((low - w).tolist(), (high + w).tolist()))


def run(name, f, x, y, truth, starts):
    import warnings

    import gradfit
    from scipy.optimize import basinhopping, differential_evolution

    warnings.simplefilter("ignore")
    chi2 = chi2_of(f, x, y)
    best = gradfit.fit(f, x, y, p0=truth).chi2
    names = list(gradfit.get_model(f).param_names)
    methods = {
        "gradfit fit": lambda s: gradfit.fit(f, x, y, p0=s).chi2,
        f"gradfit starts={STARTS}": lambda s: gradfit.fit(f, x, y, p0=s, starts=STARTS).chi2,
        f"gradfit starts={STARTS}, box": lambda s: (
            gradfit.fit(f, x, y, p0=s, starts=STARTS, bounds=dict(zip(names, box(s, truth)))).chi2
        ),
        "scipy basinhopping": lambda s: basinhopping(chi2, s, niter=100, seed=0).fun,
        "scipy differential_evolution": lambda s: differential_evolution(chi2, box(s, truth), seed=0).fun,
    }
    rows = []
    for method, call in methods.items():
        found, seconds = 0, 0.0
        for s in starts:
            t = time.perf_counter()
            try:
                value = call(np.asarray(s, dtype=np.float64))
            except Exception:
                value = np.inf
            seconds += time.perf_counter() - t
            found += bool(value <= best * (1 + SUCCESS))
        rows.append((name, method, found, len(starts), seconds / len(starts)))
        print(f"{name:22s} {method:32s} {found}/{len(starts)}  {seconds / len(starts):.3f} s")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = parser.parse_args()
    import gradfit

    gradfit.fit("gaussian", np.linspace(0, 1, 20), np.exp(-(np.linspace(0, 1, 20) ** 2)))  # imports, not timed
    rows = [row for problem in problems() for row in run(*problem)]
    lines = [
        f"### Many starts against scipy's global optimizers ({datetime.date.today()})",
        "",
        f"`bench/bench_starts.py` on {machine()}. Success: χ² within {SUCCESS:g} of the global minimum's (the fit",
        f"from the true or certified parameters). {TRIALS} random starts per synthetic problem, NIST's start 1 for",
        "NIST's sets. Time: mean seconds per start, all methods in the same run. differential_evolution and the",
        "'box' row search a box around the start and the truth (see the script: DE needs one that holds the answer).",
        "",
        "| problem | method | found the global minimum | seconds per start |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {p} | {m} | {k}/{n} | {s:.3f} |" for p, m, k, n, s in rows]
    totals = {}
    for _, m, k, n, s in rows:
        a = totals.setdefault(m, [0, 0, 0.0])
        a[0], a[1], a[2] = a[0] + k, a[1] + n, a[2] + s * n
    lines += ["", "| method (all problems) | found | total seconds |", "|---|---:|---:|"]
    lines += [f"| {m} | {k}/{n} | {s:.2f} |" for m, (k, n, s) in totals.items()]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_starts", lines)


if __name__ == "__main__":
    main()

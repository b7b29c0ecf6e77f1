"""Global fits: one shared rate across many exponential decays, against a dense fit of the stacked problem,
lmfit's documented way, and fit_many of the same curves without sharing, in one run.

1. 1,000 decays `a*exp(-k*x) + c` of 10 points each, k shared, a and c each set's own (2,001 parameters):
   - gradfit `fit_global` (Levenberg–Marquardt through the Schur complement of the per-set blocks);
   - one dense fit of the stacked problem: scipy `least_squares` (trf, exact dense Jacobian, 10,000 x 2,001),
     then Gauss–Newton to its minimum — the oracle the answers are compared with;
   - lmfit's documented way (examples/example_fit_multi_datasets.py): one Parameters object with every set's
     copy, the shared rate tied by `expr`, one Minimizer (leastsq) over the concatenated residual — on the
     first 100 sets only (its time grows with the square of the sets: 200 took ~280 s here), gradfit's
     fit_global timed on the same 100;
   - gradfit `fit_many` of the same curves, every parameter each curve's own (the target: fit_global within
     2x its time).
2. 100,000 decays of 10 points, in a fresh process: time and peak memory (target: within the 1 GB budget).

    .venv/bin/python bench/bench_global.py [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _report import machine, write_section

N = 10
RATE = 0.8


def decays(n_sets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 5, N)
    a, c = rng.uniform(1, 3, n_sets), rng.uniform(-0.2, 0.2, n_sets)
    Y = a[:, None] * np.exp(-RATE * x) + c[:, None] + 0.02 * rng.normal(size=(n_sets, N))
    return x, Y


def dense(x, Y):
    """The stacked problem with its dense Jacobian: scipy's least_squares, then Gauss–Newton to the minimum."""
    from scipy.optimize import least_squares

    n = len(Y)

    def parts(p):
        k, a, c = p[0], p[1 : 1 + n], p[1 + n :]
        e = np.exp(-k * x)
        r = (a[:, None] * e + c[:, None] - Y).ravel()
        jac = np.zeros((n * N, 1 + 2 * n))
        rows = np.arange(n * N)
        jac[:, 0] = (-a[:, None] * x * e).ravel()
        jac[rows, 1 + rows // N] = np.tile(e, n)
        jac[rows, 1 + n + rows // N] = 1.0
        return r, jac

    start = np.concatenate([[1.0], np.ones(n), np.zeros(n)])
    fit = least_squares(lambda p: parts(p)[0], start, jac=lambda p: parts(p)[1], method="trf", tr_solver="exact")
    p = fit.x
    for _ in range(3):
        r, jac = parts(p)
        p = p + np.linalg.lstsq(jac, -r, rcond=None)[0]
    return p


def lmfit_way(x, Y):
    import lmfit

    params = lmfit.Parameters()
    for i in range(len(Y)):
        params.add(f"a_{i}", value=1.0)
        params.add(f"k_{i}", value=1.0, expr=None if i == 0 else "k_0")
        params.add(f"c_{i}", value=0.0)

    def residual(p):
        values = p.valuesdict()
        a = np.array([values[f"a_{i}"] for i in range(len(Y))])
        c = np.array([values[f"c_{i}"] for i in range(len(Y))])
        return (a[:, None] * np.exp(-values["k_0"] * x) + c[:, None] - Y).ravel()

    out = lmfit.minimize(residual, params, method="leastsq")
    return np.array([out.params["k_0"].value] + [out.params[f"a_{i}"].value for i in range(len(Y))])


def timed(call, repeat=1):
    times, value = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - t)
    return value, min(times)


def big_case(n_sets: int) -> dict:
    """fit_global of ``n_sets`` decays in a fresh process: seconds and peak RSS (MB)."""
    code = f"""
import json, time, sys
sys.path.insert(0, ".")
from bench_global import decays
import gradfit
x, Y = decays({n_sets}, seed=1)
sets = [(x, y) for y in Y]
gradfit.fit_global("a*exp(-k*x) + c", sets[:10], shared="k", p0={{"a": 1, "k": 1, "c": 0}})  # imports, not timed
t = time.perf_counter()
r = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0={{"a": 1, "k": 1, "c": 0}})
seconds = time.perf_counter() - t
# (VmHWM, this process's own peak: ru_maxrss would carry the parent's across fork and exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps(dict(seconds=seconds, rss=peak / 1024,
                      k=r.shared["k"], converged=bool(r.converged), steps=r.n_steps)))
"""
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=here)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--lmfit-sets", type=int, default=100)
    args = parser.parse_args()
    import gradfit

    x, Y = decays(args.sets)
    sets = [(x, y) for y in Y]
    p0 = {"a": 1.0, "k": 1.0, "c": 0.0}
    gradfit.fit_global("a*exp(-k*x) + c", sets[:10], shared="k", p0=p0)  # imports and first calls, not timed
    gradfit.fit_many("a*exp(-k*x) + c", x, Y[:10], p0=p0)
    result, t_global = timed(lambda: gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=p0), repeat=3)
    _, t_many = timed(lambda: gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=p0), repeat=3)
    _, t_many_torch = timed(lambda: gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=p0, backend="torch"), repeat=3)
    oracle, t_dense = timed(lambda: dense(x, Y))
    m = args.lmfit_sets
    theirs, t_lmfit = timed(lambda: lmfit_way(x, Y[:m]))
    small, t_small = timed(lambda: gradfit.fit_global("a*exp(-k*x) + c", sets[:m], shared="k", p0=p0), repeat=3)
    small_oracle = dense(x, Y[:m])
    ours = np.concatenate([[result.shared["k"]], result.params[:, 0]])

    def differs(p, reference):
        reference = reference[: len(p)]
        return float(np.max(np.abs(p - reference) / np.abs(reference)))

    mine = np.concatenate([[small.shared["k"]], small.params[:, 0]])
    big = big_case(args.big)
    lines = [
        f"### Global fits: one shared rate across many decays ({datetime.date.today()})",
        "",
        f"`bench/bench_global.py` on {machine()}. {args.sets:,} decays `a*exp(-k*x) + c` of {N} points, k shared,",
        f"a and c each set's own ({1 + 2 * args.sets:,} parameters); all in the same run (best of 3 for gradfit).",
        "",
        "| method | seconds | largest relative difference from the dense fit (k and every a) |",
        "|---|---:|---:|",
        f"| gradfit `fit_global` ({result.n_steps} LM steps) | {t_global:.3f} | {differs(ours, oracle):.1e} |",
        f"| dense fit of the stacked problem (scipy least_squares, exact Jacobian; the oracle) | {t_dense:.2f} | 0 |",
        f"| gradfit `fit_many`, nothing shared (compiled backend) | {t_many:.3f} | — |",
        f"| gradfit `fit_many`, nothing shared (torch backend) | {t_many_torch:.3f} | — |",
        "",
        f"fit_global / fit_many: **{t_global / t_many:.2f}x** the compiled fit_many's time, "
        f"{t_global / t_many_torch:.2f}x the torch backend's (target: at most 2x); "
        f"{t_dense / t_global:.0f}x faster than the dense fit.",
        "",
        f"lmfit's documented way on the first {m} sets: {t_lmfit:.2f} s, largest relative difference from the dense "
        f"fit {differs(theirs, small_oracle):.1e}; gradfit `fit_global` on the same sets {t_small:.4f} s "
        f"({differs(mine, small_oracle):.1e}): **{t_lmfit / t_small:.0f}x** faster.",
        "",
        f"{args.big:,} decays in a fresh process: **{big['seconds']:.2f} s**, peak RSS **{big['rss']:.0f} MB** "
        f"(target: within 1 GB), {big['steps']} steps, converged: {big['converged']}.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_global", lines)


if __name__ == "__main__":
    main()

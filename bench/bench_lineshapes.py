"""Line shapes over many peaks: fits per second of gradfit's fit_many against a loop of scipy's curve_fit.

Voigt and pseudo-Voigt peaks of 50 points (the Gpufit benchmark's size), starts within 20% of the truth:
gradfit `fit_many` on all of them (voigt on torch: gradfit.special's Faddeeva function; pseudo_voigt on the
compiled backend where it runs), against scipy's curve_fit over the same model written with scipy's functions
(`voigt_profile` for the Voigt) on the first SCIPY_CURVES peaks, scaled. Both in the same run; the parameters are
compared on the curves both fitted.

    .venv/bin/python bench/bench_lineshapes.py [--peaks 100000] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import time
import warnings

import numpy as np

from _report import machine, write_section

N = 50
SCIPY_CURVES = 1000


def peaks(name: str, count: int, seed: int = 0):
    from scipy.special import voigt_profile

    rng = np.random.default_rng(seed)
    x = np.linspace(-5, 5, N)
    amplitude, center = rng.uniform(2, 4, count), rng.uniform(-1, 1, count)
    width, other = rng.uniform(0.5, 1.0, count), rng.uniform(0.3, 0.7, count)
    if name == "voigt":
        truth = np.column_stack([amplitude, center, width, other])
        Y = np.stack([a * voigt_profile(x - c, s, g) for a, c, s, g in truth])
    else:
        truth = np.column_stack([amplitude, center, width, other])
        u = (x[None, :] - center[:, None]) / width[:, None]
        Y = amplitude[:, None] * (other[:, None] / (1 + u**2) + (1 - other[:, None]) * np.exp(-np.log(2) * u**2))
    Y = Y + 0.005 * rng.normal(size=Y.shape)
    return x, Y, truth, truth * rng.uniform(0.8, 1.2, truth.shape)


def scipy_model(name: str):
    from scipy.special import voigt_profile

    if name == "voigt":
        return lambda x, a, c, s, g: a * voigt_profile(x - c, s, g)
    return lambda x, a, c, w, f: a * (f / (1 + ((x - c) / w) ** 2) + (1 - f) * np.exp(-np.log(2) * ((x - c) / w) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import gradfit
    from scipy.optimize import curve_fit

    warnings.simplefilter("ignore")
    rows = []
    for name in ("voigt", "pseudo_voigt"):
        x, Y, truth, starts = peaks(name, args.peaks)
        # first calls; the compiled backend compiled once (auto would fit on torch while it compiles in the background)
        gradfit.fit_many(name, x, Y[:300], p0=starts[:300], backend="torch" if name == "voigt" else "compiled")
        t = time.perf_counter()
        batch = gradfit.fit_many(name, x, Y, p0=starts)
        ours = time.perf_counter() - t
        f = scipy_model(name)
        t = time.perf_counter()
        theirs = []
        for y, p0 in zip(Y[:SCIPY_CURVES], starts[:SCIPY_CURVES]):
            try:
                theirs.append(curve_fit(f, x, y, p0=p0)[0])
            except RuntimeError:
                theirs.append(np.full(4, np.nan))
        loop = (time.perf_counter() - t) / SCIPY_CURVES
        theirs = np.array(theirs)
        both = (batch.status[:SCIPY_CURVES] == "converged") & np.isfinite(theirs).all(axis=1)
        differ = np.abs(np.abs(batch.params[:SCIPY_CURVES][both]) - np.abs(theirs[both])) / np.abs(theirs[both])
        rows.append(
            (name, args.peaks, args.peaks / ours, 1 / loop, (batch.status == "converged").mean(), np.median(differ))
        )
        print(rows[-1])
    lines = [
        f"### Line shapes over many peaks ({datetime.date.today()})",
        "",
        f"`bench/bench_lineshapes.py` on {machine()}: peaks of {N} points, starts within 20% of the truth, gradfit's",
        f"`fit_many` on all of them against a loop of scipy's curve_fit on the first {SCIPY_CURVES:,} (scaled); one run.",
        "",
        "| model | peaks | gradfit fits/s | scipy loop fits/s | gradfit / scipy | converged | median difference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {k:,} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x | {c:.1%} | {d:.1e} |" for n, k, a, b, c, d in rows]
    lines += [
        "",
        "voigt runs on torch (the compiled backend has no Faddeeva function); pseudo_voigt on the compiled backend.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_lineshapes", lines)


if __name__ == "__main__":
    main()

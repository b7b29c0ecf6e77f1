"""Draws the pictures docs/pictures.md shows (run it after changing a figure: ``python docs/draw_pictures.py``).

Each is made the way a user makes it: gradfit's own plots and demo, on the seed article's data or on a made-up
X-ray scan of two peaks over a sloping background (columns two_theta and counts).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def scan():
    import pandas as pd

    rng = np.random.default_rng(0)
    t = np.linspace(10, 60, 300)
    counts = 3 * np.exp(-((t - 30) ** 2) / 8) + 2 * np.exp(-((t - 38) ** 2) / 18) + 0.02 * t + rng.normal(0, 0.05, 300)
    return pd.DataFrame({"two_theta": t, "counts": counts})


def main() -> None:
    import gradfit
    from gradfit import plots
    from gradfit.demo import compare_learning_rates, summarize

    warnings.simplefilter("ignore")
    data = scan()
    peaks = gradfit.fit(
        "gaussian + gaussian + linear", data["two_theta"], data["counts"], p0=[3, 30, 2, 2, 38, 3, 0.02, 0]
    )
    plots.plot_fit(peaks, band="confidence", level=0.95).savefig(HERE / "fit.png", dpi=90)
    plots.plot_steps(peaks).savefig(HERE / "steps-lm.png", dpi=90)

    ((_, article, _),) = compare_learning_rates([1e-4], steps=300)  # the article's run, from its start, continued
    plots.plot_landscape(article, ("a", "b")).savefig(HERE / "landscape.png", dpi=90)

    rates = [5e-5, 1.1e-4, 1.2e-4, 1.0]
    runs = compare_learning_rates(rates)
    summary = summarize(runs[0][1].history)
    figure = plots.plot_learning_rates(
        [(f"lr {r:g}", run, d) for r, run, d in runs],
        ylim=(-75, 120),
        rates=rates,
        limit=summary.max_stable_learning_rate,
        optimum=summary.optimum_rmse,
    )
    figure.savefig(HERE / "compare-lr.png", dpi=90)

    ((_, diverging, at),) = compare_learning_rates([1e-3])
    last = diverging.history.last_step
    fig = plots.plot_steps(diverging, list(range(max(1, last - 4), last + 1)), ylim=(-75, 120))
    fig.suptitle(f"Diverged at step {at}: drawn up to step {last}, its last finite one", color="0.2")
    fig.tight_layout()
    fig.savefig(HERE / "demo-diverged.png", dpi=90)
    print("drew fit.png, steps-lm.png, landscape.png, compare-lr.png, demo-diverged.png into docs/")


if __name__ == "__main__":
    main()

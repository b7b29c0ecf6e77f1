"""Many starts: one fit from N starting points at once (a batch on fit_many's engine), the best kept.

A nonlinear fit finds the minimum nearest its start. Where the loss has several (a sum of peaks started far
away, a sine's frequency, an exponential's rate started at the wrong decade), one start can end in the wrong
one. ``fit(..., starts=N)`` spreads N starts over the parameter space, fits them all as one batch by
Levenberg–Marquardt, and hands the best to the ordinary fit, which polishes it and computes its errors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import OptionError
from .models import Model
from .params import inside

SPREAD_DECADES = 1.0  # a parameter without two finite bounds is tried from 10**-1 to 10**1 times its start
REACHED = 1e-6  # relative: a start whose χ² is this close to the best one's reached the same minimum
SEED = 0  # the starts are the same on every run


def check_starts(starts) -> int | None:
    if starts is None:
        return None
    if isinstance(starts, bool) or not isinstance(starts, (int, np.integer)) or starts < 1:
        raise OptionError(f"`starts` must be a whole number of starting points >= 1, got {starts!r}.")
    return int(starts)


def spread(start: np.ndarray, names, bounds: dict, held, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` starting points (n, P), the first ``start`` itself: the others a Latin hypercube — a parameter with
    two finite bounds uniform between them, any other its start times 10**u, u uniform in [-1, 1] (a start
    of 0 becomes u itself) — and parameters in ``held`` (fixed or tied) as ``start`` has them."""
    free = [i for i, name in enumerate(names) if name not in held]
    out = np.repeat(start[None, :].astype(np.float64), n, axis=0)
    if n == 1 or not free:
        return out
    from scipy.stats import qmc  # (scipy.stats costs ~40 MB and ~0.3 s: only for a fit with starts)

    cube = qmc.LatinHypercube(d=len(free), seed=seed).random(n - 1)  # (n - 1, free) in [0, 1)
    for column, i in enumerate(free):
        u = cube[:, column]
        lower, upper = bounds.get(names[i], (-math.inf, math.inf))
        if math.isfinite(lower) and math.isfinite(upper):
            out[1:, i] = lower + u * (upper - lower)
        elif start[i] != 0:
            out[1:, i] = start[i] * 10 ** (SPREAD_DECADES * (2 * u - 1))
        else:
            out[1:, i] = 2 * u - 1
    return out


def best_start(
    model: Model,
    x,
    y,
    sigma,
    start: np.ndarray,
    n: int,
    bounds: dict,
    fixed: dict,
    ties: dict,
    dtype,
    device,
    derivatives: str,
) -> tuple[dict, dict]:
    """Fit from ``n`` starts at once (fit_many's LM on n copies of the data); the best parameters as a p0 dict
    and what the starts found: {"n", "reached", "best_chi2", "failed"}."""
    from .batch import fit_many

    names = model.param_names
    points = spread(start, names, bounds, set(fixed) | set(ties), n)
    points = inside(torch.from_numpy(points), names, bounds).numpy()  # (a start times 10**u may cross a bound)
    y = np.asarray(y, dtype=np.float64)
    batch = fit_many(
        model,
        x,
        np.broadcast_to(y, (n, len(y))),
        p0=points,
        sigma=sigma,
        method="lm",
        bounds=bounds or None,
        fixed=fixed or None,
        tie={name: tie.text for name, tie in ties.items()} or None,
        dtype=dtype,
        device=device,
        derivatives=derivatives,
    )
    chi2 = np.where(np.isfinite(batch.chi2), batch.chi2, np.inf)
    best = int(np.argmin(chi2))
    reached = int(np.sum(chi2 <= chi2[best] * (1 + REACHED) + 1e-300))
    found = {"n": n, "reached": reached, "best_chi2": float(chi2[best]), "failed": int(np.sum(~np.isfinite(chi2)))}
    return dict(zip(names, batch.params[best].tolist())), found


def note(found: dict) -> str:
    """The message's account of the starts."""
    failed = f"; {found['failed']} failed" if found["failed"] else ""
    return f"best of {found['n']} starts: {found['reached']} reached this minimum{failed}"

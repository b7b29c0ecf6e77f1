"""Levenberg–Marquardt's rules for one curve: after each trial step, whether to keep it, whether the curve has
converged (and why), its damping, and whether it leaves. Written once, in plain Python on numbers, and run
three ways: by the torch LM (solvers.lm) for a few curves as it is (``judge_curves``), compiled by numba for
many (solvers.compiled_lm's ``judge_curves``, the same loop), and inlined in the compiled LM's own loop
(compiled_lm's ``lm_curves``, the twin) — so the LM in torch and its numba twin cannot drift apart. Torch-free
and numba-free: importing it costs nothing. (numba caches the compiled LM by the file that holds it and does not
see a change here; compiled_lm drops a cache older than this file when it is imported, and
tests/test_compiled.py compares the two.)

The rules: a damped step is kept when it lowers the loss as the linear model says (ρ > 0); a Gauss–Newton step
(λ = 0) when it does not raise the loss beyond rounding. λ follows Nielsen's rule (Madsen, Nielsen & Tingleff
2004): after a kept step it shrinks by max(1/3, 1 − (2ρ − 1)³), after a rejected one it grows by ν, which
doubles on every rejection in a row. MINPACK's tests stop a curve: the loss (ftol) or the scaled step (xtol)
stopped changing, the residuals orthogonal to every column of J (gtol), the loss zero, or λ past any use. Close
to the optimum (the damped model promises < CLOSE of the cost) up to NEWTON_STREAK undamped Gauss–Newton steps
in a row finish the last digits (λ left as it was); a curve that converged on a damped step takes up to
POLISH_STEPS Gauss–Newton steps more, each kept only where it does not raise the loss beyond rounding.
"""

from __future__ import annotations

import math

INITIAL_DAMPING = 1e-3  # λ₀, relative to D²: start close to Gauss–Newton
MAX_DAMPING = 1e32  # past this no step can lower the loss: the optimum is reached to rounding
POLISH_STEPS = 2  # undamped Gauss–Newton steps a converged curve may take before it leaves
ROUNDING = 1e-13  # relative change of the loss that rounding alone can make
CLOSE = 1e-8  # relative reduction the damped model still promises, below which Gauss–Newton steps take over
NEWTON_STREAK = 5  # Gauss–Newton steps in a row, mid-run, before damping resumes

# why a curve stopped
ITERATING, ZERO, GTOL, FTOL, XTOL, FLOOR, MAX_STEPS, DIVERGED = range(-1, 7)


def judge(cost, c_new, predicted, factored, step, size, cosine, damping, nu, polished, newton, damped, tolerances):
    """One curve's trial step judged. ``cost`` and ``c_new`` the loss before and at the trial point,
    ``predicted`` the reduction the linear model promised, ``factored`` whether the normal matrix factored,
    ``step`` and ``size`` the scaled step's and the parameters' lengths, ``cosine`` the largest |cos| between r
    and a column of J times |r|; the curve's state: ``damping`` λ, ``nu``, ``polished`` (0 while damped, then
    1 + Gauss–Newton steps kept), ``newton`` (the step of a mid-run Gauss–Newton streak, 0 if none),
    ``damped`` (iterations taken, this one included); ``tolerances`` (ftol, xtol, gtol, max_steps).

    Returns (ok, counted, why, damping, nu, polished, newton, leaving): whether to keep the step, whether it
    counts as a step taken (a rejected polishing step does not), why the curve converged (ITERATING if it has
    not), its new state, and whether it leaves now."""
    ftol, xtol, gtol, max_steps = tolerances
    polish = polished > 0
    streak = newton > 0
    gauss_newton = polish or streak
    rho = (cost - c_new) / predicted if predicted > 0 else -1.0
    kept = factored and c_new <= cost * (1 + ROUNDING)  # finite, and no rise beyond rounding
    ok = kept and (gauss_newton or rho > 0)  # a damped step must lower the loss as the model says
    small = ftol * cost
    tiny_change = kept and abs(cost - c_new) <= small and predicted <= small
    tiny_step = ok and step <= xtol * (size + xtol)
    orthogonal = gtol > 0 and cosine <= gtol * math.sqrt(cost)
    if not gauss_newton:  # a Gauss–Newton step leaves λ as it was
        if ok:
            t = min(2 * rho - 1, 1.0)  # (beyond 1 the factor is 1/3 all the same)
            damping = damping * max(1 - t * t * t, 1 / 3)
            nu = 2.0
        else:
            damping = damping * nu
            nu = nu * 2
    why = ITERATING
    if not polish:
        if cost == 0:
            why = ZERO
        elif orthogonal:
            why = GTOL
        elif tiny_change:
            why = FTOL
        elif tiny_step:
            why = XTOL
        elif damping > MAX_DAMPING:
            why = FLOOR
    converged = why != ITERATING
    if (converged or polish) and gauss_newton and ok and step <= ROUNDING * size:
        polished = POLISH_STEPS  # a Gauss–Newton step that moved nothing beyond rounding: polished already
    if converged or (polish and ok):
        polished += 1
    # close to the optimum damped steps crawl in flat directions: undamped Gauss–Newton steps finish the last
    # digits (quadratically, for small residuals) for as long as they do not raise the loss
    going = ok and not converged
    if going and streak and newton < NEWTON_STREAK:
        newton += 1
    elif going and not gauss_newton and predicted <= CLOSE * cost:
        newton = 1
    else:
        newton = 0
    leaving = (polish and not ok) or polished > POLISH_STEPS or (not polish and not converged and damped >= max_steps)
    return ok, ok or not polish, why, damping, nu, polished, newton, leaving


def reason(why: int, tolerances) -> str:
    """Why a curve stopped, in words (``why`` from ``judge``, or MAX_STEPS, DIVERGED)."""
    ftol, xtol, gtol, max_steps = tolerances
    return {
        ZERO: "the loss reached zero: the model fits the data exactly",
        GTOL: f"the residuals are orthogonal to every Jacobian column (gtol={gtol:g})",
        FTOL: f"the loss stopped decreasing (ftol={ftol:g})",
        XTOL: f"the parameters stopped changing (xtol={xtol:g})",
        FLOOR: "no step lowers the loss any more: the optimum is reached to rounding precision",
        MAX_STEPS: f"reached max_steps={max_steps} before converging",
        DIVERGED: "the model gives non-finite values at the starting point p0",
    }[why]


def judge_curves(cost, c_new, predicted, info, step, size, cosine, state, tolerances, out):
    """``judge`` for each curve of a batch: arrays (B,) of the numbers it reads; ``state`` (damping, nu,
    polished, newton, damped) arrays updated in place; ``out`` (ok, counted, why, leaving) arrays written."""
    damping, nu, polished, newton, damped = state
    ok, counted, why, leaving = out
    for i in range(len(cost)):
        damped[i] += 1
        ok[i], counted[i], why[i], damping[i], nu[i], polished[i], newton[i], leaving[i] = judge(
            float(cost[i]),  # (in float64 whatever the batch's dtype, in Python as compiled)
            float(c_new[i]),
            float(predicted[i]),
            info[i] == 0,
            float(step[i]),
            float(size[i]),
            float(cosine[i]),
            damping[i],
            nu[i],
            polished[i],
            newton[i],
            damped[i],
            tolerances,
        )

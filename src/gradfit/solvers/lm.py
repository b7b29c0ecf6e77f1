"""Levenberg–Marquardt on exact Jacobians, in float64.

Each iteration solves the damped Gauss–Newton step

    minimise ||J δ + r||² + λ ||D δ||²

as one least-squares problem on the stacked matrix [J; sqrt(λ) D] (QR, as MINPACK
does, never forming JᵀJ, whose condition number is the square of J's). D is
Marquardt's scaling: the column norms of J, never allowed to shrink (Moré 1978),
so the method does not care about the parameters' units. λ follows Nielsen's
rule (Madsen, Nielsen & Tingleff 2004): after a good step it shrinks by
max(1/3, 1 - (2ρ - 1)³), after a rejected one it grows by ν, which doubles on
every rejection in a row. ρ is the actual over the predicted reduction of the loss.
Once the damped model promises almost no further reduction, undamped Gauss–Newton
steps polish the last digits for as long as they do not raise the loss. The
history's ``learning_rate`` column holds λ (0 for a Gauss–Newton step).
"""

from __future__ import annotations

import math
from typing import Callable, Generator

import torch

from ..history import History, StepRecord
from .linear import lstsq
from .problem import Outcome, Problem, Tolerances, run_steps

INITIAL_DAMPING = 1e-3  # λ₀, relative to D²: start close to Gauss–Newton
MAX_DAMPING = 1e32  # past this no step can lower the loss: we are at the optimum to rounding
ROUNDING = 1e-13  # relative change of the loss that rounding alone can make
MAX_POLISH = 5  # Gauss–Newton steps in a row before damping resumes
POLISH_BELOW = 1e-8  # relative reduction the damped model still promises, below which to polish
SHRINK = 1 / 3  # the most the damping may shrink after one good step (Nielsen)


def levenberg_marquardt(
    problem: Problem,
    p0: torch.Tensor,
    *,
    max_steps: int,
    tolerances: Tolerances,
    callback: Callable[[StepRecord], None] | None = None,
) -> Outcome:
    return run_steps(lm_steps(problem, p0, max_steps=max_steps, tolerances=tolerances), callback)


def lm_steps(
    problem: Problem, p0: torch.Tensor, *, max_steps: int, tolerances: Tolerances
) -> Generator[StepRecord, None, Outcome]:
    """Levenberg–Marquardt's loop, one iteration per ``yield``; returns the Outcome (see ``run_steps``)."""
    tol = tolerances
    p = p0.clone()
    history = History(problem.user_names, problem.describe(p))
    n = problem.n_points
    cost = problem.cost(p)
    if not math.isfinite(cost):
        return Outcome(p, history, False, "the model gives non-finite values at the starting point p0")
    # J and r, or for data streamed by batches R and Qᵀr of J = QR: the same step, gradient and column norms
    jac, r = problem.linearize(p)
    d = jac.norm(dim=0)
    d = torch.where(d > 0, d, torch.ones_like(d))
    damping = INITIAL_DAMPING
    nu = 2.0
    reason, polishing, polish_steps = None, False, 0
    for step in range(1, max_steps + 1):
        grad = jac.T @ r  # half the gradient of the sum of squares
        if cost == 0 and not bool(r.any()):  # every residual zero, not merely squares too small for float64
            reason = "the loss reached zero: the model fits the data exactly"
            break
        cosines = (grad.abs() / (jac.norm(dim=0) * math.sqrt(cost))).nan_to_num(0.0)
        if float(cosines.max()) <= tol.gtol:
            reason = f"the residuals are orthogonal to every Jacobian column (gtol={tol.gtol:g})"
            break

        # the damped Gauss–Newton step, as one least-squares solve on [J; sqrt(λ) D]
        lam = 0.0 if polishing else damping
        stacked = torch.cat([jac, math.sqrt(lam) * torch.diag(d)])
        rhs = torch.cat([-r, torch.zeros_like(d)])
        delta = lstsq(stacked, rhs)
        # the reduction the linear model promises, |r|² - |J δ + r|², as -2 δ·Jᵀr - |J δ|²: no cancellation of two
        # large squares (a robust loss's rescaled residuals on outliers are large where their rows are small)
        along = jac @ delta
        predicted = -2 * float(delta @ grad) - float(along @ along)
        p_new = p + delta
        cost_new = problem.cost(p_new)
        rho = (cost - cost_new) / predicted if predicted > 0 else -1.0
        if polishing:  # near the optimum the loss changes below rounding: judge by more than its last bit
            accepted = math.isfinite(cost_new) and cost_new <= cost * (1 + ROUNDING)
        else:
            accepted = math.isfinite(cost_new) and rho > 0

        loss = cost / n
        history.append(
            StepRecord(
                step, loss, math.sqrt(loss), 2 * float(grad.norm()) / n, lam, problem.describe(p_new if accepted else p)
            )
        )
        yield history[-1]

        # MINPACK's tests, on every step
        tiny_change = abs(cost - cost_new) <= tol.ftol * cost and predicted <= tol.ftol * cost
        tiny_step = float((d * delta).norm()) <= tol.xtol * (float((d * p).norm()) + tol.xtol)
        close = predicted <= POLISH_BELOW * cost  # the model promises almost nothing more
        if accepted:
            p, cost = p_new, cost_new
            jac, r = problem.linearize(p)
            d = torch.maximum(d, jac.norm(dim=0))
        if tiny_change or tiny_step:
            reason = (
                f"the loss stopped decreasing (ftol={tol.ftol:g})"
                if tiny_change
                else f"the parameters stopped changing (xtol={tol.xtol:g})"
            )
            break
        if polishing:
            polish_steps += 1
            if not accepted or polish_steps >= MAX_POLISH:  # Gauss–Newton did not finish it: damp again
                polishing, polish_steps = False, 0
            continue
        if accepted:
            damping *= max(SHRINK, 1 - (2 * rho - 1) ** 3)
            nu = 2.0
            # Damped steps crawl in flat directions, where the loss hardly changes: once close,
            # undamped Gauss–Newton steps finish the last digits (quadratically, for small residuals).
            polishing = close
        else:
            damping *= nu
            nu *= 2
            if damping > MAX_DAMPING:
                reason = "no step lowers the loss any more: the optimum is reached to rounding precision"
                break
    converged = reason is not None
    if not converged:
        reason = f"reached max_steps={max_steps} before converging"
    return Outcome(p, history, converged, reason)

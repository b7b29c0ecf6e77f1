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
When the loss stops decreasing, undamped Gauss–Newton steps polish the last
digits for as long as they do not raise the loss.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..history import History, StepRecord
from .problem import Outcome, Problem, Tolerances

INITIAL_DAMPING = 1e-3  # λ₀, relative to D²: start close to Gauss–Newton
MAX_DAMPING = 1e32  # past this no step can lower the loss: we are at the optimum to rounding
ROUNDING = 1e-13  # relative change of the loss that rounding alone can make
MAX_POLISH = 5


def levenberg_marquardt(
    problem: Problem,
    p0: torch.Tensor,
    *,
    max_steps: int,
    tolerances: Tolerances,
    callback: Callable[[StepRecord], None] | None = None,
) -> Outcome:
    tol = tolerances
    p = p0.clone()
    history = History(problem.model.param_names, p.tolist())
    n = problem.n_points
    r = problem.residuals(p)
    cost = float(r @ r)
    if not math.isfinite(cost):
        return Outcome(p, history, False, "the model gives non-finite values at the starting point p0")
    jac = problem.jacobian(p)
    d = jac.norm(dim=0)
    d = torch.where(d > 0, d, torch.ones_like(d))
    damping = INITIAL_DAMPING
    nu = 2.0
    reason, polishing, polish_steps = None, False, 0
    for step in range(1, max_steps + 1):
        grad = jac.T @ r  # half the gradient of the sum of squares
        if cost == 0:
            reason = "the loss reached zero: the model fits the data exactly"
            break
        col_norms = jac.norm(dim=0)
        cosines = (grad.abs() / (col_norms * math.sqrt(cost))).nan_to_num(0.0)
        if float(cosines.max()) <= tol.gtol:
            reason = f"the residuals are orthogonal to every Jacobian column (gtol={tol.gtol:g})"
            break

        # the damped Gauss–Newton step, as one least-squares solve on [J; sqrt(λ) D]
        stacked = torch.cat([jac, math.sqrt(damping) * torch.diag(d)])
        rhs = torch.cat([-r, torch.zeros_like(d)])
        delta = torch.linalg.lstsq(stacked, rhs.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
        predicted = cost - float(((jac @ delta + r) ** 2).sum())
        p_new = p + delta
        r_new = problem.residuals(p_new)
        cost_new = float(r_new @ r_new)
        rho = (cost - cost_new) / predicted if predicted > 0 else -1.0
        accepted = math.isfinite(cost_new) and rho > 0
        if polishing:  # near the optimum the loss changes below rounding: judge by more than its last bit
            accepted = math.isfinite(cost_new) and cost_new <= cost * (1 + ROUNDING)
            polish_steps += 1

        loss = cost / n
        record_params = p_new if accepted else p
        history.append(StepRecord(step, loss, math.sqrt(loss), 2 * float(grad.norm()) / n, math.nan,
                                  tuple(record_params.tolist())))
        if callback is not None:
            callback(history[-1])

        # MINPACK's tests, on every step, accepted or not
        tiny_change = abs(cost - cost_new) <= tol.ftol * cost and predicted <= tol.ftol * cost and rho <= 2
        tiny_step = float((d * delta).norm()) <= tol.xtol * (float((d * p).norm()) + tol.xtol)
        if accepted:
            p, r, cost = p_new, r_new, cost_new
            jac = problem.jacobian(p)
            d = torch.maximum(d, jac.norm(dim=0))
            damping *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            nu = 2.0
        elif polishing:
            break  # a Gauss–Newton step raised the loss: the last point is the optimum
        else:
            damping *= nu
            nu *= 2
        if polishing and (tiny_step or tiny_change or polish_steps >= MAX_POLISH):
            break
        if (tiny_change or tiny_step) and not polishing:
            reason = (f"the loss stopped decreasing (ftol={tol.ftol:g})" if tiny_change
                      else f"the parameters stopped changing (xtol={tol.xtol:g})")
            # The damped steps stall before the last digits in flat directions, where the
            # loss hardly changes: finish with undamped Gauss–Newton steps while they help.
            polishing, damping = True, 0.0
            continue
        if damping > MAX_DAMPING:
            reason = "no step lowers the loss any more: the optimum is reached to rounding precision"
            break
    converged = reason is not None
    if not converged:
        reason = f"reached max_steps={max_steps} before converging"
    return Outcome(p, history, converged, reason)

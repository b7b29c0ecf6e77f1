"""A streamed fit's FitResult, from sums over one last pass of the rows: χ², RMSE, R², and the covariance from R
of J = QR (the cluster's fit makes its result here too)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .errors import ConvergenceWarning
from .params import Constrained, at_bounds, every_covariance, widths_positive
from .solvers.problem import Outcome
from .stream_problem import StreamProblem
from .uncertainty import covariance as covariance_of
from .uncertainty import bound_note, robust_note, tie_note, undetermined_note, undetermined_warning


def streamed_result(
    model,
    problem: StreamProblem,
    outcome: Outcome,
    asked: str,
    ran: str,
    absolute_sigma: bool,
    learning_rate,
    how: str,
    bounds=None,
    fixed=None,
    ties=None,
):
    """A FitResult from sums over one last pass: chi², RMSE, R², and the covariance from R of J = QR.

    With bounds or fixed parameters the solver's parameters are free, unbounded ones: the
    uncertainties are those of the user's free parameters, from one more pass with the Jacobian
    taken in the user's terms (as gradfit.fit computes them in memory).
    """
    from .result import FitResult

    bounds, fixed, ties = bounds or {}, fixed or {}, ties or {}
    p = outcome.params.detach()
    chi2, r_factor, _ = problem.folded(p)
    raw_ss = problem.raw_ss(p)
    n, k = problem.n_points, len(p)  # k: the parameters actually fitted
    names = model.param_names
    free = [i for i, name in enumerate(names) if name not in fixed and name not in ties]  # (the others: none own)
    user = p
    view = Constrained(model, {}, fixed, ties) if fixed or ties else model
    if bounds or fixed or ties:
        with torch.no_grad():
            user = problem.model.to_user(p)
        problem.use_model(view)
        _, r_factor, _ = problem.folded(user[free])
    spread = chi2
    if problem.robust is not None:  # the plain χ², and curve_fit's covariance with a robust loss (as in memory)
        chi2, spread, r_factor = problem.robust_summary(user[free])
    dof = n - k
    factor = 1.0 if absolute_sigma else spread / dof if dof > 0 else np.inf
    cov_free, rank, free_undetermined = covariance_of(r_factor.numpy(), (n, k), factor)
    covariance, undetermined = every_covariance(view, user, free, cov_free, free_undetermined)
    undetermined = tuple(name for name, u in zip(names, undetermined) if u)
    values, flipped = widths_positive(model, user.double().numpy()[None, :], bounds, fixed, ties)
    params = dict(zip(names, values[0].tolist()))
    sign = np.where(flipped[0], -1.0, 1.0)
    covariance = covariance * np.outer(sign, sign)
    stderr = dict(zip(names, np.sqrt(np.diag(covariance)).tolist()))
    on_bound = at_bounds(params, bounds)
    notes = [f"{n:,} rows {how}", *outcome.notes]
    if asked == "auto":
        notes.insert(0, f"method auto chose {ran} on the streamed sums")
    for name, expression in ties.items():
        notes.append(tie_note(name, expression))
    if problem.robust is not None:
        notes.append(robust_note(problem.robust))
    for name, side in on_bound.items():
        notes.append(bound_note(name, side, bounds))
    if undetermined:
        notes.append(undetermined_note(undetermined, rank, k))
    state = (
        "Ended where the data do not determine every parameter"
        if undetermined
        else "Converged"
        if outcome.converged
        else "Did not converge"
    )
    message = f"{state} after {len(outcome.history)} steps: {outcome.reason}. ({'; '.join(notes)})"
    result = FitResult(
        model=model,
        method=ran,
        params=params,
        stderr=stderr,
        covariance=covariance,
        rmse=math.sqrt(raw_ss / n),
        r2=1 - raw_ss / problem.ss_tot if problem.ss_tot > 0 else math.nan,
        chi2=chi2,
        reduced_chi2=chi2 / dof if dof > 0 else math.inf,
        aic=n * math.log(chi2 / n) + 2 * k if chi2 > 0 else -math.inf,
        bic=n * math.log(chi2 / n) + math.log(n) * k if chi2 > 0 else -math.inf,
        n_points=n,
        n_steps=len(outcome.history),
        converged=outcome.converged and not undetermined,
        undetermined=undetermined,
        message=message,
        history=outcome.history,
        n_dropped=problem.n_dropped,
        gap_to_optimum=None,
        optimum_rmse=None,
        learning_rate=None if learning_rate is None else float(learning_rate),
        dtype=p.dtype,
        device="cpu",
        notes=notes,
        rank=rank,
        bounds=bounds,
        fixed=fixed,
        tied={name: expression.text for name, expression in ties.items()},
        loss=(problem.robust or ("linear",))[0],
        f_scale=(problem.robust or (None, 1.0))[1],
        at_bound=on_bound,
    )
    x, y, sigma = problem.kept  # the figures' data: a random sample of the rows (all of them if few)
    if y is not None:
        result.x, result.y, result.sigma = x, y, sigma
        result.sample_of = n if len(y) < n else None
    if undetermined:
        warnings.warn(undetermined_warning(undetermined, rank, k), ConvergenceWarning, stacklevel=3)
    elif not outcome.converged:
        warnings.warn(
            f"The streamed fit did not converge with method '{ran}' (RMSE {result.rmse:.6g}): {outcome.reason}.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result

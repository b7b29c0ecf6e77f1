"""One fit's outcome made a FitResult: statistics, the covariance and standard errors, and advice when it did
not converge."""

from __future__ import annotations

import math

import numpy as np
import torch

from .models import Centred
from .params import (
    Constrained,
    at_bounds,
    every_covariance,
    widths_positive,
)
from .result import FitResult
from .solvers import Outcome, Problem, least_squares
from .uncertainty import NO_DOF_NOTE, bound_note, covariance, robust_note, tie_note, undetermined_note
from .engine_solve import small_singular


def make_result(
    model,
    problem: Problem,
    outcome: Outcome,
    asked: str,
    ran: str,
    n_dropped: int,
    absolute_sigma: bool,
    data,
    learning_rate,
    bounds,
    fixed,
) -> FitResult:
    """Statistics and uncertainties at the solution, in the user's parameters."""
    p = outcome.params.detach()
    n, k = problem.n_points, problem.model.n_params  # k: the parameters actually fitted
    with torch.no_grad():  # the statistics in numpy float64: small arrays, no autograd
        weighted = problem.residuals(p).double().cpu().numpy()
        user = problem.model.to_user(p) if isinstance(problem.model, (Constrained, Centred)) else p
    raw = weighted if problem.whiten is None else problem.whiten.undo(weighted)
    y = data.y
    with np.errstate(over="ignore", invalid="ignore"):  # squares beyond 1e308 are inf: said below, not warned
        chi2 = float(weighted @ weighted)
        rmse = math.sqrt(float(raw @ raw) / n)
        centred_y = y - y.mean()  # (np.var's own overhead is most of its time on the points of one small fit)
        ss_tot = float(centred_y @ centred_y)
        r2 = 1 - float(raw @ raw) / ss_tot if ss_tot > 0 else math.nan
    overflow = not (math.isfinite(chi2) and math.isfinite(rmse))
    dof = n - k
    reduced = chi2 / dof if dof > 0 else math.inf
    aic = n * math.log(chi2 / n) + 2 * k if chi2 > 0 else -math.inf
    bic = n * math.log(chi2 / n) + math.log(n) * k if chi2 > 0 else -math.inf

    # Uncertainties of the free parameters in the user's terms (not the solver's transformed ones),
    # from the Jacobian there, as curve_fit computes them; a fixed parameter has none.
    names = model.param_names
    ties = getattr(problem.model, "ties", {})
    free = [i for i, name in enumerate(names) if name not in fixed and name not in ties]
    if problem.model is model:  # no bounds, nothing fixed: the solver's parameters are the user's
        cov, rank, undetermined = result_covariance(problem, user, chi2, dof, absolute_sigma)
    elif isinstance(problem.model, Centred):  # from J in the centred variable, mapped: M Cov(q) Mᵀ
        cov, rank, undetermined = result_covariance(problem, p, chi2, dof, absolute_sigma)
        to_user = problem.model.M.double().cpu().numpy()
        cov = to_user @ cov @ to_user.T
    else:
        view = Constrained(model, {}, fixed, ties) if fixed or ties else model
        view_problem = problem.like(view)
        cov_free, rank, free_undetermined = result_covariance(view_problem, user[free], chi2, dof, absolute_sigma)
        cov, undetermined = every_covariance(view, user, free, cov_free, free_undetermined)
    undetermined = tuple(name for name, u in zip(names, undetermined) if u)
    stderr = np.sqrt(np.diag(cov))
    values, flipped = widths_positive(model, user.double().cpu().numpy()[None, :], bounds, fixed, ties)
    params = dict(zip(names, values[0].tolist()))
    sign = np.where(flipped[0], -1.0, 1.0)
    cov = cov * np.outer(sign, sign)
    on_bound = at_bounds(params, bounds)

    notes = list(outcome.notes)
    if asked == "auto":
        why = (
            "the model is linear in its parameters"
            if ran == "linear"
            else "a nonlinear least-squares problem that fits in memory"
        )
        notes.insert(0, f"method auto chose {ran}: {why}")
    if undetermined:
        notes.append(undetermined_note(undetermined, rank, k))
    for name, expression in ties.items():
        notes.append(tie_note(name, expression))
    if problem.whiten is not None and problem.whiten.matrix:
        notes.append(f"correlated errors: residuals whitened by the Cholesky factor of sigma's {n} x {n} covariance")
    if problem.robust is not None:
        notes.append(robust_note(problem.robust))
    for name, side in on_bound.items():
        notes.append(bound_note(name, side, bounds))
    if dof == 0:
        notes.append(NO_DOF_NOTE)
    if overflow:
        notes.append("the sum of squared residuals overflows float64 (beyond 1e308): rescale y (and sigma)")
    gap = optimum_rmse = None
    if ran == "linear":
        optimum_rmse, gap = math.sqrt(chi2 / n), 0.0  # this fit is the exact optimum
    elif model.is_linear and not (bounds or fixed or ties) and problem.robust is None:
        _, optimum_rmse = least_squares(model, data.x, data.y, data.sigma)
        fit_rmse = math.sqrt(chi2 / n)
        gap = (fit_rmse / optimum_rmse - 1) if optimum_rmse > 0 else (0.0 if fit_rmse == 0 else math.inf)
        gap = max(gap, 0.0)

    # as fit_many's status 'singular': not a converged fit; nor is one whose statistics are not finite numbers
    converged = outcome.converged and not undetermined and not overflow
    state = (
        "Ended with statistics that overflow"
        if overflow
        else "Ended where the data do not determine every parameter"
        if undetermined
        else "Converged"
        if outcome.converged
        else "Did not converge"
    )
    message = f"{state} after {len(outcome.history)} steps: {outcome.reason}."
    if notes:
        message += " (" + "; ".join(notes) + ")"
    return FitResult(
        model=model,
        method=ran,
        params=params,
        stderr=dict(zip(names, stderr.tolist())),
        covariance=cov,
        rmse=rmse,
        r2=r2,
        chi2=chi2,
        reduced_chi2=reduced,
        aic=aic,
        bic=bic,
        n_points=n,
        n_steps=len(outcome.history),
        converged=converged,
        undetermined=undetermined,
        message=message,
        history=outcome.history,
        n_dropped=n_dropped,
        gap_to_optimum=gap,
        optimum_rmse=optimum_rmse,
        learning_rate=None if learning_rate is None or learning_rate == "auto" else float(learning_rate),
        dtype=p.dtype,
        device=str(p.device),
        notes=notes,
        rank=rank,
        bounds=bounds,
        fixed=fixed,
        tied={name: expression.text for name, expression in ties.items()},
        loss=(problem.robust or ("linear",))[0],
        f_scale=(problem.robust or (None, 1.0))[1],
        at_bound=on_bound,
        x=data.x,
        y=data.y,
        sigma=data.sigma,
    )


def result_covariance(problem: Problem, p, chi2: float, dof: int, absolute_sigma: bool):
    """Covariance (curve_fit's rule: times chi2/dof unless absolute_sigma), rank, and the undetermined mask. With a
    robust loss, curve_fit's with least_squares: from the rescaled Jacobian, times the loss's cost / dof."""
    k = len(p)
    if problem.streaming:  # R of J = QR, made by chunks, has J's singular values and vectors
        small, shape = problem.r_factor()[0], (problem.n_points, k)
    else:
        jac = problem.scaled_jacobian(p).double().cpu().numpy()
        small, shape = small_singular(jac), jac.shape
    spread = chi2 if problem.robust is None else problem.spread(p)
    factor = 1.0 if absolute_sigma else spread / dof if dof > 0 else np.inf
    return covariance(small, shape, factor)


def advice(result: FitResult, method: str, max_steps: int, scale: bool) -> str:
    """What to change after a fit that did not converge: never the method already in use."""
    rate = result.learning_rate
    if "too large" in result.message:  # the steps swing (see solvers.gradient.first_order)
        smaller = f", e.g. {rate / 10:g}" if rate else ""
        return (
            f"The fit did not converge with method '{method}' (RMSE {result.rmse:.6g}): the steps swing across the "
            f"valley. Use a smaller learning_rate{smaller}, or learning_rate='auto' (a backtracking line search)"
            f"{'' if method == 'lm' else ', or method=' + repr('lm')}."
        )
    hint = {
        "gd": "a larger learning_rate or learning_rate='auto'",
        "lm": "checking the model and p0",
        "lbfgs": "a better p0",
    }.get(method, "a different learning_rate")
    if not scale:
        hint = "standardized coordinates (scale=True), which suit gradient methods far better"
    other = "" if method == "lm" else ", or method='lm'"
    return (
        f"The fit did not converge in {max_steps} steps with method '{method}' (RMSE {result.rmse:.6g}). "
        f"Consider increasing max_steps, {hint}{other}."
    )

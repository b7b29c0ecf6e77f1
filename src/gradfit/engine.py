"""``fit``: validate -> solve -> check -> FitResult.

Assumes ``y = f(x, *params) + eps`` with independent errors of size ``sigma``
(scipy's curve_fit contract). Never prints, plots or exits: progress goes out
through ``callback``, failures as exceptions, a fit that did not converge as a
ConvergenceWarning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Generator

import torch

from . import options
from .options import check_device, positive_int, variable_names
from .errors import ConvergenceWarning, DataError, OptionError
from .history import StepRecord
from .library import get_model
from .models import Centred
from .losses import check_loss
from .params import (
    Constrained,
    check_bounds,
    check_fixed,
    check_ties,
)
from .result import FitResult
from .starts import best_start as best_of_starts, check_starts, note as starts_note
from .solvers import Problem, first_order, get_method, solve_linear
from .solvers.gradient import Frame, descent_steps
from .solvers.lm import lm_steps
from . import stream
from .stream_data import is_source
from .uncertainty import undetermined_warning
from .engine_result import advice, make_result
from .engine_problem import make_problem
from .engine_solve import run_auto, run_lm


def fit(
    model,
    x,
    y=None,
    *,
    p0=None,
    method: str = "auto",
    learning_rate=None,
    max_steps: int | None = None,
    tol=None,
    sigma=None,
    absolute_sigma: bool = False,
    nan_policy: str = "raise",
    scale: bool = True,
    bounds: dict | None = None,
    fixed: dict | None = None,
    tie: dict | None = None,
    loss: str = "linear",
    f_scale: float = 1.0,
    variables=None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    derivatives: str = "auto",
    starts: int | None = None,
    callback: Callable[[StepRecord], None] | None = None,
) -> FitResult:
    """Fit ``model`` to the points (x, y) by least squares, and say how sure the answer is.

    Example:
        ```python
        import gradfit

        result = gradfit.fit("a*exp(-b*x) + c", x, y)
        print(result.report())  # parameters, standard errors, correlations, chi-square
        ```

    Args:
        model: what to fit: a built-in name ("gaussian", "poly3", "gaussian + linear"), an expression in the
            ``variables`` ("a*exp(-b*x) + c"), a ``gradfit.Model``, or a Python function ``f(x, a, b, ...)``
            (read as its formula where it can be, else fitted with estimated derivatives).
        x: the independent variable: a 1-D array (N,), or (N, k) / a dict of columns for several ``variables``;
            or, with ``y`` omitted, a Parquet file, folder, glob or pyarrow Dataset (then see ``fit_file``).
        y: the measured values, (N,).
        p0: starting values, a dict by name or a sequence in the parameters' order (default: the model's
            guess from the data, else ones).
        method: "auto" (exact least squares for a model linear in its parameters, else Levenberg–Marquardt),
            "linear", "lm", or a gradient method: "gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs"
            (see ``gradfit.METHODS``).
        learning_rate: for gradient methods, a number or "auto" (a line search for gd, a short probe for the
            others); None takes the method's default.
        max_steps: the most steps the method may take (default: the method's own).
        tol: one number for every stopping rule, or a dict with ``ftol``, ``xtol``, ``gtol``.
        sigma: the errors of y: one standard deviation per point (N,), or their N x N covariance matrix; with
            data from a file, the name or index of its column of errors.
        absolute_sigma: True: ``sigma`` is in y's units and the errors are used as given; False (default, as
            curve_fit): only their relative sizes count and the standard errors scale with the reduced χ².
        nan_policy: "raise" (default) refuses missing values in one line; "omit" drops their points.
        scale: gradient methods walk standardized coordinates, where one learning rate suits every problem
            (default); False walks the raw parameters, as the seed article does.
        bounds: limits per parameter, ``{"b": (0, None)}``; held by a change of variables, for every method.
        fixed: parameters held at a value, ``{"c": 1.0}``.
        tie: parameters given by an expression of others, ``{"gamma": "sigma"}`` or ``{"w2": "2*w1"}``.
        loss: "linear" (least squares) or a robust loss as least_squares names them: "soft_l1", "huber",
            "cauchy", "arctan".
        f_scale: the residual size where a robust loss starts to soften, in y's (or y/σ's) units.
        variables: the names of the independent variables in an expression (default "x").
        dtype: torch's dtype of the computation (float64 by default: least squares needs the digits).
        device: where the computation runs: "cpu", or "cuda" for a GPU.
        derivatives: how a Python function's Jacobian is had: "auto" (autograd where it can, else 2-point
            finite differences, as curve_fit), "exact", "2-point", "3-point" or "cs" (complex step).
        starts: fit from this many starting points at once (``p0`` or the guess, and others spread around it or
            between the bounds) and keep the best: for models with several minima.
        callback: called with each step's ``StepRecord`` as the fit goes (to print or draw progress).

    Returns:
        FitResult: the parameters, their standard errors and covariance, the fit's statistics, the history of
            steps and an honest ``converged``/``message``.

    Raises:
        GradfitError: bad input (a ``DataError``, ``ModelError``, ``ExpressionError`` or ``OptionError``, with a
            one-line message saying what to change), or a fit that diverged (``FitError``).
    """
    if y is None and is_source(x):  # a Parquet file, folder, glob or pyarrow Dataset: see gradfit.fit_file
        if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (str, int))):
            raise OptionError(
                "With data from a file, `sigma` names the file's column of errors (a name or a 0-based index), "
                "not an array: add the errors to the file as a column, or load the file with gradfit.load."
            )
        # every other option goes on as given (fit_file refuses, in one line, any a streamed fit cannot take)
        passed_on = {  # name: (as given, its default)
            "tie": (tie, None),
            "loss": (loss, "linear"),
            "f_scale": (f_scale, 1.0),
            "variables": (variables, None),
            "dtype": (dtype, torch.float64),
            "device": (device, "cpu"),
            "derivatives": (derivatives, "auto"),
            "starts": (starts, None),
        }
        return fit_file(
            model,
            x,
            sigma=sigma,
            **{name: value for name, (value, default) in passed_on.items() if value != default},
            p0=p0,
            method=method,
            learning_rate=learning_rate,
            max_steps=max_steps,
            tol=tol,
            absolute_sigma=absolute_sigma,
            nan_policy=nan_policy,
            scale=scale,
            bounds=bounds,
            fixed=fixed,
            callback=callback,
        )
    if y is None:
        raise DataError("`y` is missing: give x and y, or a Parquet file or pyarrow Dataset as the only data.")
    model = get_model(model, variables=variable_names(variables))
    bounds = check_bounds(bounds, model.param_names)
    fixed = check_fixed(fixed, model.param_names, bounds)
    ties = check_ties(tie, model.param_names, bounds, fixed)
    constrained = bool(bounds or fixed or ties)
    robust = check_loss(loss, f_scale)
    chosen = get_method(method)
    exact = model.is_linear and not constrained and robust[0] == "linear"
    run_method = chosen.name if chosen.name != "auto" else "linear" if exact else "lm"
    if run_method == "linear" and robust[0] != "linear":
        raise OptionError(f"Method 'linear' cannot minimise the robust loss {loss!r}; use method='lm' or 'auto'.")
    if run_method == "linear" and constrained:
        raise OptionError("Method 'linear' cannot honour bounds, fixed or tied parameters; use method='lm' or 'auto'.")
    defaults = get_method(run_method)
    if learning_rate is None and (bounds or fixed) and run_method == "gd":
        # a bound is a change of variables that bends the landscape: plain gd's fixed default step can
        # overshoot there, so it takes Armijo's backtracking unless a rate is given
        learning_rate = "auto"
    asked_rate = learning_rate
    learning_rate = options.learning_rate(learning_rate, defaults, scale, asked=chosen.name)
    max_steps = chosen.max_steps if max_steps is None else positive_int(max_steps, "max_steps")
    tolerances = defaults.tolerances.replace(options.tolerances(tol))
    if dtype not in (torch.float64, torch.float32):
        raise OptionError(f"`dtype` must be torch.float64 or torch.float32, got {dtype}.")
    device = check_device(device)

    starts = check_starts(starts)
    if starts is not None and robust[0] != "linear":
        raise OptionError("`starts` searches by least squares: it does not take a robust loss yet.")
    asked_model = model
    data, problem, start, model, note = make_problem(
        model, x, y, sigma, p0, nan_policy, bounds, fixed, dtype, device, derivatives, run_method == "lm", ties, robust
    )
    found = None
    if starts is not None and run_method != "linear":
        if data.sigma is not None and data.sigma.ndim == 2:
            raise OptionError("`starts` runs its starts as a batch, which takes one sigma per point, not a matrix.")
        with torch.no_grad():
            user = problem.model.to_user(start) if isinstance(problem.model, (Constrained, Centred)) else start
        best, found = best_of_starts(
            asked_model,
            data.x,
            data.y,
            data.sigma,
            user.double().cpu().numpy(),
            starts,
            bounds,
            fixed,
            getattr(problem.model, "ties", {}),
            dtype,
            device,
            derivatives,
        )
        dropped = data.n_dropped  # (the rows nan_policy left out are gone from data: counted here)
        data, problem, start, model, note = make_problem(
            asked_model, data.x, data.y, data.sigma, best, "raise", bounds, fixed, dtype, device, derivatives,
            run_method == "lm", ties, robust,
        )  # fmt: skip
        data.n_dropped = dropped

    if run_method == "linear":
        outcome = solve_linear(problem, start, callback=callback)
    elif chosen.name == "auto":
        outcome = run_auto(problem, start, max_steps, tolerances, callback, bounds, fixed)
    elif run_method == "lm":
        outcome = run_lm(problem, start, max_steps, tolerances, callback, bounds, fixed)
    else:
        outcome = first_order(
            problem,
            start,
            method=run_method,
            learning_rate=learning_rate,
            max_steps=max_steps,
            tolerances=tolerances,
            scale=scale,
            callback=callback,
            default_rate=asked_rate is None,
        )
    if note:
        outcome.notes.append(note)
    if found is not None:
        outcome.notes.append(starts_note(found))
    elif starts is not None:
        outcome.notes.append(f"starts={starts} not needed: a model linear in its parameters has one minimum")
    result = make_result(
        model,
        problem,
        outcome,
        chosen.name,
        run_method,
        data.n_dropped,
        absolute_sigma,
        data,
        learning_rate,
        bounds,
        fixed,
    )
    result.starts = found or {}
    result.columns = {role: v.name for role, v in (("x", x), ("y", y)) if isinstance(getattr(v, "name", None), str)}
    if result.undetermined:
        warnings.warn(
            undetermined_warning(result.undetermined, result.rank, problem.model.n_params),
            ConvergenceWarning,
            stacklevel=2,
        )
    elif not result.converged:
        warnings.warn(advice(result, run_method, max_steps, scale), ConvergenceWarning, stacklevel=2)
    return result


def fit_file(
    model,
    source,
    *,
    x=None,
    y=None,
    sigma=None,
    p0=None,
    method: str = "auto",
    learning_rate=None,
    max_steps: int | None = None,
    tol=None,
    absolute_sigma: bool = False,
    nan_policy: str = "raise",
    scale: bool = True,
    memory_budget: int = stream.DEFAULT_BUDGET,
    batch_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    sample_rows: int = stream.SAMPLE_ROWS,
    callback: Callable[[StepRecord], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    **fit_options,
):
    """Fit ``model`` to columns of Parquet or CSV data: in memory when they fit, else streamed in batches.

    Data that fit under ``memory_budget`` bytes (the whole process) are read and fitted by ``gradfit.fit``, with
    every option as given; larger Parquet data are streamed: the sums a solver needs are folded over record batches,
    so the answer equals the in-memory fit's. A streamed result's ``x``, ``y``, ``sigma`` hold a uniform random
    sample of ``sample_rows`` rows, and ``sample_of`` the number of rows fitted, so that every figure and the report
    can be drawn.

    Args:
        model: as in ``gradfit.fit``.
        source: a Parquet file, a folder or glob of them, or a pyarrow Dataset (a CSV path is read whole, as
            ``gradfit.load`` reads it).
        x: the x column, by name or 0-based index (default: the first column).
        y: the y column, by name or index (default: the second column).
        sigma: a column of the errors of y, by name or index (default: none).
        p0: starting values, as in ``gradfit.fit``.
        method: as in ``gradfit.fit``; a streamed fit runs lm, linear or a gradient method over the whole data.
        learning_rate: as in ``gradfit.fit``.
        max_steps: as in ``gradfit.fit``.
        tol: as in ``gradfit.fit``.
        absolute_sigma: as in ``gradfit.fit``.
        nan_policy: as in ``gradfit.fit``.
        scale: as in ``gradfit.fit``.
        memory_budget: bytes the whole process may use before the data are streamed instead of read.
        batch_size: rows per mini-batch: asks for stochastic mini-batch steps (gradient methods) instead of
            full passes.
        epochs: with ``batch_size``, how many passes over the data.
        seed: draws the streamed result's sample of rows (and the mini-batches' order).
        sample_rows: rows of a streamed fit kept in the result for figures and the report (0 keeps none).
        callback: called with each step's ``StepRecord``.
        on_batch: called with the number of rows after every batch of a streamed fit (a progress bar).
        **fit_options: any other option of ``gradfit.fit`` (bounds, fixed, tie, loss, ...), for data fitted in
            memory.

    Returns:
        FitResult: as ``gradfit.fit``'s; ``columns`` names the columns fitted.
    """
    from .io import read_table, select_columns

    memory_budget = positive_int(memory_budget, "memory_budget")
    if sample_rows != 0:
        sample_rows = positive_int(sample_rows, "sample_rows")
    if nan_policy not in ("raise", "omit"):
        raise OptionError(f"`nan_policy` must be 'raise' or 'omit', got {nan_policy!r}.")
    if batch_size is None and epochs is not None:
        raise OptionError("`epochs` counts passes of a mini-batch method: give batch_size too.")

    def in_memory(columns):  # data that fit: gradfit.fit, with every option as given
        result = fit(
            model,
            columns["x"],
            columns["y"],
            sigma=columns.get("sigma"),
            p0=p0,
            method=method,
            learning_rate=learning_rate,
            max_steps=max_steps,
            tol=tol,
            absolute_sigma=absolute_sigma,
            nan_policy=nan_policy,
            scale=scale,
            callback=callback,
            **fit_options,
        )
        result.columns = columns.get("names", {})
        return result

    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the dataset"
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and not stream.is_parquet_data(source):
        if batch_size is not None:
            raise OptionError("Mini-batches stream Parquet data; convert the CSV file to Parquet first.")
        table, first_row = read_table(source)  # a CSV file: read whole, as `gradfit fit` always has
        columns = select_columns(table, first_row, Path(source), x=x, y=y, sigma=sigma)
        return in_memory(columns)
    data = stream.Source(stream.open_dataset(source), x=x, y=y, sigma=sigma, nan_policy=nan_policy, label=label)
    model = get_model(model, variables=variable_names(fit_options.get("variables")))  # (as fit reads them)
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    stream.warm_up(model)
    how = stream.plan(data.n_rows, len(data.columns), model.n_params, memory_budget, batch_size)
    names = {role: getattr(data, role) for role in ("x", "y", "sigma") if getattr(data, role) is not None}
    if not how.streamed:
        return in_memory({**data.read_all(), "names": names})
    result = stream.fit_source(
        model,
        data,
        how,
        p0=p0,
        method=method,
        learning_rate=learning_rate,
        max_steps=max_steps,
        tol=tol,
        absolute_sigma=absolute_sigma,
        scale=scale,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        sample_rows=sample_rows,
        callback=callback,
        on_batch=on_batch,
        fit_options=fit_options,
    )
    result.columns = names
    return result


def fit_steps(
    model,
    x,
    y,
    *,
    p0=None,
    method: str = "gd",
    learning_rate=None,
    scale: bool = True,
    max_steps: int | None = None,
    tol=None,
    variables=None,
) -> tuple[Problem, Generator]:
    """The same fit as ``fit``, one step at a time: (problem, steps).

    ``next(steps)`` takes one step and gives its StepRecord; ``steps.send(rate)`` takes one
    at a new learning rate (gradient methods). When the method stops, StopIteration carries
    its Outcome; a step that diverges raises FitError. For a caller that steps the loop
    itself, such as the playground; method: lm or a gradient method.
    """
    model = get_model(model, variables=variable_names(variables))
    chosen = get_method(method)
    if chosen.name in ("auto", "linear"):
        raise OptionError(f"Method {chosen.name!r} is one solve, not steps; choose lm or a gradient method.")
    learning_rate = options.learning_rate(learning_rate, chosen, scale, asked=chosen.name)
    if learning_rate == "auto" and chosen.name != "gd":
        raise OptionError("learning_rate='auto' steps only with method 'gd'; give a number.")
    max_steps = chosen.max_steps if max_steps is None else positive_int(max_steps, "max_steps")
    tolerances = chosen.tolerances.replace(options.tolerances(tol))
    _, problem, start, _, _ = make_problem(
        model, x, y, None, p0, "raise", {}, {}, torch.float64, "cpu", centre=chosen.name == "lm"
    )
    if chosen.name == "lm":
        return problem, lm_steps(problem, start, max_steps=max_steps, tolerances=tolerances)
    frame = Frame.standardized(problem, start) if scale else Frame.identity(problem, start)
    return problem, descent_steps(frame, problem, start, chosen.name, learning_rate, max_steps, tolerances, [])

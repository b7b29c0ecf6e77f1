"""The problem a single fit solves: the data checked, the model read (a Python function as its formula, or with
estimated derivatives), bounds, fixed and tied parameters as a change of variables, and the start checked.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import prepare
from .errors import DataError, FitError, GradfitError, ModelError
from .models import Centred, ExpressionModel, Model, Polynomial
from .numeric import NumericFunction
from .options import all_finite
from .params import Constrained, start_values
from .solvers import Problem
from .trace import model_to_fit


def make_problem(
    model: Model,
    x,
    y,
    sigma,
    p0,
    nan_policy,
    bounds,
    fixed,
    dtype,
    device,
    derivatives="auto",
    centre=False,
    ties=None,
    loss=("linear", 1.0),
):
    """Checked data, the Problem the solver works on, its start (inside any bounds), the model fitted and a note for
    the message: a Python function is read as its formula where it can be (gradfit.trace), and fitted with
    estimated derivatives where autograd cannot differentiate it (gradfit.numeric); with ``centre`` (LM), a
    polynomial without bounds walks the coefficients of its centred variable (Centred)."""
    data = prepare(x, y, sigma, nan_policy=nan_policy)
    check_variables(model, data.x)
    if len(data.y) < model.n_params:
        raise DataError(
            f"{len(data.y)} points are too few to fit {model.n_params} parameters "
            f"({', '.join(model.param_names)}): a fit needs at least as many points as parameters."
        )
    # float64 unless asked: the sums of squares must keep the digits the solver needs.
    as_tensor = lambda a: None if a is None else torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    xt, yt, st = as_tensor(data.x), as_tensor(data.y), as_tensor(data.sigma)
    start = start_values(model, p0, xt, yt, dtype, device, bounds, fixed, tuple(ties or ()))
    model, traced = model_to_fit(model, xt, start, derivatives)  # (a Python function as its formula: gradfit.trace)
    fitted = model
    # what the result's message says of how the function was fitted: read as its formula, or estimated derivatives
    note = model.note if isinstance(model, NumericFunction) else traced if isinstance(model, ExpressionModel) else None
    if bounds or fixed or ties:
        model = Constrained(model, bounds, fixed, ties)
        start = model.to_free(start)
    elif centre and type(model) is Polynomial and model.degree > 0:
        model = Centred(model, xt)
        start = model.to_free(start)
    problem = Problem(model, xt, yt, st, *loss)
    check_start(problem, start)
    return data, problem, start, fitted, note


def check_variables(model: Model, x: np.ndarray) -> None:
    if model.variables is None:
        return
    k = 1 if x.ndim == 1 else x.shape[1]
    if k != len(model.variables):
        names = ", ".join(model.variables)
        plural = "s" if len(model.variables) > 1 else ""
        raise ModelError(
            f"Model {model.name} takes {len(model.variables)} variable{plural} ({names}), but x has "
            f"{k} column{'s' if k > 1 else ''}. Give one x column per variable."
        )


def check_start(problem: Problem, start: torch.Tensor) -> None:
    """The model must run, and give finite values, at the starting point."""
    model = problem.model
    try:
        with torch.no_grad():
            residuals = problem.residuals(start)
    except GradfitError:
        raise
    except Exception as e:  # a Python function's own failure (1/0, a name it lacks, ...): one line, not a traceback
        raise ModelError(
            f"Model {model.name} failed on torch tensors at p0: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}. Write it with torch "
            "operations, one value per point."
        ) from None
    values = ", ".join(f"{n}={v:g}" for n, v in zip(model.param_names, start.tolist()))
    if not all_finite(residuals):
        bad = ~torch.isfinite(residuals)
        raise FitError(
            f"The model gives NaN or inf at the starting point p0 ({values}) for "
            f"{int(bad.sum())} of {len(bad)} points. Choose another p0."
        )
    # the solvers' LAPACK calls (SVD, QR) loop without end on inf or NaN, holding the GIL: refuse first
    if not problem.streaming and not all_finite(problem.jacobian(start)):
        raise FitError(
            f"The model's derivatives overflow at the starting point p0 ({values}) (inf or NaN: x too "
            "large for its powers, or exp() beyond 1e308). Rescale x, or choose another p0."
        )

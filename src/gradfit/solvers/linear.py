"""The exact least-squares optimum of a model that is linear in its parameters."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..options import all_finite
from ..errors import DataError, ModelError
from ..history import History, StepRecord
from ..models import Model
from ..uncertainty import column_scale
from .problem import Outcome, Problem, Whiten


def lstsq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The least-squares solution of a @ x = b: SVD-based (LAPACK gelsd) on the CPU, QR on a GPU.

    On the CPU numpy's call of the same routine is used: for the small systems of a fit it has
    a fraction of torch's overhead per call.
    """
    # columns scaled to unit length first, as numpy.polyfit does: the powers of x differ by many orders of
    # magnitude, and the rank cut-off must see the columns' directions, not their sizes
    if a.device.type == "cpu" and not (a.requires_grad or b.requires_grad):
        an, bn = a.numpy(), b.numpy()
        check_finite(an, bn)
        scale = column_scale(an)
        solution = np.linalg.lstsq(an / scale, bn, rcond=None)[0] / scale
        return torch.from_numpy(solution).to(a.dtype)
    check_finite(a, b)
    scale = column_scale(a)
    return torch.linalg.lstsq(a / scale, b.unsqueeze(-1)).solution.squeeze(-1) / scale


def check_finite(a, b=None) -> None:
    """Refuse a design matrix (or right-hand side) with inf or NaN before LAPACK sees it: on such input
    its SVD loops without end (and holds the GIL, freezing every thread of the process). Torch or numpy."""
    if not all_finite(a):
        raise DataError(
            "The model's columns overflow on these data (inf or NaN in the design matrix: x too "
            "large for its powers, or exp(x) beyond 1e308). Rescale x, e.g. to units where it is "
            "below 1e6."
        )
    if b is not None and not all_finite(b):
        raise DataError("y (divided by sigma) overflows to inf: rescale y or sigma.")


def least_squares(model: Model, x, y, sigma=None) -> tuple[torch.Tensor, float]:
    """The exact least-squares answer of a model linear in its parameters: ``(params, rmse)`` in float64.

    Minimises mean(((model(x, p) - y) / sigma)²) with an SVD-based routine (LAPACK gelsd), which stays accurate when
    powers of x make the design matrix ill-conditioned: the yardstick that tells how far gradient descent still is
    from the best fit.

    Args:
        model: a model linear in its parameters (a polynomial, a line, an expression such as ``a*sin(x) + b``).
        x: the points' x.
        y: the points' y.
        sigma: the errors of y (default: all equal).

    Returns:
        tuple: the parameters (a float64 tensor) and the square root of the minimised (weighted) mean square.
    """
    # float64: the optimum is the reference other runs are compared to.
    x = torch.as_tensor(x, dtype=torch.float64, device="cpu")
    y = torch.as_tensor(y, dtype=torch.float64, device="cpu")
    whiten = None if sigma is None else Whiten(torch.as_tensor(sigma, dtype=torch.float64, device="cpu"))
    a = model.design_matrix(x)
    check_finite(a)  # (a polynomial is solved in its centred variable, but its RMSE needs its own columns)
    params = solve_design(model, x, y, whiten)
    if whiten is not None:
        a, y = whiten(a), whiten(y)
    rmse = float(((a @ params - y) ** 2).mean().sqrt())
    return params, rmse


def solve_design(model: Model, x: torch.Tensor, y: torch.Tensor, whiten: Whiten | None = None) -> torch.Tensor:
    """The least-squares parameters of a linear model (``whiten`` applied to the rows: sigma or a covariance): a
    polynomial solved in its centred and scaled variable and mapped back (Polynomial.centred), any other model in
    its own columns."""
    centred = getattr(model, "centred", None)
    a, to_params = centred(x) if centred is not None else (model.design_matrix(x), None)
    if whiten is not None:
        a, y = whiten(a), whiten(y)
    solution = lstsq(a, y)
    if to_params is None:
        return solution
    params = to_params @ solution
    if not all_finite(params):  # x's powers, or y, beyond float64: the answer overflows
        raise DataError(
            "The least-squares answer overflows float64 (x or y too large for the model's "
            "powers). Rescale x and y, e.g. to units where they are below 1e6."
        )
    return params


def mse_curvatures(model: Model, x) -> torch.Tensor:
    """The curvatures of the mean squared error: eigenvalues (ascending, float64) of its Hessian, 2/N AᵀA.

    For a model linear in its parameters the Hessian depends on neither the parameters nor y. Plain gradient descent
    is stable exactly when ``learning_rate < 2 / largest``, and largest/smallest says how many more steps the
    flattest direction needs than the steepest.

    Args:
        model: a model linear in its parameters.
        x: the points' x.

    Returns:
        torch.Tensor: the eigenvalues, ascending.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    a = model.design_matrix(x)
    normal = 2 / a.shape[0] * a.T @ a
    check_finite(normal)
    return torch.linalg.eigvalsh(normal)


def solve_linear(
    problem: Problem, p0: torch.Tensor, *, callback: Callable[[StepRecord], None] | None = None
) -> Outcome:
    """The 'linear' method: one least-squares solve, for a model linear in its parameters.

    The history has one step, from p0 to the optimum, so that it can be drawn like any other.
    """
    model = problem.model
    if not model.is_linear:
        raise ModelError(
            f"Method 'linear' needs a model linear in its parameters; '{model.name}' is not. Use method='lm' or 'auto'."
        )
    r0 = problem.residuals(p0)
    if problem.streaming:  # A = QR made by chunks: solve R p = Qᵀy; Aᵀr0 = Rᵀ(R p0 - Qᵀy)
        r, z = problem.r_factor()
        params = torch.from_numpy(np.linalg.lstsq(r, z, rcond=None)[0]).to(p0.dtype)
        gradient = r.T @ (r @ p0.double().numpy() - z)
    else:
        a = problem.jacobian(p0)  # the (weighted) design matrix
        params = solve_design(model, problem.x, problem.y, problem.whiten)
        gradient = (a.T @ r0).numpy()
    history = History(problem.user_names, problem.describe(p0))
    loss = float(r0 @ r0) / problem.n_points
    history.append(
        StepRecord(
            1,
            loss,
            math.sqrt(loss),
            2 * float(np.linalg.norm(gradient)) / problem.n_points,
            math.nan,
            problem.describe(params),
        )
    )
    if callback is not None:
        callback(history[-1])
    return Outcome(params, history, True, "solved exactly: the model is linear in its parameters")

"""The gradient methods over B curves at once in torch, each curve in its own standardized coordinates.

They work on a *batch problem* and never ask where the data are (batch_problem.Chunk is the one in memory):
it answers ``residuals(p)`` (B, N) and ``jacobian(p)`` (B, N, P) with the weights applied, and holds ``y``,
``w``, ``used`` (1 where a point counts) and ``n_points``. The methods themselves are solvers.descent's, the
same code gradfit.fit runs for one curve; a solver returns (parameters (B, P), steps (B,), status (B,):
0 converged, 1 max_steps, 2 diverged). Levenberg–Marquardt for B curves is solvers.lm's ``lm_many``.
"""

from __future__ import annotations


import torch

from . import descent
from .descent import make_update
from .problem import run_steps


def standardized(problem, p0):
    """Each curve's standardized coordinates (p = p0 + T q, as solvers.gradient.Frame), the unit of its loss
    (the standard deviation of y) and its number of points."""
    n = problem.n_points.clamp_min(1)
    with torch.no_grad():
        _, s, vh = torch.linalg.svd(problem.jacobian(p0), full_matrices=False)
        s = torch.maximum(s, s[:, :1] * 1e-8).clamp_min(1e-300)
        yw = problem.y * problem.w
        mean = yw.sum(dim=1) / n
        var = (((yw - mean[:, None]) * problem.used) ** 2).sum(dim=1) / (n - 1).clamp_min(1)
        scale = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
        transform = (scale * torch.sqrt(n / 2))[:, None, None] * vh.transpose(1, 2) / s[:, None, :]
    return transform, scale, n


def lbfgs(problem, p0, max_steps: int, gtol: float, learning_rate: float = 1.0):
    """L-BFGS over the batch (solvers.descent.LBFGS: each curve its own memory and line search), each curve in
    its standardized coordinates. A curve stops when its gradient falls below gtol times max(its first
    gradient, 1), or when no step along its direction lowers the loss any more (the optimum to rounding)."""
    return descend(problem, p0, "lbfgs", learning_rate, max_steps, gtol)


def descend(problem, p0, method: str, learning_rate: float, max_steps: int, gtol: float):
    """Gradient methods over the batch, each curve in its own standardized coordinates: solvers.descent's loop
    and updates, the same code gradfit.fit runs for one curve.

    As gradfit.fit does for one curve (solvers.gradient.Frame): p = p0 + T q with T from the
    SVD of the curve's Jacobian at p0, the loss divided by the variance of y. The updates are
    elementwise (gd, momentum, nesterov, adam, rmsprop), so curves do not mix; a curve stops when its
    gradient falls below gtol times max(its first gradient, 1), and is then held.
    """
    transform, scale, n = standardized(problem, p0)
    to_params = lambda q: p0 + (transform @ q.unsqueeze(-1)).squeeze(-1)  # noqa: E731

    def objective(q):
        r = problem.residuals(to_params(q))  # forward
        return (r * r).sum(dim=1) / n / scale**2

    def evaluate(q):
        loss = objective(q)
        loss.sum().backward()  # the curves are independent: each gets its own gradient
        return loss

    q = torch.zeros_like(p0, requires_grad=True)
    update = make_update(method, q, learning_rate, objective)
    stopped = run_steps(descent.descend(evaluate, q, update, max_steps=max_steps, gtol=gtol))
    with torch.no_grad():
        p = to_params(q)
    status = torch.where(stopped.done | stopped.stalled, 0, 1)  # stalled: at the optimum to rounding
    status[stopped.bad | ~torch.isfinite(p).all(dim=1)] = 2
    return p.detach(), stopped.steps, status

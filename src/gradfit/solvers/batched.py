"""The many-curve solvers in torch: Levenberg–Marquardt, L-BFGS and the gradient methods over B curves at once.

Each works on a *batch problem* and never asks where the data are (batch.Chunk is the one in memory): it
answers ``residuals(p, idx=None)`` (B, N) and ``jacobian(p)`` (B, N, P) with the weights applied,
``residuals_and_jacobian_at(p, x, y, w)`` for rows it holds (``rows(idx)`` gives them), and holds ``y``, ``w``,
``used`` (1 where a point counts), ``n_points`` and ``shared`` (one x for every curve). Every curve has its own
damping, history, step and stopping; a solver returns (parameters (B, P), steps (B,), status (B,): 0 converged,
1 max_steps, 2 diverged). The compiled LM (solvers.compiled) is this LM's twin for formula models, held to it
by tests/test_compiled.py's TWINS.
"""

from __future__ import annotations


import torch

from . import descent
from .descent import make_update
from .problem import run_steps

INITIAL_DAMPING = 1e-3
MAX_DAMPING = 1e32
POLISH_STEPS = 2


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


def levenberg_marquardt(problem, p, max_steps: int, tol: float):
    """Batched LM: per-curve damping, per-curve stopping.

    The curves still iterating are held packed together — their parameters, residuals,
    Jacobians, damping and data — and a curve that stops is written out and dropped from
    the pack, so every step works on whole tensors, without gathers or scatters.
    Damped steps stop short in flat directions: a curve that has converged takes up to
    POLISH_STEPS undamped Gauss–Newton steps more, each kept only where it does not raise
    the loss beyond rounding (as gradfit.fit's LM polishes), before it leaves the pack.
    """
    B, k = p.shape
    p = p.clone()
    status = torch.full((B,), 1, dtype=torch.long, device=p.device)  # 1: max_steps until decided
    steps = torch.zeros(B, dtype=torch.long, device=p.device)
    pack = _Pack(problem, torch.arange(B, device=p.device), p)
    diverged = ~torch.isfinite(pack.cost)  # at the start: such a curve never iterates
    status[pack.idx[diverged]] = 2
    pack.drop(diverged, p)
    eye = torch.eye(k, dtype=p.dtype, device=p.device)
    while pack.size:
        J, rr, c, lam, polish = pack.jac, pack.r, pack.cost, pack.damping, pack.polished > 0
        jtj = J.transpose(1, 2) @ J  # the small matrices carry all that follows; J is read twice
        jtr = (J.transpose(1, 2) @ rr.unsqueeze(-1)).squeeze(-1)
        norms = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(0).sqrt()
        pack.d = torch.maximum(pack.d, norms)  # Marquardt's scaling never shrinks (Moré)
        # Marquardt's scaling (columns of unit size), applied to the small matrices, not to J;
        # a polishing curve scales by its current column norms and takes no damping
        dd = torch.where(polish[:, None], norms.clamp_min(1e-300), pack.d)
        lam = torch.where(polish, torch.zeros_like(lam), lam)
        g = jtr / dd
        normal = jtj / (dd.unsqueeze(2) * dd.unsqueeze(1)) + lam[:, None, None] * eye
        chol, info = torch.linalg.cholesky_ex(normal)
        delta = -torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1) / dd
        # the reduction the linear model promises, |r|² - |J δ + r|², from the small matrices
        predicted = -(2 * (delta * jtr).sum(dim=1) + (delta.unsqueeze(1) @ jtj @ delta.unsqueeze(-1)).flatten())
        p_new = pack.p + delta
        r_new, j_new, c_new = pack.linearize(p_new)  # J there too: most steps are taken
        rho = torch.where(predicted > 0, (c - c_new) / predicted, torch.full_like(c, -1.0))
        finite = torch.isfinite(c_new) & (info == 0)
        ok = torch.where(polish, finite & (c_new <= c * (1 + 1e-13)), finite & (rho > 0))
        # MINPACK-style tests, per curve
        tiny_change = ((c - c_new).abs() <= tol * c) & (predicted <= tol * c)
        tiny_step = (dd * delta).norm(dim=1) <= tol * ((dd * pack.p).norm(dim=1) + tol)
        done = (tiny_change & (c_new <= c * (1 + 1e-13))) | (tiny_step & ok) | (c == 0)
        steps[pack.idx[~polish | ok]] += 1  # a polishing step counts only when kept
        pack.steps += 1
        pack.accept(ok, p_new, r_new, c_new, j_new)
        # the damping shrinks after a good step (Nielsen) and grows after a bad one
        pack.damping = torch.where(ok, lam * torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3), lam * pack.nu)
        pack.nu = torch.where(ok, torch.full_like(pack.nu, 2.0), pack.nu * 2)
        converged = ~polish & (done | (pack.damping > MAX_DAMPING))
        status[pack.idx[converged]] = 0
        pack.polished = torch.where(converged | (polish & ok), pack.polished + 1, pack.polished)
        leaving = (polish & ~ok) | (pack.polished > POLISH_STEPS) | (~polish & ~converged & (pack.steps >= max_steps))
        if POLISH_STEPS == 0:
            leaving |= converged
        pack.drop(leaving, p)
    finite = torch.isfinite(p).all(dim=1)
    status[~finite] = 2
    return p, steps, status


class _Pack:
    """The curves of a chunk still iterating, packed: their state and their data, row for row."""

    def __init__(self, chunk, idx, p):
        self.chunk, self.idx = chunk, idx
        self.x, self.y, self.w = chunk.rows(idx)
        self.p = p[idx]
        self.r, self.jac, self.cost = self.linearize(self.p)
        self.d = self.jac.norm(dim=1).clamp_min(1e-300)
        self.damping = torch.full_like(self.cost, INITIAL_DAMPING)
        self.nu = torch.full_like(self.cost, 2.0)
        self.steps = torch.zeros_like(idx)  # damped steps taken
        self.polished = torch.zeros_like(idx)  # 0 while damped; then 1 + Gauss–Newton steps kept

    @property
    def size(self) -> int:
        return len(self.idx)

    def linearize(self, p):
        """Residuals, Jacobian and cost at p (the cost |r|², or a robust loss's: the chunk says)."""
        return self.chunk.linearize(p, self.x, self.y, self.w)

    def accept(self, ok, p, r, cost, jac) -> None:
        """Move the curves where ``ok`` to p, with their residuals, cost and Jacobian there."""
        if bool(ok.all()):
            self.p, self.r, self.cost, self.jac = p, r, cost, jac
        elif bool(ok.any()):
            self.p = torch.where(ok[:, None], p, self.p)
            self.r = torch.where(ok[:, None], r, self.r)
            self.cost = torch.where(ok, cost, self.cost)
            self.jac = torch.where(ok[:, None, None], jac, self.jac)

    def drop(self, which, p) -> None:
        """Write the curves ``which`` back into ``p`` and leave them out from now on."""
        if not bool(which.any()):
            return
        p[self.idx[which]] = self.p[which]
        keep = ~which
        self.idx = self.idx[keep]
        for name in ("p", "r", "cost", "jac", "d", "damping", "nu", "steps", "polished", "y", "w"):
            setattr(self, name, getattr(self, name)[keep])
        if not self.chunk.shared:
            self.x = self.x[keep]

"""Levenberg–Marquardt, written once and batch-first: B curves, each with its own damping, scaling, steps and
stopping. ``gradfit.fit`` runs it on a batch of one (``lm_steps``: a generator of StepRecords, the history
and a message; ``levenberg_marquardt`` runs it to the end), ``fit_many`` on B curves (``lm_many``); the
compiled LM (solvers.compiled) is its twin for formula models, held to it by tests/test_compiled.py's TWINS.

Each iteration solves the damped Gauss–Newton step

    (JᵀJ + λ D²) δ = −Jᵀr

in Marquardt's scaling D — the column norms of J, never allowed to shrink (Moré 1978), so the method does not
care about the parameters' units — by a Cholesky factorization of the column-equilibrated JᵀJ (J is read
once per accepted point; everything after works on the small P×P matrices). A problem may answer with R and
Qᵀr of J = QR instead of J and r (data streamed by batches): the same JᵀJ and Jᵀr. λ follows Nielsen's rule
(Madsen, Nielsen & Tingleff 2004): after a good step it shrinks by max(1/3, 1 − (2ρ − 1)³), after a rejected
one it grows by ν, which doubles on every rejection in a row; ρ is the actual over the predicted reduction of
the loss. MINPACK's tests stop a curve: the loss (ftol) or the scaled step (xtol) stopped changing, the
residuals orthogonal to every column of J (gtol), the loss zero, or λ past any use. A curve that has
converged then takes up to POLISH_STEPS undamped Gauss–Newton steps, each kept only where it does not raise
the loss beyond rounding: damped steps stop short in flat directions, Gauss–Newton finishes the last digits.
The history's ``learning_rate`` column holds λ (0 for a Gauss–Newton step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import torch

from ..history import History, StepRecord
from .problem import Outcome, Problem, Tolerances, run_steps

INITIAL_DAMPING = 1e-3  # λ₀, relative to D²: start close to Gauss–Newton
MAX_DAMPING = 1e32  # past this no step can lower the loss: the optimum is reached to rounding
POLISH_STEPS = 2  # undamped Gauss–Newton steps a converged curve may take before it leaves
ROUNDING = 1e-13  # relative change of the loss that rounding alone can make

# why a curve stopped (LMStopped.why)
ZERO, GTOL, FTOL, XTOL, FLOOR, MAX_STEPS, DIVERGED = range(7)


@dataclass
class LMStep:
    """One iteration over the curves still iterating (``idx``): their cost before it, Jᵀr there, the damping
    λ used (0: a Gauss–Newton step), whether the step was kept, and their parameters after it."""

    idx: torch.Tensor
    cost: torch.Tensor
    jtr: torch.Tensor
    damping: torch.Tensor
    accepted: torch.Tensor
    params: torch.Tensor


@dataclass
class LMStopped:
    """Each curve's parameters (B, P), steps taken (B,), status (0 converged, 1 max_steps, 2 diverged) and
    ``why`` (ZERO, GTOL, FTOL, XTOL, FLOOR, MAX_STEPS, DIVERGED)."""

    params: torch.Tensor
    steps: torch.Tensor
    status: torch.Tensor
    why: torch.Tensor


def lm(problem, p: torch.Tensor, max_steps: int, tolerances: Tolerances) -> Generator[LMStep, None, LMStopped]:
    """Levenberg–Marquardt over B curves, one iteration per ``yield``; returns LMStopped.

    ``problem`` answers for a batch (batch_problem.Chunk, or ``OneCurve`` around a single fit's Problem):
    ``rows(idx)`` the data of some curves, ``linearize(p, x, y, w)`` their residuals (B, M), Jacobians
    (B, M, P) and costs (B,), ``shared`` whether x is one for all. The curves still iterating are held packed
    together — their parameters, residuals, Jacobians, damping and data — and a curve that stops is written
    out and dropped from the pack, so every step works on whole tensors, without gathers or scatters.
    """
    tol = tolerances
    b, k = p.shape
    p = p.clone()
    status = torch.full((b,), 1, dtype=torch.long, device=p.device)  # 1: max_steps until decided
    why = torch.full((b,), MAX_STEPS, dtype=torch.long, device=p.device)
    steps = torch.zeros(b, dtype=torch.long, device=p.device)
    pack = _Pack(problem, torch.arange(b, device=p.device), p)
    diverged = ~torch.isfinite(pack.cost)  # at the start: such a curve never iterates
    status[pack.idx[diverged]] = 2
    why[pack.idx[diverged]] = DIVERGED
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
        ok = torch.where(polish, finite & (c_new <= c * (1 + ROUNDING)), finite & (rho > 0))
        # MINPACK's tests, per curve
        tiny_change = ((c - c_new).abs() <= tol.ftol * c) & (predicted <= tol.ftol * c) & (c_new <= c * (1 + ROUNDING))
        tiny_step = ((dd * delta).norm(dim=1) <= tol.xtol * ((dd * pack.p).norm(dim=1) + tol.xtol)) & ok
        zero = c == 0
        orthogonal = torch.zeros_like(zero)
        if tol.gtol > 0:  # |cos| of the angle between r and each column of J
            cosines = (jtr.abs() / (norms * c.sqrt()[:, None])).nan_to_num(0.0)
            orthogonal = cosines.amax(dim=1) <= tol.gtol
        done = tiny_change | tiny_step | zero | orthogonal
        steps[pack.idx[~polish | ok]] += 1  # a polishing step counts only when kept
        pack.steps += 1
        pack.accept(ok, p_new, r_new, c_new, j_new)
        yield LMStep(pack.idx, c, jtr, lam, ok, pack.p)
        # the damping shrinks after a good step (Nielsen) and grows after a bad one
        pack.damping = torch.where(ok, lam * torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3), lam * pack.nu)
        pack.nu = torch.where(ok, torch.full_like(pack.nu, 2.0), pack.nu * 2)
        floor = pack.damping > MAX_DAMPING
        converged = ~polish & (done | floor)
        status[pack.idx[converged]] = 0
        reason = torch.where(
            zero,
            ZERO,
            torch.where(orthogonal, GTOL, torch.where(tiny_change, FTOL, torch.where(tiny_step, XTOL, FLOOR))),
        )
        why[pack.idx[converged]] = reason[converged]
        pack.polished = torch.where(converged | (polish & ok), pack.polished + 1, pack.polished)
        leaving = (polish & ~ok) | (pack.polished > POLISH_STEPS) | (~polish & ~converged & (pack.steps >= max_steps))
        if POLISH_STEPS == 0:
            leaving |= converged
        pack.drop(leaving, p)
    finite = torch.isfinite(p).all(dim=1)
    status[~finite] = 2
    why[~finite] = DIVERGED
    return LMStopped(p, steps, status, why)


def lm_many(problem, p, max_steps: int, tol: float):
    """fit_many's LM: ``lm`` run to its end over a batch problem, with one tolerance for the loss and the step
    (and none on the gradient); (parameters (B, P), steps (B,), status (B,))."""
    steps = lm(problem, p, max_steps, Tolerances(tol, tol, 0.0))
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            out = stop.value
            return out.params, out.steps, out.status


class OneCurve:
    """A single fit's Problem as a batch of one curve: what ``lm`` asks of a batch problem."""

    shared = True

    def __init__(self, problem: Problem):
        self.problem = problem

    def rows(self, idx):
        return None, None, None

    def linearize(self, p, x, y, w):
        one = p[0]
        cost = self.problem.cost(one)  # (linearize reuses its residuals)
        jac, r = self.problem.linearize(one)
        return r[None], jac[None], torch.tensor([cost], dtype=p.dtype, device=p.device)


def lm_steps(
    problem: Problem, p0: torch.Tensor, *, max_steps: int, tolerances: Tolerances
) -> Generator[StepRecord, None, Outcome]:
    """``lm`` on one curve, one iteration per ``yield`` as a StepRecord; returns the Outcome (see ``run_steps``)."""
    tol = tolerances
    history = History(problem.user_names, problem.describe(p0))
    n = problem.n_points
    steps = lm(OneCurve(problem), p0[None], max_steps, tol)
    number = 0
    while True:
        try:
            taken = next(steps)
        except StopIteration as stop:
            out = stop.value
            break
        number += 1
        loss = float(taken.cost[0]) / n
        grad = 2 * float(taken.jtr[0].norm()) / n
        record = StepRecord(
            number, loss, math.sqrt(loss), grad, float(taken.damping[0]), problem.describe(taken.params[0])
        )
        history.append(record)
        yield record
    why = int(out.why[0])
    reason = {
        ZERO: "the loss reached zero: the model fits the data exactly",
        GTOL: f"the residuals are orthogonal to every Jacobian column (gtol={tol.gtol:g})",
        FTOL: f"the loss stopped decreasing (ftol={tol.ftol:g})",
        XTOL: f"the parameters stopped changing (xtol={tol.xtol:g})",
        FLOOR: "no step lowers the loss any more: the optimum is reached to rounding precision",
        MAX_STEPS: f"reached max_steps={max_steps} before converging",
        DIVERGED: "the model gives non-finite values at the starting point p0",
    }[why]
    return Outcome(out.params[0], history, int(out.status[0]) == 0, reason)


def levenberg_marquardt(
    problem: Problem,
    p0: torch.Tensor,
    *,
    max_steps: int,
    tolerances: Tolerances,
    callback: Callable[[StepRecord], None] | None = None,
) -> Outcome:
    return run_steps(lm_steps(problem, p0, max_steps=max_steps, tolerances=tolerances), callback)


class _Pack:
    """The curves of a batch still iterating, packed: their state and their data, row for row."""

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
        for name in ("p", "r", "cost", "jac", "d", "damping", "nu", "steps", "polished"):
            setattr(self, name, getattr(self, name)[keep])
        for name in ("y", "w"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[keep])
        if not self.chunk.shared:
            self.x = self.x[keep]

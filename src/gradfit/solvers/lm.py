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

import numpy as np
import torch

from ..history import History, StepRecord
from .lm_settings import CLOSE, NEWTON_STREAK
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
    # the per-curve bookkeeping (damping, tests, counts) is a few numbers per curve: done on the host, in numpy,
    # where it costs ~1 µs an operation (as tensors a single fit paid ~10 µs each, ~90 of them an iteration);
    # the arithmetic is the same IEEE operations, so the numbers are the same as in torch
    status = np.full(b, 1)  # 1: max_steps until decided
    why = np.full(b, MAX_STEPS)
    steps = np.zeros(b, dtype=np.int64)
    pack = _Pack(problem, np.arange(b), p)
    diverged = ~np.isfinite(pack.cost)  # at the start: such a curve never iterates
    status[pack.idx[diverged]] = 2
    why[pack.idx[diverged]] = DIVERGED
    pack.drop(diverged, p)
    eye = torch.eye(k, dtype=p.dtype, device=p.device)
    while pack.size:
        J, rr, c, polish = pack.jac, pack.r, pack.cost, pack.polished > 0
        streak = pack.newton > 0  # mid-run Gauss–Newton steps (the model promised almost nothing more)
        newton = polish | streak
        jtj = J.transpose(1, 2) @ J  # the small matrices carry all that follows; J is read twice
        jtr = (J.transpose(1, 2) @ rr.unsqueeze(-1)).squeeze(-1)
        norms = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(0).sqrt()
        pack.d = torch.maximum(pack.d, norms)  # Marquardt's scaling never shrinks (Moré)
        # Marquardt's scaling (columns of unit size), applied to the small matrices, not to J;
        # a polishing curve scales by its current column norms and takes no damping
        dd = (
            pack.d
            if not newton.any()
            else torch.where(pack.on_device(newton)[:, None], norms.clamp_min(1e-300), pack.d)
        )
        lam = np.where(newton, 0.0, pack.damping)
        g = jtr / dd
        normal = jtj / (dd.unsqueeze(2) * dd.unsqueeze(1)) + pack.on_device(lam)[:, None, None] * eye
        chol, info = torch.linalg.cholesky_ex(normal)
        delta = -torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1) / dd
        # the reduction the linear model promises, |r|² - |J δ + r|², from the small matrices
        predicted = -(2 * (delta * jtr).sum(dim=1) + (delta.unsqueeze(1) @ jtj @ delta.unsqueeze(-1)).flatten())
        p_new = pack.p + delta
        r_new, j_new, c_new = pack.linearize(p_new)  # J there too: most steps are taken
        rows = [c_new, predicted, info.to(p.dtype), (dd * delta).norm(dim=1), (dd * pack.p).norm(dim=1)]
        if tol.gtol > 0:  # |cos| of the angle between r and each column of J
            rows.append((jtr.abs() / (norms * pack.on_device(c).sqrt()[:, None])).nan_to_num(0.0).amax(dim=1))
        host = torch.stack(rows).cpu().numpy()  # what the tests need, to the host at once
        c_new, predicted, info, step_size, size = host[:5]
        with np.errstate(all="ignore"):
            rho = np.where(predicted > 0, (c - c_new) / predicted, -1.0)
            finite = np.isfinite(c_new) & (info == 0)
            ok = np.where(newton, finite & (c_new <= c * (1 + ROUNDING)), finite & (rho > 0))
            # MINPACK's tests, per curve
            tiny_change = (
                (np.abs(c - c_new) <= tol.ftol * c) & (predicted <= tol.ftol * c) & (c_new <= c * (1 + ROUNDING))
            )
            tiny_step = (step_size <= tol.xtol * (size + tol.xtol)) & ok
            zero = c == 0
            orthogonal = host[5] <= tol.gtol if tol.gtol > 0 else np.zeros_like(zero)
            done = tiny_change | tiny_step | zero | orthogonal
            steps[pack.idx[~polish | ok]] += 1  # a polishing step counts only when kept
            pack.steps += 1
            pack.accept(ok, p_new, r_new, c_new, j_new)
        yield LMStep(pack.idx, c, jtr, lam, ok, pack.p)
        with np.errstate(all="ignore"):
            # the damping shrinks after a good step (Nielsen) and grows after a bad one
            t = 2 * rho - 1
            damping = np.where(ok, lam * np.maximum(1 - t * t * t, 1 / 3), lam * pack.nu)
            pack.damping = np.where(streak, pack.damping, damping)  # a Gauss–Newton streak leaves λ as it was
            pack.nu = np.where(streak, pack.nu, np.where(ok, 2.0, pack.nu * 2))
            floor = pack.damping > MAX_DAMPING
            converged = ~polish & (done | floor)
            status[pack.idx[converged]] = 0
            reason = np.select([zero, orthogonal, tiny_change, tiny_step], [ZERO, GTOL, FTOL, XTOL], FLOOR)
            why[pack.idx[converged]] = reason[converged]
            pack.polished = np.where(converged | (polish & ok), pack.polished + 1, pack.polished)
            # close to the optimum damped steps crawl in flat directions: undamped Gauss–Newton steps finish the
            # last digits (quadratically, for small residuals) for as long as they do not raise the loss
            starts = ~newton & ok & ~converged & (predicted <= CLOSE * c)
            goes_on = streak & ok & ~converged & (pack.newton < NEWTON_STREAK)
            pack.newton = np.where(goes_on, pack.newton + 1, np.where(starts, 1, 0))
            leaving = (
                (polish & ~ok) | (pack.polished > POLISH_STEPS) | (~polish & ~converged & (pack.steps >= max_steps))
            )
            if POLISH_STEPS == 0:
                leaving |= converged
        pack.drop(leaving, p)
    finite = torch.isfinite(p).all(dim=1).cpu().numpy()
    status[~finite] = 2
    why[~finite] = DIVERGED
    as_t = lambda a: torch.from_numpy(a).to(p.device)  # noqa: E731
    return LMStopped(p, as_t(steps), as_t(status), as_t(why))


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
    """The curves of a batch still iterating, packed: their state and their data, row for row. Tensors on the
    device for the linear algebra; the per-curve numbers (cost, damping, counts, which curves) in numpy."""

    def __init__(self, chunk, idx: np.ndarray, p):
        self.chunk, self.idx, self.device = chunk, idx, p.device
        self.x, self.y, self.w = chunk.rows(self.on_device(idx))
        self.p = p[self.on_device(idx)]
        self.r, self.jac, cost = self.linearize(self.p)
        self.cost = cost.cpu().numpy()
        self.d = self.jac.norm(dim=1).clamp_min(1e-300)
        self.damping = np.full(len(idx), INITIAL_DAMPING, dtype=self.cost.dtype)
        self.nu = np.full(len(idx), 2.0, dtype=self.cost.dtype)
        self.steps = np.zeros(len(idx), dtype=np.int64)  # damped steps taken
        self.polished = np.zeros(len(idx), dtype=np.int64)  # 0 while damped; then 1 + Gauss–Newton steps kept
        self.newton = np.zeros(len(idx), dtype=np.int64)  # 0, or the Gauss–Newton step of a mid-run streak

    @property
    def size(self) -> int:
        return len(self.idx)

    def on_device(self, a: np.ndarray) -> torch.Tensor:
        """A host array as a tensor beside the curves' (a float array in their dtype)."""
        t = torch.from_numpy(a)
        return t.to(self.device, self.r.dtype if t.is_floating_point() and hasattr(self, "r") else t.dtype)

    def linearize(self, p):
        """Residuals, Jacobian and cost at p (the cost |r|², or a robust loss's: the chunk says)."""
        return self.chunk.linearize(p, self.x, self.y, self.w)

    def accept(self, ok: np.ndarray, p, r, cost: np.ndarray, jac) -> None:
        """Move the curves where ``ok`` to p, with their residuals, cost and Jacobian there."""
        if ok.all():
            self.p, self.r, self.jac = p, r, jac
        elif ok.any():
            sel = self.on_device(ok)
            self.p = torch.where(sel[:, None], p, self.p)
            self.r = torch.where(sel[:, None], r, self.r)
            self.jac = torch.where(sel[:, None, None], jac, self.jac)
        self.cost = np.where(ok, cost, self.cost)

    def drop(self, which: np.ndarray, p) -> None:
        """Write the curves ``which`` back into ``p`` and leave them out from now on."""
        if not which.any():
            return
        sel = self.on_device(which)
        p[self.on_device(self.idx[which])] = self.p[sel]
        keep, kept = ~which, ~sel
        self.idx = self.idx[keep]
        for name in ("cost", "damping", "nu", "steps", "polished", "newton"):
            setattr(self, name, getattr(self, name)[keep])
        for name in ("p", "r", "jac", "d", "y", "w"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[kept])
        if not self.chunk.shared:
            self.x = self.x[kept]

"""Levenberg–Marquardt, written once and batch-first: B curves, each with its own damping, scaling, steps and
stopping. ``gradfit.fit`` runs it on a batch of one (``lm_steps``: a generator of StepRecords, the history
and a message; ``levenberg_marquardt`` runs it to the end), ``fit_many`` and profiles on B curves
(``lm_many``); the compiled LM (solvers.compiled) is its twin for formula models, with the same rules for each
curve (solvers.lm_rules), held to it by tests/test_compiled.py's TWINS.

Each iteration solves the damped Gauss–Newton step

    (JᵀJ + λ D²) δ = −Jᵀr

in Marquardt's scaling D — the column norms of J, never allowed to shrink (Moré 1978), so the method does not
care about the parameters' units — by a Cholesky factorization of the column-equilibrated JᵀJ (everything
after J works on the small P×P matrices). A problem may answer with R and Qᵀr of J = QR instead of J and r
(data streamed by batches): the same JᵀJ and Jᵀr. A problem that answers ``evaluate`` (the cost alone) gets
its J asked only where a step is kept (a single fit); a batch problem makes J with r at every trial point.
Then each curve's rules (solvers.lm_rules.judge): keep the step or not, its damping (Nielsen's), MINPACK's
tests, Gauss–Newton steps close to the optimum and after converging. The history's ``learning_rate`` column
holds λ (0 for a Gauss–Newton step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch

from ..history import History, StepRecord
from .lm_rules import DIVERGED, INITIAL_DAMPING, ITERATING, MAX_STEPS, reason
from .lm_rules import judge_curves as judge_few
from .problem import Outcome, Problem, Tolerances, run_steps

FEW = 32  # up to this many curves the rules run in Python (~6 µs a curve); beyond, compiled (solvers.compiled_lm)


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
    rules = (float(tol.ftol), float(tol.xtol), float(tol.gtol), int(max_steps))  # (one compiled signature)
    b, k = p.shape
    p = p.clone()
    # each curve's bookkeeping (the tests, its damping, counts: solvers.lm_rules) is a few numbers: on the host,
    # curve by curve (as tensors a single fit paid ~10 µs an operation, ~90 of them an iteration)
    status = np.full(b, 1)  # 1: max_steps until decided
    why = np.full(b, MAX_STEPS)
    steps = np.zeros(b, dtype=np.int64)
    pack = _Pack(problem, np.arange(b), p)
    diverged = ~np.isfinite(pack.cost)  # at the start: such a curve never iterates
    status[pack.idx[diverged]] = 2
    why[pack.idx[diverged]] = DIVERGED
    pack.drop(diverged, p)
    while pack.size:
        J, rr, c = pack.jac, pack.r, pack.cost
        newton = (pack.polished > 0) | (pack.newton > 0)  # a Gauss–Newton step: after converging, or close
        jt = J.transpose(1, 2)
        jtj = jt @ J  # the small matrices carry all that follows; J is read twice
        jtr = (jt @ rr.unsqueeze(-1)).squeeze(-1)
        norms = jtj.diagonal(0, 1, 2).sqrt()
        pack.d = torch.maximum(pack.d, norms)  # Marquardt's scaling never shrinks (Moré)
        # Marquardt's scaling (columns of unit size), applied to the small matrices, not to J;
        # a Gauss–Newton step scales by the current column norms and takes no damping
        if not newton.any():
            dd = pack.d
        elif newton.all():
            dd = norms.clamp_min(1e-300)
        else:
            dd = torch.where(pack.on_device(newton)[:, None], norms.clamp_min(1e-300), pack.d)
        lam = np.where(newton, 0.0, pack.damping)
        lam_t = pack.on_device(lam)
        g = jtr / dd
        normal = jtj / (dd.unsqueeze(2) * dd.unsqueeze(1))
        normal.diagonal(0, 1, 2).add_(lam_t.unsqueeze(1))
        chol, info = torch.linalg.cholesky_ex(normal)
        s = torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1)  # minus the step in scaled coordinates, u
        delta = -(s / dd)
        # the reduction the linear model promises, |r|² - |J δ + r|² = -u·g + λ|u|² by the normal equations
        # (MINPACK's |J δ|² + 2λ|D δ|²): a sum of two terms ≥ 0, no cancellation, no product with J
        u2 = (s * s).sum(dim=1)
        predicted = lam_t * u2 + (s * g).sum(dim=1)
        p_new = pack.p + delta
        r_new, j_new, c_new = pack.trial(p_new)  # J there too, where the problem makes it with r
        rows = [c_new, predicted, info, u2, torch.linalg.vector_norm(dd * pack.p, dim=1)]
        if tol.gtol > 0:  # |cos| of the angle between r and each column of J, times |r| (divided below)
            rows.append((jtr.abs() / norms).nan_to_num(0.0).amax(dim=1))
        c_new, predicted, info, u2, size, *cosine = pack.to_host(rows)  # what the tests need
        if tol.gtol == 0:
            cosine = [np.zeros_like(c)]
        ok, counted, why_now, leaving = out = _verdicts(pack.size)
        judge_curves(pack.size)(c, c_new, predicted, info, np.sqrt(u2), size, cosine[0], pack.state, rules, out)
        steps[pack.idx] += counted
        converged = why_now != ITERATING
        if converged.any():
            status[pack.idx[converged]] = 0
            why[pack.idx[converged]] = why_now[converged]
        pack.accept(ok, p_new, r_new, c_new, j_new)
        yield LMStep(pack.idx, c, jtr, lam, ok, pack.p)
        pack.drop(leaving, p)
    finite = torch.isfinite(p).all(dim=1).cpu().numpy()
    status[~finite] = 2
    why[~finite] = DIVERGED
    as_t = lambda a: torch.from_numpy(a).to(p.device)  # noqa: E731
    return LMStopped(p, as_t(steps), as_t(status), as_t(why))


def judge_curves(n: int):
    """solvers.lm_rules.judge_curves for n curves: in Python for a few, compiled for many (numba, imported only
    then; compiled once per machine in ~2 s, then read from numba's cache)."""
    if n <= FEW:
        return judge_few
    from .compiled_lm import judge_curves as judge_many

    return judge_many


def _verdicts(n: int) -> tuple:
    """Arrays for judge_curves' verdicts on n curves: ok, counted, why, leaving."""
    return np.empty(n, dtype=bool), np.empty(n, dtype=bool), np.empty(n, dtype=np.int64), np.empty(n, dtype=bool)


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
    """A single fit's Problem as a batch of one curve: what ``lm`` asks of a batch problem. It answers
    ``evaluate`` too (the cost alone), so that ``lm`` makes J only where it keeps a step."""

    shared = True

    def __init__(self, problem: Problem):
        self.problem = problem
        self.at = self.one = self.cost = None

    def rows(self, idx):
        return None, None, None

    def evaluate(self, p, x, y, w):
        self.at, self.one = p, p[0]
        self.cost = torch.tensor([self.problem.cost(self.one)], dtype=p.dtype, device=p.device)
        return None, self.cost

    def linearize(self, p, x, y, w):
        if p is not self.at:
            self.evaluate(p, x, y, w)
        jac, r = self.problem.linearize(self.one)  # (reuses the residuals that the cost made)
        return r[None], jac[None], self.cost


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
    why = reason(int(out.why[0]), (tol.ftol, tol.xtol, tol.gtol, max_steps))
    return Outcome(out.params[0], history, int(out.status[0]) == 0, why)


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
        self.cost = cost.cpu().numpy().astype(np.float64, copy=False)
        self.d = self.jac.norm(dim=1).clamp_min(1e-300)
        self.damping = np.full(len(idx), INITIAL_DAMPING)
        self.nu = np.full(len(idx), 2.0)
        self.steps = np.zeros(len(idx), dtype=np.int64)  # iterations taken
        self.polished = np.zeros(len(idx), dtype=np.int64)  # 0 while damped; then 1 + Gauss–Newton steps kept
        self.newton = np.zeros(len(idx), dtype=np.int64)  # 0, or the Gauss–Newton step of a mid-run streak

    @property
    def size(self) -> int:
        return len(self.idx)

    @property
    def state(self) -> tuple:
        """Each curve's state as solvers.lm_rules.judge reads and writes it (arrays changed in place)."""
        return self.damping, self.nu, self.polished, self.newton, self.steps

    def on_device(self, a: np.ndarray) -> torch.Tensor:
        """A host array as a tensor beside the curves' (a float array in their dtype)."""
        t = torch.from_numpy(a)
        return t.to(self.device, self.r.dtype if t.is_floating_point() and hasattr(self, "r") else t.dtype)

    def linearize(self, p):
        """Residuals, Jacobian and cost at p (the cost |r|², or a robust loss's: the chunk says)."""
        return self.chunk.linearize(p, self.x, self.y, self.w)

    def trial(self, p):
        """At a trial point: (r, J, cost) where the chunk makes J with r, else (None, None, cost)."""
        evaluate = getattr(self.chunk, "evaluate", None)
        if evaluate is None:
            return self.linearize(p)
        r, cost = evaluate(p, self.x, self.y, self.w)
        return r, None, cost

    def to_host(self, rows: list) -> list:
        """(B,) tensors as float64 numpy arrays (the rules' one signature, compiled): on the CPU one by one,
        from a GPU in one transfer."""
        if self.device.type == "cpu":
            return [t.numpy().astype(np.float64, copy=False) for t in rows]
        return list(torch.stack([t.to(torch.float64) for t in rows]).cpu().numpy())

    def accept(self, ok: np.ndarray, p, r, cost: np.ndarray, jac) -> None:
        """Move the curves where ``ok`` to p, with their residuals, cost and Jacobian there (made now if the
        trial point was evaluated without them)."""
        if jac is None and ok.any():
            r, jac, _ = self.linearize(p)
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

"""The gradient methods, written once and batch-first: each method's update, and the loop that steps them.

A batch is B curves, one per row of q (B, P), each with its own objective, gradient, state, rate and stopping;
one curve is q (P,), a batch of one without the extra axis (so autograd need not select a row of q on every
step). ``gradfit.fit`` runs this code on one curve (solvers.gradient wraps it with the history, the callback
and a single fit's stopping rules), ``fit_many`` on B curves (solvers.batched). The loop is the article's —
forward, loss, backward, update, zero the gradient — and the methods differ only in the update: ``gd`` is the
article's own, ``q -= learning_rate * grad`` (or with its rate from a backtracking line search); momentum,
Nesterov and Adam are torch.optim's (elementwise, so rows do not mix); RMSprop is torch.optim's update with
ReduceLROnPlateau's halving of the rate, each curve its own rate; L-BFGS keeps each curve's own memory and
line search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch

PLATEAU_PATIENCE = 20  # steps without a better loss before RMSprop's rate is halved (a curve's own)
RMS_DECAY = 0.99  # torch.optim.RMSprop's alpha
RMS_EPS = 1e-8  # and its eps
MIN_RATE_CHANGE = 1e-8  # ReduceLROnPlateau's eps: a halving smaller than this is not made
ARMIJO = 1e-4  # the sufficient decrease of the backtracking line search
LBFGS_MEMORY = 10  # steps each curve's L-BFGS remembers
LINE_SEARCH_HALVINGS = 50  # of L-BFGS's step, before a curve's line search gives up (the optimum to rounding)


def torch_optimizer(name: str):
    """The update of each torch.optim method, as (q, learning_rate) -> optimizer."""
    optim = torch.optim
    return {
        "momentum": lambda q, lr: optim.SGD([q], lr=lr, momentum=0.9),
        "nesterov": lambda q, lr: optim.SGD([q], lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda q, lr: optim.Adam([q], lr=lr),
        "rmsprop": lambda q, lr: optim.RMSprop([q], lr=lr, alpha=RMS_DECAY, eps=RMS_EPS),
    }[name]


def curves(q: torch.Tensor) -> int:
    """How many curves q holds: its rows, or one for q (P,)."""
    return q.shape[0] if q.ndim == 2 else 1


def rows(t: torch.Tensor) -> torch.Tensor:
    """q or its gradient as (B, P): a view, one row for one curve's (P,)."""
    return t if t.ndim == 2 else t.view(1, -1)


class Update:
    """A method's update of q (B, P) from the gradient in ``q.grad``; ``rate`` is the learning rate now."""

    stalled = None  # (B,) the curves for which the last step found no lower loss (a line search's), or None

    def __init__(self, q: torch.Tensor, learning_rate: float):
        self.q, self.rate = q, learning_rate

    def step(self, loss: torch.Tensor, moving: torch.Tensor) -> None:
        """Move q one step; ``loss`` (B,) is the objective where the gradient was taken; the rows not ``moving``
        have stopped (held where they are whatever the update does to them: only a line search needs to know)."""
        raise NotImplementedError

    def set_rate(self, learning_rate: float) -> None:
        self.rate = learning_rate

    def rate_of(self, curve: int = 0) -> float:
        """The learning rate a curve steps with now (for the history)."""
        return float(self.rate)


class Plain(Update):
    """The article's update: q -= learning_rate * grad."""

    def step(self, loss, moving):
        with torch.no_grad():
            self.q -= self.rate * self.q.grad


class Optimizer(Update):
    """One of torch.optim's updates: momentum, Nesterov, Adam (elementwise: each row its own curve)."""

    def __init__(self, q, learning_rate, name: str):
        super().__init__(q, learning_rate)
        self.optimizer = torch_optimizer(name)(q, learning_rate)

    def step(self, loss, moving):
        self.optimizer.step()

    def set_rate(self, learning_rate):
        self.rate = learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate


class RMSprop(Update):
    """torch.optim.RMSprop's update, and ReduceLROnPlateau(factor=0.5, patience=PLATEAU_PATIENCE, threshold=0)'s
    halving of the rate when the loss has not improved for so many steps, each curve its own rate.

    RMSprop takes steps of about the learning rate however small the gradient, so near the optimum it circles
    it; halving the rate when the loss stops improving lets it land.
    """

    def __init__(self, q, learning_rate):
        super().__init__(q, learning_rate)
        b = curves(q)
        self.square = torch.zeros_like(q, requires_grad=False)
        # the schedule's bookkeeping is a few numbers per curve: kept on the host, where it costs ~1 µs a step
        # (as tensors it cost ~150 µs a step for one curve, a quarter of the step)
        self.host_rates = np.full(b, float(learning_rate))
        self.rates = torch.full(q.shape[:-1] + (1,), float(learning_rate), dtype=q.dtype, device=q.device)
        self.best = np.full(b, math.inf)
        self.calm = np.zeros(b, dtype=np.int64)

    def step(self, loss, moving):
        with torch.no_grad():
            g = self.q.grad
            self.square.mul_(RMS_DECAY).addcmul_(g, g, value=1 - RMS_DECAY)
            self.q.addcdiv_(self.rates * g, self.square.sqrt().add_(RMS_EPS), value=-1)
        loss = loss.cpu().numpy().reshape(-1)
        better = loss < self.best  # the loss before this step, as the scheduler is given it
        self.best = np.where(better, loss, self.best)
        self.calm = np.where(better, 0, self.calm + 1)
        tired = self.calm > PLATEAU_PATIENCE
        if tired.any():
            halve = tired & (self.host_rates / 2 > MIN_RATE_CHANGE)
            if halve.any():
                self.host_rates = np.where(halve, self.host_rates / 2, self.host_rates)
                rates = torch.as_tensor(self.host_rates, dtype=self.q.dtype, device=self.q.device)
                self.rates = rates.reshape(self.rates.shape)
            self.calm = np.where(tired, 0, self.calm)

    def set_rate(self, learning_rate):
        self.rate = learning_rate
        self.host_rates = np.full(len(self.host_rates), float(learning_rate))
        self.rates.fill_(float(learning_rate))

    def rate_of(self, curve=0):
        return float(self.host_rates[curve])


class Backtracking(Update):
    """Plain gd with the rate found at every step by a backtracking line search, each curve its own: the first
    of 2·last, last, last/2, ... that lowers the objective by at least ARMIJO · rate · |grad|² (Armijo's rule).
    A curve for which no rate lowers it (its gradient at rounding level) stays where it is."""

    def __init__(self, q, objective: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(q, 1.0)
        self.objective = objective
        self.rates = torch.ones(curves(q), dtype=q.dtype, device=q.device)

    def step(self, loss, moving):
        with torch.no_grad():
            q, grad = rows(self.q), rows(self.q.grad)
            g2 = (grad * grad).sum(dim=1)
            lr = torch.clamp(2 * self.rates, max=1e6)
            pending = moving & (lr > 1e-30)
            while bool(pending.any()):
                trial = q - lr[:, None] * grad
                ok = pending & (self.objective(trial) <= loss - ARMIJO * lr * g2)
                q.copy_(torch.where(ok[:, None], trial, q))
                pending &= ~ok
                lr = torch.where(pending, lr / 2, lr)
                pending &= lr > 1e-30
            self.rates = lr

    def rate_of(self, curve=0):
        return float(self.rates[curve])


class LBFGS(Update):
    """L-BFGS, each curve with its own memory of its last LBFGS_MEMORY steps and its own backtracking (Armijo)
    line search, which starts from ``learning_rate`` times the L-BFGS direction (1 by default, as
    torch.optim.LBFGS) and halves it up to LINE_SEARCH_HALVINGS times; a first step shorter than the full one
    that lowers the loss is doubled up to it while the loss keeps falling (as torch.optim.LBFGS's strong-Wolfe
    search extrapolates), so a small rate does not cripple the method. A step must lower the loss strictly: at
    rounding level none does, and the curve is ``stalled`` (at the optimum to rounding). The pair of a step
    (its change of q and of the gradient) is stored when the next gradient is known, at the next step."""

    def __init__(self, q, learning_rate, objective: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(q, learning_rate)
        b, k = rows(q).shape
        self.objective = objective
        self.pairs_s, self.pairs_y = q.new_zeros((b, LBFGS_MEMORY, k)), q.new_zeros((b, LBFGS_MEMORY, k))
        self.rho = q.new_zeros((b, LBFGS_MEMORY))  # 0 marks an empty slot: it changes nothing below
        self.gamma = q.new_ones(b)
        self.last = None  # (q, gradient, found) of the step before
        self.stalled = torch.zeros(b, dtype=torch.bool, device=q.device)

    def step(self, loss, moving):
        with torch.no_grad():
            q, g = rows(self.q.detach()), rows(self.q.grad)
            if self.last is not None:
                self._remember(q, g)
            d, slope = self._direction(g)
            # backtracking from t = learning_rate, each curve for itself
            t = torch.full_like(loss, float(self.rate))
            pending, found = moving.clone(), torch.zeros_like(moving)
            f_found = loss.clone()
            for halvings in range(LINE_SEARCH_HALVINGS):
                f_try = self.objective(q + t[:, None] * d)
                # a strict decrease: at rounding level no step passes, and the curve has arrived
                ok = pending & torch.isfinite(f_try) & (f_try < loss + ARMIJO * t * slope) & (f_try < loss)
                found |= ok
                f_found = torch.where(ok, f_try, f_found)
                pending &= ~ok
                if halvings == 0:
                    self._grow(q, d, t, f_found, ok & (t < 1), loss, slope)
                if not bool(pending.any()):
                    break
                t = torch.where(pending, t / 2, t)
            self.stalled = moving & ~found
            self.last = (q.clone(), g.clone(), found)
            rows(self.q).copy_(torch.where(found[:, None], q + t[:, None] * d, q))

    def _grow(self, q, d, t, f_found, grow, loss, slope) -> None:
        """A rate below 1 starts the search short of the quasi-Newton step: where that first step is taken, double
        it (up to the full step, 1) for as long as the loss keeps falling. ``t`` and ``f_found`` change in place."""
        while bool(grow.any()):
            t_try = torch.where(grow, (2 * t).clamp(max=1.0), t)
            f_try = self.objective(q + t_try[:, None] * d)
            better = grow & torch.isfinite(f_try) & (f_try < f_found) & (f_try < loss + ARMIJO * t_try * slope)
            t.copy_(torch.where(better, t_try, t))
            f_found.copy_(torch.where(better, f_try, f_found))
            grow = better & (t < 1)

    def _remember(self, q, g) -> None:
        """Store the last step's pair (s, y) for the curves that took it, where its curvature sᵀy is positive."""
        q_old, g_old, found = self.last
        s_step, y_step = q - q_old, g - g_old
        sy = (s_step * y_step).sum(dim=1)
        keep = found & (sy > 1e-12 * (s_step.norm(dim=1) * y_step.norm(dim=1)).clamp_min(1e-300))
        shifted_s = torch.cat([self.pairs_s[:, 1:], s_step[:, None]], dim=1)
        shifted_y = torch.cat([self.pairs_y[:, 1:], y_step[:, None]], dim=1)
        shifted_rho = torch.cat([self.rho[:, 1:], (1 / torch.where(keep, sy, torch.ones_like(sy)))[:, None]], dim=1)
        self.pairs_s = torch.where(keep[:, None, None], shifted_s, self.pairs_s)
        self.pairs_y = torch.where(keep[:, None, None], shifted_y, self.pairs_y)
        self.rho = torch.where(keep[:, None], shifted_rho, self.rho)
        self.gamma = torch.where(keep, sy / (y_step * y_step).sum(dim=1).clamp_min(1e-300), self.gamma)

    def _direction(self, g):
        """d = -H g by the two-loop recursion over the stored pairs (newest last), and its slope gᵀd; steepest
        descent, the memory forgotten, for a curve where rounding has spoilt the history (d uphill)."""
        m = LBFGS_MEMORY
        v, alphas = g.clone(), []
        for j in reversed(range(m)):
            a = self.rho[:, j] * (self.pairs_s[:, j] * v).sum(dim=1)
            v -= a[:, None] * self.pairs_y[:, j]
            alphas.append(a)
        v *= self.gamma[:, None]
        for j in range(m):
            b = self.rho[:, j] * (self.pairs_y[:, j] * v).sum(dim=1)
            v += self.pairs_s[:, j] * (alphas[m - 1 - j] - b)[:, None]
        d = -v
        slope = (g * d).sum(dim=1)
        uphill = ~(slope < 0)
        d = torch.where(uphill[:, None], -g, d)
        slope = torch.where(uphill, -(g * g).sum(dim=1), slope)
        self.rho = torch.where(uphill[:, None], torch.zeros_like(self.rho), self.rho)
        return d, slope


def make_update(method: str, q: torch.Tensor, learning_rate, objective=None) -> Update:
    """The update of ``method`` on q (B, P); ``learning_rate="auto"`` (gd) and L-BFGS search along their step
    with ``objective`` (q (B, P) -> (B,), no gradient)."""
    if method == "gd":
        return Backtracking(q, objective) if learning_rate == "auto" else Plain(q, learning_rate)
    if method == "rmsprop":
        return RMSprop(q, learning_rate)
    if method == "lbfgs":
        return LBFGS(q, learning_rate, objective)
    return Optimizer(q, learning_rate, method)


@dataclass
class Descent:
    """One step of the batch: the objective and the gradient's norm where the step was taken (B,), and which
    curves moved (None: every one; a curve that has stopped is held where it is)."""

    step: int
    loss: torch.Tensor
    grad_norm: torch.Tensor
    moved: torch.Tensor | None


@dataclass
class Stopped:
    """Why each curve stopped: ``done`` its gradient fell below gtol times its yardstick, ``bad`` its objective
    or gradient stopped being finite (at ``loss``), ``stalled`` a line search found no lower loss (at the optimum
    to rounding), else max_steps; ``steps`` each took."""

    done: torch.Tensor
    bad: torch.Tensor
    stalled: torch.Tensor
    steps: torch.Tensor
    loss: torch.Tensor
    step: int


def descend(
    evaluate: Callable[[torch.Tensor], torch.Tensor],
    q: torch.Tensor,
    update: Update,
    *,
    max_steps: int,
    gtol: float,
    floor: float = 1.0,
) -> Generator[Descent, float | None, Stopped]:
    """The loop of every gradient method over B curves: forward, loss, backward, update, zero the gradient.

    ``evaluate(q)`` gives the objective (B,) with each curve's gradient put in ``q.grad``. A curve stops when
    its gradient falls below gtol times its first (at least ``floor``: in standardized coordinates a gradient of
    1 moves the curve by about one standard deviation of y, the yardstick of a start already at the optimum), or
    when its objective or gradient stops being finite; it is then held. Yields a Descent per step; sending a
    number sets the learning rate from the next step on (the playground's slider, a halving); returns Stopped.
    """
    b = curves(q)
    everyone = torch.ones(b, dtype=torch.bool, device=q.device)
    done, bad, stalled = (torch.zeros_like(everyone) for _ in range(3))  # which stopped, why
    quiet = True  # no curve has stopped yet: the common path, one check a step
    steps = torch.zeros(b, dtype=torch.long, device=q.device)
    together = 0  # steps every curve took, counted here while none has stopped
    limit = loss = None
    for step in range(1, max_steps + 1):
        loss = evaluate(q).detach().reshape(-1)  # forward, loss, and backward: the gradient in q.grad
        grad_norm = q.grad.norm(dim=-1).reshape(-1)
        if limit is None:
            limit = gtol * grad_norm.clamp_min(floor)
        finite = torch.isfinite(loss + grad_norm)
        held = None
        if not quiet or not bool((finite & (grad_norm > limit)).all()):
            quiet = False
            bad |= ~finite
            done |= (grad_norm <= limit) & ~bad
            held = done | bad | stalled
            if bool(held.all()):
                return Stopped(done, bad, stalled, steps + together, loss, step)
        keep = q.detach().clone() if held is not None else None
        update.step(loss, everyone if held is None else ~held)  # update
        q.grad = None  # zero the gradient
        if keep is not None:
            with torch.no_grad():
                q[held] = keep[held]
        moved = None if held is None else ~held  # None: every curve
        if update.stalled is not None and bool(update.stalled.any()):
            quiet = False
            stopping = update.stalled if moved is None else moved & update.stalled
            stalled |= stopping
            moved = (everyone if moved is None else moved) & ~stopping
        if moved is None:
            together += 1
        else:
            steps += moved.long()
        new_rate = yield Descent(step, loss, grad_norm, moved)
        if new_rate is not None:
            update.set_rate(new_rate)
    return Stopped(done, bad, stalled, steps + together, loss, max_steps)

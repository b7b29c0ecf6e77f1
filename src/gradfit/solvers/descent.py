"""The gradient methods, written once and batch-first: each method's update, and the loop that steps them.

A batch is B curves, one per row of q (B, P), each its own objective, gradient, state, rate and stopping:
``gradfit.fit`` runs this code with B = 1 (solvers.gradient wraps it with the history, the callback and its
stopping rules), ``fit_many`` with B curves (solvers.batched). The loop is the article's — forward, loss,
backward, update, zero the gradient — and the methods differ only in the update: ``gd`` is the article's own,
``q -= learning_rate * grad``; momentum, Nesterov and Adam are torch.optim's (elementwise, so rows do not mix);
RMSprop is torch.optim's update with ReduceLROnPlateau's halving of the rate, each curve its own rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import torch

PLATEAU_PATIENCE = 20  # steps without a better loss before RMSprop's rate is halved (a curve's own)
RMS_DECAY = 0.99  # torch.optim.RMSprop's alpha
RMS_EPS = 1e-8  # and its eps
MIN_RATE_CHANGE = 1e-8  # ReduceLROnPlateau's eps: a halving smaller than this is not made
ARMIJO = 1e-4  # the sufficient decrease of the backtracking line search


def torch_optimizer(name: str):
    """The update of each torch.optim method, as (q, learning_rate) -> optimizer."""
    optim = torch.optim
    return {
        "momentum": lambda q, lr: optim.SGD([q], lr=lr, momentum=0.9),
        "nesterov": lambda q, lr: optim.SGD([q], lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda q, lr: optim.Adam([q], lr=lr),
        "rmsprop": lambda q, lr: optim.RMSprop([q], lr=lr, alpha=RMS_DECAY, eps=RMS_EPS),
        # one L-BFGS iteration per step, but room for its line search to try several points
        "lbfgs": lambda q, lr: optim.LBFGS(
            [q],
            lr=lr,
            max_iter=1,
            max_eval=25,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=0,
            tolerance_change=0,
        ),
    }[name]


class Update:
    """A method's update of q (B, P) from the gradient in ``q.grad``; ``rate`` is the learning rate now."""

    def __init__(self, q: torch.Tensor, learning_rate: float):
        self.q, self.rate = q, learning_rate

    def step(self, loss: torch.Tensor) -> None:
        """Move q one step; ``loss`` (B,) is the objective where the gradient was taken."""
        raise NotImplementedError

    def set_rate(self, learning_rate: float) -> None:
        self.rate = learning_rate

    def rate_of(self, curve: int = 0) -> float:
        """The learning rate a curve steps with now (for the history)."""
        return float(self.rate)


class Plain(Update):
    """The article's update: q -= learning_rate * grad."""

    def step(self, loss):
        with torch.no_grad():
            self.q -= self.rate * self.q.grad


class Optimizer(Update):
    """One of torch.optim's updates (elementwise for momentum, Nesterov and Adam: each row its own curve)."""

    def __init__(self, q, learning_rate, name: str, evaluate: Callable | None = None):
        super().__init__(q, learning_rate)
        self.optimizer = torch_optimizer(name)(q, learning_rate)
        self.closure = None
        if name == "lbfgs":  # it evaluates the loss again along its line search: one curve only
            if q.shape[0] != 1:
                raise ValueError("torch.optim.LBFGS steps one curve (solvers.batched.lbfgs steps many)")

            def closure():
                self.optimizer.zero_grad()
                return evaluate(q).sum()

            self.closure = closure

    def step(self, loss):
        self.optimizer.step(self.closure)

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
        b = q.shape[0]
        self.square = torch.zeros_like(q, requires_grad=False)
        self.rates = torch.full((b, 1), float(learning_rate), dtype=q.dtype, device=q.device)
        self.best = torch.full((b,), math.inf, dtype=q.dtype, device=q.device)
        self.calm = torch.zeros(b, dtype=torch.long, device=q.device)

    def step(self, loss):
        with torch.no_grad():
            g = self.q.grad
            self.square.mul_(RMS_DECAY).addcmul_(g, g, value=1 - RMS_DECAY)
            self.q.addcdiv_(self.rates * g, self.square.sqrt().add_(RMS_EPS), value=-1)
            better = loss < self.best  # the loss before this step, as the scheduler is given it
            self.best = torch.where(better, loss, self.best)
            self.calm = torch.where(better, 0, self.calm + 1)
            halve = (self.calm > PLATEAU_PATIENCE) & (self.rates[:, 0] / 2 > MIN_RATE_CHANGE)
            self.rates = torch.where(halve[:, None], self.rates / 2, self.rates)
            self.calm = torch.where(self.calm > PLATEAU_PATIENCE, 0, self.calm)

    def set_rate(self, learning_rate):
        self.rate = learning_rate
        self.rates.fill_(float(learning_rate))

    def rate_of(self, curve=0):
        return float(self.rates[curve, 0])


class Backtracking(Update):
    """Plain gd with the rate found at every step by a backtracking line search, each curve its own: the first
    of 2·last, last, last/2, ... that lowers the objective by at least ARMIJO · rate · |grad|² (Armijo's rule).
    A curve for which no rate lowers it (its gradient at rounding level) stays where it is."""

    def __init__(self, q, objective: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(q, 1.0)
        self.objective = objective
        self.rates = torch.ones(q.shape[0], dtype=q.dtype, device=q.device)

    def step(self, loss):
        with torch.no_grad():
            grad = self.q.grad
            g2 = (grad * grad).sum(dim=1)
            lr = torch.clamp(2 * self.rates, max=1e6)
            pending = lr > 1e-30
            while bool(pending.any()):
                trial = self.q - lr[:, None] * grad
                ok = pending & (self.objective(trial) <= loss - ARMIJO * lr * g2)
                self.q.copy_(torch.where(ok[:, None], trial, self.q))
                pending &= ~ok
                lr = torch.where(pending, lr / 2, lr)
                pending &= lr > 1e-30
            self.rates = lr

    def rate_of(self, curve=0):
        return float(self.rates[curve])


def make_update(method: str, q: torch.Tensor, learning_rate, evaluate=None, objective=None) -> Update:
    """The update of ``method`` on q (B, P); ``learning_rate="auto"`` (gd) backtracks on ``objective``; L-BFGS
    (one curve) evaluates the loss again with ``evaluate``."""
    if method == "gd":
        return Backtracking(q, objective) if learning_rate == "auto" else Plain(q, learning_rate)
    if method == "rmsprop":
        return RMSprop(q, learning_rate)
    return Optimizer(q, learning_rate, method, evaluate)


@dataclass
class Descent:
    """One step of the batch: the objective and the gradient's norm where the step was taken (B,), and which
    curves moved (a curve that has stopped is held where it is)."""

    step: int
    loss: torch.Tensor
    grad_norm: torch.Tensor
    moved: torch.Tensor


@dataclass
class Stopped:
    """Why each curve stopped: ``done`` its gradient fell below gtol times its yardstick, ``bad`` its objective
    or gradient stopped being finite (at ``loss``), else max_steps; ``steps`` each took."""

    done: torch.Tensor
    bad: torch.Tensor
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
    b = q.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=q.device)
    bad = torch.zeros_like(done)
    steps = torch.zeros(b, dtype=torch.long, device=q.device)
    first = loss = None
    for step in range(1, max_steps + 1):
        loss = evaluate(q)  # forward, loss, and backward: the gradient in q.grad
        grad_norm = q.grad.norm(dim=1)
        first = grad_norm.clamp_min(floor) if first is None else first
        bad |= ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
        done |= (grad_norm <= gtol * first) & ~bad
        held = done | bad
        if bool(held.all()):
            return Stopped(done, bad, steps, loss.detach(), step)
        keep = q.detach().clone() if bool(held.any()) else None
        update.step(loss.detach())  # update
        q.grad = None  # zero the gradient
        if keep is not None:
            with torch.no_grad():
                q[held] = keep[held]
        steps += (~held).long()
        new_rate = yield Descent(step, loss.detach(), grad_norm, ~held)
        if new_rate is not None:
            update.set_rate(new_rate)
    return Stopped(done, bad, steps, loss if loss is None else loss.detach(), max_steps)

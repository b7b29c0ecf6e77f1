"""Gradient methods for one fit: the seed article's loop as it writes it, and gradfit.fit's gradient methods.

``gradient_descent`` is the article's ``step()`` loop, kept as the article writes it (the demo's numbers).
``first_order`` runs solvers.descent — the one loop and update of each method, batch-first, which fit_many
runs for B curves — on a batch of one curve, in the coordinates of a ``Frame``, and wraps it with what a
single fit adds: the history, the callback, the divergence error and the stopping rules (ftol and xtol
held for PATIENCE steps, a rate too large that swings, plain gd's default rate halved on a rise).
"""

from __future__ import annotations

import math
from typing import Callable, Generator

import torch

from ..errors import FitError
from ..history import History, StepRecord
from ..losses import mse
from ..models import Model, Polynomial
from ..options import positive_finite, positive_int
from .descent import descend, make_update
from .problem import Outcome, Problem, Tolerances, run_steps

STUCK = 1e-3  # a gradient still above this fraction of its start means "stopped", not "converged"
PATIENCE = 5  # ftol and xtol must both hold this many steps running (momentum pauses at turning points)
RISE = 1e-10  # a loss higher by more than this (relative) than the step before's rose: not rounding
SWING = 100  # steps without a lower loss, the gradient not shrinking: the steps swing across a valley
FIXED_RATE = ("gd", "momentum", "nesterov")  # the methods whose rate alone decides whether they swing


def gradient_descent(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    params: torch.Tensor,
    *,
    learning_rate: float,
    steps: int,
    history: History | None = None,
    callback: Callable[[StepRecord], None] | None = None,
) -> tuple[torch.Tensor, History]:
    """The seed article's loop: ``steps`` steps of ``params -= learning_rate * grad`` on the mean squared error.

    The library never prints: ``callback`` sees each step. Raises ``FitError`` when the loss or the parameters stop
    being finite; the error's ``history`` holds every finite step.

    Args:
        model: a ``gradfit.Model`` (``gradfit.quadratic()`` for the article).
        x: the points' x, a tensor.
        y: the points' y, a tensor.
        params: the starting parameters, a tensor (P,).
        learning_rate: the step's multiplier of the gradient (the article's 1e-4).
        steps: how many steps to take.
        history: the ``History`` of an earlier call, to continue it (the article runs two rounds of 10 steps).
        callback: called with each step's ``StepRecord``.

    Returns:
        tuple: the final parameters (detached) and the ``History``.
    """
    learning_rate = positive_finite(learning_rate, "learning_rate")
    steps = positive_int(steps, "steps")
    params = params.detach().clone().requires_grad_()
    if history is None:
        history = History(model.param_names, params.tolist())
    if isinstance(model, Polynomial) and callback is None:
        return _polynomial_steps(model, x, y, params.detach(), learning_rate, steps, history)

    for step in range(history.last_step + 1, history.last_step + steps + 1):
        preds = model(x, params)  # forward
        loss = mse(preds, y)  # how wrong we are
        loss.backward()  # d loss / d params, by autograd
        with torch.no_grad():
            params -= learning_rate * params.grad  # step downhill
        grad = params.grad
        params.grad = None  # zero the gradient, or the next backward adds to it

        loss_value = loss.item()
        record = StepRecord(
            step=step,
            loss=loss_value,
            rmse=loss_value**0.5,  # as the article prints it: loss.item() ** 0.5
            grad_norm=grad.norm().item(),
            learning_rate=learning_rate,
            params=tuple(params.tolist()),
        )
        _check_finite(record, history)
        history.append(record)
        if callback is not None:
            callback(record)
    return params.detach(), history


def _polynomial_steps(model: Polynomial, x, y, params, learning_rate: float, steps: int, history: History):
    """The same steps for a polynomial, fused: its gradient written out, and no reading back per step.

    The gradient is computed with exactly the operations autograd performs for the loop above
    (mean's backward, then the square's, then each term's product summed), so the numbers are
    the same bit for bit, at about half the time per step. The history is read back once, at the
    end; a step that overflowed is found there and reported as the loop above would.
    """
    n = x.shape[0]
    terms = [x**k if k > 1 else x if k == 1 else None for k in model.powers()]  # what each coefficient multiplies
    mean_grad = torch.ones((), dtype=y.dtype, device=y.device).expand(n) / n  # the backward of mean()
    losses, grads, after = [], [], []
    with torch.inference_mode():  # no autograd bookkeeping on any operation: ~35% less time per step
        for _ in range(steps):
            preds = None
            for p, t in zip(params.unbind(), terms):  # forward, term by term as Polynomial.forward adds them
                term = p if t is None else p * t
                preds = term if preds is None else preds + term
            diff = (preds if model.degree > 0 else preds.expand_as(y)) - y  # a constant is spread over the points
            loss = (diff**2).mean()
            d = mean_grad * (2.0 * diff)  # d loss / d preds, as autograd computes it
            grad = torch.stack([(d * t).sum() if t is not None else d.sum() for t in terms])
            params = params - learning_rate * grad  # step downhill
            losses.append(loss)
            grads.append(grad)
            after.append(params)
        loss_values = torch.stack(losses).tolist()
        grad_norms = torch.stack(grads).norm(dim=1).tolist()
        param_values = torch.stack(after).tolist()
    params = params.clone()  # a normal tensor again (inference tensors cannot enter autograd later)
    first = history.last_step + 1
    for i, (loss_value, norm, values) in enumerate(zip(loss_values, grad_norms, param_values)):
        record = StepRecord(first + i, loss_value, loss_value**0.5, norm, learning_rate, tuple(values))
        _check_finite(record, history)
        history.append(record)
    return params, history


# --- The same loop for gradfit.fit ---------------------------------------------------


class Frame:
    """The coordinates a gradient method walks in: ``params = origin + T @ q``, loss / loss_unit.

    ``standardized`` picks T from the Jacobian's singular value decomposition at the
    start, J = U S Vᵀ: T = scale · V S⁻¹ · sqrt(N/2). In q the loss curves equally
    in every direction (exactly, for a model linear in its parameters: for a
    polynomial this is fitting in standardized x), and dividing by the variance
    of y makes q unitless, so one learning rate suits every data set. The history
    is always kept in the user's parameters and units.
    """

    def __init__(self, problem: Problem, origin: torch.Tensor, transform: torch.Tensor | None, loss_unit: float):
        self.problem, self.origin, self.transform, self.loss_unit = problem, origin, transform, loss_unit

    @classmethod
    def identity(cls, problem: Problem, p0: torch.Tensor) -> "Frame":
        return cls(problem, p0, None, 1.0)

    @classmethod
    def standardized(cls, problem: Problem, p0: torch.Tensor) -> "Frame":
        jac, _ = problem.linearize(p0)  # J, or R of J = QR for streamed data: the same s and V
        if not bool(torch.isfinite(jac).all()):
            return cls.identity(problem, p0)
        _, s, vh = torch.linalg.svd(jac, full_matrices=False)
        if s.numel() == 0 or s[0] <= 0:
            return cls.identity(problem, p0)
        s = s.clamp_min(s[0] * 1e-8)  # a direction the data cannot see at p0: don't blow it up
        std = problem.y_std()
        scale = std if std > 0 else 1.0
        transform = scale * vh.T / s * math.sqrt(problem.n_points / 2)
        return cls(problem, p0, transform, scale**2)

    def params(self, q: torch.Tensor) -> torch.Tensor:
        return q if self.transform is None else self.origin + self.transform @ q

    def start(self) -> torch.Tensor:
        return self.origin.clone() if self.transform is None else torch.zeros_like(self.origin)

    def objective(self, q: torch.Tensor) -> torch.Tensor:
        return self.problem.loss(self.params(q)) / self.loss_unit

    def evaluate(self, q: torch.Tensor) -> torch.Tensor:
        """The objective at q, with its gradient put in q.grad (forward, loss, backward)."""
        if not getattr(self.problem, "streamed", False):
            loss = self.objective(q)
            loss.backward()
            return loss
        # data streamed by batches: the problem sums the loss and its gradient over them
        with torch.no_grad():
            value, grad = self.problem.loss_and_grad(self.params(q))
            q.grad = (grad if self.transform is None else self.transform.T @ grad) / self.loss_unit
        return torch.tensor(value / self.loss_unit, dtype=q.dtype)

    def objectives(self, q: torch.Tensor) -> torch.Tensor:
        """The objective at each row of q (B, P), without its gradient (a line search's trials)."""
        return torch.stack([self.objective(row) for row in q])


AUTO_CANDIDATES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4)
PROBE_STEPS = 30


def first_order(
    problem: Problem,
    p0: torch.Tensor,
    *,
    method: str,
    learning_rate,
    max_steps: int,
    tolerances: Tolerances,
    scale: bool,
    callback: Callable[[StepRecord], None] | None = None,
    default_rate: bool = False,
) -> Outcome:
    """Fit by a gradient method ('gd', 'momentum', 'nesterov', 'adam', 'rmsprop', 'lbfgs').

    A rate too large for the problem makes gd, momentum and nesterov swing across the valley:
    the rate the user gave is kept, and the fit stops after SWING steps without a lower loss while
    the gradient does not shrink, saying the rate is too large; plain gd's own default rate
    (``default_rate``) is halved instead whenever a step raises the loss, which is safe for any model.

    ``learning_rate="auto"``: for gd, a backtracking line search at every step
    (start from twice the last rate, halve until the loss falls by at least 1e-4
    times the rate times the squared gradient: Armijo's rule); for the others, each
    rate of AUTO_CANDIDATES is tried for PROBE_STEPS steps and the one that ends
    lowest is used.
    """
    frame = Frame.standardized(problem, p0) if scale else Frame.identity(problem, p0)
    notes = []
    if learning_rate == "auto" and method not in ("gd",):
        learning_rate = _probe(frame, method, problem, p0)
        notes.append(f"learning rate {learning_rate:g} chosen by a {PROBE_STEPS}-step probe")
    guard = rate_guard(method, learning_rate, default_rate)
    return run_steps(
        descent_steps(frame, problem, p0, method, learning_rate, max_steps, tolerances, notes, guard), callback
    )


def rate_guard(method: str, learning_rate, default_rate: bool) -> str | None:
    """What descent_steps does about a rate too large (see first_order): "halve" the method's own default
    rate, "stop" on a rate the user gave, None where the method adapts its rate itself."""
    if method not in FIXED_RATE or learning_rate == "auto":
        return None
    if default_rate:  # momentum's loss rises and falls by design: only plain gd's rate is halved on a rise
        return "halve" if method == "gd" else None
    return "stop"


def _probe(frame: Frame, method: str, problem: Problem, p0: torch.Tensor) -> float:
    best, best_loss = AUTO_CANDIDATES[-1], math.inf
    quiet = Tolerances(0.0, 0.0, 0.0)
    for lr in AUTO_CANDIDATES:
        try:
            out = _descend(frame, problem, p0, method, lr, PROBE_STEPS, quiet, None, [])
        except FitError:
            continue
        if out.history and out.history[-1].loss < best_loss:
            best, best_loss = lr, out.history[-1].loss
    return best


def _descend(frame, problem, p0, method, learning_rate, max_steps, tol, callback, notes) -> Outcome:
    return run_steps(descent_steps(frame, problem, p0, method, learning_rate, max_steps, tol, notes), callback)


def descent_steps(
    frame: Frame,
    problem: Problem,
    p0: torch.Tensor,
    method: str,
    learning_rate,
    max_steps: int,
    tol: Tolerances,
    notes: list[str],
    guard: str | None = None,
) -> Generator[StepRecord, float | None, Outcome]:
    """The gradient method's loop, one step per ``yield``; returns the Outcome (see ``run_steps``).

    Sending a number into the generator sets the learning rate from the next step on
    (the playground's slider). Raises FitError when a step leaves the finite numbers.
    ``guard`` against a rate too large (see first_order): "halve" it when a step raises the loss,
    "stop" when the steps swing, None (the playground: watching it swing is the lesson).
    """
    q = frame.start().requires_grad_()  # one curve: solvers.descent's batch of one
    history = History(problem.user_names, problem.describe(p0))
    backtrack = learning_rate == "auto"
    update = make_update(method, q, learning_rate, frame.objectives)
    # In standardized coordinates a gradient of 1 moves the curve by about one std of y: a start already at the
    # optimum (tiny first gradient) is measured against that, not itself (descend's gtol, and STUCK below)
    floor = 1.0 if frame.transform is not None else 0.0
    steps = descend(frame.evaluate, q, update, max_steps=max_steps, gtol=tol.gtol, floor=floor)

    calm, reason = 0, None
    best_loss, best_step, swing_grad = math.inf, 0, math.inf  # the lowest loss yet, and the gradient then
    first_grad = None  # the yardstick of "the gradient is small"
    halved = None  # what the "halve" guard did, for the notes
    p_previous = p0  # the user's parameters before the current step
    new_rate, lr = None, update.rate_of()
    while True:
        try:
            taken = steps.send(new_rate)
        except StopIteration as stop:
            stopped = stop.value
            if bool(stopped.bad[0]):
                loss_value = float(stopped.loss[0]) * frame.loss_unit
                raise FitError(_diverged(stopped.step, loss_value, update.rate_of()), history=history) from None
            if bool(stopped.done[0]):
                reason = f"the gradient fell below gtol={tol.gtol:g} times its starting size"
            elif bool(stopped.stalled[0]):
                reason = "no step along the L-BFGS direction lowers the loss any more: the optimum to rounding"
            break
        if taken.moved is not None and not bool(taken.moved[0]):  # a line search found no lower loss: stops next
            new_rate = None
            continue
        step, grad_norm = taken.step, taken.grad_norm.item()
        if first_grad is None:
            first_grad = max(grad_norm, floor)
        lr = update.rate_of()
        loss_value = taken.loss.item() * frame.loss_unit
        params = frame.params(q.detach())
        record = StepRecord(step, loss_value, loss_value**0.5, grad_norm, lr, problem.describe(params))
        _check_finite(record, history)
        history.append(record)
        new_rate = yield record  # the playground may send a new learning rate between steps
        if new_rate is not None:
            if backtrack:
                new_rate = None
            else:
                lr = new_rate

        previous = history[-2].loss if len(history) > 1 else math.inf
        if guard == "halve" and loss_value > previous * (1 + RISE):  # the step before overshot: rate too large
            lr = new_rate = lr / 2
            halved = f"learning rate halved to {lr:g} where a step raised the loss (last at step {step})"
        if loss_value < best_loss:
            best_loss, best_step, swing_grad = loss_value, step, grad_norm
        elif (
            guard == "stop"
            and step - best_step >= SWING
            and grad_norm > 0.5 * swing_grad
            and grad_norm > STUCK * first_grad
        ):
            reason = (
                f"the RMSE has not gone below {best_loss**0.5:.6g} for {SWING} steps while the gradient does "
                f"not shrink: the steps swing across the valley, learning_rate={lr:g} is too large"
            )
            return Outcome(params, history, False, reason, lr, notes)
        p_before, p_previous = p_previous, params
        small_loss_change = abs(previous - loss_value) <= tol.ftol * loss_value
        small_step = bool(((params - p_before).abs() <= tol.xtol * (p_before.abs() + tol.xtol)).all())
        calm = calm + 1 if (small_loss_change and small_step) else 0  # a 2-cycle keeps the loss, not the step
        if loss_value == 0:
            reason = "the loss reached zero: the model fits the data exactly"
            break
        if calm >= PATIENCE:
            if grad_norm > STUCK * first_grad:  # not a minimum: the optimizer cannot make progress
                reason = (
                    f"the optimizer stopped moving while the gradient is still {grad_norm / first_grad:.2g} "
                    "of its starting size (stuck, not converged)"
                )
                return Outcome(params, history, False, reason, lr, notes)
            reason = (
                f"the loss and parameters stopped changing (ftol={tol.ftol:g}, xtol={tol.xtol:g}, "
                f"{PATIENCE} steps running)"
            )
            break
    converged = reason is not None
    if not converged:
        reason = f"reached max_steps={max_steps} before converging"
    if halved:
        notes.append(halved)
    params = frame.params(q.detach())
    return Outcome(params, history, converged, reason, lr if not backtrack else math.nan, notes)


def _check_finite(record: StepRecord, history: History) -> None:
    if not (math.isfinite(record.loss) and all(map(math.isfinite, record.params))):
        raise FitError(_diverged(record.step, record.loss, record.learning_rate), history=history)


def _diverged(step: int, loss: float, learning_rate: float) -> str:
    what = f"Loss became {loss}" if not math.isfinite(loss) else "The parameters became non-finite"
    return (
        f"{what} at step {step} (learning_rate={learning_rate:g}): gradient descent diverged. "
        f"Try a smaller learning rate, e.g. {learning_rate / 10:g}."
    )

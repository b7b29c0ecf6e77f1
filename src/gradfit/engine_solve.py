"""The solve of one fit: Levenberg–Marquardt with its restarts, ``auto``'s choice, and the finish on bounds
(a parameter the loss pushes against a bound tried on it)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .options import all_finite
from .history import History
from .params import (
    Constrained,
)
from .solvers import Outcome, Problem, levenberg_marquardt
from .solvers.lm import lm_steps
from .uncertainty import rank_threshold


NEAR_BOUND = 1e-3  # relative: a parameter this close to a bound that the loss pushes it against is tried on it


def finish_on_bounds(
    problem: Problem, outcome: Outcome, bounds, fixed, max_steps: int, tolerances, callback
) -> Outcome:
    """An optimum on a bound, found as an active set: LM through the bounds' change of variables crawls
    toward it (the transform is flat there), so a parameter near its bound that the loss pushes against
    it is held on the bound and the others are fitted again (a few steps); kept when the loss is no
    higher and, on the bound, the loss still pushes outward (the optimality condition of a bound)."""
    base, ties = problem.model.base, problem.model.ties
    with torch.no_grad():
        user = problem.model.to_user(outcome.params.detach())
    names = base.param_names
    onto = {}
    for name, (lower, upper) in bounds.items():
        i, v = names.index(name), float(user[names.index(name)])
        room = NEAR_BOUND * (upper - lower if math.isfinite(upper - lower) else max(abs(v), 1.0))
        if math.isfinite(lower) and v - lower <= room:
            onto[name] = (i, lower, 1.0)  # the loss must rise as the parameter rises from its lower bound
        elif math.isfinite(upper) and upper - v <= room:
            onto[name] = (i, upper, -1.0)
    if not onto:
        return outcome
    held = user.clone()
    for i, value, _ in onto.values():
        held[i] = value
    # the loss by the parameters not fixed or tied (the ties put back from the held values)
    view = Constrained(base, {}, fixed, ties)
    held = view.to_user(held[view.free_index]).detach()
    plain = problem.like(base)
    q = held[view.free_index].clone().requires_grad_()
    problem.like(view).loss(q).backward()
    slope = dict(zip(view.param_names, q.grad.tolist()))
    onto = {n: v for n, v in onto.items() if v[2] * slope[n] > 0}  # pushed against the bound
    if not onto:
        return outcome
    rest = {n: b for n, b in bounds.items() if n not in onto}
    on_bound = Constrained(base, rest, {**fixed, **{n: v[1] for n, v in onto.items()}}, ties)
    sub = problem.like(on_bound)
    finish = levenberg_marquardt(sub, on_bound.to_free(held), max_steps=max_steps, tolerances=tolerances)
    with torch.no_grad():
        user_after = on_bound.to_user(finish.params.detach())
        before, after = float(problem.loss(outcome.params)), float(plain.loss(user_after))
    if not after <= before * (1 + 1e-12):
        return outcome
    history = outcome.history
    for record in finish.history:  # the finishing steps continue the run's numbering
        record = dataclasses.replace(record, step=len(history) + 1)
        history.append(record)
        if callback is not None:
            callback(record)
    held_note = (
        f"{', '.join(onto)} held on {'its bound' if len(onto) == 1 else 'their bounds'}, where the loss "
        "pushes against it, and the rest fitted again"
    )
    return Outcome(
        problem.model.to_free(user_after),
        history,
        finish.converged,
        finish.reason,
        outcome.learning_rate,
        [*outcome.notes, held_note],
    )


RESTART_FACTORS = (10.0, 0.1, 100.0, 0.01)


def run_lm(problem: Problem, start: torch.Tensor, max_steps: int, tolerances, callback, bounds, fixed) -> Outcome:
    """Levenberg–Marquardt; with bounds, a look every BOUND_CHECK steps and at the end for an optimum on a bound
    (see finish_on_bounds), so that the crawl toward it through the change of variables is cut short."""
    if not bounds:
        return levenberg_marquardt(problem, start, max_steps=max_steps, tolerances=tolerances, callback=callback)
    steps = lm_steps(problem, start, max_steps=max_steps, tolerances=tolerances)
    seen = History(problem.user_names, problem.describe(start))
    while True:
        try:
            record = next(steps)
        except StopIteration as end:
            return finish_on_bounds(problem, end.value, bounds, fixed, max_steps, tolerances, callback)
        if callback is not None:
            callback(record)
        seen.append(record)
        if len(seen) % BOUND_CHECK == 0:  # a look, while LM goes on
            user = torch.tensor(record.params, dtype=start.dtype, device=start.device)
            now = Outcome(problem.model.to_free(user), seen, False, "", math.nan, [])
            finished = finish_on_bounds(problem, now, bounds, fixed, max_steps, tolerances, callback)
            if finished is not now:
                steps.close()
                return finished


BOUND_CHECK = 20  # LM steps between the looks of a fit with bounds for an optimum on one


def run_auto(
    problem: Problem, start: torch.Tensor, max_steps: int, tolerances, callback, bounds=None, fixed=None
) -> Outcome:
    """Levenberg–Marquardt, restarted from rescaled starts when it ends where the data pin nothing down.

    From a poor start LM can slide to a degenerate point (say an exponential rate
    running off to infinity, leaving a flat line) where some parameter no longer
    changes the curve. Then the fit is tried again from p0 with all, then each,
    parameter multiplied by 10, 0.1, 100 and 0.01, and the best full-rank result
    is kept.
    """

    def run(p):
        return run_lm(problem, p, max_steps, tolerances, callback, bounds, fixed or {})

    outcome = run(start)
    k = len(start)
    if jacobian_rank(problem, outcome.params) == k:
        return outcome
    first_loss = outcome.history[-1].loss if len(outcome.history) else math.inf
    best, best_loss = None, math.inf
    scalings = [torch.full_like(start, f) for f in RESTART_FACTORS]
    scalings += (
        [
            torch.ones_like(start).index_fill(0, torch.tensor([i], device=start.device), f)
            for f in RESTART_FACTORS
            for i in range(k)
        ]
        if k > 1
        else []
    )
    for scaling in scalings:
        trial_start = start * scaling
        with torch.no_grad():
            if not all_finite(problem.residuals(trial_start)):
                continue
        trial = run(trial_start)
        loss = float(problem.loss(trial.params))
        if trial.converged and loss < best_loss and loss < first_loss and jacobian_rank(problem, trial.params) == k:
            best, best_loss = trial, loss
            factors = ", ".join(f"{v:g}" for v in scaling.tolist())
            best.notes.append(
                f"restarted from p0 x ({factors}): the first run ended where the data did not determine every parameter"
            )
            break
    return best or outcome


def jacobian_rank(problem: Problem, p: torch.Tensor) -> int:
    jac = problem.jacobian(p).double().cpu().numpy()
    if not np.isfinite(jac).all():
        return 0
    s = np.linalg.svd(small_singular(jac), compute_uv=False)
    return int((s > rank_threshold(s, jac.shape)).sum()) if len(s) and s[0] > 0 else 0


def small_singular(jac: np.ndarray) -> np.ndarray:
    """A matrix with J's singular values and right singular vectors, but at most (P, P): R of J = QR.

    For many points this makes the SVD cheap; R keeps J's conditioning (unlike JᵀJ, which squares it).
    """
    return np.linalg.qr(jac, mode="r") if jac.shape[0] > max(4 * jac.shape[1], 64) else jac

"""Fitting data larger than memory: record batches streamed from Parquet with ``pyarrow.dataset``.

``fit_file`` reads a Parquet file, a folder or a glob of them, or a pyarrow Dataset.
When holding the data and the solver's work arrays would pass the memory budget
(which bounds the whole process, measured from what it already holds), the data
are never held: every evaluation is one pass over record batches.

- Full-batch methods (auto, lm, linear, gd and the other gradient methods) add up
  exact sums over the batches in every iteration: the loss, the gradient, and for
  Levenberg–Marquardt the R factor of J = QR and Qᵀr (a tall-skinny QR folded batch
  by batch, which has all that JᵀJ and Jᵀr have without squaring J's condition
  number). So the answer is the in-memory fit's, to rounding.
- Mini-batch methods (``batch_size=``: sgd, momentum, nesterov, adam, rmsprop) take
  one step per batch, ``epochs`` times over the data, visiting the row groups in a
  shuffled order (seeded) and the rows of each in a shuffled order.

A Ctrl-C stops a streamed fit after the current batch, as ``Interrupted`` with the
history so far.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from . import options
from .options import check_device, positive_int
from .errors import Interrupted, OptionError
from .history import History, StepRecord
from .losses import check_loss
from .models import Model
from .params import (
    Constrained,
    check_bounds,
    check_fixed,
    check_ties,
    start_values,
)
from .solvers import Problem, get_method
from .solvers.descent import torch_optimizer
from .solvers.gradient import Frame, descent_steps, rate_guard
from .solvers.lm import lm_steps
from .solvers.problem import Outcome, run_steps
from .stream_data import Reservoir, Source, is_parquet_data, is_source, open_dataset  # (also gradfit.stream's)
from .stream_problem import SAMPLE_ROWS, BatchInterrupt, StopFlag, StreamProblem
from .stream_result import streamed_result


DEFAULT_BUDGET = 10**9  # bytes: 1 GB for the whole process
MARGIN = 192 << 20  # bytes kept free under the budget: allocator slack, pyarrow's buffers, the result
MIN_BATCH = 1024  # rows: below this a budget is too tight to stream usefully
MAX_BATCH = 1 << 18  # rows: more per batch buys nothing and costs memory
MINIBATCH = {
    "sgd": "gd",
    "gd": "gd",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "adam": "adam",
    "rmsprop": "rmsprop",
}  # mini-batch method -> the update it takes on each batch


MINIBATCH_RATES = {"gd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adam": 0.003, "rmsprop": 0.003}


def process_memory() -> int:
    """Bytes this process holds now (resident set)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far is an upper bound
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def row_bytes(n_columns: int, n_params: int, *, streamed: bool) -> int:
    """Bytes per row a fit holds at its peak: the data and its copies, the Jacobian, temporaries.

    Measured rather than derived: the columns as Arrow, numpy and torch arrays; the
    Jacobian and forward-mode autograd's tangents; residuals, predictions and their
    temporaries. Deliberately generous: the budget is a promise.
    """
    data = 8 * n_columns * 3
    work = 8 * (6 * n_params + 12)
    # x4 when streamed: Parquet pages decoded beside the batch, and the allocator's slack between passes
    # (peak RSS measured against batch size: about 1 KB per row of a quadratic on two columns)
    return 4 * (data + work) if streamed else 2 * (data + work) + 8 * n_columns * 2


@dataclass(frozen=True)
class Plan:
    """How a file will be fitted: whole in memory, or streamed in batches of ``batch_rows``."""

    streamed: bool
    batch_rows: int
    reason: str


def warm_up(model: Model) -> None:
    """Take one Jacobian and one QR on a few made-up rows, so that what the process holds counts torch's code.

    The first use of forward-mode autograd and of LAPACK maps about 100 MB of torch's
    libraries into memory (measured); a budget measured before that would be overrun.
    """
    k = len(model.variables) if getattr(model, "variables", None) else 1
    x = torch.linspace(0.1, 1.0, 64, dtype=torch.float64)
    x = x if k == 1 else x[:, None].repeat(1, k)
    try:
        jac = Problem(model, x, torch.ones(64, dtype=torch.float64)).jacobian(
            torch.ones(model.n_params, dtype=torch.float64)
        )
        torch.linalg.qr(torch.cat([jac, jac]))
    except Exception:  # a model that cannot run on made-up rows: the real fit will say what is wrong
        pass


def plan(n_rows: int, n_columns: int, n_params: int, budget: int, batch_rows: int | None = None) -> Plan:
    """In memory when the data and the work arrays fit under ``budget`` (with what the process holds), else batches."""
    held = process_memory()
    available = budget - held - MARGIN
    whole = n_rows * row_bytes(n_columns, n_params, streamed=False)
    # data no larger than the smallest batch are never streamed, nor refused: a long-lived process (a notebook,
    # a test run) may already hold more than the default budget, and a few rows change nothing
    if batch_rows is None and (whole <= available or n_rows <= MIN_BATCH):
        return Plan(False, n_rows, f"{n_rows:,} rows fit in memory ({whole / 1e6:.0f} MB of work arrays)")
    per_row = row_bytes(n_columns, n_params, streamed=True)
    rows = batch_rows or min(MAX_BATCH, available // per_row if available > 0 else 0)
    if batch_rows is None and rows < MIN_BATCH:
        raise OptionError(
            f"The memory budget of {budget / 1e6:.0f} MB leaves too little room: this process "
            f"already holds {held / 1e6:.0f} MB. Give a larger --memory-budget."
        )
    return Plan(True, int(rows), f"streamed in batches of {int(rows):,} rows (memory budget {budget / 1e6:.0f} MB)")


@contextmanager
def _ctrl_c_finishes_the_batch():
    """While streaming, a Ctrl-C asks to stop after the current batch (a second one stops at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield StopFlag()
        return
    flag = StopFlag()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def minibatch_steps(
    problem: StreamProblem, p0: torch.Tensor, *, method: str, learning_rate: float, epochs: int, seed: int, scale: bool
):
    """One step per batch, ``epochs`` times over the data in a shuffled order: a generator like the solvers'.

    The records' ``loss`` is the batch's; ``epoch`` says which pass over the data it belongs to.
    """
    update = MINIBATCH[method]
    frame = Frame.standardized(problem, p0) if scale else Frame.identity(problem, p0)
    q = frame.start().requires_grad_()
    optimizer = torch.optim.SGD([q], lr=learning_rate) if update == "gd" else torch_optimizer(update)(q, learning_rate)
    history = History(problem.user_names, problem.describe(p0))
    shuffle = np.random.default_rng(seed)
    step = 0
    for epoch in range(1, epochs + 1):
        for x, y, sigma in problem.batches(shuffle):
            part = problem.part(x, y, sigma)
            optimizer.zero_grad()
            r = part.residuals(frame.params(q))
            loss = (r * r).mean() / frame.loss_unit
            loss.backward()
            grad_norm = q.grad.norm().item()
            optimizer.step()
            step += 1
            value = loss.item() * frame.loss_unit
            record = StepRecord(
                step,
                value,
                math.sqrt(value),
                grad_norm,
                learning_rate,
                problem.describe(frame.params(q.detach())),
                epoch=epoch,
            )
            if not (math.isfinite(value) and all(map(math.isfinite, record.params))):
                from .errors import FitError

                raise FitError(
                    f"The loss became {value} at step {step} (epoch {epoch}, learning_rate="
                    f"{learning_rate:g}): the descent diverged. Try a smaller learning rate, e.g. "
                    f"{learning_rate / 10:g}.",
                    history=history,
                )
            history.append(record)
            yield record
    return Outcome(
        frame.params(q.detach()),
        history,
        False,
        f"ran the {epochs} epoch{'s' if epochs > 1 else ''} asked for ({step} mini-batch steps; "
        "mini-batch methods stop by epochs, not by a tolerance)",
        learning_rate,
    )


def fit_source(
    model: Model,
    data: "Source",
    how: Plan,
    *,
    p0,
    method: str,
    learning_rate,
    max_steps,
    tol,
    absolute_sigma: bool,
    scale: bool,
    batch_size,
    epochs,
    seed: int,
    sample_rows: int,
    callback,
    on_batch,
    fit_options: dict,
):
    """The streamed fit of ``data`` as ``how`` plans it (gradfit.engine.fit_file decides to stream): Ctrl-C
    finishes the current batch and stops with the history so far."""
    robust = check_loss(fit_options.get("loss", "linear"), fit_options.get("f_scale", 1.0))
    robust = None if robust[0] == "linear" else robust
    if robust and batch_size is not None:
        raise OptionError("Mini-batches do not take a robust loss yet; use a full-batch method (lm, auto, gd).")
    if fit_options.get("starts") is not None:
        raise OptionError("`starts` needs the data in memory: a streamed fit does not take it yet.")
    unknown = sorted(set(fit_options) - {"bounds", "fixed", "variables", "dtype", "device", "tie", "loss", "f_scale"})
    if unknown:  # (a streamed fit runs in float64 on the CPU, in the model's own variables)
        raise OptionError(f"Unknown option {unknown[0]!r}.")
    bounds = check_bounds(fit_options.get("bounds"), model.param_names)
    fixed = check_fixed(fit_options.get("fixed"), model.param_names, bounds)
    ties = check_ties(fit_options.get("tie"), model.param_names, bounds, fixed)
    if (bounds or fixed or ties) and batch_size is not None:
        raise OptionError(
            "Mini-batches do not take bounds, fixed or tied parameters yet; use a full-batch method (lm, auto, gd)."
        )
    asked = precision_asked(fit_options.get("dtype"), fit_options.get("device"))
    with _ctrl_c_finishes_the_batch() as stop:
        problem = None
        try:
            problem = StreamProblem(
                model,
                data,
                how.batch_rows,
                on_batch=on_batch,
                stop=stop,
                sample_rows=sample_rows,
                seed=seed,
                robust=robust,
            )
            return fit_streamed(
                model,
                problem,
                p0=p0,
                method=method,
                learning_rate=learning_rate,
                max_steps=max_steps,
                tol=tol,
                absolute_sigma=absolute_sigma,
                scale=scale,
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                callback=callback,
                how=how,
                bounds=bounds,
                fixed=fixed,
                ties=ties,
                notes=asked,
            )
        except BatchInterrupt:
            history = getattr(problem, "history", None)
            raise Interrupted("Interrupted (Ctrl-C): stopped after the current batch.", history=history) from None


def precision_asked(dtype, device) -> list[str]:
    """What a streamed fit says of a dtype or device asked for: it folds its sums in float64 on the CPU (the
    digits LM needs from sums over millions of rows), so anything else is said, never silently dropped."""
    asked = []
    if dtype is not None and dtype != torch.float64:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise OptionError(f"`dtype` must be a torch floating dtype such as torch.float32, got {dtype!r}.")
        asked.append(f"dtype={str(dtype).replace('torch.', '')}")
    if device is not None and check_device(device).type != "cpu":
        asked.append(f"device={device!r}")
    if not asked:
        return []
    return [f"streamed in float64 on the CPU, as every streamed fit ({' and '.join(asked)} apply to data in memory)"]


def fit_streamed(
    model,
    problem: StreamProblem,
    *,
    p0,
    method,
    learning_rate,
    max_steps,
    tol,
    absolute_sigma,
    scale,
    batch_size,
    epochs,
    seed,
    callback,
    how,
    bounds=None,
    fixed=None,
    ties=None,
    notes=(),
):
    if batch_size is not None:
        if method not in MINIBATCH:
            raise OptionError(
                f"Method {method!r} takes no mini-batches. With batch_size choose one of: {', '.join(MINIBATCH)}."
            )
        epochs = 1 if epochs is None else positive_int(epochs, "epochs")
        rate = MINIBATCH_RATES[MINIBATCH[method]] if learning_rate is None else learning_rate
        rate = options.learning_rate(rate, get_method(MINIBATCH[method]), True, asked=method)
        if rate == "auto":
            raise OptionError("Mini-batch methods take a number as learning_rate, not 'auto'.")
    chosen = get_method("gd" if method == "sgd" else method)
    # streamed, a linear model's one exact solve becomes lm, whose Gauss–Newton steps land on it in a few passes
    run_method = "lm" if chosen.name in ("auto", "linear") else chosen.name
    bounds, fixed, ties = bounds or {}, fixed or {}, ties or {}
    if (bounds or fixed or ties) and method == "linear":
        raise OptionError("Method 'linear' cannot honour bounds, fixed or tied parameters; use method='lm' or 'auto'.")
    xs, ys = problem.sample()  # the start: p0, or the model's guess from the first rows
    start = start_values(model, p0, xs, ys, torch.float64, "cpu", bounds, fixed, tuple(ties))
    if bounds or fixed or ties:  # the solver walks free, unbounded parameters (gradfit.params), as in memory
        constrained = Constrained(model, bounds, fixed, ties)
        problem.use_model(constrained)
        start = constrained.to_free(start)
        if learning_rate is None and run_method == "gd":
            learning_rate = "auto"  # a bound bends the landscape: Armijo's backtracking, as gradfit.fit does
    tolerances = get_method(run_method).tolerances.replace(options.tolerances(tol))
    max_steps = chosen.max_steps if max_steps is None else positive_int(max_steps, "max_steps")

    if batch_size is not None:
        steps = minibatch_steps(
            problem, start, method=method, learning_rate=rate, epochs=epochs, seed=seed, scale=scale
        )
        ran, rate_used = f"{method} (mini-batches of {batch_size:,})", rate
    elif run_method == "lm":  # lm on the streamed R and Qᵀr
        steps = lm_steps(problem, start, max_steps=max_steps, tolerances=tolerances)
        ran, rate_used = "lm", None
    else:
        rate_used = options.learning_rate(learning_rate, get_method(run_method), scale, asked=chosen.name)
        frame = Frame.standardized(problem, start) if scale else Frame.identity(problem, start)
        guard = rate_guard(run_method, rate_used, default_rate=learning_rate is None)  # as gradfit.fit
        steps = descent_steps(frame, problem, start, run_method, rate_used, max_steps, tolerances, [], guard)
        ran = run_method
    problem.history = History(problem.user_names, problem.describe(start))  # what Ctrl-C leaves

    def record(step):
        problem.history.append(step)
        if callback is not None:
            callback(step)

    outcome = run_steps(steps, record)
    outcome.notes = [*outcome.notes, *notes]
    return streamed_result(
        model, problem, outcome, method, ran, absolute_sigma, rate_used, how.reason, bounds, fixed, ties
    )


__all__ = [
    "DEFAULT_BUDGET",
    "Plan",
    "Reservoir",
    "SAMPLE_ROWS",
    "Source",
    "StreamProblem",
    "fit_source",
    "is_parquet_data",
    "is_source",
    "open_dataset",
    "plan",
]

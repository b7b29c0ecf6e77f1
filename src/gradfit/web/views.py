"""What the playground's page draws, read from a Session (the run itself: sessions.py) as JSON-ready data: a run's
whole state, what changes with every step, the fit curve, the loss landscape over two parameters, plain gd's
stability limit, and the gradient with gd's next step."""

from __future__ import annotations

import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import torch

from ..history import StepRecord
from ..solvers import mse_curvatures

CURVE_POINTS = 200  # points of the drawn fit curve
GRID = 48  # the landscape's grid is GRID x GRID
LANDSCAPE_REACH = 1e3  # the landscape frames path points whose loss is at most this times the start's


def curve_x(session) -> np.ndarray:
    """Where the fit curve is drawn: across the data's x range."""
    return np.linspace(session.x.min(), session.x.max(), CURVE_POINTS)


def curve(session) -> list:
    """The fit curve's y at ``curve_x``, at the current parameters (None where it overflowed)."""
    grid = curve_x(session)
    with torch.no_grad():
        y = session.model(torch.as_tensor(grid), torch.tensor(session.params, dtype=torch.float64)).numpy()
    return numbers(np.broadcast_to(y, grid.shape))


def landscape(session, pair=None) -> dict | None:
    """log10 of the loss over two parameters (the others where the run is now), or None for one parameter.

    The grid frames the start, the optimum and every point of the path whose loss stayed
    within LANDSCAPE_REACH of the start's, so a run that blows up does not shrink the picture.
    """
    names = list(session.model.param_names)
    if len(names) < 2:
        return None
    pair = session.check_pair(pair) or names[:2]
    from ..plots import landscape_grid  # matplotlib's import is not needed before the first landscape

    # the loss at each point of the path: a record holds it at the parameters its step started from
    with torch.no_grad():
        now = float(session.problem.user_loss(torch.tensor(session.params, dtype=torch.float64)))
    losses = np.array([r.loss for r in session.history] + [now])
    cover = np.isfinite(losses) & (losses <= LANDSCAPE_REACH * max(session.start_loss, 1e-300))
    cover[0] = True
    view = SimpleNamespace(history=session.history, model=session.model, x=session.x, y=session.y, sigma=None, fixed={})
    include = None if session.optimum is None else [session.optimum["params"]]
    # the other parameters where the path last was inside that frame: a diverged run's last values are absurd
    held = ([session.history.init_params] + [r.params for r in session.history])[int(np.flatnonzero(cover)[-1])]
    aa, bb, loss, _, _ = landscape_grid(view, tuple(pair), GRID, include=include, cover=cover, held=held)
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.where(np.isfinite(loss) & (loss > 0), np.log10(loss), np.nan)
    return {"pair": pair, "a": numbers(aa[0]), "b": numbers(bb[:, 0]), "log10_loss": [numbers(r) for r in shown]}


def stability(session) -> str:
    """What the learning rate must stay below for plain gradient descent here, when one number says it."""
    if session.setup.method != "gd" or not session.model.is_linear:
        return ""
    if session.setup.scale:
        return (
            "Standardized, the loss curves alike in every direction: rate 1 lands on the best fit in one "
            "step, and gd diverges above 2."
        )
    curvatures = mse_curvatures(session.model, session.x)
    largest, smallest = float(curvatures[-1]), float(curvatures[0])
    if largest <= 0:
        return ""
    text = (
        f"Plain gd on these raw parameters is stable only below {2 / largest:.3g} (2 / the loss's "
        "largest curvature); above it every step overshoots more."
    )
    if smallest > 0 and largest / smallest > 100:
        text += (
            f" The valley is {largest / smallest:,.0f} times steeper across than along, so even a stable "
            "rate crawls along it: try standardizing, or momentum."
        )
    return text


def state(session, pair=None, max_records: int = 2000) -> dict:
    """Everything the page draws: data, curve, history (thinned to ``max_records``), status."""
    records = list(session.history)
    if len(records) > max_records:  # spread over the run, always with the last step
        keep = np.unique(np.linspace(0, len(records) - 1, max_records).round().astype(int))
        records = [records[i] for i in keep]
    return {
        "id": session.id,
        "setup": asdict(session.setup),
        "param_names": list(session.model.param_names),
        "model": session.model.name,
        "data": {"x": numbers(session.x), "y": numbers(session.y)},
        "curve_x": numbers(curve_x(session)),
        "start": list(session.history.init_params),
        "start_rmse": number(math.sqrt(session.start_loss)) if session.start_loss >= 0 else None,
        "optimum": session.optimum,
        "records": [record_json(r) for r in records],
        "stability": stability(session),
        "landscape": landscape(session, pair),
        **progress(session),
    }


def gradient(session) -> tuple[float, list, list | None]:
    """(loss, its gradient, plain gd's step per unit rate) at the current parameters.

    The step is what ``gd`` moves each parameter by, divided by the learning rate and negated: the gradient
    itself on raw parameters, the gradient seen through the standardized frame otherwise; None for the
    other methods, whose step depends on what came before (momentum, Adam's averages, L-BFGS's memory).
    """
    params = torch.tensor(session.params, dtype=torch.float64, requires_grad=True)
    loss = session.problem.user_loss(params)
    try:
        (grad,) = torch.autograd.grad(loss, params)
    except RuntimeError:  # a loss that no longer depends on the parameters (overflowed to a constant)
        grad = torch.full_like(params, math.nan)
    grad = grad.detach()
    direction = None
    if session.setup.method == "gd":
        direction = grad if session.descent is None else session.descent @ grad
    return float(loss.detach()), numbers(grad), None if direction is None else numbers(direction)


def progress(session) -> dict:
    """What changes with every step: where the run is, the curve now, the gradient there and gd's next step."""
    loss, slope, direction = gradient(session)
    return {
        "status": session.status,
        "message": session.message,
        "step": session.history.last_step,
        "params": list(session.params),
        "rmse": number(math.sqrt(loss)) if loss >= 0 else None,
        "curve_y": curve(session),
        "learning_rate": None if session.setup.method == "lm" else session.setup.learning_rate,
        "gradient": slope,  # d loss / d parameter at "params" (the loss: the mean squared error)
        "gd_direction": direction,  # gd's next step is -learning_rate * this (null for other methods)
    }


def record_json(r: StepRecord) -> dict:
    return {
        "step": r.step,
        "loss": number(r.loss),
        "rmse": number(r.rmse),
        "grad_norm": number(r.grad_norm),
        "learning_rate": number(r.learning_rate),
        "params": [number(v) for v in r.params],
    }


def number(v: float):
    return float(v) if math.isfinite(v) else None  # JSON has no inf or NaN


def numbers(values) -> list:
    return [number(v) for v in np.asarray(values, dtype=np.float64).tolist()]

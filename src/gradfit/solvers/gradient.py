"""Plain gradient descent: the seed article's ``step()``, run as many times as asked."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import positive_finite, positive_int
from ..errors import FitError
from ..history import History, StepRecord
from ..losses import mse
from ..models import Model


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
    """Take ``steps`` steps of ``params -= learning_rate * grad`` on the mean squared error.

    Returns the final parameters (detached) and the history. Pass the ``history``
    of an earlier call to continue it (the article runs two rounds of 10 steps).
    ``callback(record)`` is called after every step: the library never prints.
    Raises ``FitError`` when the loss or the parameters stop being finite; the
    error's ``history`` holds every finite step.
    """
    learning_rate = positive_finite(learning_rate, "learning_rate")
    steps = positive_int(steps, "steps")
    params = params.detach().clone().requires_grad_()
    if history is None:
        history = History(model.param_names, params.tolist())

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
        if not (math.isfinite(loss_value) and all(map(math.isfinite, record.params))):
            raise FitError(_diverged(step, loss_value, learning_rate), history=history)
        history.append(record)
        if callback is not None:
            callback(record)
    return params.detach(), history


def _diverged(step: int, loss: float, learning_rate: float) -> str:
    what = f"Loss became {loss}" if not math.isfinite(loss) else "The parameters became non-finite"
    return (
        f"{what} at step {step} (learning_rate={learning_rate:g}): gradient descent diverged. "
        f"Try a smaller learning rate, e.g. {learning_rate / 10:g}."
    )

"""The article's seven steps of gradient descent, in numbers, one block per step (``gradfit demo --explain``).

The article names them: initialize, predict, loss, gradient, step, repeat, stop. For each step this shows the
parameters it started from (initialize, or the last step's), the RMSE of their predictions (predict, loss), the
gradient of the mean squared error by each parameter (gradient), the learning rate times it and the parameters
it gives (step), and where the step went: its parts along the loss's curvature directions (the eigenvectors of
the Hessian 2AᵀA/N of a model linear in its parameters), from the steepest, across the valley, to the flattest,
along it. The gradient is computed here again in float64 by autograd at the step's starting parameters, not
read from the run (whose float32 numbers are the article's).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .models import Model


LABEL = 15  # the width of a line's label: the numbers line up in columns


def _number(v: float) -> str:
    return f"{v:.6g}"


def _percent(share: float) -> str:
    return f"{100 * share:.6g}%"


class Explainer:
    """Explains the steps of plain gradient descent on ``model`` over (x, y) at ``learning_rate``."""

    def __init__(self, model: Model, x, y, learning_rate: float):
        self.model, self.learning_rate = model, float(learning_rate)
        self.x = torch.as_tensor(x).detach().double()
        self.y = torch.as_tensor(y).detach().double()
        self.names = tuple(model.param_names)
        self.directions = None
        if getattr(model, "is_linear", False):
            a = model.design_matrix(self.x)
            hessian = 2 / a.shape[0] * a.T @ a
            self.curvatures, self.directions = torch.linalg.eigh(hessian)  # ascending: flattest first

    def gradient(self, params: Sequence[float]) -> tuple[float, torch.Tensor]:
        """The RMSE at ``params`` and the gradient of the mean squared error there (float64, autograd)."""
        p = torch.tensor([float(v) for v in params], dtype=torch.float64, requires_grad=True)
        loss = ((self.model(self.x, p) - self.y) ** 2).mean()
        (g,) = torch.autograd.grad(loss, p)
        return math.sqrt(float(loss.detach())), g

    def block(self, step: int, before: Sequence[float]) -> list[str]:
        """The lines that explain step ``step``, which started from ``before``."""
        rmse, g = self.gradient(before)
        update = self.learning_rate * g
        after = torch.tensor([float(v) for v in before], dtype=torch.float64) - update
        width = max(len(n) for n in self.names) + 1

        def row(label: str, values) -> str:
            cells = "  ".join(f"{n:>{width}}={_number(float(v)):<12}" for n, v in zip(self.names, values)).lstrip()
            return f"  {label:<{LABEL}}{cells}".rstrip()

        lines = [
            f"step {step}",
            row("parameters", before),
            f"  {'predict, loss':<{LABEL}}RMSE {_number(rmse)}",
            row("gradient", g),
            row("lr×gradient", update) + f"   (lr {self.learning_rate:g})",
            row("new", after),
        ]
        if self.directions is not None:
            parts = self.directions.T @ update  # the step's components along each curvature direction
            total = float(parts.norm()) or 1.0
            shares = [abs(float(v)) / total for v in parts]
            lines.append(
                f"  {'went':<{LABEL}}{_percent(shares[-1])} across the valley (the steepest direction, curvature "
                f"{float(self.curvatures[-1]):.4g}), {_percent(shares[0])} along it (the flattest, "
                f"{float(self.curvatures[0]):.4g})"
            )
        return lines

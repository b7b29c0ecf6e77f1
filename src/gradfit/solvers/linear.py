"""The exact least-squares optimum of a model that is linear in its parameters."""

from __future__ import annotations

import torch

from ..models import Model


def least_squares(model: Model, x, y) -> tuple[torch.Tensor, float]:
    """Minimise mean((model(x, p) - y)**2) exactly; returns ``(params, rmse)`` in float64.

    Solved in float64 with an SVD-based least-squares routine (LAPACK gelsd), which
    stays accurate when powers of x make the design matrix ill-conditioned. This is
    the yardstick that tells how far gradient descent still is from the best fit.
    """
    # float64: the optimum is the reference other runs are compared to.
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    a = model.design_matrix(x)
    params = torch.linalg.lstsq(a, y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    rmse = float(((a @ params - y) ** 2).mean().sqrt())
    return params, rmse

"""Loss functions: plain functions of predictions and targets."""

from __future__ import annotations

import torch


def mse(preds: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Mean squared error, written exactly as the seed article writes it."""
    return ((preds - actual) ** 2).mean()


def rmse(preds: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Root mean squared error: the error in the units of y."""
    return mse(preds, actual).sqrt()

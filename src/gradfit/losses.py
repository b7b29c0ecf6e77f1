"""Loss functions: plain functions of predictions and targets."""

from __future__ import annotations

import torch


def mse(preds: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Mean squared error, written exactly as the seed article writes it.

    Args:
        preds: the predictions.
        actual: the measured values.

    Returns:
        torch.Tensor: ``((preds - actual) ** 2).mean()``.
    """
    return ((preds - actual) ** 2).mean()


def rmse(preds: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Root mean squared error: the error in the units of y.

    Args:
        preds: the predictions.
        actual: the measured values.

    Returns:
        torch.Tensor: the square root of ``mse``.
    """
    return mse(preds, actual).sqrt()


# --- robust losses, as scipy.optimize.least_squares defines them ------------------------------------------

ROBUST = ("linear", "soft_l1", "huber", "cauchy", "arctan")
_EPS = torch.finfo(torch.float64).eps


def check_loss(loss, f_scale) -> tuple[str, float]:
    """``loss`` one of ROBUST, ``f_scale`` (the residual at which it starts to bend) a positive finite number."""
    from .errors import OptionError
    from .options import positive_finite

    if loss not in ROBUST:
        raise OptionError(f"Unknown loss {loss!r}. Choose one of: {', '.join(ROBUST)}.")
    return loss, positive_finite(f_scale, "f_scale")


def rho(loss: str, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ρ(z), ρ'(z), ρ''(z) at z = (r / f_scale)² (least_squares' definitions)."""
    one = torch.ones_like(z)
    if loss == "linear":
        return z, one, torch.zeros_like(z)
    if loss == "soft_l1":
        t = 1 + z
        return 2 * (t.sqrt() - 1), t**-0.5, -0.5 * t**-1.5
    if loss == "huber":
        small = z <= 1
        root = z.clamp_min(1).sqrt()
        return (
            torch.where(small, z, 2 * root - 1),
            torch.where(small, one, 1 / root),
            torch.where(small, torch.zeros_like(z), -0.5 / root**3),
        )
    if loss == "cauchy":
        t = 1 + z
        return torch.log1p(z), 1 / t, -1 / t**2
    t = 1 + z * z  # arctan
    return torch.arctan(z), 1 / t, -2 * z / t**2


def robust_cost(loss: str, f_scale: float, r: torch.Tensor) -> torch.Tensor:
    """Σ f_scale² ρ((r / f_scale)²): the sum of squares a robust loss puts in its place (r @ r for 'linear')."""
    return (f_scale**2 * rho(loss, (r / f_scale) ** 2)[0]).sum()


def robust_scaling(loss: str, f_scale: float, r: torch.Tensor, curvature: bool = False):
    """Factors for the residuals and for the Jacobian's rows.

    Without ``curvature``: sqrt(ρ') for both (iteratively reweighted least squares): the Gauss–Newton step on
    the rescaled problem goes down the robust cost's exact gradient (Jᵀ ρ' r) and its curvature JᵀDiag(ρ')J is
    never negative, where residuals beyond f_scale make ρ'' pull the other way — what Levenberg–Marquardt's
    steps need. With ``curvature``: least_squares' rescaling with Triggs' correction (ρ' + 2ρ''r² for the rows,
    clamped at machine epsilon), whose JᵀJ is the Gauss–Newton Hessian of the robust cost: curve_fit takes its
    covariance from that Jacobian, and so do gradfit's standard errors."""
    z = (r / f_scale) ** 2
    _, d1, d2 = rho(loss, z)
    if not curvature:
        root = d1.clamp_min(0).sqrt()
        return root, root
    rows = (d1 + 2 * (d2 / f_scale**2) * r * r).clamp_min(_EPS).sqrt()
    return d1 / rows, rows

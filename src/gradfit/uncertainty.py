"""Parameter uncertainties from the Jacobian at the solution, and the parameters the data do not determine.

One rule for every way of fitting (gradfit.fit in memory or streamed, fit_many): the covariance is
(JᵀJ)⁺ from the SVD of J, singular values at or below curve_fit's threshold counted as zero; a
parameter that a null direction of J moves is not determined by the data, and its standard error is
infinite (its variance is: the loss is flat along that direction), its correlations NaN.
"""

from __future__ import annotations

import numpy as np

# a parameter whose share of a unit null vector of J is above this is moved by that direction
NULL_COMPONENT = 1e-6


def column_scale(a):
    """Each column's length, or 1 for a column that is zero to rounding (below eps times the longest): what
    the columns are divided by before a rank is decided or a system solved (numpy or torch arrays)."""
    norms = (a * a).sum(axis=0) ** 0.5
    largest = norms.max() if len(norms) else 0.0
    return norms * (norms > EPS * largest) + 1.0 * ~(norms > EPS * largest)


EPS = float(np.finfo(np.float64).eps)


def rank_threshold(s: np.ndarray, shape) -> float:
    """Singular values at or below this are zero: curve_fit's rule, eps * max(N, P) * largest."""
    return np.finfo(float).eps * max(shape) * float(s[0]) if len(s) else 0.0


def covariance(small: np.ndarray, shape, factor: float = 1.0) -> tuple[np.ndarray, int, np.ndarray]:
    """factor * (JᵀJ)⁺, J's rank, and a mask of the parameters the data do not determine.

    ``small``: J (N, P), or a matrix with J's singular values and right singular vectors, such as R
    of J = QR; ``shape``: J's own (N, P), for the threshold. ``factor``: chi²/dof as curve_fit scales
    it (1 for absolute sigma, inf where no degrees of freedom are left).
    """
    k = small.shape[1]
    if not np.isfinite(small).all():
        return np.full((k, k), np.inf), 0, np.ones(k, dtype=bool)
    # the columns scaled to unit length (J D⁻¹): the rank is decided on their directions, not their sizes
    # (x¹⁰ and 1 differ by ten orders of magnitude on x in [-9, -3]); (JᵀJ)⁺ = D⁻¹ ((JD⁻¹)ᵀ(JD⁻¹))⁺ D⁻¹.
    # A column below eps times the largest is zero to rounding (a rate whose exp(-rate*x) underflows): left
    # as it is, so that its singular value counts as zero
    scale = column_scale(small)
    small = small / scale
    _, s, vh = np.linalg.svd(small, full_matrices=small.shape[0] < k)  # (vh (P, P) also with fewer rows)
    keep = np.zeros(k, dtype=bool)
    keep[: len(s)] = s > rank_threshold(s, shape) if len(s) and s[0] > 0 else False
    rank = int(keep.sum())
    determined = vh[keep]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # tiny singular values: inf variances
        cov = (determined.T / s[: len(s)][keep[: len(s)]] ** 2) @ determined * factor / np.outer(scale, scale)
    undetermined = (np.abs(vh[~keep]) > NULL_COMPONENT).any(axis=0)
    if undetermined.any():
        cov[undetermined, :] = np.nan
        cov[:, undetermined] = np.nan
        cov[undetermined, undetermined] = np.inf
    return cov, rank, undetermined


def undetermined_note(names, rank: int, k: int) -> str:
    """What a fit's message says of the parameters the data do not determine."""
    one = len(names) == 1
    return (
        f"the data do not determine {', '.join(names)} (Jacobian rank {rank} < {k}): "
        f"{'its standard error is' if one else 'their standard errors are'} infinite"
    )


def undetermined_warning(names, rank: int, k: int) -> str:
    """The ConvergenceWarning of a fit that ended where the data do not determine ``names``."""
    one = len(names) == 1
    return (
        f"The fit ended where the data do not determine {', '.join(names)} (Jacobian rank {rank} < {k}): "
        f"{'its standard error is' if one else 'their standard errors are'} infinite and the values are one choice "
        "among many. "
        f"Consider another p0, fixing {'it' if one else 'them'}, or a model with fewer parameters."
    )


NO_DOF_NOTE = "as many parameters as points: no degrees of freedom left, standard errors are infinite"


def tie_note(name: str, expression) -> str:
    """What a result's message says of a tied parameter (expression: its gradfit.expr Expression)."""
    return f"{name} tied: {name} = {expression.text}"


def robust_note(robust: tuple[str, float]) -> str:
    """What a result's message says of a robust loss (loss, f_scale)."""
    return "robust loss {} (f_scale={:g}): standard errors as curve_fit's with it".format(*robust)


def bound_note(name: str, side: str, bounds) -> str:
    """What a result's message says of a parameter that ended on its 'lower' or 'upper' bound."""
    return f"{name} is at its {side} bound {bounds[name][0 if side == 'lower' else 1]:g}"

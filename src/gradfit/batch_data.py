"""Curves in: checked arrays of x, Y, sigma and mask for fit_many, long tables packed into rows, starts."""

from __future__ import annotations


import numpy as np

from .errors import DataError, ModelError
from .models import Model


def contiguous_array(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array torch may share; a read-only one (a Dask block, a broadcast) is copied."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def float_array(values, name: str) -> np.ndarray:
    from .data import as_array

    return as_array(values, name)


def batch_start(model: Model, p0, batch: int):
    if p0 is None:
        return None
    if isinstance(p0, dict):
        missing = [n for n in model.param_names if n not in p0]
        if missing or set(p0) - set(model.param_names):
            raise ModelError(f"p0 must give every parameter of {', '.join(model.param_names)}.")
        p0 = [p0[n] for n in model.param_names]
    p = np.asarray(p0, dtype=np.float64)
    if p.shape not in ((model.n_params,), (batch, model.n_params)):
        raise ModelError(
            f"p0 must be ({model.n_params},) for every curve or ({batch}, {model.n_params}) "
            f"one per curve; got {p.shape}."
        )
    if not np.isfinite(p).all():
        raise ModelError("p0 must be finite.")
    return p


def curves(model: Model, x, Y, sigma=None, mask=None):
    """Curves checked for a batch fit: x (shared (N,) or per curve (B, N)), Y (B, N) with unused points set to 0,
    the weights (1/sigma where a point is used, 0 where it is NaN or masked out) and whether x is shared."""
    Yn = float_array(Y, "Y")
    if Yn.ndim != 2:
        raise DataError(f"`Y` must be (curves, points), got shape {Yn.shape}.")
    B, N = Yn.shape
    xn = float_array(x, "x")
    k = len(model.variables) if model.variables else (xn.shape[-1] if xn.ndim in (2, 3) and xn.shape[-1] != N else 1)
    shared = xn.shape[:1] == (N,) and (xn.ndim == 1 or (xn.ndim == 2 and k > 1 and xn.shape[1] == k))
    if not shared and xn.shape[:2] != (B, N):
        raise DataError(f"`x` must be shared, shape ({N},), or one row per curve, shape ({B}, {N}); got {xn.shape}.")
    if not shared and B > 1 and bool((xn == xn[:1]).all()):
        # every curve at the same x (as long-format data on one grid give): one shared x, so that the
        # curves share a design matrix or a batched guess
        xn, shared = xn[0], True
    valid = np.isfinite(Yn)
    valid &= np.isfinite(xn).all(axis=-1) if xn.ndim == (2 if shared else 3) else np.isfinite(xn)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (B, N):
            raise DataError(f"`mask` must be ({B}, {N}) like Y, got {m.shape}.")
        valid &= m
    everywhere = bool(valid.all())
    # every point used with weight one (the common case): one row of ones read by every curve, and Y as
    # given, rather than two more (curves x points) arrays to write
    weights = np.broadcast_to(np.ones(N), (B, N)) if everywhere else valid.astype(np.float64)
    if sigma is not None:
        s = np.broadcast_to(float_array(sigma, "sigma"), (B, N))
        bad = valid & ~(np.isfinite(s) & (s > 0))
        if bad.any():
            raise DataError(f"`sigma` must be finite and > 0 where Y is used; it is not at {int(bad.sum())} points.")
        weights = np.where(valid, 1 / np.where(valid, s, 1.0), 0.0)
    Yc = Yn if everywhere else np.where(valid, Yn, 0.0)
    xc = np.where(np.isfinite(xn), xn, 0.0)
    return xc, Yc, weights, shared


def pack_long(groups, x, y, sigma=None):
    """Long-format data (one row per point, ``groups`` naming each point's curve) as rows: the curves' names
    (sorted), X and Y (curves, longest) padded with NaN, and sigma likewise (1 where padded), or None."""
    groups, x, y = np.asarray(groups), np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    # each curve's points in order of x (rows may come in any order): curves measured on one grid then
    # line up, and fit_many treats their x as shared
    columns = x.reshape(len(x), -1)
    order = np.lexsort([columns[:, j] for j in reversed(range(columns.shape[1]))] + [inverse])
    position = np.empty_like(order)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position[order] = np.arange(len(order)) - np.repeat(starts, counts)
    width = counts.max()
    Y = np.full((len(names), width), np.nan)
    X = np.full((len(names), width) + x.shape[1:], np.nan)
    S = None if sigma is None else np.full((len(names), width), 1.0)
    Y[inverse, position], X[inverse, position] = y, x
    if S is not None:
        S[inverse, position] = np.asarray(sigma, dtype=np.float64)
    return names, X, Y, S

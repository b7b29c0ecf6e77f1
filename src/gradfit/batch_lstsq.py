"""Least squares' linear algebra on a chunk of curves (batch_problem.Chunk): each curve's exact solution for a
model linear in its parameters, and at the end of any fit the statistics and standard errors, from the Cholesky
factor of the column-equilibrated normal matrix (one covariance where the curves share a design matrix)."""

from __future__ import annotations

import math

import torch

from .batch_result import host_result
from .uncertainty import column_scale

REFINE_BELOW = 1e-6  # smallest pivot² below which a curve's normal-equation solve is refined
SINGULAR = 1e-14  # smallest pivot², relative, of the equilibrated normal matrix before a curve counts as singular


def solve_linear(chunk):
    """Each curve's exact least squares.

    Curves that share x and use every point share one design matrix: their solutions are
    one product with its pseudo-inverse (from an SVD: accurate however the columns are
    conditioned). Otherwise each curve solves its column-equilibrated normal equations, with
    one step of iterative refinement.
    """
    steps = torch.ones(chunk.batch, dtype=torch.long, device=chunk.y.device)
    status = torch.zeros(chunk.batch, dtype=torch.long, device=chunk.y.device)
    # a polynomial in its centred, scaled variable (Polynomial.centred), mapped back at the end: in x's own
    # powers, x in [-9, -3] makes the columns nearly parallel and every digit is lost
    centred = getattr(chunk.model, "centred", None)
    to_params = None
    if chunk.shared and bool((chunk.w == 1).all()):
        a, to_params = centred(chunk.x) if centred is not None else (chunk.model.design_matrix(chunk.x), None)
        scale = column_scale(a)
        q = chunk.y @ torch.linalg.pinv(a / scale).T / scale
        return (q if to_params is None else q @ to_params.T), steps, status
    if centred is not None:
        a, to_params = centred(chunk.x)
        a = (a.unsqueeze(0) if chunk.shared else a) * chunk.w.unsqueeze(-1)
    else:
        a = chunk.jacobian(None)  # (B, N, P), weights applied
    target = chunk.y * chunk.w
    chol, scale, singular, pivot2 = factor_jacobian(a, pivots=True)
    rhs = (a.transpose(1, 2) @ target.unsqueeze(-1)) / scale.unsqueeze(-1)
    z = torch.cholesky_solve(rhs, chol)
    # One step of iterative refinement for the curves whose normal equations are ill-conditioned
    # (the rest are already accurate to far below 1e-8: error ~ cond² · eps).
    rough = (pivot2 < REFINE_BELOW).nonzero().squeeze(-1)
    if rough.numel():
        ar, cr, sr = a[rough], chol[rough], scale[rough].unsqueeze(-1)
        resid = target[rough].unsqueeze(-1) - ar @ (z[rough] / sr)
        z[rough] = z[rough] + torch.cholesky_solve((ar.transpose(1, 2) @ resid) / sr, cr)
    status[singular] = 3
    q = z.squeeze(-1) / scale
    return (q if to_params is None else (to_params @ q.unsqueeze(-1)).squeeze(-1)), steps, status


def statistics(chunk, p, steps, status, absolute_sigma: bool) -> dict:
    """Statistics and standard errors per curve, back on the host as numpy."""
    k = chunk.model.n_params
    if chunk.exact_design and chunk.model.is_linear and chunk.shared and bool((chunk.w == 1).all()):
        return _statistics_shared(chunk, p, steps, status, absolute_sigma)
    with torch.no_grad():
        r = chunk.residuals(p)
        chi2 = (r * r).sum(dim=1)
        raw = r / torch.where(chunk.w > 0, chunk.w, torch.ones_like(chunk.w)) * chunk.used
        rmse = torch.sqrt((raw * raw).sum(dim=1) / chunk.n_points.clamp_min(1))
        # a polynomial's J in its centred variable (Polynomial.centred), mapped back: J = A_t M⁻¹, so
        # (JᵀJ)⁻¹ = M (A_tᵀA_t)⁻¹ Mᵀ, without squaring the monomial columns' condition (1e15 on [-9, -3])
        centred = getattr(chunk.model, "centred", None) if chunk.exact_design else None
        to_params = None
        if centred is not None:
            a, to_params = centred(chunk.x)
            jac = (a.unsqueeze(0) if chunk.shared else a) * chunk.w.unsqueeze(-1)
        else:
            jac = chunk.jacobian(p)
        # (JᵀJ)⁻¹ from the Cholesky factor of the column-equilibrated normal matrix; a factor that
        # fails, or is nearly singular, marks a curve whose data do not pin every parameter
        chol, scale, singular = factor_jacobian(jac)
        eye = torch.eye(k, dtype=p.dtype, device=p.device)
        cov = torch.cholesky_inverse(torch.where(singular[:, None, None], eye, chol))
        cov = cov / (scale.unsqueeze(2) * scale.unsqueeze(1))
        if to_params is not None:
            cov = to_params @ cov @ to_params.transpose(-1, -2)
        dof = chunk.n_points - k
        if not absolute_sigma:
            cov = cov * torch.where(dof > 0, chi2 / dof.clamp_min(1), torch.full_like(chi2, math.inf))[:, None, None]
        stderr = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0))
        stderr[singular] = math.nan
    status = status.clone()
    status[singular & (status == 0)] = 3  # ended where the data do not pin every parameter
    return host_result(chunk.model, p, stderr, rmse, chi2, chunk.n_points, steps, status)


def _statistics_shared(chunk, p, steps, status, absolute_sigma: bool) -> dict:
    """statistics() for curves sharing one design matrix and every point: one covariance, scaled per curve."""
    k = chunk.model.n_params
    a = chunk.model.design_matrix(chunk.x)
    r = chunk.y - p @ a.T
    chi2 = (r * r).sum(dim=1)
    rmse = torch.sqrt(chi2 / chunk.n_points)
    # the rank, and (AᵀA)⁻¹, from the columns scaled to unit length (a polynomial's centred ones), as
    # gradfit.uncertainty decides them for one fit
    centred = getattr(chunk.model, "centred", None)
    basis, to_params = centred(chunk.x) if centred is not None else (a, None)
    norms = column_scale(basis)
    scaled = basis / norms
    _, s, _ = torch.linalg.svd(scaled, full_matrices=False)
    singular = bool(s[-1] <= torch.finfo(a.dtype).eps * max(a.shape) * s[0])
    inverse = torch.linalg.pinv(scaled.T @ scaled, hermitian=True) / torch.outer(norms, norms)
    if to_params is not None:
        inverse = to_params @ inverse @ to_params.T
    base = torch.diagonal(inverse)
    dof = chunk.n_points - k
    factor = (
        torch.ones_like(chi2)
        if absolute_sigma
        else torch.where(dof > 0, chi2 / dof.clamp_min(1), torch.full_like(chi2, math.inf))
    )
    stderr = torch.sqrt(base.unsqueeze(0) * factor.unsqueeze(1))
    if singular:
        status = torch.full_like(status, 3)
        stderr = torch.full_like(stderr, math.nan)
    return host_result(chunk.model, p, stderr, rmse, chi2, chunk.n_points, steps, status)


def factor_jacobian(jac: torch.Tensor, pivots: bool = False):
    """Cholesky factor of the column-equilibrated normal matrix JᵀJ / (s sᵀ), s the column norms.

    Returns (factor, s, singular): singular marks curves whose factor failed or whose smallest
    pivot² falls below SINGULAR (the data do not pin every parameter).
    """
    normal = jac.transpose(1, 2) @ jac
    scale = torch.diagonal(normal, dim1=1, dim2=2).sqrt().clamp_min(1e-300)
    chol, info = torch.linalg.cholesky_ex(normal / (scale.unsqueeze(2) * scale.unsqueeze(1)))
    smallest = torch.diagonal(chol, dim1=1, dim2=2).min(dim=1).values ** 2
    singular = (info != 0) | ~(smallest > SINGULAR)
    return (chol, scale, singular, smallest) if pivots else (chol, scale, singular)

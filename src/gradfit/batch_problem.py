"""The batch problem fit_many's solvers work on: a chunk of curves answering residuals, Jacobians and
costs (``Chunk``), a robust loss as a transform of it, and the covariances of the fitted curves."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._threads import TRANSFORMS
from .losses import rho, robust_scaling
from .models import ExpressionModel, Model, variable_columns
from .dual import BroadcastFunction
from .numeric import NumericFunction
from .params import Constrained
from .uncertainty import column_scale
from .batch_result import host_result


REFINE_BELOW = 1e-6  # smallest pivot² below which a curve's normal-equation solve is refined
SINGULAR = 1e-14  # smallest pivot², relative, of the equilibrated normal matrix before a curve counts as singular


class Chunk:
    """One chunk of curves on the device: residuals, Jacobians and the solvers, all batched."""

    def __init__(self, model: Model, x, shared: bool, y, w, per_curve: bool = False):
        """``per_curve``: residuals and Jacobians curve by curve, for a Python function that torch.func's vmap
        cannot run (Python control flow on a parameter's value); slower, but it fits."""
        self.model, self.x, self.shared, self.y, self.w = model, x, shared, y, w
        self.per_curve = per_curve
        self.used = (w > 0).to(y.dtype)
        self.unit = bool((w == 1).all())  # every point used, no sigma: the weights need no multiplying
        self.n_points = self.used.sum(dim=1)
        self.batch = len(y)

        def residual(p, x, y, w):  # one curve
            return (model(x, p) - y) * w

        if per_curve:
            batched = lambda f: one_by_one(f, shared)  # noqa: E731
        else:
            batched = lambda f: torch.func.vmap(f, in_dims=(0, None if shared else 0, 0, 0))  # noqa: E731
        self._residuals = batched(residual)
        self._jacobian = batched(torch.func.jacfwd(residual))
        # An expression differentiates itself on the tree, over the whole batch at once: no vmap,
        # no dual numbers (several times faster than jacfwd for many curves); a Python function that runs on the
        # whole batch (gradfit.dual) answers the same question the same way.
        self._expression = (
            model.expression
            if isinstance(model, ExpressionModel)
            else model
            if isinstance(model, BroadcastFunction)
            else None
        )
        # A function with estimated derivatives (gradfit.numeric) takes the whole batch at once too.
        self._estimated = model if isinstance(model, NumericFunction) else None
        # bounds and fixed parameters (params.Constrained): the base model's residuals and Jacobian at the user's
        # parameters, the Jacobian by the chain rule (the transform's is diagonal)
        self._base = Chunk(model.base, x, shared, y, w, per_curve) if isinstance(model, Constrained) else None

    def rows(self, idx=None):
        """x, y and w of the curves ``idx`` (all by default): gathered once, for as long as they iterate."""
        if idx is None:
            return self.x, self.y, self.w
        return (self.x if self.shared else self.x[idx]), self.y[idx], self.w[idx]

    def residuals(self, p, idx=None):
        return self._residuals_of(p, *self.rows(idx))

    def jacobian(self, p, idx=None):
        return self._jacobian_of(p, *self.rows(idx))

    def _residuals_of(self, p, x, y, w):
        if self._base is not None:
            return self._base._residuals_of(self.model.to_user(p), x, y, w)
        if self._estimated is not None:
            return (self._estimated.forward(x, p, per_curve=not self.shared) - y) * w
        if self._expression is not None and not p.requires_grad:
            r = self.model(x, p) - y  # the expression takes a (B, P) batch of parameters itself
            return r if self.unit else r * w
        with TRANSFORMS:  # torch.func is not safe in two threads at once (gradfit._threads)
            return self._residuals(p, x, y, w)

    def _jacobian_of(self, p, x, y, w):
        if self.model.is_linear:
            a = self.model.design_matrix(x)
            return (a.unsqueeze(0) if self.shared else a) * w.unsqueeze(-1)
        if self._expression is not None or self._estimated is not None or self._base is not None:
            return self.residuals_and_jacobian_at(p, x, y, w)[1]
        with TRANSFORMS:
            return self._jacobian(p, x, y, w)

    def linearize(self, p, x, y, w):
        """What Levenberg–Marquardt steps on: residuals and Jacobian at p, and the cost it lowers (their |r|²)."""
        r, jac = self.residuals_and_jacobian_at(p, x, y, w)
        return r, jac, (r * r).sum(dim=1)

    def residuals_and_jacobian_at(self, p, x, y, w):
        """Residuals and Jacobian at p. An expression gives its value with its derivatives: one
        evaluation on the tree instead of two."""
        if self._base is not None:
            r, jac = self._base.residuals_and_jacobian_at(self.model.to_user(p), x, y, w)
            return r, self.model.chain(jac, p)
        if self._estimated is not None:
            value, jac = self._estimated.value_and_jacobian(x, p, per_curve=not self.shared)
            return (value - y) * w, jac * w.unsqueeze(-1)
        if self._expression is None or self.model.is_linear:
            return self._residuals_of(p, x, y, w), self._jacobian_of(p, x, y, w)
        columns = variable_columns(x, len(self.model.variables), self.model.name)
        value, grads = self._expression.value_and_gradient(columns, [v.unsqueeze(-1) for v in p.unbind(-1)])
        as_y = lambda v: torch.as_tensor(v, dtype=y.dtype, device=y.device).expand_as(y)  # noqa: E731
        r = as_y(value) - y
        columns = [torch.zeros_like(y) if g is None else as_y(g) for g in grads]
        # stacked as (B, P, N) and seen as (B, N, P): each parameter's column is contiguous, which
        # makes the column norms and JᵀJ fast
        if self.unit:
            return r, torch.stack(columns, dim=1).transpose(1, 2)
        return r * w, torch.stack([c * w for c in columns], dim=1).transpose(1, 2)

    def guess(self) -> torch.Tensor:
        """The model's own guess for each curve, else ones: where the model has a batched rule, for all
        curves at once that share x and the points they use (one call per such group), else one call
        per curve."""
        k = self.model.n_params
        many = getattr(self.model, "guess_many", None)
        if many is not None:
            values = self._guess_in_groups(many)
            return torch.as_tensor(values, dtype=self.y.dtype, device=self.y.device)
        rows = []
        for b in range(self.batch):
            keep = self.w[b] > 0
            x = self.x[keep] if self.shared else self.x[b][keep]
            g = self.model.guess(x, self.y[b][keep]) if int(keep.sum()) >= k else None
            rows.append(
                torch.ones(k, dtype=self.y.dtype, device=self.y.device)
                if g is None
                else torch.as_tensor(g, dtype=self.y.dtype, device=self.y.device)
            )
        return torch.stack(rows)

    def _guess_in_groups(self, many) -> np.ndarray:
        """guess_many for each group of curves measured at the same x and using the same points (curves on
        one grid, ragged ones cut to the same length): the rows of a group share their x and use all of it."""
        k = self.model.n_params
        x, y = self.x.detach().cpu().numpy(), self.y.detach().cpu().numpy()
        used = (self.w > 0).cpu().numpy()
        B, N = y.shape
        if self.shared and used.all():
            return many(x, y) if N >= k else np.ones((B, k))
        xs = np.broadcast_to(x, (B, *x.shape)) if self.shared else x
        # each curve's x where it uses a point, NaN elsewhere: equal keys, one group
        at = np.where(used.reshape(used.shape + (1,) * (xs.ndim - 2)), xs, np.nan).reshape(B, -1)
        keys = np.ascontiguousarray(at).view(np.dtype((np.void, at.itemsize * at.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        values = np.ones((B, k))
        for row, members in zip(first, np.split(order, np.cumsum(np.bincount(inverse))[:-1])):
            keep = used[row]
            if keep.sum() >= k:
                values[members] = many(xs[row][keep], y[members][:, keep])
        return values

    def solve_linear(self):
        """Each curve's exact least squares.

        Curves that share x and use every point share one design matrix: their solutions are
        one product with its pseudo-inverse (from an SVD: accurate however the columns are
        conditioned). Otherwise each curve solves its column-equilibrated normal equations, with
        one step of iterative refinement.
        """
        steps = torch.ones(self.batch, dtype=torch.long, device=self.y.device)
        status = torch.zeros(self.batch, dtype=torch.long, device=self.y.device)
        # a polynomial in its centred, scaled variable (Polynomial.centred), mapped back at the end: in x's own
        # powers, x in [-9, -3] makes the columns nearly parallel and every digit is lost
        centred = getattr(self.model, "centred", None)
        to_params = None
        if self.shared and bool((self.w == 1).all()):
            a, to_params = centred(self.x) if centred is not None else (self.model.design_matrix(self.x), None)
            scale = column_scale(a)
            q = self.y @ torch.linalg.pinv(a / scale).T / scale
            return (q if to_params is None else q @ to_params.T), steps, status
        if centred is not None:
            a, to_params = centred(self.x)
            a = (a.unsqueeze(0) if self.shared else a) * self.w.unsqueeze(-1)
        else:
            a = self.jacobian(None)  # (B, N, P), weights applied
        target = self.y * self.w
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

    exact_design = True  # a linear model's Jacobian is its design matrix (a robust loss rescales its rows)

    def finish(self, p, steps, status, absolute_sigma: bool) -> dict:
        """Statistics and standard errors per curve, back on the host as numpy."""
        k = self.model.n_params
        if self.exact_design and self.model.is_linear and self.shared and bool((self.w == 1).all()):
            return self._finish_shared(p, steps, status, absolute_sigma)
        with torch.no_grad():
            r = self.residuals(p)
            chi2 = (r * r).sum(dim=1)
            raw = r / torch.where(self.w > 0, self.w, torch.ones_like(self.w)) * self.used
            rmse = torch.sqrt((raw * raw).sum(dim=1) / self.n_points.clamp_min(1))
            # a polynomial's J in its centred variable (Polynomial.centred), mapped back: J = A_t M⁻¹, so
            # (JᵀJ)⁻¹ = M (A_tᵀA_t)⁻¹ Mᵀ, without squaring the monomial columns' condition (1e15 on [-9, -3])
            centred = getattr(self.model, "centred", None) if self.exact_design else None
            to_params = None
            if centred is not None:
                a, to_params = centred(self.x)
                jac = (a.unsqueeze(0) if self.shared else a) * self.w.unsqueeze(-1)
            else:
                jac = self.jacobian(p)
            # (JᵀJ)⁻¹ from the Cholesky factor of the column-equilibrated normal matrix; a factor that
            # fails, or is nearly singular, marks a curve whose data do not pin every parameter
            chol, scale, singular = factor_jacobian(jac)
            eye = torch.eye(k, dtype=p.dtype, device=p.device)
            cov = torch.cholesky_inverse(torch.where(singular[:, None, None], eye, chol))
            cov = cov / (scale.unsqueeze(2) * scale.unsqueeze(1))
            if to_params is not None:
                cov = to_params @ cov @ to_params.transpose(-1, -2)
            dof = self.n_points - k
            if not absolute_sigma:
                cov = (
                    cov * torch.where(dof > 0, chi2 / dof.clamp_min(1), torch.full_like(chi2, math.inf))[:, None, None]
                )
            stderr = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0))
            stderr[singular] = math.nan
        status = status.clone()
        status[singular & (status == 0)] = 3  # ended where the data do not pin every parameter
        return host_result(self.model, p, stderr, rmse, chi2, self.n_points, steps, status)

    def _finish_shared(self, p, steps, status, absolute_sigma: bool) -> dict:
        """finish() for curves sharing one design matrix and every point: one covariance, scaled per curve."""
        k = self.model.n_params
        a = self.model.design_matrix(self.x)
        r = self.y - p @ a.T
        chi2 = (r * r).sum(dim=1)
        rmse = torch.sqrt(chi2 / self.n_points)
        # the rank, and (AᵀA)⁻¹, from the columns scaled to unit length (a polynomial's centred ones), as
        # gradfit.uncertainty decides them for one fit
        centred = getattr(self.model, "centred", None)
        basis, to_params = centred(self.x) if centred is not None else (a, None)
        norms = column_scale(basis)
        scaled = basis / norms
        _, s, _ = torch.linalg.svd(scaled, full_matrices=False)
        singular = bool(s[-1] <= torch.finfo(a.dtype).eps * max(a.shape) * s[0])
        inverse = torch.linalg.pinv(scaled.T @ scaled, hermitian=True) / torch.outer(norms, norms)
        if to_params is not None:
            inverse = to_params @ inverse @ to_params.T
        base = torch.diagonal(inverse)
        dof = self.n_points - k
        factor = (
            torch.ones_like(chi2)
            if absolute_sigma
            else torch.where(dof > 0, chi2 / dof.clamp_min(1), torch.full_like(chi2, math.inf))
        )
        stderr = torch.sqrt(base.unsqueeze(0) * factor.unsqueeze(1))
        if singular:
            status = torch.full_like(status, 3)
            stderr = torch.full_like(stderr, math.nan)
        return host_result(self.model, p, stderr, rmse, chi2, self.n_points, steps, status)


class RobustChunk(Chunk):
    """A robust loss (least_squares' soft_l1, huber, cauchy, arctan with f_scale) as a transform of the batch
    problem, as solvers.problem.Problem has it for one fit: each residual r becomes r̃ = r·sqrt(ρ(z)/z),
    z = (r/f_scale)², so that Σr̃² is the robust cost Σ f_scale² ρ(z), which the gradient methods descend by
    autograd; Levenberg–Marquardt linearizes by iteratively reweighted least squares (residuals and rows times
    sqrt(ρ'), whose steps go down the cost's exact gradient and do not run off where a bounded loss flattens)
    and accepts a step by the robust cost. ``finish`` gives the plain residuals' χ² and RMSE, and standard
    errors as curve_fit gives them with a robust loss (as gradfit.fit does): the Jacobian's rows rescaled with
    Triggs' term, sqrt(ρ' + 2ρ''z), times the robust cost over the degrees of freedom."""

    exact_design = False

    def __init__(self, model, x, shared, y, w, per_curve=False, *, robust):
        super().__init__(model, x, shared, y, w, per_curve)
        self.robust = robust
        self.plain = False  # True while finish() asks for the plain residuals and Triggs' rows

    def _transform(self, r):
        loss, f_scale = self.robust
        z = (r / f_scale) ** 2
        tiny = z > 1e-300
        safe = torch.where(tiny, z, torch.ones_like(z))  # (both branches finite: autograd through where)
        if self.plain:  # the rows least_squares rescales (Triggs' term): what the covariance comes from
            return r, robust_scaling(loss, f_scale, r, curvature=True)[1]
        value, slope, _ = rho(loss, safe)
        ratio = torch.where(tiny, value / safe, torch.ones_like(z))  # ρ(z)/z -> 1 as z -> 0
        return r * ratio.sqrt(), torch.where(tiny, slope / ratio.sqrt(), torch.ones_like(z))

    def _cost(self, r):
        """Each curve's robust cost Σ f_scale² ρ((r/f_scale)²) of its plain residuals r."""
        loss, f_scale = self.robust
        return (f_scale**2 * rho(loss, (r / f_scale) ** 2)[0]).sum(dim=1)

    def residuals(self, p, idx=None):
        return self._transform(super().residuals(p, idx))[0]

    def jacobian(self, p, idx=None):
        return self.residuals_and_jacobian_at(p, *self.rows(idx))[1]

    def residuals_and_jacobian_at(self, p, x, y, w):
        r, jac = super().residuals_and_jacobian_at(p, x, y, w)
        r, rows = self._transform(r)
        return r, jac * rows.unsqueeze(-1)

    def linearize(self, p, x, y, w):
        r, jac = super().residuals_and_jacobian_at(p, x, y, w)
        root = robust_scaling(*self.robust, r)[0]  # sqrt(ρ'), as Problem linearizes one fit
        return r * root, jac * root.unsqueeze(-1), self._cost(r)

    def finish(self, p, steps, status, absolute_sigma: bool) -> dict:
        with torch.no_grad():
            cost = self._cost(super().residuals(p))
        self.plain = True
        try:
            fitted = super().finish(p, steps, status, absolute_sigma=True)
        finally:
            self.plain = False
        if not absolute_sigma:
            dof = (self.n_points - self.model.n_params).double().cpu().numpy()
            cost = cost.double().cpu().numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(dof > 0, cost / np.maximum(dof, 1), np.inf)
            fitted["stderr"] = fitted["stderr"] * np.sqrt(factor)[:, None]
        return fitted


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


def one_by_one(function, shared: bool):
    """function(p, x, y, w) of one curve, over a batch by a Python loop: vmap's stand-in for what it cannot run."""

    def run(p, x, y, w):
        return torch.stack([function(p[b], x if shared else x[b], y[b], w[b]) for b in range(len(p))])

    return run

"""The batch problem fit_many's solvers work on: a chunk of curves answering residuals, Jacobians and
costs (``Chunk``), and a robust loss as a transform of it. Its exact solve for linear models and its statistics at
the end (covariances, standard errors) are least squares' linear algebra, in batch_lstsq."""

from __future__ import annotations

import numpy as np
import torch

from ._threads import TRANSFORMS
from .losses import rho, robust_scaling
from .models import ExpressionModel, Model, variable_columns
from .dual import BroadcastFunction
from .numeric import NumericFunction
from .params import Constrained
from .batch_lstsq import solve_linear, statistics


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
            return self._base._residuals_of(self.model.to_user(p), x, y, w)  # noqa: SLF001 - a Chunk's own
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
        """Each curve's exact least squares (batch_lstsq.solve_linear)."""
        return solve_linear(self)

    exact_design = True  # a linear model's Jacobian is its design matrix (a robust loss rescales its rows)

    def finish(self, p, steps, status, absolute_sigma: bool) -> dict:
        """Statistics and standard errors per curve, back on the host as numpy (batch_lstsq.statistics)."""
        return statistics(self, p, steps, status, absolute_sigma)


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


def one_by_one(function, shared: bool):
    """function(p, x, y, w) of one curve, over a batch by a Python loop: vmap's stand-in for what it cannot run."""

    def run(p, x, y, w):
        return torch.stack([function(p[b], x if shared else x[b], y[b], w[b]) for b in range(len(p))])

    return run

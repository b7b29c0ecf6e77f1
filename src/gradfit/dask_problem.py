"""One fit of a Dask DataFrame's rows: the problem a solver asks (``ClusterProblem``), answered by sums each
worker computes on its own partitions (moments, R and Qᵀr, loss and gradient) and the client folds."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .stream import SAMPLE_ROWS


def variable_columns(part, x, y, sigma, nan_policy="raise"):
    arrays = [part[c].to_numpy(np.float64) for c in (x, y)]
    s = None if sigma is None else part[sigma].to_numpy(np.float64)
    keep = np.isfinite(arrays[0]) & np.isfinite(arrays[1])
    if s is not None:
        keep &= np.isfinite(s) & (s > 0)
    if not keep.all():
        if nan_policy == "raise":
            raise DataError(
                "The data hold NaN, inf or a sigma <= 0. Fix those rows or use nan_policy='omit' "
                "(--nan-policy omit) to leave them out."
            )
        return arrays[0][keep], arrays[1][keep], None if s is None else s[keep]
    return arrays[0], arrays[1], s


def _part_problem(part, model, x, y, sigma, nan_policy, weighted=True, robust=None):
    import torch

    from .solvers import Problem

    # a partition's arrays may be read-only (Arrow's buffers): torch gets a writable copy of those only
    xs, ys, ss = (
        None if a is None else torch.from_numpy(np.require(a, requirements="W"))
        for a in variable_columns(part, x, y, sigma, nan_policy)
    )
    return Problem(model, xs, ys, None if not weighted else ss, *(robust or ()))


def _moments(part, x, y, sigma, nan_policy):
    _, ys, ss = variable_columns(part, x, y, sigma, nan_policy)
    w = ys if ss is None else ys / ss
    return np.array([len(ys), ys.sum(), ys @ ys, w.sum(), w @ w, len(part)])


def _sample(part, x, y, sigma, nan_policy, k, seed):
    """This partition's k rows of smallest random keys (all its rows if fewer): merged across partitions by key,
    the k smallest are a uniform random sample of all the rows."""
    xs, ys, ss = variable_columns(part, x, y, sigma, nan_policy)
    keys = np.random.default_rng(seed).random(len(ys))
    keep = np.sort(np.argpartition(keys, k - 1)[:k]) if len(ys) > k else np.arange(len(ys))
    return keys[keep], xs[keep], ys[keep], None if ss is None else ss[keep]


def _factor(part, model, x, y, sigma, nan_policy, params, robust=None, curvature=False):
    """This partition's (cost, R, Qᵀr) at ``params``: with a robust loss its cost and the rows reweighted as
    Problem linearizes them; with ``curvature``, (χ², the robust cost, R) of the rows least_squares rescales
    (what the covariance comes from)."""
    import torch

    problem = _part_problem(part, model, x, y, sigma, nan_policy, robust=robust)
    if problem.n_points == 0:
        k = len(params)
        return 0.0, torch.zeros((0, k), dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    with torch.no_grad():
        r = problem.residuals(params)
    if curvature:
        return float(r @ r), problem.spread(params), torch.linalg.qr(problem.scaled_jacobian(params))[1]
    if robust is not None:
        cost = problem.cost(params)
        jac, r = problem.linearize(params)
        q, r_factor = torch.linalg.qr(jac)
        return cost, r_factor, q.T @ r
    q, r_factor = torch.linalg.qr(problem.jacobian(params))
    return float(r @ r), r_factor, q.T @ r


def _loss_grad(part, model, x, y, sigma, nan_policy, params, robust=None):
    import torch

    problem = _part_problem(part, model, x, y, sigma, nan_policy, robust=robust)
    p = params.detach().clone().requires_grad_()
    s = problem.loss(p) * problem.n_points  # (the sum of squares, or the robust cost)
    (g,) = torch.autograd.grad(s, p)
    return float(s), g


def _raw_ss(part, model, x, y, sigma, nan_policy, params):
    import torch

    with torch.no_grad():
        r = _part_problem(part, model, x, y, sigma, nan_policy, weighted=False).residuals(params)
    return float(r @ r)


class ClusterProblem:
    """StreamProblem's interface over a persisted Dask DataFrame: each pass is one task per partition."""

    streamed = True

    def __init__(self, model, frame, x, y, sigma, nan_policy="raise", robust=None):
        import dask

        self.frame, self.columns, self.robust = frame, (x, y, sigma, nan_policy), robust
        self.parts = frame.to_delayed()
        self.n_partitions = len(self.parts)
        self.weights = None if sigma is None else True
        self.use_model(model)
        m = sum(dask.compute(*[dask.delayed(_moments)(p, *self.columns) for p in self.parts]))
        n, total, total_sq, wtotal, wtotal_sq, rows = m
        self.n_points = int(n)
        if self.n_points == 0:
            raise DataError("The data have no rows" + (" left once the bad ones are left out." if rows else "."))
        self.ss_tot = max(total_sq - total * total / n, 0.0)
        self._y_var = max(wtotal_sq / n - (wtotal / n) ** 2, 0.0) * n / (n - 1) if n > 1 else 0.0
        self.n_dropped = int(rows) - self.n_points
        self.kept = self._sample(SAMPLE_ROWS, seed=0)

    def _sample(self, k: int, seed: int):
        """x, y, sigma of a uniform random sample of k rows (in partition order), for the figures."""
        import dask

        parts = dask.compute(*[dask.delayed(_sample)(p, *self.columns, k, [seed, i]) for i, p in enumerate(self.parts)])
        keys = np.concatenate([part[0] for part in parts])
        chosen = np.sort(np.argpartition(keys, k - 1)[:k]) if len(keys) > k else np.arange(len(keys))
        return [None if parts[0][c] is None else np.concatenate([part[c] for part in parts])[chosen] for c in (1, 2, 3)]

    def use_model(self, model) -> None:
        """Fit ``model`` to these data (the same model seen through bounds or fixed values, say)."""
        self.model = model
        self.user_names = getattr(model, "user_names", model.param_names)
        self._to_user = getattr(model, "to_user", None)
        self._cache = None

    def _each(self, fn, *args):
        import dask

        return dask.compute(*[dask.delayed(fn)(p, self.model, *self.columns, *args) for p in self.parts])

    def describe(self, params):
        import torch

        with torch.no_grad():
            values = params if self._to_user is None else self._to_user(params)
        return tuple(values.tolist())

    def y_std(self) -> float:
        return float(np.sqrt(self._y_var))

    def sample(self):
        import torch

        head = self.frame.head(100_000, npartitions=-1)
        xs, ys, _ = variable_columns(head, *self.columns)
        return torch.tensor(xs), torch.tensor(ys)

    def folded(self, params):
        """cost, R and Qᵀr at ``params``: each partition's rows factored by a worker, the factors folded here
        (the last answer again where the parameters are the same), as StreamProblem.folded."""
        import torch

        if self._cache is not None and (self._cache[0] is params or torch.equal(self._cache[0], params)):
            return self._cache[1:]
        k = len(params)
        cost, r_factor, z = 0.0, torch.zeros((0, k), dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        for part_cost, part_r, part_z in self._each(_factor, params, self.robust):  # fold the partitions' factors
            cost += part_cost
            q, r_factor = torch.linalg.qr(torch.cat([r_factor, part_r]))
            z = q.T @ torch.cat([z, part_z])
        self._cache = (params, cost, r_factor, z)
        return cost, r_factor, z

    def cost(self, params) -> float:
        return self.folded(params)[0]

    def linearize(self, params):
        return self.folded(params)[1:]

    def loss(self, params):
        import torch

        return torch.tensor(self.folded(params)[0] / self.n_points, dtype=torch.float64)

    def loss_and_grad(self, params):
        parts = self._each(_loss_grad, params, self.robust)
        return sum(v for v, _ in parts) / self.n_points, sum(g for _, g in parts) / self.n_points

    def raw_ss(self, params) -> float:
        if self.columns[2] is None and self.robust is None:
            return self.folded(params)[0]
        return sum(self._each(_raw_ss, params))

    def robust_summary(self, params):
        """(χ², robust cost, R) of the rows least_squares rescales, as StreamProblem.robust_summary."""
        import torch

        chi2, spread, r_factor = 0.0, 0.0, torch.zeros((0, len(params)), dtype=torch.float64)
        for part_chi2, part_spread, part_r in self._each(_factor, params, self.robust, True):
            chi2, spread = chi2 + part_chi2, spread + part_spread
            r_factor = torch.linalg.qr(torch.cat([r_factor, part_r]))[1]
        return chi2, spread, r_factor

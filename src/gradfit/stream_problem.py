"""The streamed problem: what a solver asks of data it cannot hold (loss and gradient, R and Qᵀr of the
Jacobian), answered by sums folded over record batches."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Callable

import torch

from .models import Model, Polynomial
from .solvers import Problem
from .solvers.fold import BLOCK_ROWS, GramFold, HouseholderFold, usable
from .stream_data import Reservoir, Source


SAMPLE_ROWS = 10_000  # rows a streamed fit keeps, drawn at random, for its figures and report


class StopFlag:
    requested = False


class BatchInterrupt(Exception):
    """Raised inside a solver's pass when Ctrl-C asked to stop; turned into Interrupted with the history."""


@contextmanager
def one_torch_thread():
    """torch on one thread for a while (restored after).

    A pass multiplies blocks of 65,536 rows by tiny matrices while pyarrow decodes with
    its own threads: measured on 2 cores, one torch thread folds 1.5x faster than two.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def as_tensors(*arrays):
    """numpy arrays (or None) as tensors sharing their memory."""
    with warnings.catch_warnings():  # arrow's buffers are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        return tuple(None if a is None else torch.from_numpy(a) for a in arrays)


class StreamProblem:
    """The Problem of every solver, for data read in batches: each evaluation is one pass.

    Per batch it builds an in-memory ``Problem`` of those rows (so residuals and
    Jacobians are computed exactly as for data in memory) and adds up: the sum of
    squares, the gradient, and R, Qᵀr of the Jacobian by a tall-skinny QR.
    """

    streamed = True

    def __init__(
        self,
        model: Model,
        source: Source,
        batch_rows: int,
        *,
        on_batch: Callable[[int], None] | None = None,
        stop: StopFlag | None = None,
        sample_rows: int = SAMPLE_ROWS,
        seed: int = 0,
        robust: tuple[str, float] | None = None,
    ):
        self.source, self.batch_rows = source, batch_rows
        # a robust loss (loss, f_scale): each batch's rows linearized as Problem linearizes them (reweighted), the
        # robust cost summed beside the fold (whose own sum is of the reweighted residuals)
        self.robust, self._robust_cost = robust, 0.0
        self.on_batch, self.stop = on_batch, stop or StopFlag()
        self.use_model(model)
        # a first pass: the rows kept, the moments of y (the standardized loss's unit, R²), and a random
        # sample of the rows for the figures
        sample = Reservoir(sample_rows, seed) if sample_rows else None
        n, total, total_sq, wtotal, wtotal_sq = 0, 0.0, 0.0, 0.0, 0.0
        for x, y, sigma in self._batches():
            if sample is not None:
                sample.add(x, y, sigma)
            w = y if sigma is None else y / sigma
            n += len(y)
            total, total_sq = total + float(y.sum()), total_sq + float(y @ y)
            wtotal, wtotal_sq = wtotal + float(w.sum()), wtotal_sq + float(w @ w)
        self.n_points = n
        source.known_clean = n == source.n_rows
        self.ss_tot = max(total_sq - total * total / n, 0.0) if n else 0.0
        self._y_var = max(wtotal_sq / n - (wtotal / n) ** 2, 0.0) * n / (n - 1) if n > 1 else 0.0
        self.weights = None if source.sigma is None else True  # weighted or not, as a Problem says
        self.kept = (sample.arrays() if sample is not None else []) or [None, None, None]  # x, y, sigma: the sample

    def use_model(self, model: Model) -> None:
        """Fit ``model`` to these data (the same model seen through bounds or fixed values, say)."""
        self.model = model
        self.user_names = getattr(model, "user_names", model.param_names)
        self._to_user = getattr(model, "to_user", None)
        self._cache = None  # (params, cost, R, Qᵀr) of the last pass
        self._precond, self._exact, self._powers = None, False, None  # see _pass

    def describe(self, params: torch.Tensor) -> tuple[float, ...]:
        with torch.no_grad():
            values = params if self._to_user is None else self._to_user(params)
        return tuple(values.tolist())

    def y_std(self) -> float:
        return math.sqrt(self._y_var)

    @property
    def n_dropped(self) -> int:
        return self.source.n_rows - self.n_points

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y of the first rows (up to 100,000): what the model's guess of p0 sees."""
        x, y, _ = next(iter(self.source.batches(min(self.batch_rows, 100_000))))
        return torch.tensor(x), torch.tensor(y)  # copies: arrow's buffers are read-only

    def raw_ss(self, params: torch.Tensor) -> float:
        """The unweighted sum of squared residuals (for the RMSE and R²), one pass when sigma weights."""
        if self.source.sigma is None and self.robust is None:
            return self._pass(params)[0]
        total = 0.0
        with torch.no_grad():
            for x, y, _sigma in self._batches():
                r = self._part(x, y, None).residuals(params)
                total += float(r @ r)
        return total

    def _batches(self, shuffle=None):
        for x, y, sigma in self.source.batches(self.batch_rows, shuffle):
            yield x, y, sigma
            if self.on_batch is not None:
                self.on_batch(len(y))
            if self.stop.requested:
                raise BatchInterrupt

    def _part(self, x, y, sigma) -> Problem:
        return Problem(self.model, *as_tensors(x, y, sigma), *(self.robust or ()))

    def _pass(self, params: torch.Tensor):
        """cost, R and Qᵀr at ``params``: one pass, the rows folded block by block (see solvers.fold).

        The fast fold sums the Gram matrix of J preconditioned by the R of the last pass (or of a
        sample); when that is too far from orthonormal to trust, the pass is redone with a better
        R (Cholesky QR's second round), and at worst by Householder QR, which is exact for any J.
        """
        if self._cache is not None and (self._cache[0] is params or torch.equal(self._cache[0], params)):
            return self._cache[1:]
        fold = self._new_fold(params)
        for attempt in range(3):
            self._fold_rows(fold, params)
            out = fold.result()
            if out is not None:
                break
            better = fold.refined()
            fold = (
                GramFold(better)
                if better is not None and attempt == 0 and usable(better)
                else HouseholderFold(len(params))
            )
        cost, r_factor, z = out
        if self.robust is not None and math.isfinite(cost):
            cost = self._robust_cost  # (the fold's sum is of the reweighted residuals)
        if math.isfinite(cost):  # this pass's R preconditions the next one, where J will be much the same
            if usable(r_factor):
                self._precond = r_factor
            elif isinstance(fold, HouseholderFold):
                self._exact = True  # J is (nearly) rank-deficient: only Householder folds it exactly
        self._cache = (params, cost, r_factor, z)
        return cost, r_factor, z

    def _new_fold(self, params: torch.Tensor):
        if self._exact:
            return HouseholderFold(len(params))
        if self._precond is None:  # the first pass: R of a sample of the rows, scaled to all of them
            x, y, sigma = next(iter(self.source.batches(min(self.batch_rows, BLOCK_ROWS))))
            sample = HouseholderFold(len(params))
            self._fold_block(sample, *as_tensors(x, y, sigma), params)
            r_factor = sample.result()[1] * math.sqrt(self.n_points / len(y))
            if not (torch.isfinite(r_factor).all() and usable(r_factor)):
                return HouseholderFold(len(params))
            self._precond = r_factor
        return GramFold(self._precond)

    def _fold_rows(self, fold, params: torch.Tensor) -> None:
        self._robust_cost = 0.0
        with one_torch_thread():
            for batch in self._batches():
                x, y, sigma = as_tensors(*batch)
                for a in range(0, len(y), BLOCK_ROWS):
                    rows = slice(a, a + BLOCK_ROWS)
                    self._fold_block(fold, x[rows], y[rows], None if sigma is None else sigma[rows], params)
                if not math.isfinite(fold.cost_so_far()):  # the model overflowed: this point is rejected anyway
                    break

    def _fold_block(self, fold, x, y, sigma, params) -> None:
        if self.robust is not None:
            part = Problem(self.model, x, y, sigma, *self.robust)
            if self._curvature:  # for the covariance: the rows as least_squares rescales them (Triggs)
                with torch.no_grad():
                    r = part.residuals(params)
                fold.add(part.scaled_jacobian(params), r)
                self._robust_cost += part.spread(params)
                return
            self._robust_cost += part.cost(params)
            jac, r = part.linearize(params)
            fold.add(jac, r)
            return
        if self.model.is_linear:
            fold.add_linear(self._design(x, y), params, None if sigma is None else 1 / sigma)
            return
        part = Problem(self.model, x, y, sigma)
        with torch.no_grad():
            r = part.residuals(params)
        fold.add(part.jacobian(params), r)

    _curvature = False  # set while robust_summary folds the rows for the covariance

    def robust_summary(self, params: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """With a robust loss: the plain (weighted) χ², the robust cost and R of the Jacobian rescaled as
        least_squares rescales it (Triggs' term), whose RᵀR is the Gauss–Newton Hessian that curve_fit takes
        the covariance from; one pass (Householder: exact for any J)."""
        fold = HouseholderFold(len(params))
        self._curvature = True
        try:
            self._fold_rows(fold, params)
        finally:
            self._curvature = False
        chi2, r_factor, _ = fold.result()
        return chi2, self._robust_cost, r_factor

    def _design(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[A | y], a linear model's design matrix beside y; a polynomial's made in a reused array."""
        if not isinstance(self.model, Polynomial):
            return torch.cat([self.model.design_matrix(x), y[:, None]], 1)
        d, n = self.model.degree, len(x)
        if self._powers is None or self._powers.shape[1] < n:
            self._powers = torch.ones((d + 2, max(n, BLOCK_ROWS)), dtype=torch.float64)
        rows = self._powers[:, :n]  # row i holds x**(d - i) (row d stays 1), the last row y
        if d >= 1:
            rows[d - 1].copy_(x)
        for i in range(d - 2, -1, -1):
            torch.mul(rows[i + 1], x, out=rows[i])
        rows[d + 1].copy_(y)
        return rows.T

    def cost(self, params: torch.Tensor) -> float:
        return self._pass(params)[0]

    def linearize(self, params: torch.Tensor):
        _, r_factor, z = self._pass(params)
        return r_factor, z

    def loss(self, params: torch.Tensor) -> torch.Tensor:
        total = 0.0
        with torch.no_grad():
            for x, y, sigma in self._batches():
                total += float(self._part(x, y, sigma).loss(params)) * len(y)
        return torch.tensor(total / self.n_points, dtype=torch.float64)

    def loss_and_grad(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The mean squared (weighted) residual and its gradient, summed batch by batch."""
        p = params.detach().clone().requires_grad_()
        total, grad = 0.0, torch.zeros_like(p)
        for x, y, sigma in self._batches():
            with torch.enable_grad():
                s = self._part(x, y, sigma).loss(p) * len(y)  # (the batch's sum of squares, or robust cost)
                (g,) = torch.autograd.grad(s, p)
            total += float(s)
            grad += g
        return total / self.n_points, grad / self.n_points

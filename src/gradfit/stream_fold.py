"""One pass of a streamed fit: every row's residual and Jacobian folded, block by block, into R and Qᵀr
(solvers.fold), for a StreamProblem. Keeps what one pass teaches the next: the R that preconditions the
fast fold, whether only Householder QR folds this Jacobian exactly, and a polynomial's array of powers."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch

from .models import Polynomial
from .solvers import Problem
from .solvers.fold import BLOCK_ROWS, GramFold, HouseholderFold, usable


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


class RowFolder:
    """Folds a StreamProblem's rows at given parameters; a new one for each model the problem fits."""

    def __init__(self, problem):
        self.problem = problem
        self.model, self.robust = problem.model, problem.robust
        self._precond, self._exact, self._powers = None, False, None
        # a robust loss: each block's rows linearized as Problem linearizes them (reweighted), the robust cost
        # summed beside the fold (whose own sum is of the reweighted residuals)
        self._robust_cost = 0.0
        self._curvature = False  # set while robust_summary folds the rows for the covariance

    def fold(self, params: torch.Tensor):
        """cost, R and Qᵀr at ``params``: one pass, the rows folded block by block (see solvers.fold).

        The fast fold sums the Gram matrix of J preconditioned by the R of the last pass (or of a
        sample); when that is too far from orthonormal to trust, the pass is redone with a better
        R (Cholesky QR's second round), and at worst by Householder QR, which is exact for any J.
        """
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
        return cost, r_factor, z

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

    def _new_fold(self, params: torch.Tensor):
        if self._exact:
            return HouseholderFold(len(params))
        if self._precond is None:  # the first pass: R of a sample of the rows, scaled to all of them
            problem = self.problem
            x, y, sigma = next(iter(problem.source.batches(min(problem.batch_rows, BLOCK_ROWS))))
            sample = HouseholderFold(len(params))
            self._fold_block(sample, *as_tensors(x, y, sigma), params)
            r_factor = sample.result()[1] * math.sqrt(problem.n_points / len(y))
            if not (torch.isfinite(r_factor).all() and usable(r_factor)):
                return HouseholderFold(len(params))
            self._precond = r_factor
        return GramFold(self._precond)

    def _fold_rows(self, fold, params: torch.Tensor) -> None:
        self._robust_cost = 0.0
        with one_torch_thread():
            for batch in self.problem.batches():
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

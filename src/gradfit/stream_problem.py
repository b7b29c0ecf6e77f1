"""The streamed problem: what a solver asks of data it cannot hold (loss and gradient, R and Qᵀr of the
Jacobian), answered by sums folded over record batches."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .models import Model
from .solvers import Problem
from .stream_data import Reservoir, Source
from .stream_fold import RowFolder, as_tensors


SAMPLE_ROWS = 10_000  # rows a streamed fit keeps, drawn at random, for its figures and report


class StopFlag:
    requested = False


class BatchInterrupt(Exception):
    """Raised inside a solver's pass when Ctrl-C asked to stop; turned into Interrupted with the history."""


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
        self.robust = robust  # a robust loss (loss, f_scale), folded as stream_fold.RowFolder says
        self.on_batch, self.stop = on_batch, stop or StopFlag()
        self.use_model(model)
        # a first pass: the rows kept, the moments of y (the standardized loss's unit, R²), and a random
        # sample of the rows for the figures
        sample = Reservoir(sample_rows, seed) if sample_rows else None
        n, total, total_sq, wtotal, wtotal_sq = 0, 0.0, 0.0, 0.0, 0.0
        for x, y, sigma in self.batches():
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
        self.folder = RowFolder(self)  # what one pass teaches the next, for this model

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
            return self.folded(params)[0]
        total = 0.0
        with torch.no_grad():
            for x, y, _sigma in self.batches():
                r = self.part(x, y, None).residuals(params)
                total += float(r @ r)
        return total

    def batches(self, shuffle=None):
        """The rows, a record batch at a time (x, y, sigma as numpy), reporting each and stopping on request."""
        for x, y, sigma in self.source.batches(self.batch_rows, shuffle):
            yield x, y, sigma
            if self.on_batch is not None:
                self.on_batch(len(y))
            if self.stop.requested:
                raise BatchInterrupt

    def part(self, x, y, sigma) -> Problem:
        """The in-memory Problem of a batch of rows."""
        return Problem(self.model, *as_tensors(x, y, sigma), *(self.robust or ()))

    def folded(self, params: torch.Tensor):
        """cost, R and Qᵀr at ``params``: one pass, the rows folded block by block (stream_fold.RowFolder); the
        last pass's answer again where the parameters are the same."""
        if self._cache is not None and (self._cache[0] is params or torch.equal(self._cache[0], params)):
            return self._cache[1:]
        cost, r_factor, z = self.folder.fold(params)
        self._cache = (params, cost, r_factor, z)
        return cost, r_factor, z

    def robust_summary(self, params: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """With a robust loss: the plain (weighted) χ², the robust cost and R of the Jacobian rescaled as
        least_squares rescales it (Triggs' term); one pass (stream_fold.RowFolder.robust_summary)."""
        return self.folder.robust_summary(params)

    def cost(self, params: torch.Tensor) -> float:
        return self.folded(params)[0]

    def linearize(self, params: torch.Tensor):
        _, r_factor, z = self.folded(params)
        return r_factor, z

    def loss(self, params: torch.Tensor) -> torch.Tensor:
        total = 0.0
        with torch.no_grad():
            for x, y, sigma in self.batches():
                total += float(self.part(x, y, sigma).loss(params)) * len(y)
        return torch.tensor(total / self.n_points, dtype=torch.float64)

    def loss_and_grad(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The mean squared (weighted) residual and its gradient, summed batch by batch."""
        p = params.detach().clone().requires_grad_()
        total, grad = 0.0, torch.zeros_like(p)
        for x, y, sigma in self.batches():
            with torch.enable_grad():
                s = self.part(x, y, sigma).loss(p) * len(y)  # (the batch's sum of squares, or robust cost)
                (g,) = torch.autograd.grad(s, p)
            total += float(s)
            grad += g
        return total / self.n_points, grad / self.n_points

"""The problem every solver works on: weighted least squares in float64."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np
import torch

from .._threads import TRANSFORMS
from ..history import History, StepRecord
from ..losses import mse, robust_cost, robust_scaling
from ..models import Model
from .methods import Tolerances  # noqa: F401  (the solvers import it from here too)


CHUNK_ROWS = 1 << 16  # rows of the design matrix made at a time when it is never held whole
STREAM_ABOVE = 1 << 22  # points x parameters above which a linear model's design matrix is streamed


class Whiten:
    """Residuals made independent and of unit variance: divided by sigma (one per point), or with a covariance
    matrix C = L Lᵀ of correlated errors, L⁻¹ r (curve_fit's rule: then rᵀ C⁻¹ r is their sum of squares). Acts
    on a vector of N residuals or on the rows of an (N, P) Jacobian alike."""

    def __init__(self, sigma: torch.Tensor):
        self.sigma = sigma
        self.matrix = sigma.ndim == 2
        if self.matrix:
            self.factor = torch.linalg.cholesky(sigma)  # lower: C = L Lᵀ (checked positive definite by prepare)
            # L⁻¹ once (a triangular inverse is as accurate as a solve in practice), then one product per call:
            # torch's triangular solve costs ~1 ms a call at N = 200, its product ~10 µs
            eye = torch.eye(len(sigma), dtype=sigma.dtype, device=sigma.device)
            self.inverse = torch.linalg.solve_triangular(self.factor, eye, upper=False)
        else:
            self.weights = 1 / sigma

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if not self.matrix:
            return a * (self.weights if a.ndim == 1 else self.weights[:, None])
        return self.inverse @ a

    def undo(self, r: np.ndarray) -> np.ndarray:
        """The raw residuals behind whitened ones (float64 numpy)."""
        if not self.matrix:
            return r / self.weights.double().cpu().numpy()
        return self.factor.double().cpu().numpy() @ r


class Problem:
    """Minimise mean(((f(x; p) - y) / sigma)**2) over p (with a covariance matrix sigma, of L⁻¹(f - y): Whiten);
    with a robust ``loss`` (gradfit.losses: least_squares' soft_l1, huber, cauchy, arctan), mean(f_scale² ρ((r /
    f_scale)²)) of those residuals r. A robust loss is a
    transform of the problem: its cost, its loss for the gradient methods, and its linearization (residuals and
    Jacobian rows rescaled as least_squares does), so the solvers do not know of it."""

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        sigma: torch.Tensor | None = None,
        loss: str = "linear",
        f_scale: float = 1.0,
    ):
        self.model, self.x, self.y = model, x, y
        self.whiten = None if sigma is None else Whiten(sigma)
        self.weights = None if sigma is None or self.whiten.matrix else self.whiten.weights  # 1/sigma, or None
        self.robust = None if loss == "linear" else (loss, f_scale)
        self.n_points = len(y)
        self._design = None  # a linear model's Jacobian does not depend on the parameters: made once
        # The history speaks in the user's parameters, also when the solver walks transformed ones.
        self.user_names = getattr(model, "user_names", model.param_names)
        self._to_user = getattr(model, "to_user", None)
        # A large linear problem never holds its (N, P) design matrix: it is made a chunk of rows at a
        # time and reduced to R of A = QR (P x P), which has all that the solve and the covariance need.
        self.streaming = (
            model.is_linear
            and self.robust is None
            and self.n_points * model.n_params > STREAM_ABOVE
            and x.device.type == "cpu"
            and not (self.whiten is not None and self.whiten.matrix)  # (an N x N covariance: N is small)
        )
        self._r_factor = None

    def like(self, model: Model) -> "Problem":
        """The same data, weights and loss, for another model (a view of this one's parameters)."""
        sigma = None if self.whiten is None else self.whiten.sigma
        loss, f_scale = self.robust or ("linear", 1.0)
        return Problem(model, self.x, self.y, sigma, loss, f_scale)

    def describe(self, params: torch.Tensor) -> tuple[float, ...]:
        """The solver's parameters as the user's values, for the history."""
        with torch.no_grad():
            values = params if self._to_user is None else self._to_user(params)
        return tuple(values.tolist())

    def _rows(self):
        for start in range(0, self.n_points, CHUNK_ROWS):
            sl = slice(start, start + CHUNK_ROWS)
            a = self.model.design_matrix(self.x[sl])
            t = self.y[sl]
            if self.weights is not None:
                a, t = a * self.weights[sl, None], t * self.weights[sl]
            yield a, t

    def r_factor(self) -> tuple[np.ndarray, np.ndarray]:
        """R and z = Qᵀ(weighted y) of the (weighted) design matrix A = QR, by chunks (TSQR), float64."""
        if self._r_factor is None:
            k = self.model.n_params
            r, z = np.zeros((0, k)), np.zeros(0)
            for a, t in self._rows():
                q, r = np.linalg.qr(np.vstack([r, a.double().numpy()]))
                z = q.T @ np.concatenate([z, t.double().numpy()])
            self._r_factor = (r, z)
        return self._r_factor

    def residuals(self, params: torch.Tensor) -> torch.Tensor:
        if self.streaming and not params.requires_grad:
            out = torch.empty(self.n_points, dtype=self.y.dtype)  # filled chunk by chunk: no second copy
            for i, (a, t) in enumerate(self._rows()):
                out[i * CHUNK_ROWS : i * CHUNK_ROWS + len(t)] = a @ params - t
            return out
        if self.model.is_linear and not params.requires_grad:  # one matrix product, no autograd needed
            target = self.y if self.whiten is None else self.whiten(self.y)
            return self.jacobian(params) @ params - target
        r = self.model(self.x, params) - self.y
        return r if self.whiten is None else self.whiten(r)

    def y_std(self) -> float:
        """The standard deviation of the (weighted) y: the unit of the standardized loss."""
        y = self.y if self.whiten is None else self.whiten(self.y)
        return float(y.std()) if len(y) > 1 else 0.0

    def cost(self, params: torch.Tensor) -> float:
        """The (weighted) sum of squared residuals at ``params``; ``linearize`` there reuses its residuals."""
        with torch.no_grad():
            r = self.residuals(params)
        self._last = (params, r)
        return float(r @ r) if self.robust is None else float(robust_cost(*self.robust, r))

    def linearize(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, r): the Jacobian and the residuals at ``params`` (a streamed problem gives R and Qᵀr)."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] is params:
            r = last[1]
        else:
            with torch.no_grad():
                r = self.residuals(params)
        if self.robust is not None:
            for_r, for_rows = robust_scaling(*self.robust, r)
            return self.jacobian(params) * for_rows[:, None], r * for_r
        return self.jacobian(params), r

    def scaled_jacobian(self, params: torch.Tensor) -> torch.Tensor:
        """The Jacobian whose JᵀJ is the Gauss–Newton Hessian of the cost: a robust loss's rows rescaled (as
        least_squares returns it, and curve_fit takes its covariance from it)."""
        if self.robust is None:
            return self.jacobian(params)
        with torch.no_grad():
            _, for_rows = robust_scaling(*self.robust, self.residuals(params), curvature=True)
        return self.jacobian(params) * for_rows[:, None]

    def spread(self, params: torch.Tensor) -> float:
        """The sum the standard errors scale by: χ², or with a robust loss its cost Σ f_scale² ρ (curve_fit's)."""
        with torch.no_grad():
            r = self.residuals(params)
        return float(r @ r) if self.robust is None else float(robust_cost(*self.robust, r))

    def loss(self, params: torch.Tensor) -> torch.Tensor:
        if self.robust is not None:
            return robust_cost(*self.robust, self.residuals(params)) / self.n_points
        if self.whiten is None:
            return mse(self.model(self.x, params), self.y)  # the article's loss, as it writes it
        return (self.residuals(params) ** 2).mean()

    def user_loss(self, values: torch.Tensor) -> torch.Tensor:
        """The loss at parameters in the user's terms (the solver may walk transformed ones: Constrained, Centred)."""
        to_free = getattr(self.model, "to_free", None)
        return self.loss(values if to_free is None else to_free(values))

    def jacobian(self, params: torch.Tensor) -> torch.Tensor:
        """d residuals / d params, (N, P), exact by forward-mode autograd."""
        if self.model.is_linear:
            if self._design is None:
                a = self.model.design_matrix(self.x)
                self._design = a if self.whiten is None else self.whiten(a)
            return self._design
        if hasattr(self.model, "value_and_jacobian"):  # a model that estimates its own (gradfit.numeric)
            jac = self.model.value_and_jacobian(self.x, params)[1]
            return jac if self.whiten is None else self.whiten(jac)
        try:
            with TRANSFORMS:  # torch.func is not safe in two threads at once (gradfit._threads)
                return torch.func.jacfwd(self.residuals)(params)
        except RuntimeError:  # an operation without a forward-mode rule: reverse mode, row by row
            return torch.autograd.functional.jacobian(self.residuals, params)


@dataclass
class Outcome:
    """What a solver returns: where it stopped and why."""

    params: torch.Tensor
    history: History
    converged: bool
    reason: str  # which rule stopped the fit, in words
    learning_rate: float = math.nan
    notes: list[str] = field(default_factory=list)


def run_steps(
    steps: Generator[StepRecord, float | None, Outcome], callback: Callable[[StepRecord], None] | None = None
) -> Outcome:
    """Drive a solver's steps to the end, handing each step to ``callback``; return its Outcome.

    Every iterative solver is a generator that yields one StepRecord per step and
    returns its Outcome: ``fit`` runs it to the end here, the playground steps it a
    few steps at a time (and may ``send`` a gradient method a new learning rate).
    """
    while True:
        try:
            record = next(steps)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(record)

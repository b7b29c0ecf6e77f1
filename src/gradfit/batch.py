"""``fit_many``: the same model fitted to many curves at once, as one tensor program per chunk.

Y is (B, N): one curve per row. x is shared (N,) or per curve (B, N) (with a trailing
dimension for models of several variables). Points that are NaN, or masked out, do not
count, so ragged curves are rows padded with NaN. Every curve gets its own parameters,
damping, stopping and status; curves that have converged are frozen while the others go on.

Methods: ``linear`` (one exact solve per curve, for models linear in their parameters),
``lm`` (Levenberg–Marquardt with exact Jacobians from torch.func, batched), ``auto`` (picks one
of those two), the elementwise gradient methods ``gd``, ``momentum``, ``nesterov``, ``adam``,
``rmsprop``, and ``lbfgs`` (a history and a line search per curve), in each curve's standardized
coordinates, as gradfit.fit runs them for one curve.

Backends (``backend=``): LM of a model written as a formula (an expression, a built-in, a
polynomial, a sum of those) runs as machine code one curve at a time (gradfit.solvers.compiled:
the same algorithm, the same answers to rounding, several times faster on the CPU); everything
else runs as torch tensor programs over the batch, on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from .options import check_device, nonnegative_finite, positive_finite, positive_int
from ._threads import TRANSFORMS
from .errors import DataError, ModelError, OptionError
from .library import get_model
from .losses import check_loss, rho, robust_scaling
from .models import ExpressionModel, FunctionModel, Model, Polynomial, variable_columns
from .dual import BroadcastFunction
from .numeric import NumericFunction, check_derivatives
from .params import Constrained, check_bounds, check_fixed, check_ties, inside, widths_positive
from .solvers import batched
from .solvers.batched import INITIAL_DAMPING, MAX_DAMPING, POLISH_STEPS
from .solvers.linear import check_finite
from .solvers.methods import BACKENDS, BATCH_METHODS
from .trace import model_to_fit
from .uncertainty import column_scale, covariance

STATUSES = ("converged", "max_steps", "diverged", "singular", "too_few_points")
METHODS = BATCH_METHODS
# where LM runs: "compiled" (machine code, one curve at a time: gradfit.solvers.compiled), "torch" (tensor
# programs over the batch), or "auto": compiled where it can (a model given as a formula, float64 on the CPU)
# for batches of at least COMPILED_FROM curves, once the solver is compiled. Compiling takes ~20 s once per
# machine (then numba's disk cache loads it in ~0.5 s per process): until it is, auto fits with torch and
# compiles in a background process for later fits (gradfit.solvers.compiled.compile_in_background).
COMPILED_FROM = 2000
MEMORY_BUDGET = 1 << 30  # bytes of working arrays per chunk, when chunk_size is not given
CACHE_POINTS = 1 << 19  # curves x points per chunk of an iterative method on the CPU (4 MB per float64 array)
REFINE_BELOW = 1e-6  # smallest pivot² below which a curve's normal-equation solve is refined
SINGULAR = 1e-14  # smallest pivot², relative, of the equilibrated normal matrix before a curve counts as singular


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array torch may share; a read-only one (a Dask block, a broadcast) is copied."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


@dataclass
class BatchResult:
    """Per-curve results of ``fit_many``: arrays with one row per curve.

    Attributes:
        model: the model fitted.
        method: the method that ran.
        params: (B, P) parameters, in the order of ``param_names``.
        stderr: (B, P) standard errors.
        rmse: (B,) root mean squared residuals, unweighted, over each curve's own points.
        chi2: (B,) weighted sums of squared residuals.
        n_points: (B,) points each curve had.
        n_steps: (B,) steps each curve took.
        status: (B,) "converged", "max_steps", "diverged", "singular" or "too_few_points".
        param_names: the parameters' names.
        notes: what every curve's fit shares (derivatives estimated, ...).
    """

    model: Model
    method: str
    params: np.ndarray  # (B, P)
    stderr: np.ndarray  # (B, P)
    rmse: np.ndarray  # (B,) unweighted, over each curve's own points
    chi2: np.ndarray  # (B,)
    n_points: np.ndarray  # (B,)
    n_steps: np.ndarray  # (B,)
    status: np.ndarray  # (B,) one of STATUSES
    param_names: tuple[str, ...] = field(default=())
    notes: list[str] = field(default_factory=list)  # what every curve's fit shares (derivatives estimated, ...)

    @property
    def converged(self) -> np.ndarray:
        return self.status == "converged"

    def __len__(self) -> int:
        return len(self.status)

    def counts(self) -> dict[str, int]:
        """How many curves ended in each status."""
        values, counts = np.unique(self.status, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}

    def columns(self) -> dict[str, np.ndarray]:
        """The result as named columns: each parameter, its ``_stderr``, rmse, chi2, n_points, n_steps, converged,
        status.

        Returns:
            dict: column name -> array (B,).
        """
        out = {}
        for i, name in enumerate(self.param_names):
            out[name] = self.params[:, i]
        for i, name in enumerate(self.param_names):
            out[f"{name}_stderr"] = self.stderr[:, i]
        out.update(
            rmse=self.rmse,
            chi2=self.chi2,
            n_points=self.n_points,
            n_steps=self.n_steps,
            converged=self.converged,
            status=self.status,
        )
        return out

    def to_pandas(self):
        """The result as a pandas DataFrame, one row per curve (the columns of ``columns()``).

        Returns:
            pandas.DataFrame: the table.
        """
        import pandas as pd

        return pd.DataFrame(self.columns())

    def to_arrow(self):
        """The result as a pyarrow Table, one row per curve (the columns of ``columns()``).

        Returns:
            pyarrow.Table: the table.
        """
        import pyarrow as pa

        return pa.table({k: pa.array(v) for k, v in self.columns().items()})

    def __repr__(self) -> str:
        return f"<BatchResult {self.method}: {len(self)} curves of {self.model.name}; {self.counts()}>"

    def _repr_html_(self, head: int = 5) -> str:
        """The result in a notebook: curves by status, the first rows, a histogram of the first parameter."""
        import html

        from .plots import inline_image, plot_histogram

        counts = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in self.counts().items())
        names = list(self.param_names)
        top = "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>rmse</th><th>status</th>"
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{v:.6g}</td>" for v in self.params[i])
            + f"<td>{self.rmse[i]:.4g}</td><td>{html.escape(str(self.status[i]))}</td></tr>"
            for i in range(min(head, len(self)))
        )
        picture = ""
        if names and self.converged.any():
            picture = inline_image(plot_histogram(self), f"histogram of {names[0]}")
        return (
            f"<div><b>{len(self):,} curves of {html.escape(self.model.name)}</b> by {html.escape(self.method)}"
            f"<table><tr><th>status</th><th>curves</th></tr>{counts}</table>"
            f"<table><tr>{top}</tr>{rows}</table>{'<p>…</p>' if len(self) > head else ''}{picture}</div>"
        )


def fit_many(
    model,
    x,
    Y,
    *,
    p0=None,
    method: str = "auto",
    sigma=None,
    mask=None,
    max_steps: int | None = None,
    tol: float | None = None,
    learning_rate: float | None = None,
    absolute_sigma: bool = False,
    chunk_size: int | None = None,
    variables=None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    backend: str = "auto",
    derivatives: str = "auto",
    progress: bool = False,
    bounds=None,
    fixed=None,
    tie=None,
    loss: str = "linear",
    f_scale: float = 1.0,
) -> BatchResult:
    """Fit ``model`` to every row of ``Y`` at once: a million small fits in one call, on the CPU or a GPU.

    Every curve gets its own parameters, damping, stopping rule and status; curves that have converged are frozen
    while the others go on. See [Many curves at once](../batch.md).

    Example:
        ```python
        batch = gradfit.fit_many("gaussian", x, Y)  # Y: (curves, points)
        table = batch.to_pandas()  # a row per curve: parameters, errors, rmse, status
        ```

    Args:
        model: as in ``gradfit.fit`` (a Python function written with torch operations is batched by torch.func;
            a numpy function is fitted with estimated derivatives).
        x: the points' x, shared (N,) or per curve (B, N), with a trailing dimension for several variables.
        Y: the curves, (B, N): one per row. NaN marks a point that is not there (ragged curves are rows padded
            with NaN).
        p0: starting values: (P,) for every curve, (B, P) per curve, or a dict by name (default: each curve's
            guess from its data).
        method: "auto" (linear or lm), "linear", "lm", "lbfgs", "gd", "momentum", "nesterov", "adam",
            "rmsprop".
        sigma: the errors of Y: (N,) shared or (B, N) per point.
        mask: a boolean (B, N) or (N,) array: False leaves a point out.
        max_steps: the most steps per curve (default: the method's own).
        tol: one number for every stopping rule, or a dict with ``ftol``, ``xtol``, ``gtol``.
        learning_rate: for gradient methods (default: the method's own).
        absolute_sigma: as in ``gradfit.fit``.
        chunk_size: curves per chunk (default: as many as fit in 1 GB of working arrays).
        variables: the names of the independent variables in an expression (default "x").
        dtype: torch's dtype (float64 by default).
        device: "cpu" or "cuda".
        backend: where LM runs: "auto", "compiled" (machine code, one curve at a time, for formula models on the
            CPU) or "torch" (tensor programs over the batch, on any device).
        derivatives: for a Python function, as in ``gradfit.fit``.
        progress: show a progress bar over the chunks (tqdm).
        bounds: as in ``gradfit.fit``, for every curve.
        fixed: as in ``gradfit.fit``, for every curve.
        tie: as in ``gradfit.fit``, for every curve.
        loss: a robust loss, as in ``gradfit.fit``.
        f_scale: the robust loss's scale, as in ``gradfit.fit``.

    Returns:
        BatchResult: (B, P) parameters and standard errors, each curve's rmse, χ², steps and status.
    """
    model = get_model(model, variables=_names(variables))
    bounds = check_bounds(bounds, model.param_names)
    fixed = check_fixed(fixed, model.param_names, bounds)
    ties = check_ties(tie, model.param_names, bounds, fixed)
    if (bounds or fixed or ties) and method == "linear":
        raise OptionError("Method 'linear' cannot honour bounds, fixed or tied parameters; use method='lm' or 'auto'.")
    robust = check_loss(loss, f_scale)
    robust = None if robust[0] == "linear" else robust
    if robust and method == "linear":
        raise OptionError(f"Method 'linear' cannot minimise the robust loss {loss!r}; use method='lm' or 'auto'.")
    if robust and backend == "compiled":
        raise OptionError(
            "backend='compiled' cannot run a robust loss: it runs on torch. Use backend='auto' or 'torch'."
        )
    check_derivatives(derivatives)
    if method not in METHODS:
        raise OptionError(f"Unknown method {method!r} for fit_many. Choose one of: {', '.join(METHODS)}.")
    if backend not in BACKENDS:
        raise OptionError(f"Unknown backend {backend!r} for fit_many. Choose one of: {', '.join(BACKENDS)}.")
    linear = model.is_linear and not (bounds or fixed or ties or robust)
    run = "linear" if method == "auto" and linear else "lm" if method == "auto" else method
    if run == "linear" and not model.is_linear:
        raise ModelError(f"Method 'linear' needs a model linear in its parameters; '{model.name}' is not.")
    gradient = run not in ("linear", "lm")
    if gradient:
        from .solvers import get_method

        entry = get_method(run)  # the single-fit registry's defaults, in the same standardized coordinates
        learning_rate = (
            entry.learning_rate if learning_rate is None else positive_finite(learning_rate, "learning_rate")
        )
        default_steps, default_tol = entry.max_steps, entry.tolerances.gtol
    elif learning_rate is not None:
        raise OptionError(f"Method '{run}' takes no learning rate.")
    else:
        default_steps, default_tol = 200, 1e-12
    max_steps = default_steps if max_steps is None else positive_int(max_steps, "max_steps")
    tol = default_tol if tol is None else nonnegative_finite(tol, "tol")  # (one number: fit_many has one test)

    # float64 unless asked: see engine.fit
    device = check_device(device)
    xc, Yc, weights, shared = curves(model, x, Y, sigma, mask)
    B, N = Yc.shape
    p0n = _start(model, p0, B)
    if run == "linear":  # LAPACK's SVD fails (or loops) on inf or NaN columns: refuse them first
        check_finite(model.design_matrix(torch.as_tensor(xc if shared else xc.reshape((-1,) + xc.shape[2:]))))
    user_model, notes = model, []
    if B:  # a Python function autograd cannot differentiate: estimated derivatives (looked at on the first curve)
        first = torch.as_tensor(
            p0n[0] if p0n is not None and p0n.ndim == 2 else np.ones(model.n_params) if p0n is None else p0n,
            dtype=torch.float64,
        )
        # (and a Python function read as the formula it computes: gradfit.trace)
        model, note = model_to_fit(model, torch.as_tensor(_contiguous(xc if shared else xc[0])), first, derivatives)
        notes += [note] if note else []
    limits = _Limits(model, bounds, fixed, ties) if bounds or fixed or ties else None
    if limits is not None:
        limits.check_start(p0n)
        if backend == "compiled":
            raise OptionError(
                "backend='compiled' cannot run this fit: bounds, fixed and tied parameters run on torch. "
                "Use backend='auto' or 'torch'."
            )
    program = None if limits or robust else _compiled_program(model, run, backend, B, N, dtype, device, " ".join(notes))

    if chunk_size is None:
        per_curve = 8 * N * (model.n_params + 6) * 4  # residuals, Jacobian and work arrays, in bytes
        chunk_size = max(1, min(B, MEMORY_BUDGET // per_curve))
        if run != "linear" and program is None and torch.device(device).type == "cpu":
            # iterated on the CPU, chunks whose (curves x points) arrays stay in the cache run faster:
            # measured on 100,000 Gaussian peaks of 50 points, 10,000 curves a chunk fit 1.4x faster than all
            chunk_size = min(chunk_size, max(256, CACHE_POINTS // N))
    chunk_size = positive_int(chunk_size, "chunk_size")

    columns: dict = {}  # the per-curve arrays, made on the first chunk and filled chunk by chunk

    def keep(sl: slice, chunk: dict) -> None:
        for key, value in chunk.items():
            if key not in columns:
                columns[key] = np.empty((B,) + value.shape[1:], dtype=value.dtype)
            columns[key][sl] = value

    # LM on a polynomial walks the coefficients of its centred variable (see models.Centred), mapped back
    centre = run == "lm" and type(model) is Polynomial and model.degree > 0 and limits is None and robust is None
    chunks = range(0, B, chunk_size)
    per_curve = False  # a Python function torch.func cannot batch: its curves one at a time (see Chunk)
    if progress:
        from tqdm.auto import tqdm

        # the first compiled fit on a machine compiles the solver: say so rather than sit at 0% for 20 s
        first = program is not None and not _compiled().cached()
        chunks = tqdm(
            chunks,
            desc="chunks (compiling the solver first: once per machine, ~20 s)" if first else "chunks",
            unit="chunk",
            leave=False,
        )
    for start in chunks:
        sl = slice(start, min(B, start + chunk_size))
        as_t = lambda a: torch.as_tensor(_contiguous(a), dtype=dtype, device=device)  # noqa: E731
        xs = xc if shared else xc[sl]
        starts = (
            None
            if p0n is None
            else p0n[sl]
            if p0n.ndim == 2
            else np.broadcast_to(p0n, (sl.stop - sl.start, model.n_params))
        )
        if centre:
            fitted = _centred_lm(
                model, program, as_t, xs, shared, Yc[sl], weights[sl], starts, max_steps, tol, absolute_sigma
            )
            keep(sl, _undetermined(fitted, model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma))
            continue
        if program is not None:  # LM compiled, one curve at a time (gradfit.solvers.compiled): numpy in and out
            if starts is None:  # the model's guesses, made on the chunk as the torch backend makes them
                starts = Chunk(model, as_t(xs), shared, as_t(Yc[sl]), as_t(weights[sl])).guess().cpu().numpy()
            fitted = _fit_compiled(
                model, program, xs, shared, Yc[sl], weights[sl], starts, max_steps, tol, absolute_sigma
            )
            keep(sl, _undetermined(fitted, model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma))
            continue
        p = None if starts is None else as_t(starts)
        solved = model if limits is None else limits.solved  # (the solver walks the free parameters)
        while True:
            part = (Chunk if robust is None else partial(_Robust, robust=robust))(
                solved, as_t(xs), shared, as_t(Yc[sl]), as_t(weights[sl]), per_curve
            )
            try:
                if run == "linear":
                    result = part.solve_linear()  # needs no start
                else:
                    if p is None:
                        p = part.guess() if limits is None else Chunk(model, part.x, shared, part.y, part.w).guess()
                    start = p if limits is None else limits.to_free(p)
                    if run == "lbfgs":
                        result = batched.lbfgs(part, start, max_steps, tol, learning_rate)
                    elif gradient:
                        result = batched.descend(part, start, run, learning_rate, max_steps, tol)
                    else:
                        result = batched.levenberg_marquardt(part, start, max_steps, tol)
                if limits is None:
                    fitted = part.finish(*result, absolute_sigma)
                else:
                    user = limits.solved.to_user(result[0])
                    view = (Chunk if robust is None else partial(_Robust, robust=robust))(
                        limits.view, part.x, shared, part.y, part.w, per_curve
                    )
                    fitted = view.finish(user[:, limits.free], *result[1:], absolute_sigma)
                break
            except (RuntimeError, TypeError) as e:  # a model torch.func cannot batch (an if on a parameter)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if not per_curve and isinstance(model, FunctionModel):  # then one curve at a time, more slowly
                    per_curve = True
                    notes.append(
                        f"{model.name} fitted one curve at a time: torch.func cannot run it over the batch at once "
                        f"({first[:100]})"
                    )
                    continue
                raise ModelError(
                    f"Model {model.name} cannot be fitted over a batch ({type(e).__name__}: {first}). "
                    "Write it with torch operations only, one value per point."
                ) from None
        view_model = model if limits is None else limits.view
        if robust is not None:
            notes_robust = "robust loss {} (f_scale={:g}): standard errors as curve_fit's with it".format(*robust)
            notes += [notes_robust] if notes_robust not in notes else []
        fitted = _undetermined(fitted, view_model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma, per_curve)
        keep(sl, fitted if limits is None else limits.full(fitted, user, view, absolute_sigma))
    if B == 0:  # no curves: an empty result of the right shapes (a Dask partition may hold none)
        k = model.n_params
        columns = {
            "params": np.zeros((0, k)),
            "stderr": np.zeros((0, k)),
            "rmse": np.zeros(0),
            "chi2": np.zeros(0),
            "n_points": np.zeros(0, dtype=np.int64),
            "n_steps": np.zeros(0, dtype=np.int64),
            "status": np.zeros(0, dtype=np.int8),
        }
    columns["status"] = np.array(STATUSES)[columns["status"]]  # names from codes, once (not chunk by chunk)
    # widths enter squared: reported positive, as gradfit.fit does (a tie on a width follows it)
    columns["params"], _ = widths_positive(model, columns["params"], bounds, fixed, ties)
    notes += [model.note] if isinstance(model, NumericFunction) else []
    return BatchResult(model=user_model, method=run, param_names=model.param_names, notes=notes, **columns)


class _Limits:
    """Bounds, fixed and tied parameters over a batch, as gradfit.fit has them: the solver walks each curve's free,
    unbounded parameters (params.Constrained, a change of variables of the problem), and the statistics and
    standard errors come from the user's parameters with the fixed and tied ones left out (a tied one's
    propagated from the others')."""

    def __init__(self, model: Model, bounds, fixed, ties):
        self.names, self.bounds, self.fixed, self.ties = model.param_names, bounds, fixed, ties
        self.solved = Constrained(model, bounds, fixed, ties)
        self.view = Constrained(model, {}, fixed, ties) if fixed or ties else model  # the free ones only
        self.free = self.solved.free_index

    def check_start(self, p0) -> None:
        """p0 (P,) or (B, P) inside the bounds of every parameter not fixed."""
        if p0 is None:
            return
        rows = np.atleast_2d(p0)
        for name, (lower, upper) in self.bounds.items():
            if name in self.fixed:
                continue
            v = rows[:, self.names.index(name)]
            out = int(((v < lower) | (v > upper)).sum())
            if out and np.ndim(p0) == 1:  # one start for every curve: as gradfit.fit says it
                raise ModelError(f"p0 {name}={v[0]:g} is outside its bounds ({lower:g}, {upper:g}).")
            if out:
                raise ModelError(
                    f"p0 {name} is outside its bounds ({lower:g}, {upper:g}) for {out} of {len(rows)} curves."
                )

    def to_free(self, p: torch.Tensor) -> torch.Tensor:
        """Starts (B, P) in the user's terms: fixed values put in, moved inside the bounds, as free values."""
        p = p.clone()
        for name, value in self.fixed.items():
            p[:, self.names.index(name)] = value
        return self.solved.to_free(inside(p, self.names, self.bounds))

    def full(self, fitted: dict, user: torch.Tensor, view, absolute_sigma: bool) -> dict:
        """The statistics of the free parameters as every parameter's: values from ``user``, a fixed one's
        standard error 0, a tied one's G Cov Gᵀ from the free ones' covariance (``view``: the chunk of the
        free parameters, whose Jacobian gives it) and the ties' gradient G."""
        params = user.detach().double().cpu().numpy().copy()
        params[fitted["status"] == STATUSES.index("too_few_points")] = np.nan
        stderr = np.zeros_like(params)
        stderr[:, self.free] = fitted["stderr"]
        if self.ties:
            with torch.no_grad():
                free = user[:, self.free]
                jac = view.jacobian(free)
                n, k = view.n_points, len(self.free)
                factor = torch.ones_like(n) if absolute_sigma else torch.from_numpy(fitted["chi2"]).to(jac) / (n - k)
                cov = torch.linalg.pinv(jac.transpose(1, 2) @ jac) * factor[:, None, None]
                g = self.view.gradient(free)
                spread = torch.diagonal(g @ cov @ g.transpose(1, 2), dim1=1, dim2=2).clamp_min(0).sqrt()
            tied = [self.names.index(name) for name in self.ties]
            stderr[:, tied] = spread[:, tied].double().cpu().numpy()
        return {**fitted, "params": params, "stderr": stderr}


def _compiled_program(model: Model, run: str, backend: str, n_curves: int, n_points: int, dtype, device, traced=""):
    """The model's Program when LM runs compiled, else None (torch). backend="compiled" where it cannot
    run compiled is an error that says why (``traced``: why a Python function was not read as a formula)."""
    if backend == "torch" or (backend == "auto" and n_curves < COMPILED_FROM):
        return None  # (and numba is not even imported)
    program = model.program() if run == "lm" else None
    expressions = [getattr(part, "expression", None) for part in getattr(model, "parts", [model])]
    torch_only = next((name for e in expressions if e is not None and (name := e.torch_only())), None)
    why = (
        "it runs only method 'lm'"
        if run != "lm"
        else f"model {model.name} uses {torch_only}(), which only torch computes"
        if torch_only
        else f"model {model.name} is a Python function not read as a formula ({traced.split(': ', 1)[-1]})"
        if program is None and traced
        else f"model {model.name} is a Python function (write it as a formula to compile it)"
        if program is None
        else "it computes in float64 only"
        if dtype != torch.float64
        else f"it runs on the CPU only, not {str(device)!r}"
        if device.type != "cpu"
        else f"curves of {n_points:,} points are too long for it"
        if not _compiled().small_enough(program, n_points)
        else None
    )
    if why is None and backend == "auto" and not _compiled().cached():
        # compiling takes ~20 s once per machine, while torch fits a few thousand curves in about a second:
        # fit this batch with torch, and compile for the fits after it in a process of its own
        _compiled().compile_in_background()
        return None
    if why is None:
        return program
    if backend == "compiled":
        raise OptionError(f"backend='compiled' cannot run this fit: {why}. Use backend='auto' or 'torch'.")
    return None


def _compiled():
    from .solvers import compiled  # imports numba: only when a fit runs compiled

    return compiled


def _fit_compiled(
    model: Model, program, x, shared: bool, y, w, start, max_steps: int, tol: float, absolute_sigma: bool
) -> dict:
    """One chunk's LM fits in machine code; the same per-curve arrays as Chunk.finish gives."""
    x = x.reshape(1 if shared else len(y), y.shape[1], -1)  # (1 or B, N, variables)
    fitted = _compiled().fit(
        program, x, y, w, start, max_steps, tol, absolute_sigma, (INITIAL_DAMPING, MAX_DAMPING, POLISH_STEPS, SINGULAR)
    )
    t = {key: torch.from_numpy(value) for key, value in fitted.items()}
    return _host(model, t["params"], t["stderr"], t["rmse"], t["chi2"], t["n_points"], t["n_steps"], t["status"])


def _one_by_one(function, shared: bool):
    """function(p, x, y, w) of one curve, over a batch by a Python loop: vmap's stand-in for what it cannot run."""

    def run(p, x, y, w):
        return torch.stack([function(p[b], x if shared else x[b], y[b], w[b]) for b in range(len(p))])

    return run


def _centred_lm(
    model: Polynomial, program, as_t, x, shared: bool, y, w, starts, max_steps: int, tol: float, absolute_sigma: bool
):
    """LM (compiled or torch) on a polynomial in t = (x - m)/s, its coefficients mapped back (p = M q), the
    statistics and standard errors from x's chunk as any polynomial's (Chunk.finish)."""
    xt = as_t(x)
    m, s, M = model.centring(xt)
    t = (xt - m) / s
    if starts is None:  # a polynomial's guess: zeros, in either variable
        q0 = torch.zeros(len(y), model.n_params, dtype=xt.dtype, device=xt.device)
    else:
        q0 = torch.linalg.solve(M, as_t(starts).unsqueeze(-1)).squeeze(-1)
    if program is not None:
        fitted = _fit_compiled(
            model, program, t.cpu().numpy(), shared, y, w, q0.cpu().numpy(), max_steps, tol, absolute_sigma=False
        )
        q, steps, status = (torch.from_numpy(fitted[key]) for key in ("params", "n_steps", "status"))
        q, steps, status = q.to(xt), steps.to(xt.device), status.long().to(xt.device)
    else:
        q, steps, status = batched.levenberg_marquardt(Chunk(model, t, shared, as_t(y), as_t(w)), q0, max_steps, tol)
    p = (M @ q.unsqueeze(-1)).squeeze(-1)
    return Chunk(model, xt, shared, as_t(y), as_t(w)).finish(p, steps, status, absolute_sigma)


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
            batched = lambda f: _one_by_one(f, shared)  # noqa: E731
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
        chol, scale, singular, pivot2 = _factor(a, pivots=True)
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
            chol, scale, singular = _factor(jac)
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
        return _host(self.model, p, stderr, rmse, chi2, self.n_points, steps, status)

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
        return _host(self.model, p, stderr, rmse, chi2, self.n_points, steps, status)


class _Robust(Chunk):
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


def _undetermined(
    fitted: dict, model: Model, as_t, x, shared: bool, y, w, absolute_sigma: bool, per_curve: bool = False
) -> dict:
    """The standard errors of the curves whose data do not determine every parameter (status 'singular'), by
    gradfit.uncertainty's rule, as gradfit.fit gives them: inf for each parameter a null direction of the
    curve's Jacobian moves, the pseudo-inverse's for the others."""
    rows = np.flatnonzero(fitted["status"] == STATUSES.index("singular"))
    if not len(rows):
        return fitted
    k = model.n_params
    part = Chunk(model, as_t(x if shared else x[rows]), shared, as_t(y[rows]), as_t(w[rows]), per_curve)
    with torch.no_grad():
        jac = part.jacobian(torch.as_tensor(fitted["params"][rows], dtype=part.y.dtype, device=part.y.device))
    for row, j in zip(rows, jac.double().cpu().numpy()):
        with np.errstate(over="ignore", invalid="ignore"):
            overflows = not np.isfinite(j * j).all()
        if overflows:  # a curve that ended where its model overflows: no errors to give
            fitted["stderr"][row] = np.nan
            continue
        n, chi2 = int(fitted["n_points"][row]), float(fitted["chi2"][row])
        factor = 1.0 if absolute_sigma else chi2 / (n - k) if n > k else math.inf
        cov, _, _ = covariance(j, (n, k), factor)
        fitted["stderr"][row] = np.sqrt(np.diag(cov))
    return fitted


def _host(model: Model, p, stderr, rmse, chi2, n_points, steps, status) -> dict:
    """The per-curve arrays, back on the host as numpy (status as codes into STATUSES)."""
    status = status.clone()
    status[n_points < model.n_params] = 4
    codes = status.cpu().numpy()
    params = p.detach().double().cpu().numpy()
    params[codes == 4] = np.nan  # no fit without enough points
    return {
        "params": params,
        "stderr": stderr.double().cpu().numpy(),
        "rmse": rmse.double().cpu().numpy(),
        "chi2": chi2.double().cpu().numpy(),
        "n_points": n_points.long().cpu().numpy(),
        "n_steps": steps.cpu().numpy(),
        "status": codes.astype(np.int8),
    }


def _factor(jac: torch.Tensor, pivots: bool = False):
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


def _names(variables):
    if variables is None:
        return ("x",)
    return (variables,) if isinstance(variables, str) else tuple(variables)


def _array(values, name: str) -> np.ndarray:
    from .data import as_array

    return as_array(values, name)


def _start(model: Model, p0, batch: int):
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
    Yn = _array(Y, "Y")
    if Yn.ndim != 2:
        raise DataError(f"`Y` must be (curves, points), got shape {Yn.shape}.")
    B, N = Yn.shape
    xn = _array(x, "x")
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
        s = np.broadcast_to(_array(sigma, "sigma"), (B, N))
        bad = valid & ~(np.isfinite(s) & (s > 0))
        if bad.any():
            raise DataError(f"`sigma` must be finite and > 0 where Y is used; it is not at {int(bad.sum())} points.")
        weights = np.where(valid, 1 / np.where(valid, s, 1.0), 0.0)
    Yc = Yn if everywhere else np.where(valid, Yn, 0.0)
    xc = np.where(np.isfinite(xn), xn, 0.0)
    return xc, Yc, weights, shared


def fit_long(model, groups, x, y, sigma=None, **options) -> tuple[np.ndarray, BatchResult]:
    """Fit every curve of long-format data (one row per point; ``groups`` names each point's curve).

    Returns the curves' names (sorted) and the BatchResult, one row per curve in that order.
    The curves are NaN-padded to the longest, which fit_many leaves out.
    """
    names, X, Y, S = pack_long(groups, x, y, sigma)
    return names, fit_many(model, X, Y, sigma=S, **options)


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

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
from functools import partial

import numpy as np
import torch

from .options import check_device, nonnegative_finite, positive_finite, positive_int, variable_names
from .errors import ModelError, OptionError
from .library import get_model
from .losses import check_loss
from .models import FunctionModel, Model, Polynomial
from .numeric import NumericFunction, check_derivatives
from .params import Constrained, check_bounds, check_fixed, check_ties, inside, widths_positive
from .solvers import batched
from .solvers.lm import lm_many
from .solvers.lm_rules import INITIAL_DAMPING, MAX_DAMPING, POLISH_STEPS
from .solvers.linear import check_finite
from .solvers.methods import BACKENDS, BATCH_METHODS
from .trace import model_to_fit
from .uncertainty import covariance, robust_note
from .batch_data import batch_start, contiguous_array, curves, pack_long
from .batch_lstsq import SINGULAR
from .batch_problem import Chunk, RobustChunk
from .batch_result import BatchResult, STATUSES, host_result


METHODS = BATCH_METHODS


# where LM runs: "compiled" (machine code, one curve at a time: gradfit.solvers.compiled), "torch" (tensor
# programs over the batch), or "auto": compiled where it can (a model given as a formula, float64 on the CPU)
# for batches of at least COMPILED_FROM curves, once the solver is compiled. Compiling takes ~20 s once per
# machine (then numba's disk cache loads it in ~0.5 s per process): until it is, auto fits with torch and
# compiles in a background process for later fits (gradfit.solvers.compiled.compile_in_background).
COMPILED_FROM = 2000
MEMORY_BUDGET = 1 << 30  # bytes of working arrays per chunk, when chunk_size is not given
CACHE_POINTS = 1 << 19  # curves x points per chunk of an iterative method on the CPU (4 MB per float64 array)


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
    model = get_model(model, variables=variable_names(variables))
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
    p0n = batch_start(model, p0, B)
    if run == "linear":  # LAPACK's SVD fails (or loops) on inf or NaN columns: refuse them first
        check_finite(model.design_matrix(torch.as_tensor(xc if shared else xc.reshape((-1,) + xc.shape[2:]))))
    user_model, notes = model, []
    if B:  # a Python function autograd cannot differentiate: estimated derivatives (looked at on the first curve)
        first = torch.as_tensor(
            p0n[0] if p0n is not None and p0n.ndim == 2 else np.ones(model.n_params) if p0n is None else p0n,
            dtype=torch.float64,
        )
        # (and a Python function read as the formula it computes: gradfit.trace)
        model, note = model_to_fit(
            model, torch.as_tensor(contiguous_array(xc if shared else xc[0])), first, derivatives
        )
        notes += [note] if note else []
    limits = Constraints(model, bounds, fixed, ties) if bounds or fixed or ties else None
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
        as_t = lambda a: torch.as_tensor(contiguous_array(a), dtype=dtype, device=device)  # noqa: E731
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
            keep(sl, undetermined_curves(fitted, model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma))
            continue
        if program is not None:  # LM compiled, one curve at a time (gradfit.solvers.compiled): numpy in and out
            if starts is None:  # the model's guesses, made on the chunk as the torch backend makes them
                starts = Chunk(model, as_t(xs), shared, as_t(Yc[sl]), as_t(weights[sl])).guess().cpu().numpy()
            fitted = _fit_compiled(
                model, program, xs, shared, Yc[sl], weights[sl], starts, max_steps, tol, absolute_sigma
            )
            keep(sl, undetermined_curves(fitted, model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma))
            continue
        p = None if starts is None else as_t(starts)
        solved = model if limits is None else limits.solved  # (the solver walks the free parameters)
        while True:
            part = (Chunk if robust is None else partial(RobustChunk, robust=robust))(
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
                        result = lm_many(part, start, max_steps, tol)
                if limits is None:
                    fitted = part.finish(*result, absolute_sigma)
                else:
                    user = limits.solved.to_user(result[0])
                    view = (Chunk if robust is None else partial(RobustChunk, robust=robust))(
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
            notes_robust = robust_note(robust)
            notes += [notes_robust] if notes_robust not in notes else []
        fitted = undetermined_curves(
            fitted, view_model, as_t, xs, shared, Yc[sl], weights[sl], absolute_sigma, per_curve
        )
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


class Constraints:
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
    return host_result(model, t["params"], t["stderr"], t["rmse"], t["chi2"], t["n_points"], t["n_steps"], t["status"])


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
        q, steps, status = lm_many(Chunk(model, t, shared, as_t(y), as_t(w)), q0, max_steps, tol)
    p = (M @ q.unsqueeze(-1)).squeeze(-1)
    return Chunk(model, xt, shared, as_t(y), as_t(w)).finish(p, steps, status, absolute_sigma)


def undetermined_curves(
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


def fit_long(model, groups, x, y, sigma=None, **options) -> tuple[np.ndarray, BatchResult]:
    """Fit every curve of long-format data (one row per point; ``groups`` names each point's curve).

    Returns the curves' names (sorted) and the BatchResult, one row per curve in that order.
    The curves are NaN-padded to the longest, which fit_many leaves out.
    """
    names, X, Y, S = pack_long(groups, x, y, sigma)
    return names, fit_many(model, X, Y, sigma=S, **options)

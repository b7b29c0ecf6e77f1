"""``fit_global``: one model fitted to many data sets at once, some of its parameters shared by all of them.

Each data set keeps its own copy of the other (local) parameters; the shared ones are fitted to all the data.
The Jacobian of the stacked problem is block-structured — a set's local parameters touch only its own rows,
the shared ones touch every row — so Levenberg–Marquardt never forms it whole: with J_b = [A_b | B_b] (shared
| local columns of set b) the damped normal equations

    [ U    W_1 ... W_B ] [δs ]     [ g_s ]          U = Σ A_bᵀA_b,  W_b = A_bᵀB_b,  V_b = B_bᵀB_b
    [ W_bᵀ      V_b    ] [δl_b] = -[ g_b ]          g_s = Σ A_bᵀr_b,  g_b = B_bᵀr_b

are solved through the Schur complement of the per-set blocks, (U − Σ W_b V_b⁻¹ W_bᵀ) δs = −(g_s − Σ W_b V_b⁻¹
g_b), then δl_b = −V_b⁻¹(g_b + W_bᵀ δs): the per-set blocks as one batch of small Cholesky solves (fit_many's
engine gives every set's residuals and Jacobian at once), the shared block one small dense solve. Memory and
time grow with the number of sets as fit_many's do, not with its square. Only the step is this module's own:
whether to keep it, the damping, the stopping tests and the Gauss–Newton steps near the optimum are the one
LM's rules (solvers.lm_rules), applied to the whole problem.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .batch_data import curves, pack_long
from .batch import Constraints
from .batch_problem import Chunk, RobustChunk
from .errors import DataError, ModelError, OptionError
from .library import get_model
from .losses import check_loss
from .models import Model
from .params import check_bounds, check_fixed, check_ties
from .solvers.lm_rules import INITIAL_DAMPING, ITERATING, MAX_STEPS, judge, reason
from .options import check_device, nonnegative_finite, positive_int, variable_names
from .trace import model_to_fit
from .global_result import GlobalResult, Held, global_result

MEMORY = 256 * 2**20  # bytes of residuals and Jacobians held at once: the sets are linearized a chunk at a time


def fit_global(
    model,
    datasets,
    *,
    shared,
    group: str | None = None,
    x=None,
    y=None,
    sigma=None,
    p0=None,
    max_steps: int = 200,
    tol: float = 1e-15,
    absolute_sigma: bool = False,
    variables=None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    derivatives: str = "auto",
    bounds=None,
    fixed=None,
    tie=None,
    loss: str = "linear",
    f_scale: float = 1.0,
) -> GlobalResult:
    """Fit ``model`` to every data set at once, the parameters named in ``shared`` common to all of them.

    One Levenberg–Marquardt fit of the stacked problem, its normal equations solved by blocks (each set's own
    parameters against the shared ones), so thousands of sets cost about as much as ``fit_many`` on them. See
    [Global fits](../batch.md#global-fits-parameters-shared-across-data-sets).

    Args:
        model: as in ``gradfit.fit``.
        datasets: a list of (x, y) or (x, y, sigma) tuples; or a long table — a pandas DataFrame, or a CSV or
            Parquet file (a folder or glob of Parquet files) — with one row per point and a ``group`` column
            naming each point's set.
        shared: the names of the parameters common to every set.
        group: a long table's column naming each point's set.
        x: a long table's x column (default: the first column other than ``group``).
        y: a long table's y column (default: the next one).
        sigma: a long table's column of errors of y (default: none).
        p0: a dict of starting values for every set (default: each set's guess, the shared ones started at the
            median of the sets' guesses).
        max_steps: the most Levenberg–Marquardt steps.
        tol: the relative decrease of χ² (and relative step) that stops the fit (χ² is flat at its minimum:
            1e-15 keeps the parameters' digits to ~1e-8).
        absolute_sigma: as in ``gradfit.fit``.
        variables: the names of the independent variables in an expression (default "x").
        dtype: torch's dtype (float64 by default).
        device: "cpu" or "cuda".
        derivatives: for a Python function, as in ``gradfit.fit``.
        bounds: as in ``gradfit.fit``, for every set (a shared parameter's bound holds for its one value).
        fixed: as in ``gradfit.fit``: held at that value in every set (neither shared nor a set's own).
        tie: as in ``gradfit.fit``: in every set, a parameter computed from the others (the shared and the set's
            own), its standard error propagated from theirs.
        loss: a robust loss, as in ``gradfit.fit`` ("soft_l1", "huber", "cauchy", "arctan"; default least squares).
        f_scale: the robust loss's scale, as in ``gradfit.fit``.

    Returns:
        GlobalResult: the shared values and errors, a per-set table, each set's χ².
    """
    model = get_model(model, variables=variable_names(variables or None))
    names = model.param_names
    common = _shared(shared, names)
    bounds = check_bounds(bounds, names)
    fixed = check_fixed(fixed, names, bounds)
    ties = check_ties(tie, names, bounds, fixed)
    robust = check_loss(loss, f_scale)
    robust = None if robust[0] == "linear" else robust
    make = Chunk if robust is None else partial(RobustChunk, robust=robust)  # (a robust loss: its transform)
    held = [n for n in common if n in fixed or n in ties]
    if held:
        raise OptionError(
            f"{held[0]!r} is in `shared` and {'fixed' if held[0] in fixed else 'tied'}: a fixed or tied parameter "
            "is neither shared nor a set's own; leave it out of `shared`."
        )
    free = [n for n in names if n not in fixed and n not in ties]  # what the solver walks
    max_steps = positive_int(max_steps, "max_steps")
    tol = nonnegative_finite(tol, "tol")
    device = check_device(device)
    keys, X, Y, S = _sets(datasets, group, x, y, sigma)
    xc, Yc, weights, shared_x = curves(model, X, Y, S)
    n_points = (weights > 0).sum(axis=1)
    local = [n for n in free if n not in common]
    if not local:
        raise OptionError(
            "Every parameter is shared, fixed or tied: that is one fit of all the data (gradfit.fit on the points "
            "together); leave a set its own parameter."
        )
    few = np.flatnonzero(n_points < len(local))
    if len(few):
        key = keys[few[0]].item() if hasattr(keys[few[0]], "item") else keys[few[0]]
        raise DataError(
            f"Data set {key!r} has {n_points[few[0]]} point{'' if n_points[few[0]] == 1 else 's'}, fewer "
            f"than its {len(local)} own parameters "
            f"({', '.join(local)}): give each set enough points, or share more parameters."
        )
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
    start = _start(model, p0, len(Y))
    first = torch.as_tensor(start[0] if start is not None else np.ones(len(names)), dtype=torch.float64)
    model, note = model_to_fit(model, torch.as_tensor(xc if shared_x else xc[0]), first, derivatives)
    # bounds, fixed and tied parameters as fit_many has them (batch.Constraints): the solver walks each set's
    # free, unbounded parameters (params.Constrained, a change of variables of the problem)
    limits = Constraints(model, bounds, fixed, ties) if bounds or fixed or ties else None
    if limits is not None and start is not None:
        limits.check_start(start[0])  # (one p0 for every set)
    chunks = _chunks(model, as_t, xc, Yc, weights, shared_x)
    if start is None:  # each set's guess; the shared parameters from the middle of theirs
        guess = torch.cat([chunk.guess() for chunk, _ in chunks]).double().cpu().numpy()
        start = guess.copy()
        start[:, [names.index(n) for n in common]] = np.median(guess[:, [names.index(n) for n in common]], axis=0)
    p = as_t(start)
    solved = model if limits is None else limits.solved
    if limits is not None:
        p = limits.to_free(p)
    if solved is not model or robust is not None:
        chunks = [(make(solved, c.x, c.shared, c.y, c.w), sl) for c, sl in chunks]
    idx_s, idx_l = [free.index(n) for n in common], [free.index(n) for n in local]
    solver = _Schur(chunks, idx_s, idx_l, p[0, idx_s].clone(), p[:, idx_l].clone())
    steps, converged, reason = solver.run(max_steps, tol)
    held, spread = None, None
    if robust is not None:  # the robust cost at the optimum: curve_fit's scale of the covariance with it
        spread = solver.cost(solver.s, solver.ell)
    if solved is not model or robust is not None:  # the statistics at the user's values, by the free ones
        with torch.no_grad():
            user = solver.params(solver.s, solver.ell, slice(0, len(Yc)))
            user = user if solved is model else solved.to_user(user)
        view = model if limits is None else limits.view
        u = user[:, [names.index(n) for n in free]]
        view_chunks = [(make(view, c.x, c.shared, c.y, c.w), sl) for c, sl in chunks]
        for chunk, _ in view_chunks if robust is not None else ():
            chunk.plain = True  # the plain residuals, and the rows least_squares rescales (Triggs' term)
        solver = _Schur(view_chunks, idx_s, idx_l, u[0, idx_s], u[:, idx_l], exact=True)
        held = Held(user, view, free, bounds, fixed, ties, robust, spread)
    return global_result(
        model, keys, names, common, solver, steps, converged, reason, n_points, absolute_sigma, note, held
    )


def _shared(shared, names) -> tuple[str, ...]:
    common = (shared,) if isinstance(shared, str) else tuple(shared or ())
    unknown = [n for n in common if n not in names]
    if unknown:
        raise ModelError(f"`shared` names unknown parameter {unknown[0]!r}. The parameters are: {', '.join(names)}.")
    if not common:
        raise OptionError("`shared` names no parameter: to fit every set on its own, use gradfit.fit_many.")
    if set(common) == set(names):
        raise OptionError(
            "`shared` names every parameter: that is one fit of all the data (gradfit.fit on the points together)."
        )
    return tuple(n for n in names if n in common)  # in the model's order


def _sets(datasets, group, x, y, sigma):
    """The sets' keys and their X, Y, sigma as NaN-padded rows (batch.pack_long)."""
    if isinstance(datasets, (str, Path)) or hasattr(datasets, "columns"):
        if group is None:
            raise OptionError("A long table needs `group`: the column that names each point's data set.")
        if isinstance(datasets, (str, Path)):
            from .stream_data import read_long

            groups, columns = read_long(datasets, group, x=x, y=y, sigma=sigma)
        else:
            import pyarrow as pa

            from .io import long_columns

            table = pa.Table.from_pandas(datasets, preserve_index=False)
            groups, columns = long_columns(table, 0, "the DataFrame", group, x=x, y=y, sigma=sigma)
        return pack_long(groups.to_numpy(zero_copy_only=False), columns["x"], columns["y"], columns.get("sigma"))
    if group is not None or x is not None or y is not None or sigma is not None:
        raise OptionError("`group`, `x`, `y` and `sigma` name columns of a long table; a list of sets holds its own.")
    try:
        sets = [tuple(s) for s in datasets]
    except TypeError:
        raise DataError("`datasets` must be a list of (x, y) or (x, y, sigma) tuples, a DataFrame or a file.") from None
    if not sets:
        raise DataError("`datasets` is empty: give at least one data set.")
    if any(len(s) not in (2, 3) for s in sets):
        raise DataError("Each data set must be (x, y) or (x, y, sigma).")
    with_sigma = {len(s) == 3 for s in sets}
    if len(with_sigma) > 1:
        raise DataError("Give sigma for every data set or for none.")
    arrays = [[np.asarray(a, dtype=np.float64) for a in s] for s in sets]
    for k, s in enumerate(arrays):
        if not len(s[0]) == len(s[1]) or (len(s) == 3 and len(s[2]) != len(s[1])):
            raise DataError(f"Data set {k}: x, y (and sigma) must have the same length, got {[len(a) for a in s]}.")
    groups = np.repeat(np.arange(len(arrays)), [len(s[1]) for s in arrays])
    cat = lambda i: np.concatenate([s[i] for s in arrays])  # noqa: E731
    return pack_long(groups, cat(0), cat(1), cat(2) if True in with_sigma else None)


def _start(model: Model, p0, n_sets: int):
    if p0 is None:
        return None
    if not isinstance(p0, dict):
        raise ModelError("`p0` of a global fit is a dict of starting values by name, the same for every set.")
    missing = [n for n in model.param_names if n not in p0]
    unknown = [n for n in p0 if n not in model.param_names]
    if missing or unknown:
        raise ModelError(f"`p0` must give every parameter of {', '.join(model.param_names)}, and only those.")
    row = np.array([p0[n] for n in model.param_names], dtype=np.float64)
    if not np.isfinite(row).all():
        raise ModelError("`p0` must be finite.")
    return np.repeat(row[None, :], n_sets, axis=0)


def _chunks(model, as_t, xc, Yc, weights, shared_x) -> list[tuple[Chunk, slice]]:
    n_sets, n = Yc.shape
    size = max(1, min(n_sets, MEMORY // max(1, 8 * n * (model.n_params + 4))))
    out = []
    for start in range(0, n_sets, size):
        sl = slice(start, min(n_sets, start + size))
        x = as_t(xc if shared_x else xc[sl])
        out.append((Chunk(model, x, shared_x, as_t(Yc[sl]), as_t(weights[sl])), sl))
    return out


class _Schur:
    """Levenberg–Marquardt on shared parameters s (S,) and each set's local ones l (B, L), through the Schur
    complement of the per-set blocks (see the module docstring)."""

    def __init__(self, chunks, idx_s, idx_l, s, ell, exact: bool = False):
        """``exact``: linearize by the chunks' residuals and exact Jacobian (for the statistics), not by what
        Levenberg–Marquardt steps on (a robust loss's reweighted rows: batch_problem.RobustChunk)."""
        self.chunks, self.idx_s, self.idx_l = chunks, idx_s, idx_l
        self.s, self.ell, self.exact = s, ell, exact
        self.n_params = len(idx_s) + len(idx_l)
        self._most = None  # the largest diag(JᵀJ) met so far (U's, each set's): Marquardt's scaling

    def params(self, s, ell, sl) -> torch.Tensor:
        p = torch.empty((sl.stop - sl.start, self.n_params), dtype=ell.dtype, device=ell.device)
        p[:, self.idx_s] = s
        p[:, self.idx_l] = ell[sl]
        return p

    def residuals(self, s, ell) -> list[torch.Tensor]:
        with torch.no_grad():
            return [chunk.residuals(self.params(s, ell, sl)) for chunk, sl in self.chunks]

    def cost(self, s, ell) -> float:
        total = sum(float((r * r).sum()) for r in self.residuals(s, ell))
        return total if math.isfinite(total) else math.inf

    def linearize(self, s, ell):
        """U (S,S), g_s (S,), V (B,L,L), W (B,S,L), g_l (B,L) and the cost at (s, ell)."""
        S, L, B = len(self.idx_s), len(self.idx_l), len(ell)
        U = torch.zeros((S, S), dtype=ell.dtype, device=ell.device)
        gs = torch.zeros(S, dtype=ell.dtype, device=ell.device)
        V = torch.empty((B, L, L), dtype=ell.dtype, device=ell.device)
        W = torch.empty((B, S, L), dtype=ell.dtype, device=ell.device)
        gl = torch.empty((B, L), dtype=ell.dtype, device=ell.device)
        cost = 0.0
        with torch.no_grad():
            for chunk, sl in self.chunks:
                p = self.params(s, ell, sl)
                if self.exact:
                    r, jac = chunk.residuals_and_jacobian_at(p, *chunk.rows())
                    cost += float((r * r).sum())
                else:
                    r, jac, costs = chunk.linearize(p, *chunk.rows())
                    cost += float(costs.sum())
                a, b = jac[..., self.idx_s], jac[..., self.idx_l]
                U += torch.einsum("bns,bnt->st", a, a)
                gs += torch.einsum("bns,bn->s", a, r)
                V[sl] = b.transpose(1, 2) @ b
                W[sl] = a.transpose(1, 2) @ b
                gl[sl] = torch.einsum("bnl,bn->bl", b, r)
        return U, gs, V, W, gl, cost

    def step(self, U, gs, V, W, gl, damping: float):
        """The damped step (δs, δl) by the Schur complement, λ·D² added (Marquardt's scaling: D² the largest
        diag(JᵀJ) met so far, never shrinking, as the one LM's; a Gauss–Newton step scales by the current one),
        the reduction of χ² that the linear model promises, and D² (U's and each set's)."""
        eps = torch.finfo(U.dtype).eps
        du = torch.diagonal(U).clamp_min(eps * float(torch.diagonal(U).max().clamp_min(1.0)))
        dv = torch.diagonal(V, dim1=-2, dim2=-1)
        dv = dv.clamp_min(eps * dv.amax(dim=-1, keepdim=True).clamp_min(1.0))
        most = self._most
        self._most = (du, dv) if most is None else (torch.maximum(most[0], du), torch.maximum(most[1], dv))
        if damping > 0:  # (a parameter driven toward a bound flattens its column: its scale stays)
            du, dv = self._most
        chol, info = torch.linalg.cholesky_ex(V + damping * torch.diag_embed(dv))
        if bool((info > 0).any()):  # a set whose own block is singular: a little more damping there
            bad = info > 0
            chol[bad] = torch.linalg.cholesky(V[bad] + max(damping, 1e-6) * 10 * torch.diag_embed(dv[bad]))
        vw = torch.cholesky_solve(W.transpose(1, 2), chol)  # V⁻¹Wᵀ (B, L, S)
        vg = torch.cholesky_solve(gl.unsqueeze(-1), chol).squeeze(-1)  # V⁻¹g_l (B, L)
        schur = U + damping * torch.diag(du) - torch.einsum("bsl,blt->st", W, vw)
        rhs = -(gs - torch.einsum("bsl,bl->s", W, vg))
        ds = torch.linalg.lstsq(schur, rhs.unsqueeze(-1)).solution.squeeze(-1)
        dl = -(vg + torch.einsum("bls,s->bl", vw, ds))
        predicted = damping * (float(ds @ (du * ds)) + float((dl * dv * dl).sum())) - float(ds @ gs + (dl * gl).sum())
        return ds, dl, predicted, du, dv

    def run(self, max_steps: int, tol: float) -> tuple[int, bool, str]:
        """Levenberg–Marquardt's iterations: the step is this solver's own (through the Schur complement), the
        rules the one LM's (solvers.lm_rules.judge: keep it or not, the damping, MINPACK's tests, Gauss–Newton
        steps close to the optimum), on the whole problem as one curve, in the scaling D = √diag(JᵀJ)."""
        s, ell = self.s, self.ell
        U, gs, V, W, gl, cost = self.linearize(s, ell)
        if not math.isfinite(cost):
            raise DataError("The model overflows (inf or NaN) at the starting values: give p0.")
        rules = (float(tol), float(tol), 0.0, int(max_steps))
        damping, nu, polished, newton, iterations, steps, why = INITIAL_DAMPING, 2.0, 0, 0, 0, 0, ITERATING
        leaving = False
        while not leaving:
            gauss_newton = polished > 0 or newton > 0
            ds, dl, predicted, du, dv = self.step(U, gs, V, W, gl, 0.0 if gauss_newton else damping)
            s_new, ell_new = s + ds, ell + dl
            new = self.cost(s_new, ell_new)
            length = math.sqrt(float(ds @ (du * ds)) + float((dl * dv * dl).sum()))  # |D δ|
            size = math.sqrt(float(s @ (du * s)) + float((ell * dv * ell).sum()))  # |D p|
            iterations += 1
            ok, counted, verdict, damping, nu, polished, newton, leaving = judge(
                cost, new, predicted, True, length, size, 0.0, damping, nu, polished, newton, iterations, rules
            )
            steps += counted
            why = verdict if verdict != ITERATING else why
            if ok:
                s, ell = s_new, ell_new
                U, gs, V, W, gl, cost = self.linearize(s, ell)
                self._last = (s, ell, U, W, V)  # (the covariance at the end needs no pass of its own)
        self.s, self.ell = s, ell
        converged = why != ITERATING
        return steps, converged, reason(why if converged else MAX_STEPS, rules)

    def covariance(self):
        """The shared parameters' covariance C_s = (U − Σ W V⁻¹ Wᵀ)⁻¹, each set's local one V⁻¹ + V⁻¹Wᵀ C_s W V⁻¹
        and its covariance with the shared ones −V⁻¹Wᵀ C_s, unscaled; per-set χ²."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] is self.s and last[1] is self.ell:
            U, W, V = last[2:]
        else:  # (it stopped where it started, or without a step taken)
            U, _, V, W, _, _ = self.linearize(self.s, self.ell)
        chol, info = torch.linalg.cholesky_ex(V)
        singular = info > 0
        chol[singular] = torch.eye(V.shape[-1], dtype=V.dtype, device=V.device)
        vw = torch.cholesky_solve(W.transpose(1, 2), chol)
        schur = U - torch.einsum("bsl,blt->st", W, vw)
        cs = torch.linalg.pinv(schur, hermitian=True)
        cl = torch.cholesky_inverse(chol) + vw @ cs @ vw.transpose(1, 2)
        cl[singular] = math.inf
        chi2 = torch.cat([(r * r).sum(dim=1) for r in self.residuals(self.s, self.ell)])
        return cs, cl, -(vw @ cs), chi2  # (the covariance of a set's own parameters with the shared: -V⁻¹Wᵀ C_s)

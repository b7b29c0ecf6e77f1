"""Profile-likelihood confidence intervals (lmfit's ``conf_interval`` and ``conf_interval2d``), every re-fit of
every profile in one batch.

A profile holds one parameter (two for a 2-D region) at a value and fits the others again; χ² of that fit against
the best fit's, by the F-test lmfit uses (``f_compare``), gives the probability that the held value is excluded:

    prob = F.cdf((χ²(v)/χ²_best − 1)·(n − k)/h;  h, n − k)        (h parameters held, n points, k free)

so the limit at probability P is where χ²(v) = χ²_best·(1 + h·F.ppf(P; h, n − k)/(n − k)); σ levels are
P = erf(σ/√2), and a level under 1 is a probability (as lmfit reads ``sigmas``).

Every limit of every parameter is a row of one batch. First each limit is solved for directly (``_boundary``):
the point where χ² reaches the level with the others at their best for the held value, by a Gauss–Newton step for
the others and Newton's for the held one, one batched Jacobian a round. A limit that does not settle, or whose
parameter has bounds, is found by re-fitting the profile: each row a copy of the data with its own held value,
fitted by the batched Levenberg–Marquardt (gradfit.solvers.lm.lm_many; ``_Held`` takes the held columns out of the
Jacobian, so the solver sees only the others), a Newton step (safeguarded by a bracket: regula falsi, Illinois)
on √(χ² − χ²_best), nearly linear in the held value, per round. Bounds, fixed and tied parameters are the fit's
own (params.Constrained): a profile never leaves the bounds, and a limit that a bound cuts off is reported as the
bound.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .batch_problem import Chunk
from .errors import OptionError
from .params import Constrained
from .solvers.lm import lm_many

ROUNDS = 60  # of the root search, at most
XTOL = 1e-6  # of a limit (in standard errors, relative beyond 1): Newton settles it to ~XTOL² more
GTOL = 1e-9  # of √(χ² − χ²_best) at the limit, relative to its target
TMAX = 1e3  # standard errors from the best beyond which a limit is taken as never reached (±inf)
REFIT_STEPS, REFIT_TOL = 200, 1e-10


def probabilities(sigmas) -> list[float]:
    """lmfit's reading of ``sigmas``: a level of 1 or more is that many standard deviations, erf(σ/√2); a
    level under 1 is a probability. In order of probability (lmfit orders the levels as given numbers, so that
    (0.9, 1) would put 90% before 68%)."""
    try:
        levels = sorted(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise OptionError(f"sigmas are numbers such as (1, 2, 3), got {sigmas!r}.") from None
    if not levels or not all(math.isfinite(s) and s > 0 for s in levels):
        raise OptionError(f"sigmas are positive numbers such as (1, 2, 3), got {sigmas!r}.")
    return sorted(s if s < 1 else math.erf(s / math.sqrt(2)) for s in levels)  # (nested: by probability)


class _Held:
    """A batch problem for the batched LM: B copies of one data set, row b with the parameters ``held[b]`` at
    ``values[b]``; the solver walks the others (the same number in every row)."""

    shared = False  # (rows carry their own held values: the LM keeps them row for row)

    def __init__(self, chunk: Chunk, held: torch.Tensor, values: torch.Tensor):
        self.chunk, self.held, self.values = chunk, held, values
        self.y, self.w, self.used, self.n_points = chunk.y, chunk.w, chunk.used, chunk.n_points
        self.k = held.shape[1] - int(held[0].sum())

    def rows(self, idx=None):
        idx = torch.arange(len(self.held), device=self.y.device) if idx is None else idx
        return idx, self.y[idx], self.w[idx]

    def full(self, q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        p = self.values[idx].clone()
        p[~self.held[idx]] = q.reshape(-1)
        return p

    def linearize(self, q, idx, y, w):
        r, jac, cost = self.chunk.linearize(self.full(q, idx), self.chunk.x, y, w)
        free = jac.transpose(1, 2)[~self.held[idx]].reshape(len(idx), self.k, -1).transpose(1, 2)
        return r, free, cost


class Profiler:
    """The re-fits of one FitResult with some parameters held: ``chi2(held, values, start)``."""

    def __init__(self, result):
        if result.x is None or result.y is None:
            raise OptionError(
                "This result holds no data (saved with data=False): profiles re-fit the data, so fit again, or "
                "save with the data."
            )
        if result.loss != "linear":
            raise OptionError(
                f"Profile intervals use χ² and the F-test; this fit minimised the robust loss {result.loss!r}. "
                "Use its covariance errors, or fit with loss='linear'."
            )
        sigma = result.sigma
        if sigma is not None and np.ndim(sigma) == 2:
            raise OptionError(
                "Profile intervals of a fit with correlated errors (an N x N sigma) are not supported yet; "
                "use its covariance errors."
            )
        model = result.model
        self.names = tuple(result.params)
        constrained = bool(result.bounds or result.fixed or result.tied)
        self.solved = (
            Constrained(model, dict(result.bounds), dict(result.fixed), _ties(result)) if constrained else model
        )
        self.free = tuple(self.solved.param_names)
        dtype = torch.float64
        self.x = torch.as_tensor(np.asarray(result.x), dtype=dtype)
        self.y = torch.as_tensor(np.asarray(result.y), dtype=dtype)
        self.w = (
            torch.ones_like(self.y)
            if sigma is None
            else 1 / torch.as_tensor(np.broadcast_to(sigma, self.y.shape).copy(), dtype=dtype)
        )
        self.best_user = torch.tensor([result.params[n] for n in self.names], dtype=dtype)
        self.best = self.to_free(self.best_user[None])[0]
        self.n_free = len(self.free)
        self.dof = result.n_points - self.n_free
        if self.dof < 1:
            raise OptionError(
                f"{result.n_points} points leave no degrees of freedom for {self.n_free} parameters: "
                "the F-test of a profile needs more points than parameters."
            )
        self.bounds = {n: tuple(result.bounds.get(n, (-math.inf, math.inf))) for n in self.free}
        self.chi2_best = float(
            self.chi2(torch.ones(1, self.n_free, dtype=torch.bool), self.best[None])[0][0]
        )  # (as fitted)

    def to_free(self, user: torch.Tensor) -> torch.Tensor:
        return self.solved.to_free(user) if isinstance(self.solved, Constrained) else user

    def to_user(self, free: torch.Tensor) -> torch.Tensor:
        return self.solved.to_user(free) if isinstance(self.solved, Constrained) else free

    def chi2(self, held: torch.Tensor, start: torch.Tensor):
        """χ² of each row re-fitted with the parameters ``held`` (B, k, bool) at their values in ``start`` (B, k),
        the others from there (a fit that fails: inf); the fitted parameters (solver's coordinates); and the
        gradient of χ² by each free parameter in the user's terms (by a held one: the profile's slope)."""
        B = len(start)
        chunk = Chunk(self.solved, self.x, True, self.y.expand(B, -1), self.w.expand(B, -1))
        if bool(held.all()):
            fitted, ok = start, torch.ones(B, dtype=torch.bool)
        else:
            problem = _Held(chunk, held, start)
            q0 = start[~held].reshape(B, problem.k)
            q, _, status = lm_many(problem, q0, REFIT_STEPS, REFIT_TOL)
            fitted, ok = problem.full(q, torch.arange(B)), status != 2
        with torch.no_grad():
            r, jac, cost = chunk.linearize(fitted, chunk.x, chunk.y, chunk.w)
            slope = (2 * (jac * r.unsqueeze(-1)).sum(dim=1)) / self.slopes(fitted)  # dχ²/dp, by the user's p
        cost = torch.where(ok & torch.isfinite(cost), cost, torch.full_like(cost, math.inf))
        return cost, fitted, slope

    def slopes(self, free: torch.Tensor) -> torch.Tensor:
        """dp/du of each free parameter (1 without bounds)."""
        return self.solved.slopes(free) if isinstance(self.solved, Constrained) else torch.ones_like(free)

    def threshold(self, probability: float, held: int) -> float:
        """χ² at which the F-test gives ``probability`` for ``held`` parameters held."""
        from scipy.stats import f

        return self.chi2_best * (1 + held * float(f.ppf(probability, held, self.dof)) / self.dof)


def _ties(result) -> dict:
    from .params import check_ties

    return check_ties(dict(result.tied), result.model.param_names, dict(result.bounds), dict(result.fixed))


def conf_interval(result, sigmas=(1, 2, 3), names=None) -> dict[str, list[tuple[float, float]]]:
    """lmfit's ``conf_interval`` for a gradfit FitResult: name -> [(probability, lower limit), ..., (0, best),
    ..., (probability, upper limit)], from the widest lower limit to the widest upper (lmfit's layout); a limit
    the data never reach is ±inf, one a bound cuts off is the bound."""
    probs = probabilities(sigmas)
    pro = Profiler(result)
    names = list(pro.free) if names is None else list(names)
    for name in names:
        if name not in pro.free:
            raise OptionError(f"No free parameter {name!r} to profile; the free parameters are {', '.join(pro.free)}.")
        s = result.stderr.get(name, math.nan)
        if not (math.isfinite(s) and s > 0):
            raise OptionError(
                f"Parameter {name} has no finite standard error ({s}): the data do not determine it, so "
                "it has no profile to step along."
            )
    from scipy.stats import f

    J, L = len(names), len(probs)
    # one row per (parameter, side, level): side −1 then +1, levels in order
    which = torch.arange(J).repeat_interleave(2 * L)
    side = torch.tensor([-1.0, 1.0], dtype=torch.float64).repeat_interleave(L).repeat(J)
    level = torch.arange(L).repeat(2 * J)
    R = len(which)
    column = torch.tensor([pro.free.index(n) for n in names])[which]
    held = torch.zeros(R, pro.n_free, dtype=torch.bool)
    held[torch.arange(R), column] = True
    best = torch.tensor([result.params[n] for n in names], dtype=torch.float64)[which]
    scale = torch.tensor([result.stderr[n] for n in names], dtype=torch.float64)[which]
    lower = torch.tensor([pro.bounds[n][0] for n in names], dtype=torch.float64)[which]
    upper = torch.tensor([pro.bounds[n][1] for n in names], dtype=torch.float64)[which]
    targets = torch.tensor([pro.threshold(p, 1) for p in probs], dtype=torch.float64)[level]  # χ² at each level
    rise = (targets - pro.chi2_best).clamp_min(0).sqrt()  # √(χ² − χ²_best) there
    position = pro.names.index

    def value_at(t, rows):
        """The held value t standard errors from the best on each row's side, inside its bounds."""
        v = best[rows] + side[rows] * t * scale[rows]
        return torch.minimum(torch.maximum(v, lower[rows]), upper[rows])

    # where the others go as a held parameter moves, to first order: their regression on it in the covariance
    free_at = [position(n) for n in pro.free]
    cov = torch.as_tensor(np.asarray(result.covariance, dtype=np.float64)[np.ix_(free_at, free_at)])
    follow = cov / cov.diagonal().clamp_min(1e-300)  # column c: d(others)/d(held c)

    def moved(start, rows, values):
        """Starts (solver's coordinates) with each row's held parameter at ``values`` (user's terms) and the others
        moved along their regression on it."""
        user = pro.to_user(start).clone()
        for r, (c, v) in enumerate(zip(column[rows].tolist(), values.tolist())):
            shift = v - float(user[r, free_at[c]])
            user[r, free_at] += follow[:, c] * shift if math.isfinite(shift) else 0.0
            user[r, free_at[c]] = v
        return pro.to_free(user)

    def g_at(t, rows, start):
        """√(χ² − χ²_best) − the level's, re-fitted at t (inf where the fit fails), and the fits; each fit starts
        from the row's last one moved along the others' regression on the held parameter."""
        values = value_at(t, rows)
        cost, fitted, slope = pro.chi2(held[rows], moved(start, rows, values))
        lift = (cost - pro.chi2_best).clamp_min(0).sqrt()
        # dg/dt = dχ²/dv · dv/dt / (2√(χ² − χ²_best)), dv/dt = side·scale (0 where a bound holds v)
        dv = torch.where(values == best[rows] + side[rows] * t * scale[rows], side[rows] * scale[rows], 0.0)
        d = slope[torch.arange(len(rows)), column[rows]] * dv / (2 * lift)
        return lift - rise[rows], fitted, d

    # a root search per row on g(t), t in standard errors: first where a linear model would have it, √F.ppf (exact
    # for a model linear in its parameters); then secants outward until g >= 0, then regula falsi (Illinois)
    t_lo, g_lo = torch.zeros(R, dtype=torch.float64), -rise.clone()
    t_prev, g_prev = t_lo.clone(), g_lo.clone()
    t_hi, g_hi = torch.full((R,), math.inf, dtype=torch.float64), torch.full((R,), math.inf, dtype=torch.float64)
    fits = pro.best.expand(R, -1).clone()
    t_next = torch.tensor([math.sqrt(float(f.ppf(p, 1, pro.dof))) for p in probs], dtype=torch.float64)[level]
    answer = torch.full((R,), math.inf, dtype=torch.float64)  # inf: not reached (yet)
    # the fast way first, where the held parameter has no bounds: the boundary point itself (_boundary)
    free_rows = torch.isinf(lower) & torch.isinf(upper)
    if bool(free_rows.any()):
        idx = torch.arange(R)[free_rows]
        start = moved(fits[idx], idx, value_at(t_next[idx], idx))
        found, at = _boundary(pro, column[idx], side[idx], targets[idx], start)
        values_found = pro.to_user(at)[torch.arange(len(idx)), torch.tensor(free_at)[column[idx]]]
        t_found = (values_found - best[idx]) * side[idx] / scale[idx]
        answer[idx[found]] = t_found[found]
        # a row it has not settled (a curved valley where its steps zig-zag) goes on the slow way from where it got
        near = ~found & torch.isfinite(t_found) & (t_found > 0) & torch.isfinite(at).all(dim=1)
        t_next[idx[near]], fits[idx[near]] = t_found[near], at[near]
    todo = ~torch.isfinite(answer)
    kept = torch.zeros(R)  # Illinois: +1 the high end was replaced last, −1 the low end
    for _ in range(ROUNDS):
        rows = torch.arange(R)[todo]
        if not len(rows):
            break
        t = t_next[rows]
        g, fitted, d = g_at(t, rows, fits[rows])
        ok = torch.isfinite(g)
        fits[rows[ok]] = fitted[ok]
        low = ok & (g < 0)
        # the high end moves to t where g >= 0 (or where the fit failed: then bisection, below)
        hi = ~low
        halve_lo = hi & (kept[rows] == 1)
        halve_hi = low & (kept[rows] == -1)
        g_lo[rows] = torch.where(halve_lo, g_lo[rows] / 2, g_lo[rows])
        g_hi[rows] = torch.where(halve_hi, g_hi[rows] / 2, g_hi[rows])
        t_prev[rows] = torch.where(low, t_lo[rows], t_prev[rows])
        g_prev[rows] = torch.where(low, g_lo[rows], g_prev[rows])
        t_lo[rows], g_lo[rows] = torch.where(low, t, t_lo[rows]), torch.where(low, g, g_lo[rows])
        t_hi[rows] = torch.where(hi, t, t_hi[rows])
        g_hi[rows] = torch.where(hi, torch.where(ok, g, torch.full_like(g, math.inf)), g_hi[rows])
        kept[rows] = torch.where(low, -1.0, 1.0).float()
        answer[rows] = torch.where(hi | (g.abs() <= GTOL * rise[rows]), t, answer[rows])
        # done: the bracket is narrow, or g is 0 to rounding, or a bound (or TMAX) stops the profile below the level
        bracketed = torch.isfinite(t_hi[rows])
        narrow = bracketed & ((t_hi[rows] - t_lo[rows]) <= XTOL * t_hi[rows].clamp_min(1.0))
        cut = low & ((value_at(t, rows) != best[rows] + side[rows] * t * scale[rows]) | (t >= TMAX))
        answer[rows[cut]] = math.inf
        todo[rows[narrow | (ok & (g.abs() <= GTOL * rise[rows])) | cut]] = False
        # the next t: regula falsi inside a bracket (bisection where the high end failed), else a secant outward
        span_in = g_hi[rows] - g_lo[rows]
        falsi = t_lo[rows] - g_lo[rows] * (t_hi[rows] - t_lo[rows]) / span_in
        falsi = torch.where(
            torch.isfinite(falsi) & (falsi > t_lo[rows]) & (falsi < t_hi[rows]), falsi, 0.5 * (t_lo[rows] + t_hi[rows])
        )
        slope = (g_lo[rows] - g_prev[rows]) / (t_lo[rows] - t_prev[rows])
        outward = t_lo[rows] - g_lo[rows] / slope
        outward = torch.where(torch.isfinite(outward) & (slope > 0), outward, 2 * t_lo[rows])
        outward = outward.clamp(1.1 * t_lo[rows], 4 * t_lo[rows].clamp_min(0.25)).clamp_max(TMAX)
        t_next[rows] = torch.where(bracketed, falsi, outward)
        # Newton's step on g where it stays inside what is known (quadratic: three rounds from √F.ppf, typically)
        newton = t - g / d
        inside = ok & (d > 0) & torch.isfinite(newton) & (newton > t_lo[rows]) & (newton < t_hi[rows])
        inside &= newton <= 4 * t_lo[rows].clamp_min(0.25)
        t_next[rows] = torch.where(inside, newton, t_next[rows])
        settled = inside & ((newton - t).abs() <= XTOL * t.clamp_min(1.0))  # the next step would change nothing
        answer[rows[settled]] = newton[settled]
        todo[rows[settled]] = False

    values = value_at(answer, torch.arange(R))  # not reached: the bound that cut the profile off, or ±inf
    out = {}
    for j, name in enumerate(names):
        at = lambda s, k: float(values[(j * 2 + s) * L + k])  # noqa: E731
        lows = [(probs[k], at(0, k)) for k in reversed(range(L))]
        highs = [(probs[k], at(1, k)) for k in range(L)]
        out[name] = lows + [(0.0, float(result.params[name]))] + highs
    return out


BOUNDARY_ROUNDS = 20  # of _boundary's Newton iteration, at most (rows left after it take the slow way)


def _boundary(pro: Profiler, column, side, target, start):
    """Each row's profile limit found directly: the point where χ² = target and the other parameters are at their
    best for the held one (the boundary of the profile region along that parameter). A Gauss–Newton step for the
    others and Newton's for the held one together, every row at once: with J's blocks (others q, held j),
    δ_q(d) = −A_qq⁻¹(g_q + A_qj d) re-fits the others to first order for a move d of the held one, and d solves the
    quadratic χ²(d) = target on the row's side. A few rounds of one batched Jacobian each, instead of a re-fit a
    round. Returns (converged (B,), parameters (B, k)); a row that does not settle is left to the caller."""
    B, k = start.shape
    chunk = Chunk(pro.solved, pro.x, True, pro.y.expand(B, -1), pro.w.expand(B, -1))
    order = torch.arange(k).expand(B, k)
    others = order[order != column[:, None]].reshape(B, k - 1)
    perm = torch.cat([others, column[:, None]], dim=1)  # the held column last
    p = start.clone()
    done = torch.zeros(B, dtype=torch.bool)
    last, relax = torch.zeros_like(p), torch.ones(B, dtype=p.dtype)
    for _ in range(BOUNDARY_ROUNDS):
        with torch.no_grad():
            r, jac, cost = chunk.linearize(p, chunk.x, chunk.y, chunk.w)
            jac = jac.gather(2, perm[:, None, :].expand(-1, jac.shape[1], -1))
            a_mat = jac.transpose(1, 2) @ jac
            g = (jac.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
            if k > 1:
                chol, info = torch.linalg.cholesky_ex(a_mat[:, :-1, :-1])
                rhs = torch.stack([g[:, :-1], a_mat[:, :-1, -1]], dim=-1)
                sol = -torch.cholesky_solve(rhs, chol)
                u, w = sol[..., 0], sol[..., 1]
            else:
                info = torch.zeros(B, dtype=torch.int32)
                u = w = torch.zeros(B, 0, dtype=p.dtype)
            a = torch.cat([u, torch.zeros(B, 1, dtype=p.dtype)], dim=1)
            b = torch.cat([w, torch.ones(B, 1, dtype=p.dtype)], dim=1)
            ab = (a_mat @ b.unsqueeze(-1)).squeeze(-1)
            alpha = (b * ab).sum(dim=1)
            beta = (g * b).sum(dim=1) + (a * ab).sum(dim=1)
            gamma = cost + 2 * (g * a).sum(dim=1) + (a * (a_mat @ a.unsqueeze(-1)).squeeze(-1)).sum(dim=1)
            disc = beta * beta - alpha * (gamma - target)
            d = torch.where(disc >= 0, (-beta + side * disc.clamp_min(0).sqrt()) / alpha, -beta / alpha)
            move = a + b * d[:, None]  # (permuted: the others, then the held one)
            # where the others' steps turn back on themselves (a curved valley), take a part of them: halved at
            # each reversal, growing back while they keep their direction
            turned = (move[:, :-1] * last[:, :-1]).sum(dim=1) < 0
            relax = torch.where(turned, relax / 2, (relax * 1.5).clamp_max(1.0))
            last = move.clone()
            move[:, :-1] *= relax[:, None]
            step = torch.zeros_like(p).scatter_(1, perm, move)
            ok = (info == 0) & torch.isfinite(step).all(dim=1) & (alpha > 0)
            small = (step.abs() <= 1e-10 * p.abs().clamp_min(1e-12 * p.abs().amax(dim=1, keepdim=True))).all(dim=1)
            settled = ok & small & ((cost - target).abs() <= 1e-9 * target)
            done |= settled
            p = torch.where((ok & ~done)[:, None], p + step, p)
            if bool((done | ~ok).all()):
                break
    with torch.no_grad():
        _, _, cost = chunk.linearize(p, chunk.x, chunk.y, chunk.w)
    done &= torch.isfinite(cost) & ((cost - target).abs() <= 1e-8 * target)
    return done, p


def conf_interval2d(
    result, x_name: str, y_name: str, nx: int = 10, ny: int = 10, limits=None, nsigma: float = 5, chi2_out: bool = False
):
    """lmfit's ``conf_interval2d``: the two parameters held on an nx x ny grid (``limits``: ((x_lo, x_hi),
    (y_lo, y_hi)), else ``nsigma`` standard errors each way), every other one re-fitted, all nx·ny fits as one
    batch. Returns (x values, y values, grid (ny, nx)): χ² with ``chi2_out``, else lmfit's √((χ² − χ²₀)/χ²_ν)."""
    from .options import positive_finite, positive_int

    pro = Profiler(result)
    for name in (x_name, y_name):
        if name not in pro.free:
            raise OptionError(f"No free parameter {name!r} to profile; the free parameters are {', '.join(pro.free)}.")
    if x_name == y_name:
        raise OptionError(f"conf_interval2d needs two different parameters, got {x_name!r} twice.")
    nx, ny = positive_int(nx, "nx"), positive_int(ny, "ny")
    if limits is None:
        nsigma = positive_finite(nsigma, "nsigma")
        limits = [
            (result.params[n] - nsigma * result.stderr[n], result.params[n] + nsigma * result.stderr[n])
            for n in (x_name, y_name)
        ]
    try:
        (x_lo, x_hi), (y_lo, y_hi) = ((float(a), float(b)) for a, b in limits)
    except (TypeError, ValueError):
        raise OptionError(f"limits are ((x_lo, x_hi), (y_lo, y_hi)), got {limits!r}.") from None
    if not all(math.isfinite(v) for v in (x_lo, x_hi, y_lo, y_hi)):
        raise OptionError(
            f"The grid's limits are not finite ({x_lo}, {x_hi}, {y_lo}, {y_hi}): "
            "give limits=((x_lo, x_hi), (y_lo, y_hi))."
        )
    xs, ys = np.linspace(x_lo, x_hi, nx), np.linspace(y_lo, y_hi, ny)
    xx, yy = np.meshgrid(xs, ys)
    chi2 = profile_grid(pro, result, (x_name, y_name), np.stack([xx.ravel(), yy.ravel()], axis=1)).reshape(ny, nx)
    if chi2_out:
        return xs, ys, chi2
    lowest = min(pro.chi2_best, float(np.nanmin(chi2)) if np.isfinite(chi2).any() else pro.chi2_best)
    return xs, ys, np.sqrt(np.clip(chi2 - lowest, 0, None) / (pro.chi2_best / pro.dof))


def profile_grid(pro: Profiler, result, names, values: np.ndarray) -> np.ndarray:
    """χ² with the parameters ``names`` held at each row of ``values`` (M, h), the others re-fitted: one batch, each
    fit starting from the best moved along the others' regression on the held ones (the covariance's)."""
    free_at = [pro.names.index(n) for n in pro.free]
    cols = [pro.free.index(n) for n in names]
    cov = np.asarray(result.covariance, dtype=np.float64)[np.ix_(free_at, free_at)]
    shift = np.asarray(values, dtype=np.float64) - np.array([result.params[n] for n in names])
    try:
        follow = cov[:, cols] @ np.linalg.inv(cov[np.ix_(cols, cols)])  # E[others | held] − best, per unit
    except np.linalg.LinAlgError:
        follow = np.zeros((len(free_at), len(cols)))
    user = pro.to_user(pro.best[None]).expand(len(values), -1).clone()
    user[:, free_at] += torch.as_tensor(shift @ follow.T)
    user[:, [free_at[c] for c in cols]] = torch.as_tensor(np.asarray(values, dtype=np.float64))
    held = torch.zeros(len(values), pro.n_free, dtype=torch.bool)
    held[:, cols] = True
    cost, _, _ = pro.chi2(held, pro.to_free(user))
    return cost.numpy()


def region(result, x_name: str, y_name: str, sigmas=(1, 2, 3), grid: int = 40, nsigma: float | None = None):
    """What plots.plot_conf_interval2d draws: x values, y values, χ² on the grid (others re-fitted), the χ² of
    each level (2 parameters held: the F-test with 2 and n − k degrees of freedom), the best χ², and the χ² the
    covariance predicts (a quadratic: its ellipses)."""
    probs = probabilities(sigmas)
    pro = Profiler(result)
    nsigma = 2.0 * max(float(s) if s >= 1 else 1.0 for s in sigmas) if nsigma is None else nsigma
    xs, ys, chi2 = conf_interval2d(result, x_name, y_name, grid, grid, nsigma=nsigma, chi2_out=True)
    names = list(result.params)
    at = [names.index(x_name), names.index(y_name)]
    cov = np.asarray(result.covariance, dtype=np.float64)[np.ix_(at, at)]
    s2 = pro.chi2_best / pro.dof
    xx, yy = np.meshgrid(xs - result.params[x_name], ys - result.params[y_name])
    d = np.stack([xx, yy], axis=-1)
    try:
        quadratic = pro.chi2_best + s2 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)
    except np.linalg.LinAlgError:
        quadratic = np.full_like(chi2, np.nan)
    levels = [pro.threshold(p, 2) for p in probs]
    return xs, ys, chi2, levels, probs, pro.chi2_best, quadratic

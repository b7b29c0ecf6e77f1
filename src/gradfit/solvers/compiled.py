"""Levenberg–Marquardt over many curves, compiled: one curve at a time, everything in the cache.

The batched torch solver (gradfit.batch) runs each step as some twenty passes over
(curves x points) arrays. For models that come as a Program — an expression's instructions
(gradfit.expr), a polynomial, a sum of those — this module runs the same algorithm curve by
curve in machine code (numba): the model and its derivatives are computed by a small
interpreter of the program's instructions into two small workspaces (the current point's and
the trial's), the normal equations and their Cholesky factor are a few dozen numbers, and
nothing is allocated from one curve to the next. The numba functions are compiled once per
machine (10–20 s here) and cached on disk; they release the GIL, so the curves are shared among threads.

Same algorithm, same numbers to rounding, as ``_Chunk.levenberg_marquardt`` and ``_Chunk.finish``:
Marquardt's column scaling that never shrinks, Nielsen's damping update, MINPACK-style
tests per curve, up to POLISH_STEPS undamped Gauss–Newton steps after convergence, and
standard errors from the column-equilibrated normal matrix.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from ..expr import ADD, ATAN2, CONST, DIV, MUL, NEG, PARAM, POW, SUB, UNARY_CODES, VAR, Program

_EXP, _LOG, _LOG10, _LOG2, _SQRT, _ABS, _SIN, _COS, _TAN, _ASIN, _ACOS, _ATAN, _SINH, _COSH, _TANH, _ERF, _ERFC, \
    _SIGMOID = (UNARY_CODES[n] for n in ("exp", "log", "log10", "log2", "sqrt", "abs", "sin", "cos", "tan", "arcsin",
                                         "arccos", "arctan", "sinh", "cosh", "tanh", "erf", "erfc", "sigmoid"))
WORK_BYTES = 1 << 24  # the most working memory one thread's program slots may take: larger curves run in torch


def small_enough(program: Program, n_points: int) -> bool:
    """Do one curve's two workspaces (values and derivatives of every slot at every point) fit WORK_BYTES?"""
    return 2 * (len(program.op) + 3) * (program.n_params + 1) * max(n_points, 1) * 8 <= WORK_BYTES


def fit(program: Program, x: np.ndarray, Y: np.ndarray, W: np.ndarray, P0: np.ndarray, max_steps: int, tol: float,
        absolute_sigma: bool, settings: tuple, threads: int | None = None) -> dict:
    """LM fits of every row of Y (B, N); x is (1, N, k) shared or (B, N, k) per curve; W the weights
    (0 leaves a point out). Returns params, stderr, rmse, chi2, n_points, n_steps and status codes,
    as numpy arrays (status codes index batch.STATUSES)."""
    B, k = P0.shape
    out = {"params": np.array(P0, dtype=np.float64, order="C"), "stderr": np.empty((B, k)),
           "rmse": np.empty(B), "chi2": np.empty(B), "n_steps": np.zeros(B, dtype=np.int64),
           "status": np.ones(B, dtype=np.int64), "n_points": np.empty(B, dtype=np.int64)}
    settings = np.array(settings, dtype=np.float64)  # initial damping, max damping, polish steps, singular
    if program.op[-1] in (CONST, PARAM, VAR):  # the model is a leaf: J is weighted in place, so give it a slot
        program = _times_one(program)
    x, Y, W = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, Y, W))
    args = (program.op, program.a, program.b, program.value, program.point, program.dep, x, Y, W)
    threads = threads or _cores()
    bounds = np.linspace(0, B, min(threads, max(B, 1)) + 1).astype(np.int64)

    def run(lo, hi):
        _lm_curves(*args, lo, hi, max_steps, tol, absolute_sigma, settings, out["params"], out["stderr"], out["rmse"],
                out["chi2"], out["n_points"], out["n_steps"], out["status"])

    if len(bounds) <= 2:
        run(0, B)
    else:
        with ThreadPoolExecutor(len(bounds) - 1) as pool:  # the kernel releases the GIL
            list(pool.map(run, bounds[:-1], bounds[1:]))
    return out


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 64))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(os.cpu_count() or 1, 64))


def values_and_jacobian(program: Program, x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's value (N,) and Jacobian (N, P) at p, as the compiled solver computes them (for tests)."""
    if program.op[-1] in (CONST, PARAM, VAR):
        program = _times_one(program)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    S, N, P = len(program.op), len(x), program.n_params
    val, grad = np.zeros((2, S + 2, N)), np.zeros((2, S, P, N))
    _prepare(program.op, program.value, x[None], 0, val, grad)
    _evaluate(program.op, program.a, program.b, program.value, program.point, program.dep,
              np.asarray(p, dtype=np.float64).reshape(1, P), 0, val, grad)
    return val[0, S - 1].copy(), grad[0, S - 1].T.copy()


def _times_one(program: Program) -> Program:
    """The program with one more slot, its last slot times 1."""
    S = len(program.op)
    return Program(np.append(program.op, [CONST, MUL]), np.append(program.a, [0, S - 1]), np.append(program.b, [0, S]),
                   np.append(program.value, [1.0, 0.0]), np.append(program.point, [False, program.point[-1]]),
                   np.vstack([program.dep, np.zeros(program.n_params, dtype=bool), program.dep[-1]]),
                   program.n_variables)


_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
_TWO_OVER_SQRT_PI, _LN10, _LN2 = 2 / math.sqrt(math.pi), math.log(10), math.log(2)


@_inline
def _unary(o, u):
    """A function of one argument (other than exp) and its derivative, at u."""
    if o == _LOG:
        return np.log(u), 1.0 / u
    if o == _LOG10:
        return np.log10(u), 1.0 / (u * _LN10)
    if o == _LOG2:
        return np.log2(u), 1.0 / (u * _LN2)
    if o == _SQRT:
        v = np.sqrt(u)
        return v, 0.5 / v
    if o == _ABS:
        return abs(u), np.sign(u)
    if o == _SIN:
        return math.sin(u), math.cos(u)
    if o == _COS:
        return math.cos(u), -math.sin(u)
    if o == _TAN:
        v = math.tan(u)
        return v, 1.0 + v * v
    if o == _ASIN:
        return np.arcsin(u), 1.0 / np.sqrt(1.0 - u * u)
    if o == _ACOS:
        return np.arccos(u), -1.0 / np.sqrt(1.0 - u * u)
    if o == _ATAN:
        return math.atan(u), 1.0 / (1.0 + u * u)
    if o == _SINH:
        return math.sinh(u), math.cosh(u)
    if o == _COSH:
        return math.cosh(u), math.sinh(u)
    if o == _TANH:
        v = math.tanh(u)
        return v, 1.0 - v * v
    if o == _ERF:
        return math.erf(u), _TWO_OVER_SQRT_PI * math.exp(-u * u)
    if o == _ERFC:
        return math.erfc(u), -_TWO_OVER_SQRT_PI * math.exp(-u * u)
    v = 1.0 / (1.0 + math.exp(-u))  # sigmoid, as torch computes it
    return v, v * (1.0 - v)


@_jit
def _prepare(op, value, x, xc, val, grad):
    """Fill, in both workspaces, the slots that do not change from step to step: numbers and variables
    (of x[xc]) along the points, and each parameter's derivative by itself (ones)."""
    N = x.shape[1]
    for k in range(2):
        for i in range(len(op)):
            if op[i] == CONST:
                val[k, i, :] = value[i]
            elif op[i] == VAR:
                c = int(value[i])
                for n in range(N):
                    val[k, i, n] = x[xc, n, c]
            elif op[i] == PARAM:
                grad[k, i, int(value[i]), :] = 1.0


@_jit
def _evaluate(op, a, b, value, point, dep, p, k, val, grad):
    """Every slot's value and its derivatives by the parameters it depends on, at every point
    (the slots _prepare filled are left as they are). A slot that is one number per curve is
    computed once and then copied along the points, so that every loop runs over contiguous rows.
    Workspace k of val (2, slots + 2, points) and grad (2, slots, parameters, points), at p[k]; the
    last two rows of val hold an operation's partial derivatives by its operands, where they are not
    already rows of val (a product's are its operands' values, exp's its own value)."""
    S, N, P = len(op), val.shape[2], p.shape[1]
    PA, PB = val.shape[1] - 2, val.shape[1] - 1
    for i in range(S):
        o = op[i]
        A, Bs = a[i], b[i]
        L = N if point[i] else 1
        if o == CONST or o == VAR:
            continue
        if o == PARAM:
            val[k, i, :] = p[k, int(value[i])]
            continue
        if o == ADD or o == SUB:
            sign = 1.0 if o == ADD else -1.0
            for n in range(L):
                val[k, i, n] = val[k, A, n] + sign * val[k, Bs, n]
            for j in range(P):
                if dep[i, j]:
                    if dep[A, j] and dep[Bs, j]:
                        for n in range(L):
                            grad[k, i, j, n] = grad[k, A, j, n] + sign * grad[k, Bs, j, n]
                    elif dep[A, j]:
                        for n in range(L):
                            grad[k, i, j, n] = grad[k, A, j, n]
                    else:
                        for n in range(L):
                            grad[k, i, j, n] = sign * grad[k, Bs, j, n]
        elif o == NEG:
            for n in range(L):
                val[k, i, n] = -val[k, A, n]
            for j in range(P):
                if dep[i, j]:
                    for n in range(L):
                        grad[k, i, j, n] = -grad[k, A, j, n]
        else:
            # the value and its partial derivatives by each operand, then the chain rule
            ra, rb = PA, PB  # the rows of val that hold ∂/∂a and ∂/∂b
            if o == MUL:
                for n in range(L):
                    val[k, i, n] = val[k, A, n] * val[k, Bs, n]
                ra, rb = Bs, A
            elif o == DIV:
                for n in range(L):
                    u, w = val[k, A, n], val[k, Bs, n]
                    v = u / w
                    val[k, i, n], val[k, PA, n], val[k, PB, n] = v, 1.0 / w, -v / w
            elif o == POW and op[Bs] == CONST:  # a fixed exponent: the usual small ones without pow()
                w = value[Bs]
                if w == 2.0:
                    for n in range(L):
                        u = val[k, A, n]
                        val[k, i, n], val[k, PA, n] = u * u, 2.0 * u
                elif w == 3.0:
                    for n in range(L):
                        u = val[k, A, n]
                        val[k, i, n], val[k, PA, n] = u * u * u, 3.0 * (u * u)
                elif w == 0.5:
                    for n in range(L):
                        v = np.sqrt(val[k, A, n])
                        val[k, i, n], val[k, PA, n] = v, 0.5 / v
                elif w == -1.0:
                    for n in range(L):
                        v = 1.0 / val[k, A, n]
                        val[k, i, n], val[k, PA, n] = v, -(v * v)
                else:
                    for n in range(L):
                        u = val[k, A, n]
                        val[k, i, n], val[k, PA, n] = u**w, (0.0 if w == 0.0 else w * u ** (w - 1.0))
            elif o == POW:
                for n in range(L):
                    u, w = val[k, A, n], val[k, Bs, n]
                    v = u**w
                    val[k, i, n], val[k, PA, n], val[k, PB, n] = v, w * u ** (w - 1.0), v * np.log(u)
            elif o == ATAN2:
                for n in range(L):
                    u, w = val[k, A, n], val[k, Bs, n]
                    r2 = w * w + u * u
                    val[k, i, n], val[k, PA, n], val[k, PB, n] = math.atan2(u, w), w / r2, -u / r2
            elif o == _EXP:  # the commonest function, with its own loop
                for n in range(L):
                    val[k, i, n] = math.exp(val[k, A, n])
                ra = i
            else:
                for n in range(L):
                    val[k, i, n], val[k, PA, n] = _unary(o, val[k, A, n])
            binary = o == MUL or o == DIV or o == POW or o == ATAN2
            for j in range(P):
                if not dep[i, j]:
                    continue
                if dep[A, j] and binary and dep[Bs, j]:
                    for n in range(L):
                        grad[k, i, j, n] = grad[k, A, j, n] * val[k, ra, n] + grad[k, Bs, j, n] * val[k, rb, n]
                elif dep[A, j]:
                    for n in range(L):
                        grad[k, i, j, n] = grad[k, A, j, n] * val[k, ra, n]
                else:
                    for n in range(L):
                        grad[k, i, j, n] = grad[k, Bs, j, n] * val[k, rb, n]
        if not point[i]:  # one number per curve: copied along the points for the slots that read it
            v = val[k, i, 0]
            for n in range(1, N):
                val[k, i, n] = v
            for j in range(P):
                if dep[i, j]:
                    gj = grad[k, i, j, 0]
                    for n in range(1, N):
                        grad[k, i, j, n] = gj


@_inline
def _residuals(op, a, b, value, point, dep, Y, W, c, unit, p, k, val, grad, r):
    """r[k] = (f(x, p[k]) - y) w for curve c, and the last slot's derivatives weighted in place: they
    are J, transposed (a row per parameter, zero where the model does not depend on it). Returns |r|²."""
    _evaluate(op, a, b, value, point, dep, p, k, val, grad)
    F, N = len(op) - 1, Y.shape[1]
    cost = 0.0
    for n in range(N):
        r[k, n] = (val[k, F, n] - Y[c, n]) * W[c, n]
        cost += r[k, n] * r[k, n]
    if not unit:
        for j in range(p.shape[1]):
            if dep[F, j]:
                for n in range(N):
                    grad[k, F, j, n] *= W[c, n]
    return cost


@_inline
def _normal(grad, k, F, r, jtj, jtr):
    """JᵀJ and Jᵀr, J = grad[k, F] (transposed: a row per parameter). Each sum runs as four running
    sums added in a fixed order: the processor overlaps them, and the answer does not depend on where
    the arrays lie in memory (as a vectorized sum's would)."""
    P, N = grad.shape[2], grad.shape[3]
    M = N - N % 4
    for i in range(P):
        t0, t1, t2, t3 = 0.0, 0.0, 0.0, 0.0
        for n in range(0, M, 4):
            t0 += grad[k, F, i, n] * r[k, n]
            t1 += grad[k, F, i, n + 1] * r[k, n + 1]
            t2 += grad[k, F, i, n + 2] * r[k, n + 2]
            t3 += grad[k, F, i, n + 3] * r[k, n + 3]
        for n in range(M, N):
            t0 += grad[k, F, i, n] * r[k, n]
        jtr[i] = (t0 + t1) + (t2 + t3)
        for j in range(i + 1):
            t0, t1, t2, t3 = 0.0, 0.0, 0.0, 0.0
            for n in range(0, M, 4):
                t0 += grad[k, F, i, n] * grad[k, F, j, n]
                t1 += grad[k, F, i, n + 1] * grad[k, F, j, n + 1]
                t2 += grad[k, F, i, n + 2] * grad[k, F, j, n + 2]
                t3 += grad[k, F, i, n + 3] * grad[k, F, j, n + 3]
            for n in range(M, N):
                t0 += grad[k, F, i, n] * grad[k, F, j, n]
            t = (t0 + t1) + (t2 + t3)
            jtj[i, j] = t
            jtj[j, i] = t


@_inline
def _cholesky(m, chol):
    """Lower Cholesky factor of m into chol; False (and chol unusable) where m is not positive definite."""
    P = m.shape[0]
    for j in range(P):
        s = m[j, j]
        for q in range(j):
            s -= chol[j, q] * chol[j, q]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        chol[j, j] = d
        for i in range(j + 1, P):
            t = m[i, j]
            for q in range(j):
                t -= chol[i, q] * chol[j, q]
            chol[i, j] = t / d
        for i in range(j):
            chol[i, j] = 0.0
    return True


@_inline
def _solve(chol, g, z):
    """z = (L Lᵀ)⁻¹ g."""
    P = len(g)
    for i in range(P):
        t = g[i]
        for q in range(i):
            t -= chol[i, q] * z[q]
        z[i] = t / chol[i, i]
    for i in range(P - 1, -1, -1):
        t = z[i]
        for q in range(i + 1, P):
            t -= chol[q, i] * z[q]
        z[i] = t / chol[i, i]


@_jit
def _lm_curves(op, a, b, value, point, dep, X, Y, W, lo, hi, max_steps, tol, absolute_sigma, settings,
               params, stderr, rmse, chi2, n_points, n_steps, status):
    """LM for the curves lo..hi-1, as _Chunk.levenberg_marquardt and _Chunk.finish do it for a batch.

    Two workspaces, the current point's and the trial's, indexed by cur and 1 - cur: accepting a
    step flips the index (no copies, no array views made in the loop). The last slot's derivatives
    in a workspace are J there."""
    S, N, P = len(op), Y.shape[1], params.shape[1]
    INITIAL_DAMPING, MAX_DAMPING, POLISH_STEPS, SINGULAR = settings[0], settings[1], int(settings[2]), settings[3]
    val, grad = np.zeros((2, S + 2, N)), np.zeros((2, S, P, N))
    p, r = np.empty((2, P)), np.empty((2, N))
    F = S - 1
    jtj, jtr, m, chol = np.empty((P, P)), np.empty(P), np.empty((P, P)), np.zeros((P, P))
    d, dd, g, delta, norms = np.empty(P), np.empty(P), np.empty(P), np.empty(P), np.empty(P)
    for c in range(lo, hi):
        if c == lo or X.shape[0] > 1:
            _prepare(op, value, X, c if X.shape[0] > 1 else 0, val, grad)
        used, unit = 0, True
        for n in range(N):
            if W[c, n] > 0:
                used += 1
            if W[c, n] != 1.0:
                unit = False
        n_points[c] = used
        cur = 0
        for j in range(P):
            p[cur, j] = params[c, j]
        cost = _residuals(op, a, b, value, point, dep, Y, W, c, unit, p, cur, val, grad, r)
        steps = 0
        code = 1  # max_steps until decided
        if not math.isfinite(cost):
            code = 2
        else:
            for j in range(P):
                t = 0.0
                for n in range(N):
                    t += grad[cur, F, j, n] * grad[cur, F, j, n]
                d[j] = max(math.sqrt(t), 1e-300)
            lam, nu, damped, polished = INITIAL_DAMPING, 2.0, 0, 0
            while True:
                polish = polished > 0
                new = 1 - cur
                _normal(grad, cur, F, r, jtj, jtr)
                # Marquardt's scaling, applied to the small matrices; a polishing step scales by the
                # current column norms and takes no damping
                for j in range(P):
                    norms[j] = math.sqrt(max(jtj[j, j], 0.0))
                    d[j] = max(d[j], norms[j])  # never shrinks (Moré)
                    dd[j] = max(norms[j], 1e-300) if polish else d[j]
                    g[j] = jtr[j] / dd[j]
                if polish:
                    lam = 0.0
                for i in range(P):
                    for j in range(P):
                        m[i, j] = jtj[i, j] / (dd[i] * dd[j])
                    m[i, i] += lam
                factored = _cholesky(m, chol)
                if factored:
                    _solve(chol, g, delta)
                    for j in range(P):
                        delta[j] = -delta[j] / dd[j]
                else:
                    delta[:] = np.nan
                predicted = 0.0  # |r|² - |J δ + r|², from the small matrices
                for i in range(P):
                    t = 0.0
                    for j in range(P):
                        t += jtj[i, j] * delta[j]
                    predicted -= 2.0 * delta[i] * jtr[i] + delta[i] * t
                for j in range(P):
                    p[new, j] = p[cur, j] + delta[j]
                c_new = _residuals(op, a, b, value, point, dep, Y, W, c, unit, p, new, val, grad, r)
                rho = (cost - c_new) / predicted if predicted > 0 else -1.0
                finite = math.isfinite(c_new) and factored
                if polish:
                    ok = finite and c_new <= cost * (1 + 1e-13)
                else:
                    ok = finite and rho > 0
                # MINPACK-style tests
                tiny_change = abs(cost - c_new) <= tol * cost and predicted <= tol * cost
                step_size, size = 0.0, 0.0
                for j in range(P):
                    step_size += (dd[j] * delta[j]) ** 2
                    size += (dd[j] * p[cur, j]) ** 2
                tiny_step = math.sqrt(step_size) <= tol * (math.sqrt(size) + tol)
                done = (tiny_change and c_new <= cost * (1 + 1e-13)) or (tiny_step and ok) or cost == 0
                if not polish or ok:
                    steps += 1
                damped += 1
                if ok:  # the damping shrinks after a good step (Nielsen) and grows after a bad one
                    cur = new
                    cost = c_new
                    lam = lam * max(1 - (2 * rho - 1) ** 3, 1 / 3)
                    nu = 2.0
                else:
                    lam = lam * nu
                    nu = nu * 2
                converged = not polish and (done or lam > MAX_DAMPING)
                if converged:
                    code = 0
                if converged or (polish and ok):
                    polished += 1
                if (polish and not ok) or polished > POLISH_STEPS or (
                        not polish and not converged and damped >= max_steps):
                    break
                if POLISH_STEPS == 0 and converged:
                    break
        for j in range(P):
            params[c, j] = p[cur, j]
            if not math.isfinite(p[cur, j]):
                code = 2
        # statistics at the final parameters (workspace cur holds their r and J)
        total, raw = 0.0, 0.0
        for n in range(N):
            total += r[cur, n] * r[cur, n]
            if W[c, n] > 0:
                raw += (r[cur, n] / W[c, n]) ** 2
        chi2[c] = total
        rmse[c] = math.sqrt(raw / max(used, 1))
        _normal(grad, cur, F, r, jtj, jtr)
        for j in range(P):
            d[j] = max(math.sqrt(jtj[j, j]), 1e-300)
        for i in range(P):
            for j in range(P):
                m[i, j] = jtj[i, j] / (d[i] * d[j])
        singular = not _cholesky(m, chol)
        if not singular:
            smallest = math.inf
            for j in range(P):
                smallest = min(smallest, chol[j, j] ** 2)
            singular = not smallest > SINGULAR
        if singular:
            stderr[c, :] = np.nan
            if code == 0:
                code = 3
        else:
            dof = used - P
            factor = 1.0 if absolute_sigma else (total / dof if dof > 0 else math.inf)
            for j in range(P):  # the diagonal of m⁻¹, column by column
                g[:] = 0.0
                g[j] = 1.0
                _solve(chol, g, delta)
                stderr[c, j] = math.sqrt(max(delta[j] / (d[j] * d[j]) * factor, 0.0))
        n_steps[c] = steps
        status[c] = code


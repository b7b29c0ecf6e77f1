"""Levenberg–Marquardt over a block of curves, compiled by numba: the compiled solver's kernel.

``lm_curves`` fits curves lo..hi-1, one at a time, with the model's machine code (gradfit.solvers.native,
called through ``_call``) or the interpreter (solvers.compiled_interp), the normal equations and their
Cholesky factor in a few dozen numbers; each curve's rules are solvers.lm_rules.judge, inlined.
``judge_curves`` runs those rules for the torch LM's large batches. solvers.compiled drives both.

numba keys a cached function to the date of its own file only (numba/numba#1833): these kernels draw on
lm_rules.py and compiled_interp.py too, so a cache older than any of the three is dropped when this module
is imported, before anything loads it.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

from . import compiled_interp, lm_rules
from . import native as _native
from .compiled_interp import evaluate, inline, jit, prepare
from .lm_rules import ITERATING

_judge = inline(lm_rules.judge)  # Levenberg–Marquardt's rules for one curve: the torch LM's own


@jit
def judge_curves(cost, c_new, predicted, info, step, size, cosine, state, tolerances, out):
    """solvers.lm_rules.judge_curves compiled, for the torch LM's large batches: the same loop over the same
    rules (numba cannot cache a loop handed its function as an argument, so the loop is written here too)."""
    damping, nu, polished, newton, damped = state
    ok, counted, why, leaving = out
    for i in range(len(cost)):
        damped[i] += 1
        verdict = _judge(
            float(cost[i]), float(c_new[i]), float(predicted[i]), info[i] == 0, float(step[i]), float(size[i]),
            float(cosine[i]), damping[i], nu[i], polished[i], newton[i], damped[i], tolerances,
        )  # fmt: skip
        ok[i], counted[i], why[i], damping[i], nu[i], polished[i], newton[i], leaving[i] = verdict


@intrinsic
def _call(typingctx, address, x, n, p, y, w, sums, jtr, jtj, value, jac):
    """Call the machine code at address (gradfit.solvers.native.SIGNATURE) with n points and these
    addresses (integers) of its arrays."""

    def codegen(context, builder, signature, args):
        i64, double = ir.IntType(64), ir.DoubleType().as_pointer()
        fn = builder.inttoptr(args[0], _native.SIGNATURE.as_pointer())
        pointers = [builder.inttoptr(arg, double) for arg in args[1:]]
        count = builder.sext(args[2], i64) if args[2].type.width < 64 else args[2]
        builder.call(fn, [pointers[0], count] + pointers[2:])
        return context.get_dummy_value()

    return numba.types.void(address, x, n, p, y, w, sums, jtr, jtj, value, jac), codegen


@intrinsic
def _borrowed(typingctx, array):
    """The same array without its reference count (a null meminfo): numba then counts no references
    to it (two atomic operations per array per inlined call, a quarter of the solver's time). Only
    for arrays that the caller holds for as long as this one is used."""

    def codegen(context, builder, signature, args):
        view = context.make_array(array)(context, builder, value=args[0])
        view.meminfo = context.get_constant_null(numba.types.MemInfoPointer(array.dtype))
        return view._getvalue()  # noqa: SLF001 - numba's way to hand a struct back (its extension API)

    return array(array), codegen


@inline
def _residuals(
    op, a, b, value, point, dep, native, X, xc, Y, W, c, wc, unit, p, k, val, grad, r, sums, jtj, jtr, addresses
):
    """|r|² at p[k] for curve c, r = (f(x, p[k]) - y) w. The model is the machine code at the address
    native where it is not 0: it leaves |r|², Σ(f - y)² over the points used, JᵀJ and Jᵀr (of the
    weighted J) in sums[k], jtj[k], jtr[k] (addresses: those of X, Y, W, p, sums, jtr, jtj, and the
    scratch rows r and J, taken once). Else the interpreter's: r[k] is r, and the last slot's
    derivatives, weighted in place, are J transposed (a row per parameter, zero where the model does
    not depend on it): _normal makes JᵀJ and Jᵀr from them."""
    F, N = len(op) - 1, Y.shape[1]
    if native != 0:
        P, K = p.shape[1], X.shape[2]
        x_at, y_at, w_at, p_at, sums_at, jtr_at, jtj_at, r_at, scratch_at = addresses
        _call(
            native,
            x_at + xc * N * K * 8,
            N,
            p_at + k * P * 8,
            y_at + c * N * 8,
            w_at + wc * N * 8,
            sums_at + k * 16,
            jtr_at + k * P * 8,
            jtj_at + k * P * P * 8,
            r_at,
            scratch_at,
        )
        return sums[k, 0]
    evaluate(op, a, b, value, point, dep, p, k, val, grad)
    cost = 0.0
    for n in range(N):
        r[k, n] = (val[k, F, n] - Y[c, n]) * W[wc, n]
        cost += r[k, n] * r[k, n]
    if not unit:
        for j in range(p.shape[1]):
            if dep[F, j]:
                for n in range(N):
                    grad[k, F, j, n] *= W[wc, n]
    return cost


@inline
def _normal(grad, k, F, r, jtj, jtr):
    """JᵀJ and Jᵀr into jtj[k] and jtr[k], J = grad[k, F] (transposed: a row per parameter). Each
    sum runs as four running sums added in a fixed order: the processor overlaps them, and the
    answer does not depend on where the arrays lie in memory (as a vectorized sum's would)."""
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
        jtr[k, i] = (t0 + t1) + (t2 + t3)
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
            jtj[k, i, j] = t
            jtj[k, j, i] = t


@inline
def _cholesky(m, chol):
    """Lower Cholesky factor L of m (P x P) into chol's first P rows, and the reciprocals of its
    diagonal into its last row (chol is (P + 1, P); the solves multiply by them rather than
    divide); False (and chol unusable) where m is not positive definite."""
    P = m.shape[0]
    for j in range(P):
        s = m[j, j]
        for q in range(j):
            s -= chol[j, q] * chol[j, q]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        chol[j, j] = d
        e = 1.0 / d
        chol[P, j] = e
        for i in range(j + 1, P):
            t = m[i, j]
            for q in range(j):
                t -= chol[i, q] * chol[j, q]
            chol[i, j] = t * e
    return True


@inline
def _solve(chol, g, z):
    """z = (L Lᵀ)⁻¹ g, L and its diagonal's reciprocals as _cholesky leaves them in chol."""
    P = len(g)
    for i in range(P):
        t = g[i]
        for q in range(i):
            t -= chol[i, q] * z[q]
        z[i] = t * chol[P, i]
    for i in range(P - 1, -1, -1):
        t = z[i]
        for q in range(i + 1, P):
            t -= chol[q, i] * z[q]
        z[i] = t * chol[P, i]


@jit
def lm_curves(
    op,
    a,
    b,
    value,
    point,
    dep,
    native,
    X,
    Y,
    W,
    lo,
    hi,
    max_steps,
    tol,
    absolute_sigma,
    settings,
    params,
    stderr,
    rmse,
    chi2,
    n_points,
    n_steps,
    status,
    val,
    grad,
    p,
    r,
    sums,
    jtj,
    jtr,
    m,
    chol,
    d,
    dd,
    g,
    delta,
    norms,
    scratch,
):
    """LM for the curves lo..hi-1, as solvers.lm.lm_many and Chunk.finish do it for a batch.

    Two workspaces, the current point's and the trial's, indexed by cur and 1 - cur: accepting a
    step flips the index (no copies, no array views made in the loop). The last slot's derivatives
    in a workspace are J there. Every array comes from the caller (see _workspaces), which holds
    it, so that they can all be _borrowed."""
    op, a, b, value, point, dep = (
        _borrowed(op),
        _borrowed(a),
        _borrowed(b),
        _borrowed(value),
        _borrowed(point),
        _borrowed(dep),
    )
    X, Y, W, settings, params, stderr = (
        _borrowed(X),
        _borrowed(Y),
        _borrowed(W),
        _borrowed(settings),
        _borrowed(params),
        _borrowed(stderr),
    )
    rmse, chi2, n_points, n_steps, status = (
        _borrowed(rmse),
        _borrowed(chi2),
        _borrowed(n_points),
        _borrowed(n_steps),
        _borrowed(status),
    )
    val, grad, p, r, sums, jtj, jtr = (
        _borrowed(val),
        _borrowed(grad),
        _borrowed(p),
        _borrowed(r),
        _borrowed(sums),
        _borrowed(jtj),
        _borrowed(jtr),
    )
    m, chol, d, dd, g, delta, norms = (
        _borrowed(m),
        _borrowed(chol),
        _borrowed(d),
        _borrowed(dd),
        _borrowed(g),
        _borrowed(delta),
        _borrowed(norms),
    )
    scratch = _borrowed(scratch)
    S, N, P = len(op), Y.shape[1], params.shape[1]
    INITIAL_DAMPING, SINGULAR = settings[0], settings[3]
    rules = (tol, tol, 0.0, max_steps)  # (ftol, xtol, gtol, max_steps) for lm_rules.judge
    interpret = native == 0
    F = S - 1
    addresses = (
        X.ctypes.data,
        Y.ctypes.data,
        W.ctypes.data,
        p.ctypes.data,
        sums.ctypes.data,
        jtr.ctypes.data,
        jtj.ctypes.data,
        r.ctypes.data,
        scratch.ctypes.data,
    )
    for c in range(lo, hi):
        xc = c if X.shape[0] > 1 else 0
        wc = c if W.shape[0] > 1 else 0  # one row of weights for every curve, or a row each
        if interpret and (c == lo or X.shape[0] > 1):
            prepare(op, value, X, xc, val, grad)
        used, unit = 0, True
        for n in range(N):
            if W[wc, n] > 0:
                used += 1
            if W[wc, n] != 1.0:
                unit = False
        n_points[c] = used
        cur = 0
        for j in range(P):
            p[cur, j] = params[c, j]
        cost = _residuals(
            op,
            a,
            b,
            value,
            point,
            dep,
            native,
            X,
            xc,
            Y,
            W,
            c,
            wc,
            unit,
            p,
            cur,
            val,
            grad,
            r,
            sums,
            jtj,
            jtr,
            addresses,
        )
        steps = 0
        code = 1  # max_steps until decided
        stale = interpret  # JᵀJ and Jᵀr are not yet those of the current point (the machine code makes them)
        if not math.isfinite(cost):
            code = 2
        else:
            if stale:
                _normal(grad, cur, F, r, jtj, jtr)
                stale = False
            for j in range(P):
                d[j] = max(math.sqrt(jtj[cur, j, j]), 1e-300)
            lam, nu, damped, polished, newton = INITIAL_DAMPING, 2.0, 0, 0, 0
            while True:
                gauss_newton = polished > 0 or newton > 0  # after converging, or close (solvers.lm_rules)
                new = 1 - cur
                if stale:
                    _normal(grad, cur, F, r, jtj, jtr)
                    stale = False
                # Marquardt's scaling, applied to the small matrices; a polishing step scales by the
                # current column norms and takes no damping
                for j in range(P):  # norms: the column norms, then 1 / dd
                    norms[j] = math.sqrt(max(jtj[cur, j, j], 0.0))
                    d[j] = max(d[j], norms[j])  # never shrinks (Moré)
                    dd[j] = max(norms[j], 1e-300) if gauss_newton else d[j]
                    norms[j] = 1.0 / dd[j]
                    g[j] = jtr[cur, j] * norms[j]
                lam_step = 0.0 if gauss_newton else lam
                for i in range(P):
                    for j in range(P):
                        m[i, j] = jtj[cur, i, j] * (norms[i] * norms[j])
                    m[i, i] += lam_step
                factored = _cholesky(m, chol)
                # the reduction the linear model promises, |r|² - |J δ + r|² = -u·g + λ|u|² (u the scaled step)
                predicted, u2, ug = np.nan, 0.0, 0.0
                if factored:
                    _solve(chol, g, delta)  # -u
                    for j in range(P):
                        u2 += delta[j] * delta[j]
                        ug -= delta[j] * g[j]
                        delta[j] = -delta[j] * norms[j]
                    predicted = lam_step * u2 - ug
                else:
                    delta[:] = np.nan
                for j in range(P):
                    p[new, j] = p[cur, j] + delta[j]
                c_new = _residuals(
                    op,
                    a,
                    b,
                    value,
                    point,
                    dep,
                    native,
                    X,
                    xc,
                    Y,
                    W,
                    c,
                    wc,
                    unit,
                    p,
                    new,
                    val,
                    grad,
                    r,
                    sums,
                    jtj,
                    jtr,
                    addresses,
                )
                size = 0.0
                for j in range(P):
                    size += (dd[j] * p[cur, j]) ** 2
                damped += 1
                ok, counted, why, lam, nu, polished, newton, leaving = _judge(
                    cost, c_new, predicted, factored, math.sqrt(u2), math.sqrt(size), 0.0, lam, nu, polished, newton,
                    damped, rules,
                )  # fmt: skip
                if counted:
                    steps += 1
                if why != ITERATING:
                    code = 0
                if ok:
                    cur = new
                    cost = c_new
                    stale = interpret
                if leaving:
                    break
        for j in range(P):
            params[c, j] = p[cur, j]
            if not math.isfinite(p[cur, j]):
                code = 2
        # statistics at the final parameters (workspace cur holds their r and J)
        total, raw = cost, sums[cur, 1]
        if interpret:
            raw = 0.0
            for n in range(N):
                if W[wc, n] > 0:
                    raw += (r[cur, n] / W[wc, n]) ** 2
        chi2[c] = total
        rmse[c] = math.sqrt(raw / max(used, 1))
        if stale:
            _normal(grad, cur, F, r, jtj, jtr)
        for j in range(P):
            d[j] = max(math.sqrt(jtj[cur, j, j]), 1e-300)
            norms[j] = 1.0 / d[j]
        for i in range(P):
            for j in range(P):
                m[i, j] = jtj[cur, i, j] * (norms[i] * norms[j])
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
            for j in range(P):  # the diagonal of m⁻¹ = L⁻ᵀL⁻¹: the squared norm of L⁻¹'s column j
                inverse = 0.0
                for i in range(j, P):
                    t = 1.0 if i == j else 0.0
                    for q in range(j, i):
                        t -= chol[i, q] * delta[q]
                    delta[i] = t * chol[P, i]
                    inverse += delta[i] * delta[i]
                stderr[c, j] = math.sqrt(max(inverse * (norms[j] * norms[j]) * factor, 0.0))
        n_steps[c] = steps
        status[c] = code


def _forget_a_stale_cache() -> None:
    """Delete this module's numba cache files older than this file, lm_rules.py or compiled_interp.py (numba
    checks only the first): the kernels then compile afresh with the code they inline. Quietly does nothing
    where numba's cache cannot be read or written (it reads an internal of numba's: the cache's folder)."""
    try:
        folder = lm_curves._cache._cache_path  # noqa: SLF001 - numba's, no public way
        newest = max(os.stat(module).st_mtime for module in (__file__, lm_rules.__file__, compiled_interp.__file__))
        stem = os.path.splitext(os.path.basename(__file__))[0] + "."
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(stem) and name.endswith((".nbi", ".nbc")) and os.stat(path).st_mtime < newest:
                os.remove(path)
    except Exception:  # noqa: BLE001 - numba's internals or a read-only cache: numba's own check still holds
        pass


_forget_a_stale_cache()

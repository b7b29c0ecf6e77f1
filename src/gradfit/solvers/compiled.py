"""Levenberg–Marquardt over many curves, compiled: one curve at a time, everything in the cache.

The batched torch solver (gradfit.batch) runs each step as some twenty passes over
(curves x points) arrays. For models that come as a Program — an expression's instructions
(gradfit.expr), a polynomial, a sum of those — this module runs the same algorithm curve by
curve in machine code (numba): the model, its derivatives and the normal equations come from
the model's own machine code (gradfit.solvers.native: built from the program in 30–200 ms, once per
process), or, where LLVM cannot build that, from a small interpreter of the program's
instructions into two small workspaces (the current point's and the trial's); the normal
equations and their Cholesky factor are a few dozen numbers, and nothing is allocated from one
curve to the next. The numba functions are compiled once per machine (~20 s here) and cached
on disk; they release the GIL, so the curves are shared among threads. The solver's arrays are
all the caller's and _borrowed: numba counts no references in the loop (atomic operations that
took a quarter of the time).

Same algorithm, same numbers to rounding, as ``solvers.lm.lm_many`` and ``Chunk.finish``:
Marquardt's column scaling that never shrinks, the normal equations in that scaling, and each
curve's rules — keep the step or not, Nielsen's damping, MINPACK's tests, Gauss–Newton steps close
to the optimum and after converging — as the very function the torch LM runs
(solvers.lm_rules.judge, inlined here; ``judge_curves`` below runs it for the torch LM's large
batches); standard errors from the column-equilibrated normal matrix.
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

from . import native as _native
from . import lm_rules
from .lm_rules import ITERATING
from ..special import EXPREL_SERIES_BELOW
from ..expr_program import ADD, ATAN2, CONST, DIV, MUL, NEG, PARAM, POW, SUB, UNARY_CODES, UNARY_NAMES, VAR, Program

(
    _EXP,
    _LOG,
    _LOG10,
    _LOG2,
    _SQRT,
    _ABS,
    _SIN,
    _COS,
    _TAN,
    _ASIN,
    _ACOS,
    _ATAN,
    _SINH,
    _COSH,
    _TANH,
    _ERF,
    _ERFC,
    _SIGMOID,
    _HEAVISIDE,
    _EXPREL,
) = (UNARY_CODES[n] for n in UNARY_NAMES)  # (in UNARY_NAMES' order, which these names follow)
BLOCKS_PER_THREAD, BLOCK_CURVES = 16, 256  # blocks of curves queued per thread, and their least size (see fit)
WORK_BYTES = 1 << 24  # the most working memory one thread's program slots may take: larger curves run in torch


def small_enough(program: Program, n_points: int, native: bool = True) -> bool:
    """Does one thread's working memory for a curve fit WORK_BYTES? The machine code needs its
    residuals (twice) and J; the interpreter values and derivatives of every slot at every point,
    twice."""
    per_point = (program.n_params + 3) if native else 2 * (len(program.op) + 3) * (program.n_params + 1)
    return per_point * max(n_points, 1) * 8 <= WORK_BYTES


def cached() -> bool:
    """Is the solver compiled already, in this process or in numba's cache on disk? If not, the first fit
    compiles it (~20 s). Read from numba's cache index (an internal of numba's): True where unsure."""
    try:
        return bool(_lm_curves.signatures) or bool(_lm_curves._cache._cache_file._load_index())
    except Exception:
        return True


_background: subprocess.Popen | None = None  # the compile started for later fits, at most one per process
_background_lock = threading.Lock()


def compile_in_background() -> subprocess.Popen | None:
    """Compile the solver into numba's disk cache in a process of its own, once per process, so that
    the fits after this one run compiled (fit_many's ``backend="auto"`` fits with torch meanwhile,
    rather than make the user wait ~20 s). Returns that process, or None where it could not start."""
    global _background
    with _background_lock:
        if _background is None:
            try:
                _background = subprocess.Popen(
                    [sys.executable, "-c", "from gradfit.solvers import compiled; compiled.warm_up()"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )  # not stopped by a Ctrl-C meant for the fit
            except OSError:
                return None
        return _background


def warm_up() -> None:
    """Compile the solver (or load it from numba's cache) by fitting two tiny curves: what a first fit would do."""
    from ..expr import parse

    program = parse("a*x + b", ("x",), ("a", "b")).program()
    x = np.linspace(0.0, 1.0, 5)
    Y = np.stack([2 * x + 1, 3 * x - 1])
    fit(
        program,
        x.reshape(1, -1, 1),
        Y,
        np.ones((1, 5)),
        np.ones((2, 2)),
        10,
        1e-10,
        False,
        (1e-3, 1e32, 2.0, 1e-14),
        threads=1,
    )
    # and the torch LM's rules for large batches
    ones, counts, flags = np.ones(2), np.zeros(2, dtype=np.int64), np.zeros(2, dtype=bool)
    state = (ones.copy(), 2 * ones, counts.copy(), counts.copy(), counts.copy())
    out = (flags, flags.copy(), counts, flags)
    judge_curves(ones, ones / 2, ones, 0 * ones, ones, ones, 0 * ones, state, (1e-8, 1e-8, 0.0, 10), out)


def fit(
    program: Program,
    x: np.ndarray,
    Y: np.ndarray,
    W: np.ndarray,
    P0: np.ndarray,
    max_steps: int,
    tol: float,
    absolute_sigma: bool,
    settings: tuple,
    threads: int | None = None,
    native: bool = True,
) -> dict:
    """LM fits of every row of Y (B, N); x is (1, N, k) shared or (B, N, k) per curve; W the weights
    (0 leaves a point out), (B, N) or one row (1, N) for every curve. Returns params, stderr, rmse,
    chi2, n_points, n_steps and status codes, as numpy arrays (status codes index batch.STATUSES).
    The model runs as its own machine code (gradfit.solvers.native) unless native is False: then
    the interpreter runs it."""
    B, k = P0.shape
    out = {
        "params": np.array(P0, dtype=np.float64, order="C"),
        "stderr": np.empty((B, k)),
        "rmse": np.empty(B),
        "chi2": np.empty(B),
        "n_steps": np.zeros(B, dtype=np.int64),
        "status": np.ones(B, dtype=np.int64),
        "n_points": np.empty(B, dtype=np.int64),
    }
    settings = np.array(settings, dtype=np.float64)  # initial damping, -, -, singular (the rest: lm_rules')
    if program.op[-1] in (CONST, PARAM, VAR):  # the model is a leaf: J is weighted in place, so give it a slot
        program = _times_one(program)
    if W.ndim == 2 and len(W) > 1 and W.strides[0] == 0:  # the same weights for every curve (broadcast)
        W = W[:1]
    # C order and writeable, whatever came in (a broadcast row of weights, a Dask block are read-only): numba
    # compiles the solver once for each kind of array it meets, and ~20 s each is too much to pay again
    x, Y, W = (np.require(a, np.float64, ("C", "W")) for a in (x, Y, W))
    code = _machine_code(program) if native else None  # held until the fits are done
    args = (
        program.op,
        program.a,
        program.b,
        program.value,
        program.point,
        program.dep,
        code.address if code is not None else 0,
        x,
        Y,
        W,
    )
    threads = threads or _cores()
    threads = min(threads, max(B, 1))
    # several blocks of curves per thread, taken in turn from one queue: a thread whose core is busy
    # with something else leaves more of them to the others (one block per thread would wait for it);
    # blocks of at least BLOCK_CURVES, as each call has a fixed cost
    blocks = 1 if threads == 1 else max(threads, min(threads * BLOCKS_PER_THREAD, B // BLOCK_CURVES))
    bounds = np.linspace(0, B, blocks + 1).astype(np.int64)
    spare = queue.SimpleQueue()  # one set of working arrays per thread, handed from block to block
    for _ in range(threads):
        spare.put(_workspaces(len(program.op), Y.shape[1], k, code is not None))

    def run(lo, hi):
        work = spare.get()
        _lm_curves(
            *args,
            lo,
            hi,
            max_steps,
            tol,
            absolute_sigma,
            settings,
            out["params"],
            out["stderr"],
            out["rmse"],
            out["chi2"],
            out["n_points"],
            out["n_steps"],
            out["status"],
            *work,
        )
        spare.put(work)

    if threads == 1:
        run(0, B)
    else:
        with ThreadPoolExecutor(threads) as pool:  # the kernel releases the GIL
            list(pool.map(run, bounds[:-1], bounds[1:]))
    return out


def _machine_code(program: Program):
    """The program's machine code (gradfit.solvers.native), or None where LLVM cannot make it: then
    the interpreter runs the model, to the same answers to rounding, slower (and a warning says so)."""
    try:
        return _native.machine_code(program)
    except Exception as error:  # noqa: BLE001 - any failure of LLVM's: the interpreter gives the same answers
        warnings.warn(
            f"gradfit: the model's machine code could not be built ({str(error).splitlines()[0]}); "
            "the compiled backend interprets it instead (the same answers to rounding, slower).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _workspaces(S: int, N: int, P: int, native: bool) -> tuple:
    """One thread's working arrays for _lm_curves: the interpreter's values and derivatives of every
    slot at every point (none where the machine code runs the model: it needs one row of residuals
    and J, in r and scratch), parameters, residuals and sums in two workspaces (current point and
    trial), JᵀJ and Jᵀr in both, and the P x P and P arrays of a step."""
    M = 0 if native else N
    return (
        np.zeros((2, S + 2, M)),
        np.zeros((2, S, P, M)),
        np.empty((2, P)),
        np.empty((2, N)),
        np.empty((2, 2)),
        np.empty((2, P, P)),
        np.empty((2, P)),
        np.empty((P, P)),
        np.zeros((P + 1, P)),
        *(np.empty(P) for _ in range(5)),
        np.empty(P * N if native else 0),
    )


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 64))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(os.cpu_count() or 1, 64))


def values_and_jacobian(program: Program, x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's value (N,) and Jacobian (N, P) at p, as the interpreter computes them (for tests;
    gradfit.solvers.native.evaluate runs the machine code)."""
    if program.op[-1] in (CONST, PARAM, VAR):
        program = _times_one(program)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    S, N, P = len(program.op), len(x), program.n_params
    val, grad = np.zeros((2, S + 2, N)), np.zeros((2, S, P, N))
    _prepare(program.op, program.value, x[None], 0, val, grad)
    _evaluate(
        program.op,
        program.a,
        program.b,
        program.value,
        program.point,
        program.dep,
        np.asarray(p, dtype=np.float64).reshape(1, P),
        0,
        val,
        grad,
    )
    return val[0, S - 1].copy(), grad[0, S - 1].T.copy()


def _times_one(program: Program) -> Program:
    """The program with one more slot, its last slot times 1."""
    S = len(program.op)
    return Program(
        np.append(program.op, [CONST, MUL]),
        np.append(program.a, [0, S - 1]),
        np.append(program.b, [0, S]),
        np.append(program.value, [1.0, 0.0]),
        np.append(program.point, [False, program.point[-1]]),
        np.vstack([program.dep, np.zeros(program.n_params, dtype=bool), program.dep[-1]]),
        program.n_variables,
    )


_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
_TWO_OVER_SQRT_PI, _LN10, _LN2 = 2 / math.sqrt(math.pi), math.log(10), math.log(2)
_judge = _inline(lm_rules.judge)  # Levenberg–Marquardt's rules for one curve: the torch LM's own


@_jit
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
    if o == _HEAVISIDE:
        return (1.0 if u >= 0 else 0.0), 0.0
    if o == _EXPREL:  # as gradfit.special.exprel
        if abs(u) < EXPREL_SERIES_BELOW:
            return 1.0 + u * (0.5 + u * (1.0 / 6.0 + u / 24.0)), 0.5 + u * (1.0 / 3.0 + u / 8.0)
        v = math.expm1(u) / u
        return v, (math.exp(u) - v) / u
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
        return view._getvalue()

    return array(array), codegen


@_inline
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
    _evaluate(op, a, b, value, point, dep, p, k, val, grad)
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


@_inline
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


@_inline
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


@_inline
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


@_jit
def _lm_curves(
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
            _prepare(op, value, X, xc, val, grad)
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

"""Levenberg–Marquardt over many curves, compiled: one curve at a time, everything in the cache.

The batched torch solver (gradfit.batch) runs each step as some twenty passes over
(curves x points) arrays. For models that come as a Program — an expression's instructions
(gradfit.expr), a polynomial, a sum of those — the compiled solver runs the same algorithm curve by
curve in machine code (numba): the model, its derivatives and the normal equations come from
the model's own machine code (gradfit.solvers.native: built from the program in 30–200 ms, once per
process), or, where LLVM cannot build that, from a small interpreter of the program's
instructions (solvers.compiled_interp) into two small workspaces (the current point's and the trial's);
the normal equations and their Cholesky factor are a few dozen numbers, and nothing is allocated from one
curve to the next. The numba functions are compiled once per machine (~20 s here) and cached
on disk; they release the GIL, so the curves are shared among threads. The solver's arrays are
all the caller's and borrowed: numba counts no references in the loop (atomic operations that
took a quarter of the time).

This module drives it: it checks and lays out the arrays, builds the machine code, hands blocks of curves
to threads, and compiles ahead (warm_up, compile_in_background). The kernel, ``compiled_lm.lm_curves``, is
the same algorithm, with the same numbers to rounding, as ``solvers.lm.lm_many`` and ``Chunk.finish``:
Marquardt's column scaling that never shrinks, the normal equations in that scaling, and each
curve's rules — keep the step or not, Nielsen's damping, MINPACK's tests, Gauss–Newton steps close
to the optimum and after converging — as the very function the torch LM runs
(solvers.lm_rules.judge, inlined there; ``compiled_lm.judge_curves`` runs it for the torch LM's large
batches); standard errors from the column-equilibrated normal matrix."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import native as _native
from ..expr_program import CONST, MUL, PARAM, VAR, Program
from .compiled_interp import evaluate, prepare
from .compiled_lm import judge_curves, lm_curves

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
        return bool(lm_curves.signatures) or bool(lm_curves._cache._cache_file._load_index())  # noqa: SLF001 - numba's, no public way
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
        lm_curves(
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
    """One thread's working arrays for lm_curves: the interpreter's values and derivatives of every
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
    prepare(program.op, program.value, x[None], 0, val, grad)
    evaluate(
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

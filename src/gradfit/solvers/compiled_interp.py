"""The compiled solver's interpreter of a model's instructions (an expr.Program), in numba.

Where LLVM cannot build a model's own machine code (gradfit.solvers.native), the compiled LM
(solvers.compiled_lm) runs the model through this interpreter: every slot's value and its derivatives
by the parameters it depends on, at every point, into two small workspaces (the current point's and
the trial's). Also numba's two ways of compiling that the compiled solver uses (``jit``, ``inline``), so
that every kernel is compiled alike.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..expr_program import ADD, ATAN2, CONST, DIV, MUL, NEG, PARAM, POW, SUB, UNARY_CODES, UNARY_NAMES, VAR
from ..special import EXPREL_SERIES_BELOW

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

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
_TWO_OVER_SQRT_PI, _LN10, _LN2 = 2 / math.sqrt(math.pi), math.log(10), math.log(2)


@inline
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


@jit
def prepare(op, value, x, xc, val, grad):
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


@jit
def evaluate(op, a, b, value, point, dep, p, k, val, grad):
    """Every slot's value and its derivatives by the parameters it depends on, at every point
    (the slots prepare filled are left as they are). A slot that is one number per curve is
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

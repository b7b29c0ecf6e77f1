"""The instruction writer of solvers.native: a Program's slots as LLVM instructions (llvmlite's IR builder),
each slot's value and its derivatives, on one point or on LANES points at once in vector lanes, with the same
floating-point operations in the same order as the compiled solver's interpreter. solvers.native builds the
model's whole function around it (the loops over points, the sums of the normal equations).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..expr_program import ADD, ATAN2, CONST, DIV, MUL, NEG, PARAM, POW, SUB, UNARY_CODES, VAR, Program
from ..special import EXPREL_SERIES_BELOW

DOUBLE = ir.DoubleType()
_CODE = {code: name for name, code in UNARY_CODES.items() if name not in ("asin", "acos", "atan")}
VECTOR = ir.VectorType(DOUBLE, 4)
LANES = 4  # points computed together in vector lanes (AVX2's four doubles)
# the functions the model may call: scalar LLVM intrinsics where LLVM has them, else the C library's;
# four lanes at once, glibc's vector math library (libmvec, AVX2 variants: _ZGVdN4v_<name>)
_INTRINSICS = {"exp", "log", "log10", "log2", "sin", "cos", "pow", "sqrt", "fabs"}
_TWO_ARGUMENTS = {"pow", "atan2"}
_LIBM = {
    "tan": "tan",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "erf": "erf",
    "erfc": "erfc",
    "expm1": "expm1",
}
_TWO_OVER_SQRT_PI = 2 / np.sqrt(np.pi)


class Writer:
    """Writes a Program's slots as instructions: emit() makes a slot's value and derivatives, on one
    point (width 1) or on LANES points at once (width LANES: slots that vary by point are vectors,
    slots of the parameters alone stay scalars and are broadcast where a vector reads them)."""

    def __init__(self, program: Program, module: ir.Module, vector_library: bool):
        self.program, self.module, self.vector_library = program, module, vector_library
        self.P = program.n_params
        self.values: dict[int, ir.Value] = {}
        self.grads: dict[int, dict[int, ir.Value]] = {}  # slot -> {parameter: derivative}
        self.params: list[ir.Value] = []  # the parameters, loaded once in the entry block
        self.b: ir.IRBuilder | None = None
        self.width = 1
        self._broadcast: dict = {}

    def start(self, b: ir.IRBuilder, width: int) -> None:
        """Emit from here with this builder, at this width."""
        self.b, self.width, self._broadcast = b, width, {}

    def c(self, v: float) -> ir.Constant:
        return ir.Constant(DOUBLE, float(v)) if self.width == 1 else ir.Constant(VECTOR, [float(v)] * LANES)

    def wide(self, value: ir.Value) -> ir.Value:
        """value at the current width: a scalar is broadcast to every lane."""
        if self.width == 1 or isinstance(value.type, ir.VectorType):
            return value
        if isinstance(value, ir.Constant):
            return ir.Constant(VECTOR, [value.constant] * LANES)
        key = id(value)
        if key not in self._broadcast:
            one = self.b.insert_element(ir.Constant(VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
            self._broadcast[key] = self.b.shuffle_vector(
                one, ir.Constant(VECTOR, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
            )
        return self._broadcast[key]

    def value(self, slot: int) -> ir.Value:
        return self.wide(self.values[slot])

    def grad(self, slot: int) -> dict[int, ir.Value]:
        return {j: self.wide(g) for j, g in self.grads.get(slot, {}).items()}

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        """name(args) at the current width (name as in C: exp, atan2, ...)."""
        b = self.b
        if self.width == 1:
            symbol = f"llvm.{name}.f64" if name in _INTRINSICS else name
            return b.call(self._declare(symbol, DOUBLE, len(args)), list(args))
        if name in ("sqrt", "fabs"):  # one instruction on the vector
            return b.call(self._declare(f"llvm.{name}.v4f64", VECTOR, 1), list(args))
        if self.vector_library:
            symbol = f"_ZGVdN{LANES}{'vv' if name in _TWO_ARGUMENTS else 'v'}_{name}"
            return b.call(self._declare(symbol, VECTOR, len(args)), list(args))
        # lane by lane
        out = ir.Constant(VECTOR, ir.Undefined)
        scalar = self._declare(f"llvm.{name}.f64" if name in _INTRINSICS else name, DOUBLE, len(args))
        for lane in range(LANES):
            at = ir.Constant(ir.IntType(32), lane)
            out = b.insert_element(out, b.call(scalar, [b.extract_element(a, at) for a in args]), at)
        return out

    def _declare(self, symbol: str, kind, arity: int) -> ir.Function:
        fn = self.module.globals.get(symbol)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(kind, [kind] * arity), name=symbol)
        return fn

    def emit(self, i: int, variables) -> None:
        """The value of slot i and its derivatives by the parameters it depends on."""
        prog, b, c = self.program, self.b, self.c
        o, A, B = int(prog.op[i]), int(prog.a[i]), int(prog.b[i])
        deps = [j for j in range(self.P) if prog.dep[i, j]]
        grad: dict[int, ir.Value] = {}
        if o == CONST:
            self.values[i] = ir.Constant(DOUBLE, float(prog.value[i]))
        elif o == VAR:
            self.values[i] = variables[int(prog.value[i])]
        elif o == PARAM:
            self.values[i] = self.params[int(prog.value[i])]
            grad[int(prog.value[i])] = ir.Constant(DOUBLE, 1.0)
        elif o in (ADD, SUB, NEG):
            va, ga = self.value(A), self.grad(A)
            if o == NEG:
                self.values[i] = b.fneg(va)
                grad = {j: b.fneg(ga[j]) for j in deps}
            else:
                vb, gb = self.value(B), self.grad(B)
                sub = o == SUB
                self.values[i] = b.fsub(va, vb) if sub else b.fadd(va, vb)
                for j in deps:
                    if j in ga and j in gb:
                        grad[j] = b.fsub(ga[j], gb[j]) if sub else b.fadd(ga[j], gb[j])
                    elif j in ga:
                        grad[j] = ga[j]
                    else:
                        grad[j] = b.fneg(gb[j]) if sub else gb[j]
        else:
            u = self.value(A)
            w = self.value(B) if o in (MUL, DIV, POW, ATAN2) else None
            ra = rb = None  # the partial derivatives by each operand
            if o == MUL:
                v, ra, rb = b.fmul(u, w), w, u
            elif o == DIV:
                v = b.fdiv(u, w)
                ra, rb = b.fdiv(c(1.0), w), b.fdiv(b.fneg(v), w)
            elif o == POW and prog.op[B] == CONST:
                e = float(prog.value[B])
                if e == 2.0:
                    v, ra = b.fmul(u, u), b.fmul(c(2.0), u)
                elif e == 3.0:
                    uu = b.fmul(u, u)
                    v, ra = b.fmul(uu, u), b.fmul(c(3.0), uu)
                elif e == 0.5:
                    v = self.call("sqrt", u)
                    ra = b.fdiv(c(0.5), v)
                elif e == -1.0:
                    v = b.fdiv(c(1.0), u)
                    ra = b.fneg(b.fmul(v, v))
                else:
                    v = self.call("pow", u, c(e))
                    ra = c(0.0) if e == 0.0 else b.fmul(c(e), self.call("pow", u, c(e - 1.0)))
            elif o == POW:
                v = self.call("pow", u, w)
                ra = b.fmul(w, self.call("pow", u, b.fsub(w, c(1.0))))
                rb = b.fmul(v, self.call("log", u))
            elif o == ATAN2:
                r2 = b.fadd(b.fmul(w, w), b.fmul(u, u))
                v = self.call("atan2", u, w)
                ra, rb = b.fdiv(w, r2), b.fdiv(b.fneg(u), r2)
            else:
                v, ra = _unary(self, _CODE[o], u)
            self.values[i] = v
            ga, gb = self.grad(A), (self.grad(B) if rb is not None else {})
            for j in deps:
                if j in ga and j in gb:
                    grad[j] = b.fadd(b.fmul(ga[j], ra), b.fmul(gb[j], rb))
                elif j in ga:
                    grad[j] = b.fmul(ga[j], ra)
                else:
                    grad[j] = b.fmul(gb[j], rb)
        self.grads[i] = grad


def _unary(writer: Writer, name: str, u: ir.Value) -> tuple[ir.Value, ir.Value]:
    """A function of one argument and its derivative, written by ``writer`` as the interpreter's _unary computes
    them (solvers.compiled_interp)."""
    b, c, call = writer.b, writer.c, writer.call
    if name == "exp":
        v = call("exp", u)
        return v, v
    if name == "log":
        return call("log", u), b.fdiv(c(1.0), u)
    if name == "log10":
        return call("log10", u), b.fdiv(c(1.0), b.fmul(u, c(np.log(10))))
    if name == "log2":
        return call("log2", u), b.fdiv(c(1.0), b.fmul(u, c(np.log(2))))
    if name == "sqrt":
        v = call("sqrt", u)
        return v, b.fdiv(c(0.5), v)
    if name == "abs":  # sign(u): 1, -1, 0 at 0, NaN at NaN
        sign = b.select(
            b.fcmp_ordered(">", u, c(0.0)),
            c(1.0),
            b.select(b.fcmp_ordered("<", u, c(0.0)), c(-1.0), b.select(b.fcmp_ordered("==", u, c(0.0)), c(0.0), u)),
        )
        return call("fabs", u), sign
    if name == "sin":
        return call("sin", u), call("cos", u)
    if name == "cos":
        return call("cos", u), b.fneg(call("sin", u))
    if name == "tan":
        v = call("tan", u)
        return v, b.fadd(c(1.0), b.fmul(v, v))
    if name in ("arcsin", "arccos"):
        root = call("sqrt", b.fsub(c(1.0), b.fmul(u, u)))
        d = b.fdiv(c(1.0 if name == "arcsin" else -1.0), root)
        return call(_LIBM[name], u), d
    if name == "arctan":
        return call("atan", u), b.fdiv(c(1.0), b.fadd(c(1.0), b.fmul(u, u)))
    if name == "sinh":
        return call("sinh", u), call("cosh", u)
    if name == "cosh":
        return call("cosh", u), call("sinh", u)
    if name == "tanh":
        v = call("tanh", u)
        return v, b.fsub(c(1.0), b.fmul(v, v))
    if name in ("erf", "erfc"):
        g = b.fmul(c(_TWO_OVER_SQRT_PI if name == "erf" else -_TWO_OVER_SQRT_PI), call("exp", b.fneg(b.fmul(u, u))))
        return call(name, u), g
    if name == "heaviside":  # 1 where u >= 0, else 0 (NaN: 0); its derivative 0
        return b.select(b.fcmp_ordered(">=", u, c(0.0)), c(1.0), c(0.0)), c(0.0)
    if name == "exprel":  # as the interpreter: the Taylor series near 0, else expm1(u)/u
        small = b.fcmp_ordered("<", call("fabs", u), c(EXPREL_SERIES_BELOW))
        series = b.fadd(c(1.0), b.fmul(u, b.fadd(c(0.5), b.fmul(u, b.fadd(c(1.0 / 6.0), b.fdiv(u, c(24.0)))))))
        series_slope = b.fadd(c(0.5), b.fmul(u, b.fadd(c(1.0 / 3.0), b.fdiv(u, c(8.0)))))
        safe = b.select(small, c(1.0), u)
        v = b.fdiv(call("expm1", safe), safe)
        slope = b.fdiv(b.fsub(call("exp", safe), v), safe)
        return b.select(small, series, v), b.select(small, series_slope, slope)
    # sigmoid, as torch computes it
    v = b.fdiv(c(1.0), b.fadd(c(1.0), call("exp", b.fneg(u))))
    return v, b.fmul(v, b.fsub(c(1.0), v))

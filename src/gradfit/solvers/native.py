"""A model's value, Jacobian and normal equations as machine code of its own, built from its Program with llvmlite.

The compiled solver (gradfit.solvers.compiled) can interpret a Program's instructions a slot at a
time, each one a loop over the points; for a small model most of that time is the interpreter's
own (loops of 25 or 50 points set up once per instruction and parameter), and the normal equations
are another pass. This module writes the same instructions out as one function of two loops: the
first computes each point's value and the derivatives the model has, in registers (the slots of the
parameters alone computed once before it), and stores the weighted residual and row of J; the
second sums |r|², Jᵀr and JᵀJ four points at a time in vector lanes (the lanes then added in a fixed
order, the last n % 4 points one by one: the same sums wherever the arrays lie). The solver calls
it by its address.

Nothing here parses or evaluates text a user wrote: the function is built instruction by
instruction with llvmlite's IR builder from the Program's operation codes, slot indices and
folded numbers (which gradfit.expr made from a checked syntax tree); the only text LLVM reads is
what the builder printed. Each operation computes the same floating-point operations in the same
order as the interpreter (no fast-math, no fused multiply-add), so values and derivatives are the
interpreter's to rounding (the tests hold them to it).

The function is ``void f(double* x, int64 n, double* p, double* y, double* w, double* sums,
double* jtr, double* jtj, double* r, double* jac)``: x the curve's variables (n, k), p its
parameters (P,), y and w its data and weights (n,); it writes sums = [|r|², Σ(f - y)² over the
points of weight > 0], Jᵀr (P,) and JᵀJ (P, P), for r = (f - y) w and J's rows scaled by w, and
leaves r (n,) and J (P, n, a row per parameter; rows of parameters the model does not depend on
are not written) in the scratch arrays r and jac.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from llvmlite import ir

from ..expr import ADD, ATAN2, CONST, DIV, MUL, NEG, PARAM, POW, SUB, UNARY_CODES, VAR, Program

_D = ir.DoubleType()
_I64 = ir.IntType(64)
_PTR = _D.as_pointer()
SIGNATURE = ir.FunctionType(ir.VoidType(), [_PTR, _I64] + [_PTR] * 8)  # see the module's docstring
_NAME = "gradfit_model"
_CODE = {code: name for name, code in UNARY_CODES.items() if name not in ("asin", "acos", "atan")}
# functions of one argument that LLVM has as intrinsics, and those taken from the C library
_INTRINSIC = {"exp": "llvm.exp.f64", "log": "llvm.log.f64", "log10": "llvm.log10.f64", "log2": "llvm.log2.f64",
              "sqrt": "llvm.sqrt.f64", "abs": "llvm.fabs.f64", "sin": "llvm.sin.f64", "cos": "llvm.cos.f64"}
_LIBM = {"tan": "tan", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
         "tanh": "tanh", "erf": "erf", "erfc": "erfc"}
_TWO_OVER_SQRT_PI = 2 / np.sqrt(np.pi)


class _Writer:
    """Writes a Program as the body of one function: _slot() emits a slot's value and derivatives."""

    def __init__(self, program: Program, module: ir.Module):
        self.program, self.module = program, module
        self.P = program.n_params
        self.values: dict[int, ir.Value] = {}
        self.grads: dict[int, dict[int, ir.Value]] = {}  # slot -> {parameter: derivative}

    def function(self, name: str) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            args = 2 if name in ("atan2", "llvm.pow.f64") else 1
            fn = ir.Function(self.module, ir.FunctionType(_D, [_D] * args), name=name)
        return fn

    def emit(self, b: ir.IRBuilder, i: int, variables) -> None:
        """The value of slot i and its derivatives by the parameters it depends on."""
        prog = self.program
        o, A, B = int(prog.op[i]), int(prog.a[i]), int(prog.b[i])
        c = lambda v: ir.Constant(_D, float(v))  # noqa: E731
        deps = [j for j in range(self.P) if prog.dep[i, j]]
        grad: dict[int, ir.Value] = {}
        if o == CONST:
            self.values[i] = c(prog.value[i])
        elif o == VAR:
            self.values[i] = variables[int(prog.value[i])]
        elif o == PARAM:
            self.values[i] = self.params[int(prog.value[i])]
            grad[int(prog.value[i])] = c(1.0)
        elif o in (ADD, SUB, NEG):
            va, ga = self.values[A], self.grads.get(A, {})
            if o == NEG:
                self.values[i] = b.fneg(va)
                grad = {j: b.fneg(ga[j]) for j in deps}
            else:
                vb, gb = self.values[B], self.grads.get(B, {})
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
            u = self.values[A]
            w = self.values[B] if o in (MUL, DIV, POW, ATAN2) else None
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
                    v = b.call(self.function("llvm.sqrt.f64"), [u])
                    ra = b.fdiv(c(0.5), v)
                elif e == -1.0:
                    v = b.fdiv(c(1.0), u)
                    ra = b.fneg(b.fmul(v, v))
                else:
                    pw = self.function("llvm.pow.f64")
                    v = b.call(pw, [u, c(e)])
                    ra = c(0.0) if e == 0.0 else b.fmul(c(e), b.call(pw, [u, c(e - 1.0)]))
            elif o == POW:
                pw = self.function("llvm.pow.f64")
                v = b.call(pw, [u, w])
                ra = b.fmul(w, b.call(pw, [u, b.fsub(w, c(1.0))]))
                rb = b.fmul(v, b.call(self.function("llvm.log.f64"), [u]))
            elif o == ATAN2:
                r2 = b.fadd(b.fmul(w, w), b.fmul(u, u))
                v = b.call(self.function("atan2"), [u, w])
                ra, rb = b.fdiv(w, r2), b.fdiv(b.fneg(u), r2)
            else:
                v, ra = self._unary(b, _CODE[o], u)
            self.values[i] = v
            ga, gb = self.grads.get(A, {}), self.grads.get(B, {})
            for j in deps:
                if j in ga and rb is not None and j in gb:
                    grad[j] = b.fadd(b.fmul(ga[j], ra), b.fmul(gb[j], rb))
                elif j in ga:
                    grad[j] = b.fmul(ga[j], ra)
                else:
                    grad[j] = b.fmul(gb[j], rb)
        self.grads[i] = grad

    def _unary(self, b: ir.IRBuilder, name: str, u: ir.Value) -> tuple[ir.Value, ir.Value]:
        """A function of one argument and its derivative, as the interpreter's _unary computes them."""
        c = lambda v: ir.Constant(_D, float(v))  # noqa: E731
        call = lambda f, *args: b.call(self.function(f), list(args))  # noqa: E731
        if name == "exp":
            v = call("llvm.exp.f64", u)
            return v, v
        if name == "log":
            return call("llvm.log.f64", u), b.fdiv(c(1.0), u)
        if name == "log10":
            return call("llvm.log10.f64", u), b.fdiv(c(1.0), b.fmul(u, c(np.log(10))))
        if name == "log2":
            return call("llvm.log2.f64", u), b.fdiv(c(1.0), b.fmul(u, c(np.log(2))))
        if name == "sqrt":
            v = call("llvm.sqrt.f64", u)
            return v, b.fdiv(c(0.5), v)
        if name == "abs":  # sign(u): 1, -1, 0 at 0, NaN at NaN
            sign = b.select(b.fcmp_ordered(">", u, c(0.0)), c(1.0),
                            b.select(b.fcmp_ordered("<", u, c(0.0)), c(-1.0),
                                     b.select(b.fcmp_ordered("==", u, c(0.0)), c(0.0), u)))
            return call("llvm.fabs.f64", u), sign
        if name == "sin":
            return call("llvm.sin.f64", u), call("llvm.cos.f64", u)
        if name == "cos":
            return call("llvm.cos.f64", u), b.fneg(call("llvm.sin.f64", u))
        if name == "tan":
            v = call("tan", u)
            return v, b.fadd(c(1.0), b.fmul(v, v))
        if name in ("arcsin", "arccos"):
            root = call("llvm.sqrt.f64", b.fsub(c(1.0), b.fmul(u, u)))
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
            g = b.fmul(c(_TWO_OVER_SQRT_PI if name == "erf" else -_TWO_OVER_SQRT_PI),
                       call("llvm.exp.f64", b.fneg(b.fmul(u, u))))
            return call(name, u), g
        # sigmoid, as torch computes it
        v = b.fdiv(c(1.0), b.fadd(c(1.0), call("llvm.exp.f64", b.fneg(u))))
        return v, b.fmul(v, b.fsub(c(1.0), v))


def build(program: Program) -> ir.Module:
    """The module holding the program's function (see the module's docstring)."""
    module = ir.Module(name="gradfit_model")
    fn = ir.Function(module, SIGNATURE, name=_NAME)
    x, n, p, y, w, sums, jtr, jtj, resid, jac = fn.args
    for arg in fn.args:
        if arg is not n:
            arg.add_attribute("noalias")
    writer = _Writer(program, module)
    S, P, K = len(program.op), program.n_params, program.n_variables
    F = S - 1
    used = [j for j in range(P) if program.dep[F, j]]  # the columns of J that are not zero
    zero, i64 = ir.Constant(_D, 0.0), lambda v: ir.Constant(_I64, v)  # noqa: E731
    blocks = [fn.append_basic_block(name) for name in ("entry", "points", "sums", "vectors", "folded", "rest",
                                                         "done")]
    entry, points, start_sums, vectors, folded, rest, done = blocks
    b = ir.IRBuilder(entry)
    writer.params = [b.load(b.gep(p, [i64(j)])) for j in range(P)]
    for i in range(S):  # the slots one number per curve, before the loop over the points
        if not program.point[i]:
            writer.emit(b, i, None)
    for j in range(P):  # J's columns that are zero stay zero
        if j not in used:
            b.store(zero, b.gep(jtr, [i64(j)]))
            for i in range(P):
                b.store(zero, b.gep(jtj, [i64(i * P + j)]))
                b.store(zero, b.gep(jtj, [i64(j * P + i)]))
    b.cbranch(b.icmp_signed(">", n, i64(0)), points, start_sums)

    # 1. each point's weighted residual r and row of J (scaled by its weight), into resid and jac
    b.position_at_end(points)
    k = b.phi(_I64)
    k.add_incoming(i64(0), entry)
    raw = b.phi(_D)  # Σ (f - y)² over the points used (weight > 0)
    raw.add_incoming(zero, entry)
    row = b.mul(k, i64(K))
    variables = [b.load(b.gep(x, [b.add(row, i64(v))])) for v in range(K)]
    for i in range(S):
        if program.point[i]:
            writer.emit(b, i, variables)
    weight = b.load(b.gep(w, [k]))
    diff = b.fsub(writer.values[F], b.load(b.gep(y, [k])))
    b.store(b.fmul(diff, weight), b.gep(resid, [k]))
    for j in used:
        b.store(b.fmul(writer.grads[F][j], weight), b.gep(jac, [b.add(b.mul(i64(j), n), k)]))
    raw_next = b.fadd(raw, b.select(b.fcmp_ordered(">", weight, zero), b.fmul(diff, diff), zero))
    raw.add_incoming(raw_next, points)
    k_next = b.add(k, i64(1))
    k.add_incoming(k_next, points)
    b.cbranch(b.icmp_signed("<", k_next, n), points, start_sums)

    # 2. the sums |r|², Jᵀr and JᵀJ over the points: four points at a time in vector lanes, the lanes
    # added in a fixed order, then the last n % 4 points one by one (the same order wherever the
    # arrays lie)
    b.position_at_end(start_sums)
    raw_total = b.phi(_D)
    raw_total.add_incoming(zero, entry)
    raw_total.add_incoming(raw_next, points)
    b.store(raw_total, b.gep(sums, [i64(1)]))
    rows = [("r", "r")] + [(j, "r") for j in used] + [(i, j) for i in used for j in used if j <= i]
    whole = b.mul(b.sdiv(n, i64(4)), i64(4))
    vec = ir.VectorType(_D, 4)
    vzero = ir.Constant(vec, [0.0] * 4)
    b.cbranch(b.icmp_signed(">", whole, i64(0)), vectors, folded)

    b.position_at_end(vectors)
    q = b.phi(_I64)
    q.add_incoming(i64(0), start_sums)
    acc = {pair: b.phi(vec) for pair in rows}
    for phi in acc.values():
        phi.add_incoming(vzero, start_sums)

    def load4(column):
        base = resid if column == "r" else b.gep(jac, [b.mul(i64(column), n)])
        pointer = b.bitcast(b.gep(base, [q]), vec.as_pointer())
        return b.load(pointer, align=8)

    lanes = {column: load4(column) for column in ["r"] + used}
    step = {pair: b.fadd(acc[pair], b.fmul(lanes[pair[0]], lanes[pair[1]])) for pair in rows}
    for pair in rows:
        acc[pair].add_incoming(step[pair], vectors)
    q_next = b.add(q, i64(4))
    q.add_incoming(q_next, vectors)
    b.cbranch(b.icmp_signed("<", q_next, whole), vectors, folded)

    b.position_at_end(folded)
    partial, ended = {}, {pair: b.phi(vec) for pair in rows}  # a block's phi nodes come first
    for pair in rows:
        ended[pair].add_incoming(vzero, start_sums)
        ended[pair].add_incoming(step[pair], vectors)
    for pair in rows:
        e = [b.extract_element(ended[pair], i64(lane)) for lane in range(4)]
        partial[pair] = b.fadd(b.fadd(e[0], e[1]), b.fadd(e[2], e[3]))
    b.cbranch(b.icmp_signed("<", whole, n), rest, done)

    b.position_at_end(rest)
    t = b.phi(_I64)
    t.add_incoming(whole, folded)
    tail = {pair: b.phi(_D) for pair in rows}
    for pair in rows:
        tail[pair].add_incoming(partial[pair], folded)

    def load1(column):
        return b.load(b.gep(resid, [t]) if column == "r" else b.gep(jac, [b.add(b.mul(i64(column), n), t)]))

    ones = {column: load1(column) for column in ["r"] + used}
    tail_next = {pair: b.fadd(tail[pair], b.fmul(ones[pair[0]], ones[pair[1]])) for pair in rows}
    for pair in rows:
        tail[pair].add_incoming(tail_next[pair], rest)
    t_next = b.add(t, i64(1))
    t.add_incoming(t_next, rest)
    b.cbranch(b.icmp_signed("<", t_next, n), rest, done)

    b.position_at_end(done)
    totals = {pair: b.phi(_D) for pair in rows}
    for pair in rows:
        totals[pair].add_incoming(partial[pair], folded)
        totals[pair].add_incoming(tail_next[pair], rest)
    for pair, total in totals.items():
        if pair == ("r", "r"):
            b.store(total, b.gep(sums, [i64(0)]))
        elif pair[1] == "r":
            b.store(total, b.gep(jtr, [i64(pair[0])]))
        else:
            i, j = pair
            b.store(total, b.gep(jtj, [i64(i * P + j)]))
            b.store(total, b.gep(jtj, [i64(j * P + i)]))
    b.ret_void()
    return module


class _Compiled:
    """One model's machine code: its engine is kept as long as its address may be called."""

    def __init__(self, program: Program):
        import llvmlite.binding as llvm
        from numba.core.compiler_lock import global_compiler_lock

        with global_compiler_lock:  # LLVM is not to be driven from two threads at once (numba's lock)
            self._build(llvm, program)

    def _build(self, llvm, program: Program) -> None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                               features=llvm.get_host_cpu_features().flatten(), opt=3)
        module = llvm.parse_assembly(str(build(program)))  # text llvmlite wrote from the builder, no user text
        module.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=3)
        passes = llvm.create_pass_builder(machine, tuning)
        passes.getModulePassManager().run(module, passes)
        self.machine, self.engine = machine, llvm.create_mcjit_compiler(module, machine)
        self.engine.finalize_object()
        self.address = self.engine.get_function_address(_NAME)


_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def compile(program: Program) -> _Compiled:
    """The program's machine code (its .address), compiled once per process (the last 64 kept; hold
    the object while its address may be called)."""
    key = (program.op.tobytes(), program.a.tobytes(), program.b.tobytes(), program.value.tobytes(),
           program.point.tobytes(), program.dep.tobytes(), program.n_variables)
    with _LOCK:
        compiled = _CACHE.get(key)
        if compiled is None:
            compiled = _CACHE[key] = _Compiled(program)
            while len(_CACHE) > 64:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return compiled


def evaluate(program: Program, x: np.ndarray, p: np.ndarray, y: np.ndarray | None = None,
             w: np.ndarray | None = None) -> dict:
    """Run the program's machine code once, from Python (for the tests): x (n, k) or (n,), p (P,),
    y zero and w one unless given. Returns value (f, where y = 0 and w = 1: r otherwise), jac (n, P),
    cost, raw, jtr and jtj."""
    import ctypes

    x = np.asarray(x, dtype=np.float64)
    x = np.ascontiguousarray(x[:, None] if x.ndim == 1 else x)
    n, P = len(x), program.n_params
    p = np.ascontiguousarray(p, dtype=np.float64)
    y = np.zeros(n) if y is None else np.ascontiguousarray(y, dtype=np.float64)
    w = np.ones(n) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    sums, jtr, jtj, r, jac = np.zeros(2), np.zeros(P), np.zeros((P, P)), np.zeros(n), np.zeros((P, n))
    code = compile(program)
    double = ctypes.POINTER(ctypes.c_double)
    call = ctypes.CFUNCTYPE(None, double, ctypes.c_int64, *[double] * 8)(code.address)
    call(*[a.ctypes.data_as(double) if isinstance(a, np.ndarray) else a
           for a in (x, n, p, y, w, sums, jtr, jtj, r, jac)])
    return {"value": r, "jac": jac.T.copy(), "cost": sums[0], "raw": sums[1], "jtr": jtr, "jtj": jtj}

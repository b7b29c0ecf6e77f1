"""A model's value, Jacobian and normal equations as machine code of its own, built from its Program with llvmlite.

The compiled solver (gradfit.solvers.compiled) can interpret a Program's instructions a slot at a
time, each one a loop over the points; for a small model most of that time is the interpreter's
own (loops of 25 or 50 points set up once per instruction and parameter), and the normal equations
are another pass. This module writes the same instructions out as one function. Its first loop
computes the value and the derivatives the model has for four points at once, in the lanes of
vector registers (the slots of the parameters alone computed once before it; exp, log, sin, ... of
four lanes from glibc's vector math library, libmvec, where the machine has AVX2 and the library;
the last n % 4 points one by one), and stores each point's weighted residual and row of J. The
second sums |r|², Jᵀr and JᵀJ four points at a time in vector lanes, the lanes then added in a
fixed order and the last points one by one: the same sums wherever the arrays lie. The solver
calls the function by its address.

Nothing here parses or evaluates text a user wrote: the function is built instruction by
instruction with llvmlite's IR builder from the Program's operation codes, slot indices and
folded numbers (which gradfit.expr made from a checked syntax tree); the only text LLVM reads is
what the builder printed. Each operation computes the same floating-point operations in the same
order as the interpreter (no fast-math, no fused multiply-add): with the C library's functions
(``vector_library=False``) values and derivatives are the interpreter's to the bit, with libmvec's
within a few units in the last place (the tests hold them to both).

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

from ..expr_program import Program
from .native_writer import DOUBLE, LANES, VECTOR, Writer

_I64 = ir.IntType(64)
_PTR = DOUBLE.as_pointer()
SIGNATURE = ir.FunctionType(ir.VoidType(), [_PTR, _I64] + [_PTR] * 8)  # see the module's docstring
_NAME = "gradfit_model"


def build(program: Program, vector_library: bool = False) -> ir.Module:
    """The module holding the program's function (see the module's docstring); vector_library: call
    glibc's libmvec for the functions of four lanes (else LLVM's intrinsics, lane by lane)."""
    module = ir.Module(name="gradfit_model")
    fn = ir.Function(module, SIGNATURE, name=_NAME)
    x, n, p, y, w, sums, jtr, jtj, resid, jac = fn.args
    for arg in fn.args:
        if arg is not n:
            arg.add_attribute("noalias")
    writer = Writer(program, module, vector_library)
    S, P, K = len(program.op), program.n_params, program.n_variables
    F = S - 1
    used = [j for j in range(P) if program.dep[F, j]]  # the columns of J that are not zero
    zero, i64 = ir.Constant(DOUBLE, 0.0), lambda v: ir.Constant(_I64, v)  # noqa: E731
    vzero = ir.Constant(VECTOR, [0.0] * LANES)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    writer.start(b, 1)
    writer.params = [b.load(b.gep(p, [i64(j)])) for j in range(P)]
    for i in range(S):  # the slots one number per curve, before the loops over the points
        if not program.point[i]:
            writer.emit(i, None)
    for j in range(P):  # J's columns that are zero stay zero
        if j not in used:
            b.store(zero, b.gep(jtr, [i64(j)]))
            for i in range(P):
                b.store(zero, b.gep(jtj, [i64(i * P + j)]))
                b.store(zero, b.gep(jtj, [i64(j * P + i)]))
    whole = b.mul(b.sdiv(n, i64(LANES)), i64(LANES))  # the points the lanes take; the rest one by one

    def point(k, width: int):
        """Points k.. (width of them): the variables, the model, then the weighted residual and row of J
        stored in resid and jac; returns (f - y)² where the weight is > 0, else 0."""

        def load(pointer):
            return _load(b, pointer, width)

        if width == 1 or K == 1:
            variables = [load(b.gep(x, [b.add(b.mul(k, i64(K)), i64(v))])) for v in range(K)]
        else:  # interleaved variables: each lane's from its own row
            variables = []
            for v in range(K):
                lanes_of_v = ir.Constant(VECTOR, ir.Undefined)
                for lane in range(LANES):
                    at = b.add(b.mul(b.add(k, i64(lane)), i64(K)), i64(v))
                    lanes_of_v = b.insert_element(lanes_of_v, b.load(b.gep(x, [at])), ir.Constant(ir.IntType(32), lane))
                variables.append(lanes_of_v)
        writer.start(b, width)
        for i in range(S):
            if program.point[i]:
                writer.emit(i, variables)
        weight = load(b.gep(w, [k]))
        diff = b.fsub(writer.value(F), load(b.gep(y, [k])))
        grad = writer.grad(F)
        _store(b, b.fmul(diff, weight), b.gep(resid, [k]), width)
        for j in used:
            _store(b, b.fmul(grad[j], weight), b.gep(jac, [b.add(b.mul(i64(j), n), k)]), width)
        c0 = writer.c(0.0)
        return b.select(b.fcmp_ordered(">", weight, c0), b.fmul(diff, diff), c0)

    def fold(lanes: ir.Value) -> ir.Value:
        """The lanes of a vector added in a fixed order."""
        e = [b.extract_element(lanes, i64(lane)) for lane in range(LANES)]
        return b.fadd(b.fadd(e[0], e[1]), b.fadd(e[2], e[3]))

    # 1. the model at every point: LANES points at a time, then the last n % LANES one by one;
    # raw: Σ (f - y)² over the points used (weight > 0)
    raw = _summing_loop(b, fn, "lanes", i64(0), whole, LANES, {"raw": vzero}, lambda q: {"raw": point(q, LANES)})["raw"]
    raw = _summing_loop(b, fn, "points", whole, n, 1, {"raw": fold(raw)}, lambda k: {"raw": point(k, 1)})["raw"]
    b.store(raw, b.gep(sums, [i64(1)]))

    # 2. the sums |r|², Jᵀr and JᵀJ over the points, from the rows stored: four points at a time in
    # vector lanes, the lanes added in a fixed order, then the last points one by one (the same
    # order wherever the arrays lie)
    rows = [("r", "r")] + [(j, "r") for j in used] + [(i, j) for i in used for j in used if j <= i]

    def products(k, width: int) -> dict:
        columns = {
            column: _load(
                b, b.gep(resid, [k]) if column == "r" else b.gep(jac, [b.add(b.mul(i64(column), n), k)]), width
            )
            for column in ["r"] + used
        }
        return {pair: b.fmul(columns[pair[0]], columns[pair[1]]) for pair in rows}

    lanes = _summing_loop(
        b, fn, "vectors", i64(0), whole, LANES, {pair: vzero for pair in rows}, lambda q: products(q, LANES)
    )
    totals = _summing_loop(
        b, fn, "rest", whole, n, 1, {pair: fold(lanes[pair]) for pair in rows}, lambda k: products(k, 1)
    )
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


def _load(b: ir.IRBuilder, pointer, width: int) -> ir.Value:
    """The double at pointer, or the width (LANES) doubles from it as a vector."""
    return b.load(pointer) if width == 1 else b.load(b.bitcast(pointer, VECTOR.as_pointer()), align=8)


def _store(b: ir.IRBuilder, value, pointer, width: int) -> None:
    """value (a double, or a vector of LANES) stored from pointer on."""
    b.store(value, pointer if width == 1 else b.bitcast(pointer, VECTOR.as_pointer()), align=8)


def _summing_loop(b: ir.IRBuilder, fn: ir.Function, name: str, start, stop, step: int, initial: dict, body) -> dict:
    """for k in range(start, stop, step): total[key] += body(k)[key], from initial (a loop of no turns
    where start >= stop). Leaves b after the loop; returns the totals there."""
    before = b.block
    loop, after = fn.append_basic_block(name), fn.append_basic_block(f"{name}_done")
    b.cbranch(b.icmp_signed("<", start, stop), loop, after)
    b.position_at_end(loop)
    k = b.phi(_I64)
    k.add_incoming(start, before)
    total = {key: b.phi(value.type) for key, value in initial.items()}
    for key, value in initial.items():
        total[key].add_incoming(value, before)
    terms = body(k)
    following = {key: b.fadd(total[key], terms[key]) for key in initial}
    k_next = b.add(k, ir.Constant(_I64, step))
    end = b.block
    k.add_incoming(k_next, end)
    for key in initial:
        total[key].add_incoming(following[key], end)
    b.cbranch(b.icmp_signed("<", k_next, stop), loop, after)
    b.position_at_end(after)
    out = {key: b.phi(value.type) for key, value in initial.items()}
    for key, value in initial.items():
        out[key].add_incoming(value, before)
        out[key].add_incoming(following[key], end)
    return out


class _Compiled:
    """One model's machine code: its engine is kept as long as its address may be called."""

    def __init__(self, program: Program, vector_library: bool | None = None):
        import llvmlite.binding as llvm
        from numba.core.compiler_lock import global_compiler_lock

        with global_compiler_lock:  # LLVM is not to be driven from two threads at once (numba's lock)
            self._build(llvm, program, vector_library)

    def _build(self, llvm, program: Program, vector_library: bool | None) -> None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        machine = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
        )
        usable = _vector_library(llvm)
        self.vector_library = usable if vector_library is None else vector_library and usable
        module = llvm.parse_assembly(str(build(program, self.vector_library)))  # the builder's text, no user text
        module.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=3)
        passes = llvm.create_pass_builder(machine, tuning)
        passes.getModulePassManager().run(module, passes)
        self.machine, self.engine = machine, llvm.create_mcjit_compiler(module, machine)
        self.engine.finalize_object()
        self.address = self.engine.get_function_address(_NAME)


_VECTOR_LIBRARY: list = []


def _vector_library(llvm) -> bool:
    """Can the machine code call glibc's vector math library (libmvec, AVX2 variants)? Loaded once."""
    if not _VECTOR_LIBRARY:
        import ctypes.util

        usable = False
        try:
            path = ctypes.util.find_library("mvec")
            if path and llvm.get_host_cpu_features().get("avx2", False):
                llvm.load_library_permanently(path)
                usable = all(
                    llvm.address_of_symbol(f"_ZGVdN4{v}_{name}")
                    for v, name in (("v", "exp"), ("v", "erf"), ("vv", "pow"), ("vv", "atan2"), ("v", "tanh"))
                )
        except (RuntimeError, OSError):
            usable = False
        _VECTOR_LIBRARY.append(usable)
    return _VECTOR_LIBRARY[0]


_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def machine_code(program: Program, vector_library: bool | None = None) -> _Compiled:
    """The program's machine code (its .address), compiled once per process (the last 64 kept; hold
    the object while its address may be called). vector_library: whether functions of four lanes
    call libmvec (None: where the machine has it; False: LLVM's scalar functions, lane by lane,
    which compute what the interpreter computes to the bit)."""
    key = (
        program.op.tobytes(),
        program.a.tobytes(),
        program.b.tobytes(),
        program.value.tobytes(),
        program.point.tobytes(),
        program.dep.tobytes(),
        program.n_variables,
        vector_library,
    )
    with _LOCK:
        compiled = _CACHE.get(key)
        if compiled is None:
            compiled = _CACHE[key] = _Compiled(program, vector_library)
            while len(_CACHE) > 64:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return compiled


def evaluate(
    program: Program,
    x: np.ndarray,
    p: np.ndarray,
    y: np.ndarray | None = None,
    w: np.ndarray | None = None,
    vector_library: bool | None = None,
) -> dict:
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
    code = machine_code(program, vector_library)
    double = ctypes.POINTER(ctypes.c_double)
    call = ctypes.CFUNCTYPE(None, double, ctypes.c_int64, *[double] * 8)(code.address)
    call(
        *[a.ctypes.data_as(double) if isinstance(a, np.ndarray) else a for a in (x, n, p, y, w, sums, jtr, jtj, r, jac)]
    )
    return {"value": r, "jac": jac.T.copy(), "cost": sums[0], "raw": sums[1], "jtr": jtr, "jtj": jtj}

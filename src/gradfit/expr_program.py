"""An expression as a program: its tree as a flat list of instructions, which the compiled solver interprets
or turns into machine code (gradfit.solvers.compiled, gradfit.solvers.native)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


from .errors import ExpressionError
from .expr_ops import BINARY, CONSTANTS, FUNCTIONS, TORCH_ONLY, apply, continues_chain


# Operation codes of a Program. A slot holds one instruction's result: a number (CONST, folded
# at build time), a parameter, a variable, or an operation on earlier slots.
CONST, PARAM, VAR, ADD, SUB, MUL, DIV, POW, NEG, ATAN2 = range(10)
# the one-argument functions the compiled solver runs, in the order of their codes (10, 11, ...)
UNARY_NAMES = (
    "exp",
    "log",
    "log10",
    "log2",
    "sqrt",
    "abs",
    "sin",
    "cos",
    "tan",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "erf",
    "erfc",
    "sigmoid",
    "heaviside",
    "exprel",
)
UNARY_CODES = {name: 10 + i for i, name in enumerate(UNARY_NAMES)}
UNARY_CODES.update(asin=UNARY_CODES["arcsin"], acos=UNARY_CODES["arccos"], atan=UNARY_CODES["arctan"])


_BINARY_CODES = {ast.Add: ADD, ast.Sub: SUB, ast.Mult: MUL, ast.Div: DIV, ast.Pow: POW}


class TorchOnly(Exception):
    """An expression calls a function the compiled solver lacks (TORCH_ONLY)."""


@dataclass(frozen=True)
class Program:
    """A model as instructions over slots, the last slot its value (see gradfit.solvers.compiled).

    ``op``, ``a``, ``b``: each slot's operation and the slots it reads; ``value``: a CONST's number, or
    the index of a PARAM or VAR; ``point``: the slot varies from point to point (it depends on a
    variable), else it is one number per curve; ``dep``: (slots, parameters), which parameters the
    slot depends on, so that derivatives are carried only where they are not zero.
    """

    op: "np.ndarray"
    a: "np.ndarray"
    b: "np.ndarray"
    value: "np.ndarray"
    point: "np.ndarray"
    dep: "np.ndarray"
    n_variables: int

    @property
    def n_params(self) -> int:
        return self.dep.shape[1]

    def shifted(self, offset: int, n_params: int) -> "Program":
        """The same program reading parameters offset..offset+P of a longer vector of n_params."""
        value = self.value.copy()
        value[self.op == PARAM] += offset
        dep = np.zeros((len(self.op), n_params), dtype=bool)
        dep[:, offset : offset + self.n_params] = self.dep
        return Program(self.op, self.a, self.b, value, self.point, dep, self.n_variables)


def sum_programs(programs: Sequence[Program], sizes: Sequence[int]) -> Program:
    """One program for a sum of models, the parameters of each following the last's."""
    total, offset, parts = sum(sizes), 0, []
    for program, size in zip(programs, sizes):
        parts.append(program.shifted(offset, total))
        offset += size
    ops, a_s, b_s, values, points, deps, ends, base = [], [], [], [], [], [], [], 0
    for p in parts:
        ops.append(p.op), a_s.append(p.a + base), b_s.append(p.b + base), values.append(p.value)
        points.append(p.point), deps.append(p.dep)
        base += len(p.op)
        ends.append(base - 1)
    result, point, dep = ends[0], points[0][-1], deps[0][-1]
    extra_a, extra_b, extra_point, extra_dep = [], [], [], []
    for end, p in zip(ends[1:], parts[1:]):  # ((first + second) + third) + ...
        extra_a.append(result), extra_b.append(end)
        point, dep = point or p.point[-1], dep | p.dep[-1]
        extra_point.append(point), extra_dep.append(dep)
        result = base + len(extra_a) - 1
    n = len(extra_a)
    return Program(
        np.concatenate(ops + [np.full(n, ADD)]),
        np.concatenate(a_s + [np.array(extra_a, dtype=np.int64)]),
        np.concatenate(b_s + [np.array(extra_b, dtype=np.int64)]),
        np.concatenate(values + [np.zeros(n)]),
        np.concatenate(points + [np.array(extra_point, dtype=bool)]),
        np.concatenate(deps + [np.array(extra_dep, dtype=bool).reshape(n, total)]),
        max(p.n_variables for p in parts),
    )


class ProgramBuilder:
    """Walks a checked tree into a Program: numbers folded as the torch closures fold them, leaves shared."""

    def __init__(self, variables, params):
        self.variables, self.params = tuple(variables), tuple(params)
        self.rows: list[tuple] = []  # (op, a, b, value, point, dep)
        self.leaves: dict = {}

    def _add(self, op, a=0, b=0, value=0.0, point=False, dep=frozenset()) -> int:
        self.rows.append((op, a, b, float(value), point, frozenset(dep)))
        return len(self.rows) - 1

    def _constant(self, value: float) -> int:
        return self._add(CONST, value=value)

    def _is_constant(self, slot: int) -> bool:
        return self.rows[slot][0] == CONST

    def _operation(self, op: int, a: int, b: int = 0, binary: bool = True) -> int:
        ra, rb = self.rows[a], self.rows[b]
        point = ra[4] or (binary and rb[4])
        dep = ra[5] | (rb[5] if binary else frozenset())
        return self._add(op, a, b if binary else 0, point=point, dep=dep)

    def build(self, node: ast.AST) -> int:
        if isinstance(node, ast.Constant):
            return self._constant(float(node.value))
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return self._constant(CONSTANTS[node.id])
            if node.id not in self.leaves:
                if node.id in self.params:
                    j = self.params.index(node.id)
                    self.leaves[node.id] = self._add(PARAM, value=j, dep={j})
                else:
                    self.leaves[node.id] = self._add(VAR, value=self.variables.index(node.id), point=True)
            return self.leaves[node.id]
        if isinstance(node, ast.UnaryOp):
            slot = self.build(node.operand)
            if not isinstance(node.op, ast.USub):
                return slot
            if self._is_constant(slot):
                return self._constant(-self.rows[slot][3])
            return self._operation(NEG, slot, binary=False)
        if isinstance(node, ast.BinOp):
            spine = []  # a chain a + b - c + ... walked left to right, not by recursion
            while continues_chain(node, node.left):
                spine.append(node)
                node = node.left
            spine.append(node)
            left = self.build(node.left)
            for link in reversed(spine):
                left = self._binary(type(link.op), left, self.build(link.right))
            return left
        if isinstance(node, ast.Call):
            name = node.func.id
            if name in TORCH_ONLY:
                raise TorchOnly(name)
            args = [self.build(a) for a in node.args]
            if all(self._is_constant(s) for s in args):
                function = FUNCTIONS[name][0]
                value = function(*(torch.tensor(self.rows[s][3], dtype=torch.float64) for s in args))
                return self._constant(float(value))
            if name == "arctan2":
                return self._operation(ATAN2, args[0], args[1])
            return self._operation(UNARY_CODES[name], args[0], binary=False)
        raise ExpressionError(f"Unexpected {type(node).__name__} in a checked expression.")  # pragma: no cover

    def _binary(self, op_type, a: int, b: int) -> int:
        if self._is_constant(a) and self._is_constant(b):
            return self._constant(apply(BINARY[op_type], self.rows[a][3], self.rows[b][3]))
        return self._operation(_BINARY_CODES[op_type], a, b)

    def finish(self) -> Program:
        rows, k = self.rows, len(self.params)
        dep = np.zeros((len(rows), k), dtype=bool)
        for i, row in enumerate(rows):
            dep[i, list(row[5])] = True
        return Program(
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows], dtype=bool),
            dep,
            len(self.variables),
        )

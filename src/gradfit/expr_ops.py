"""The expression language's vocabulary: its functions, constants and operators, and how a node applies them
to numbers and tensors (shared by the evaluator, the derivatives and the programs)."""

from __future__ import annotations

import ast
import math
import operator
from typing import Callable

import torch

from .special import exprel, heaviside, loggamma_abs, voigt_profile


FUNCTIONS: dict[str, tuple[Callable, int]] = {  # name -> (torch function, number of arguments)
    "exp": (torch.exp, 1),
    "log": (torch.log, 1),
    "log10": (torch.log10, 1),
    "log2": (torch.log2, 1),
    "sqrt": (torch.sqrt, 1),
    "abs": (torch.abs, 1),
    "sin": (torch.sin, 1),
    "cos": (torch.cos, 1),
    "tan": (torch.tan, 1),
    "arcsin": (torch.asin, 1),
    "arccos": (torch.acos, 1),
    "arctan": (torch.atan, 1),
    "asin": (torch.asin, 1),
    "acos": (torch.acos, 1),
    "atan": (torch.atan, 1),
    "arctan2": (torch.atan2, 2),
    "sinh": (torch.sinh, 1),
    "cosh": (torch.cosh, 1),
    "tanh": (torch.tanh, 1),
    "erf": (torch.special.erf, 1),
    "erfc": (torch.special.erfc, 1),
    "sigmoid": (torch.sigmoid, 1),
    "heaviside": (heaviside, 1),  # 1 where the argument is >= 0, else 0 (its derivative: 0)
    "exprel": (exprel, 1),  # (exp(u) - 1)/u, 1 at 0 (gradfit.special)
    "gammaln": (torch.special.gammaln, 1),  # log |Gamma(u)|
    "loggamma_abs": (loggamma_abs, 2),  # loggamma_abs(a, b): log |Gamma(a + ib)|, a > 0 (Pearson IV's)
    "voigt": (voigt_profile, 3),  # voigt(x, sigma, gamma): the Voigt profile of area 1 (gradfit.special)
}


TORCH_ONLY = {
    "voigt",
    "gammaln",
    "loggamma_abs",
}  # functions the compiled many-curve solver lacks: a model using one runs on torch


CONSTANTS = {"pi": math.pi, "e": math.e}
BINARY = {  # Python's operators: they mix numbers and tensors either way round, as a formula does
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


_CHAINS = ({ast.Add, ast.Sub}, {ast.Mult, ast.Div})


def continues_chain(parent: ast.AST, child: ast.AST) -> bool:
    """Is child the left operand of parent with the same precedence (a + b + c parses as (a + b) + c)?"""
    return (
        isinstance(parent, ast.BinOp)
        and isinstance(child, ast.BinOp)
        and child is parent.left
        and any(type(parent.op) in group and type(child.op) in group for group in _CHAINS)
    )


def apply(op, left, right):
    if isinstance(left, float) and isinstance(right, float):
        # both numbers (constants are floats, so never a huge integer, never a hang):
        # overflow, division by zero and complex powers become inf or nan, as in torch
        try:
            result = op(left, right)
        except OverflowError:
            return math.inf
        except ZeroDivisionError:
            return _divide(left, right) if op is operator.truediv else math.inf
        return result if isinstance(result, float) else math.nan
    return op(left, right)


def _divide(a: float, b: float) -> float:
    return a / b if b != 0 else (math.copysign(math.inf, a) * math.copysign(1, b) if a != 0 else math.nan)


def tensor(value, env: dict) -> torch.Tensor:
    """Functions need tensors: a bare number takes the dtype and device of the inputs."""
    if isinstance(value, torch.Tensor):
        return value
    like = next((v for v in env.values() if isinstance(v, torch.Tensor)), None)
    if like is None:
        return torch.tensor(value, dtype=torch.float64)
    return torch.tensor(value, dtype=like.dtype, device=like.device)

"""Solvers, and the one registry of methods (gradfit.solvers.methods).

The solvers are imported when first used (PEP 562), so that reading the registry, as the
command line's help does, does not import torch.
"""

from __future__ import annotations

import importlib

from .methods import METHODS, Method, Tolerances, get_method

_LAZY = {
    "first_order": "gradient",
    "gradient_descent": "gradient",
    "least_squares": "linear",
    "mse_curvatures": "linear",
    "solve_linear": "linear",
    "levenberg_marquardt": "lm",
    "Outcome": "problem",
    "Problem": "problem",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Method",
    "Outcome",
    "Problem",
    "Tolerances",
    "first_order",
    "get_method",
    "gradient_descent",
    "least_squares",
    "levenberg_marquardt",
    "mse_curvatures",
    "solve_linear",
]

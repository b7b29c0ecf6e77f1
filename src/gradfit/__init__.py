"""gradfit: fit curves by gradient descent, and watch it happen.

Every name below is imported from its module when first used (PEP 562), so that
``import gradfit`` and the command line's help, version and refusals do not wait
for torch, matplotlib or numba to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_WHERE = {
    "BatchResult": "batch_result",
    "fit_many": "batch",
    "load": "data",
    "seed_data": "data",
    "fit": "engine",
    "GlobalResult": "global_result",
    "fit_global": "global_fit",
    "ConvergenceWarning": "errors",
    "DataError": "errors",
    "ExitStatus": "errors",
    "ExpressionError": "errors",
    "FitError": "errors",
    "GradfitError": "errors",
    "Interrupted": "errors",
    "ModelError": "errors",
    "OptionError": "errors",
    "History": "history",
    "StepRecord": "history",
    "mse": "losses",
    "rmse": "losses",
    "LIBRARY": "library",
    "get_model": "library",
    "Composite": "composite",
    "ExpressionModel": "models",
    "FunctionModel": "models",
    "Model": "models",
    "Polynomial": "models",
    "linear": "models",
    "polynomial": "models",
    "quadratic": "models",
    "FitResult": "result",
    "load_result": "result",
    "METHODS": "solvers",
    "gradient_descent": "solvers",
    "least_squares": "solvers",
    "mse_curvatures": "solvers",
    "fit_file": "engine",
}

__all__ = [
    "LIBRARY",
    "METHODS",
    "BatchResult",
    "Composite",
    "ConvergenceWarning",
    "DataError",
    "ExitStatus",
    "ExpressionError",
    "ExpressionModel",
    "FitError",
    "FitResult",
    "FunctionModel",
    "GlobalResult",
    "GradfitError",
    "History",
    "Interrupted",
    "Model",
    "ModelError",
    "OptionError",
    "Polynomial",
    "StepRecord",
    "demo",
    "fit",
    "fit_file",
    "fit_global",
    "fit_many",
    "get_model",
    "gradient_descent",
    "least_squares",
    "linear",
    "load",
    "load_result",
    "mse",
    "mse_curvatures",
    "polynomial",
    "quadratic",
    "rmse",
    "seed_data",
]

if TYPE_CHECKING:  # where each lazy name lives, for type checkers and the API reference (griffe reads these)
    from .batch import fit_many
    from .batch_result import BatchResult
    from .data import load, seed_data
    from .engine import fit, fit_file
    from .errors import (
        ConvergenceWarning,
        DataError,
        ExitStatus,
        ExpressionError,
        FitError,
        GradfitError,
        Interrupted,
        ModelError,
        OptionError,
    )
    from .global_fit import fit_global
    from .global_result import GlobalResult
    from .history import History, StepRecord
    from .library import LIBRARY, get_model
    from .losses import mse, rmse
    from .composite import Composite
    from .models import ExpressionModel, FunctionModel, Model, Polynomial, linear, polynomial, quadratic
    from .result import FitResult, load_result
    from .solvers.gradient import gradient_descent
    from .solvers.linear import least_squares, mse_curvatures
    from .solvers.methods import METHODS

# ``demo`` is both a module and its function: bound here (a light import), since importing the module
# later would otherwise leave ``gradfit.demo`` naming the module.
from .demo import demo  # noqa: E402


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # found once; later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))

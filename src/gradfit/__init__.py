"""gradfit: fit curves by gradient descent, and watch it happen.

Every name below is imported from its module when first used (PEP 562), so that
``import gradfit`` and the command line's help, version and refusals do not wait
for torch, matplotlib or numba to load.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_WHERE = {
    "BatchResult": "batch",
    "fit_many": "batch",
    "load": "data",
    "seed_data": "data",
    "fit": "engine",
    "GlobalResult": "global_fit",
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
    "Composite": "models",
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

"""gradfit: fit curves by gradient descent, and watch it happen."""

__version__ = "0.1.0"

from .batch import BatchResult, fit_many
from .data import load, seed_data
from .demo import demo
from .engine import fit
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
from .history import History, StepRecord
from .losses import mse, rmse
from .library import LIBRARY, get_model
from .models import Composite, ExpressionModel, FunctionModel, Model, Polynomial, linear, polynomial, quadratic
from .result import FitResult
from .solvers import METHODS, gradient_descent, least_squares, mse_curvatures
from .stream import fit_file

__all__ = [
    "BatchResult", "fit_many", "METHODS", "LIBRARY", "Composite", "ExpressionModel", "FitResult", "FunctionModel", "fit", "fit_file", "load",
    "ConvergenceWarning", "DataError", "ExitStatus", "ExpressionError", "FitError", "GradfitError", "Interrupted",
    "History", "Model", "ModelError", "OptionError", "Polynomial", "StepRecord", "demo",
    "get_model", "gradient_descent", "least_squares", "linear", "mse_curvatures", "mse", "polynomial", "quadratic",
    "rmse", "seed_data",
]

"""Solvers: one module per family of optimisation methods."""

from .gradient import gradient_descent
from .linear import least_squares, mse_curvatures

__all__ = ["gradient_descent", "least_squares", "mse_curvatures"]

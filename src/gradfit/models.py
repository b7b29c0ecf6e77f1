"""Models: curves y = f(x; params) with named parameters and a torch forward.

A model's ``forward(x, params)`` takes a 1-D parameter tensor in the order of
``param_names`` and returns predictions shaped like ``x``, built from torch
operations so that autograd gives exact gradients. Models that are linear in
their parameters also give a ``design_matrix``, from which the exact
least-squares optimum is one linear solve.
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

import torch

from .errors import ModelError


class Model:
    """A curve with named parameters; subclasses define ``forward``."""

    name: str = "model"
    param_names: tuple[str, ...] = ()
    formula: str = ""
    is_linear: bool = False  # linear in its parameters: least squares has a closed form

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.forward(x, params)

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The matrix A with f(x; p) = A @ p, for models linear in their parameters."""
        raise ModelError(f"Model '{self.name}' is not linear in its parameters; it has no design matrix.")

    def guess(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Starting values from the data, or None when the model has no rule for them."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: y = {self.formula}>"


class Polynomial(Model):
    """y = p[0]*x**d + p[1]*x**(d-1) + ... + p[d], highest power first (as numpy.polyfit)."""

    is_linear = True

    def __init__(self, degree: int, param_names: tuple[str, ...] | None = None, name: str | None = None):
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ModelError(f"Polynomial degree must be a whole number >= 0, got {degree!r}.")
        self.degree = degree
        # Default names: c<k> is the coefficient of x**k.
        names = tuple(param_names) if param_names else tuple(f"c{k}" for k in range(degree, -1, -1))
        if len(names) != degree + 1:
            raise ModelError(f"A degree-{degree} polynomial has {degree + 1} parameters, got names {names}.")
        self.param_names = names
        self.name = name or f"poly{degree}"
        self.formula = " + ".join(_term(p, k) for p, k in zip(names, self._powers()))

    def _powers(self) -> range:
        return range(self.degree, -1, -1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Written term by term as the seed article writes a*(x**2)+(b*x)+c, so that a
        # quadratic reproduces the article's float32 values bit for bit.
        out = None
        for p, k in zip(params.unbind(-1), self._powers()):
            term = p if k == 0 else p * x if k == 1 else p * (x**k)
            out = term if out is None else out + term
        return out if out.shape == x.shape else out.expand_as(x)

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x**k for k in self._powers()], dim=-1)

    def guess(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Any start will do for a model linear in its parameters: the loss is a bowl.
        # Zero keeps gradient descent's path easy to read.
        return torch.zeros(self.n_params, dtype=y.dtype)


class FunctionModel(Model):
    """A Python function ``f(x, a, b, ...)`` written with torch operations.

    The parameter names are the function's arguments after the first, as
    scipy.optimize.curve_fit reads them.
    """

    def __init__(self, function: Callable, name: str | None = None):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            raise ModelError(f"Cannot read the arguments of {function!r}; pass a function f(x, a, b, ...).") from None
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = [p.name for p in signature.parameters.values()]
        if any(p.kind not in kinds for p in signature.parameters.values()) or len(names) < 2:
            raise ModelError(
                f"A model function must take x and then one argument per parameter, as f(x, a, b); "
                f"got {getattr(function, '__name__', 'it')}{signature}."
            )
        self.function = function
        self.param_names = tuple(names[1:])
        self.name = name or getattr(function, "__name__", "function")
        self.formula = f"{self.name}({', '.join(names)})"

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        out = self.function(x, *params.unbind(-1))
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"Model function {self.name} must return a torch tensor, got {type(out).__name__}; "
                             "write it with torch operations (torch.exp, not math.exp or numpy.exp).")
        if out.ndim == 0:  # a constant function
            return out.expand(x.shape[:1])
        if out.shape != x.shape[:1]:  # (N, 1) - (N,) would broadcast to (N, N): silently wrong
            raise ModelError(f"Model function {self.name} returned shape {tuple(out.shape)} for "
                             f"{x.shape[0]} points; it must return one value per point.")
        return out


def _term(name: str, power: int) -> str:
    return name if power == 0 else f"{name}*x" if power == 1 else f"{name}*x**{power}"


def quadratic() -> Polynomial:
    """a*x**2 + b*x + c, the seed article's model."""
    return Polynomial(2, ("a", "b", "c"), name="quadratic")


def linear() -> Polynomial:
    """slope*x + intercept."""
    return Polynomial(1, ("slope", "intercept"), name="linear")


def polynomial(degree: int) -> Polynomial:
    """A polynomial of any degree; parameter c<k> multiplies x**k."""
    return Polynomial(degree)


BUILTIN = {"linear": linear, "quadratic": quadratic}
_POLY = re.compile(r"poly(\d{1,2})")


def get_model(model) -> Model:
    """A Model from a Model (returned as is), a Python function f(x, a, b, ...), or a built-in
    name ('linear', 'quadratic', 'poly3', ...)."""
    if isinstance(model, Model):
        return model
    if callable(model) and not isinstance(model, str):
        return FunctionModel(model)
    if isinstance(model, str):
        if model in BUILTIN:
            return BUILTIN[model]()
        match = _POLY.fullmatch(model)
        if match:
            return polynomial(int(match.group(1)))
    choices = ", ".join(sorted(BUILTIN)) + ", polyN (N = degree 0-99, e.g. poly3)"
    raise ModelError(f"Unknown model {model!r}. Choose one of: {choices}.")

"""Models: curves y = f(x; params) with named parameters and a torch forward.

A model's ``forward(x, params)`` takes a 1-D parameter tensor in the order of
``param_names`` and returns predictions shaped like ``x``, built from torch
operations so that autograd gives exact gradients. Models that are linear in
their parameters also give a ``design_matrix``, from which the exact
least-squares optimum is one linear solve.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import numpy as np
import torch

from .errors import ModelError


class Model:
    """A curve with named parameters; subclasses define ``forward``.

    A model is called as ``model(x, params)``. Its class attributes say what it is: ``name``, ``param_names``,
    ``formula``, ``is_linear`` (linear in its parameters: least squares has a closed form), ``variables`` (the
    independent variables), ``even_params`` (parameters whose sign does not change the curve, such as widths).
    """

    name: str = "model"
    param_names: tuple[str, ...] = ()
    formula: str = ""
    is_linear: bool = False  # linear in its parameters: least squares has a closed form
    variables: tuple[str, ...] | None = ("x",)  # the independent variables (None: the model does not say)
    even_params: tuple[str, ...] = ()  # parameters whose sign does not change the curve (widths): reported positive
    # guess_many(x, Y) -> (B, P) numpy array: ``guess`` for every row of Y at once, for curves sharing x and
    # using every point; None where the model has no batched rule (fit_many then guesses curve by curve)
    guess_many = None

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The model's values at ``x`` for the parameters ``params``.

        Args:
            x: the points, (N,) (or (N, k) for several variables).
            params: the parameters, (P,) in the order of ``param_names`` (or (..., P) for a batch of them).

        Returns:
            torch.Tensor: the predictions, (N,) (or (..., N)).
        """
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.forward(x, params)

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The matrix A with f(x; p) = A @ p, for models linear in their parameters.

        Args:
            x: the points.

        Returns:
            torch.Tensor: A, (N, P).
        """
        raise ModelError(f"Model '{self.name}' is not linear in its parameters; it has no design matrix.")

    def guess(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Starting values from the data, or None when the model has no rule for them.

        Args:
            x: the points' x.
            y: the points' y.

        Returns:
            torch.Tensor | None: the guessed parameters (P,).
        """
        return None

    def program(self):
        """The model as a gradfit.expr_program.Program (what the compiled many-curve solver runs), or None: a
        Python function is opaque, so it runs in torch."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: y = {self.formula}>"


class Polynomial(Model):
    """y = p[0]*x**d + p[1]*x**(d-1) + ... + p[d], highest power first (as numpy.polyfit).

    Args:
        degree: d.
        param_names: the coefficients' names, highest power first (default: c<d> ... c0).
        name: the model's name in reports (default: poly<d>).
    """

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
        self.formula = " + ".join(_term(p, k) for p, k in zip(names, self.powers()))

    def program(self):
        from .expr import parse  # the formula is ours, written from the parameter names

        if self._program is None:
            self._program = parse(self.formula, ("x",), self.param_names).program()
        return self._program

    _program = None

    def powers(self) -> range:
        """The power of x each coefficient multiplies, in the parameters' order (highest first)."""
        return range(self.degree, -1, -1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Written term by term as the seed article writes a*(x**2)+(b*x)+c, so that a
        # quadratic reproduces the article's float32 values bit for bit.
        out = None
        for p, k in zip(params.unbind(-1), self.powers()):
            term = p if k == 0 else p * x if k == 1 else p * (x**k)
            out = term if out is None else out + term
        return out if out.shape == x.shape else out.expand_as(x)

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x**k for k in self.powers()], dim=-1)

    def centred(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The design matrix in t = (x - m)/s, x's range mapped onto [-1, 1], and M with p = M q: the
        coefficients q of t's powers as those of x's. On x in [-9, -3] the powers of x up to 10 are nearly
        parallel (condition ~1e15) and a solve in them loses every digit; in t they are not (a few
        thousand), and the map back keeps 13 digits where numpy.polyfit keeps 7 (tests/test_least_squares.py).
        x (N,) gives M (P, P); x (B, N), curves each at their own x, one M per curve (B, P, P), each from its
        own range (so that a curve's answer does not depend on the others fitted with it)."""
        m, s, M = self.centring(x)
        if x.device.type == "cpu" and not x.requires_grad:  # numpy, less overhead per call
            t = (x.numpy() - np.asarray(m)) / np.asarray(s)
            # the powers by products, highest first: numpy's power with an array of exponents calls pow() for
            # every element (100,000 curves of 15 points: 0.25 s of a 0.6 s fit_many)
            columns = [np.ones_like(t)]
            for _ in range(self.degree):
                columns.append(columns[-1] * t)
            return torch.from_numpy(np.stack(columns[::-1], axis=-1)).to(x.dtype), M
        return self.design_matrix((x - m) / s), M

    def centring(self, x: torch.Tensor) -> tuple:
        """(m, s, M) of ``centred``: t = (x - m)/s, and p = M q; m and s numbers for x (N,) on the CPU, else
        tensors (B, 1)."""
        # (x is finite: checked data; the few numbers from here on in numpy, which has less overhead per call)
        binomial, power, exponent = _binomials(self.degree)
        if x.dim() == 1 and x.device.type == "cpu":  # one fit: m and s are numbers
            xn = x.numpy()
            low, high = float(xn.min()), float(xn.max())
            m, s = ((high + low) / 2, (high - low) / 2) if high > low else (0.0, 1.0)
            mn, sn = np.float64(m), np.float64(s)
        else:
            low, high = x.amin(dim=-1, keepdim=True).cpu().numpy(), x.amax(dim=-1, keepdim=True).cpu().numpy()
            ok = high > low
            mn, sn = np.where(ok, (high + low) / 2, 0.0), np.where(ok, (high - low) / 2, 1.0)
            m, s = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in (mn, sn))
            mn, sn = mn[..., None], sn[..., None]  # (..., 1, 1)
        # column k of M: the coefficients (highest power first) of ((x - m)/s)**(d - k), by the binomial theorem:
        # ((x - m)/s)**power = sum_j C(power, j) x**j (-m)**(power - j) / s**power
        with np.errstate(over="ignore", invalid="ignore"):  # x beyond float64's powers: inf, refused by the solve
            M = binomial * (-mn) ** exponent / sn**power
        return m, s, torch.as_tensor(M, dtype=x.dtype, device=x.device)

    def guess(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Any start will do for a model linear in its parameters: the loss is a bowl.
        # Zero keeps gradient descent's path easy to read.
        return torch.zeros(self.n_params, dtype=y.dtype)


class Centred(Model):
    """A polynomial fitted in t = (x - m)/s, x's range mapped onto [-1, 1] (see Polynomial.centred): a change
    of variables of the problem, as params.Constrained is one. Its own parameters q are the coefficients of
    t's powers; ``to_user`` gives the user's, those of x's (p = M q). An iterative solver (LM) stepping in
    x's own powers on x in [-9, -3] sees normal equations of condition ~1e30 and keeps ~6 digits; in t, 13."""

    is_linear = True

    def __init__(self, base: Polynomial, x: torch.Tensor):
        self.base = base
        self.m, self.s, self.M = base.centring(x)
        self.param_names = self.user_names = base.param_names
        self.name, self.formula, self.variables = base.name, base.formula, base.variables

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.base((x - self.m) / self.s, q)

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.design_matrix((x - self.m) / self.s)

    def to_user(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.M.T

    def to_free(self, p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.M, p)


@functools.lru_cache(maxsize=32)
def _binomials(d: int):
    """For Polynomial.centred: C(power, j) where j <= power (else 0), the powers of t by column, and the power
    of -m in each entry (power - j, or 0)."""
    power = np.arange(d, -1, -1)
    binomial = np.array([[math.comb(p, q) if q <= p else 0 for p in power] for q in power], dtype=np.float64)
    return binomial, power, np.maximum(power - power[:, None], 0)


class FunctionModel(Model):
    """A Python function ``f(x, a, b, ...)`` written with torch operations.

    The parameter names are the function's arguments after the first, as scipy.optimize.curve_fit reads them.

    Args:
        function: the function.
        name: the model's name in reports (default: the function's).
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
        self.variables = None  # a function may take x of any shape
        self.param_names = tuple(names[1:])
        self.name = name or getattr(function, "__name__", "function")
        self.formula = f"{self.name}({', '.join(names)})"

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        out = self.function(x, *params.unbind(-1))
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"Model function {self.name} must return a torch tensor, got {type(out).__name__}; "
                "write it with torch operations (torch.exp, not math.exp or numpy.exp)."
            )
        if out.ndim == 0:  # a constant function
            return out.expand(x.shape[:1])
        if out.shape != x.shape[:1]:  # (N, 1) - (N,) would broadcast to (N, N): silently wrong
            raise ModelError(
                f"Model function {self.name} returned shape {tuple(out.shape)} for "
                f"{x.shape[0]} points; it must return one value per point."
            )
        return out


NAME_LENGTH = 80  # characters of an expression shown as a model's name


def short_name(text: str) -> str:
    """An expression as a name in messages and titles: cut at NAME_LENGTH characters (a formula keeps it whole)."""
    return text if len(text) <= NAME_LENGTH else text[: NAME_LENGTH - 3] + "..."


class ExpressionModel(Model):
    """A model typed as text, ``"a*exp(-b*x) + c"``, compiled by the safe expression language.

    Works on any leading batch dimensions of the parameters: (..., P) gives predictions (..., N).

    Args:
        text: the expression.
        variables: the independent variables (``x`` by default; several for a surface, with x given as columns,
            shape (N, k)). Every other name is a parameter.
        params: the parameters' order (default: order of first appearance).
        name: the model's name in reports (default: the text, shortened).
        guess: a function ``(x, y) -> p0`` giving starting values from the data.
    """

    def __init__(self, text: str, variables=("x",), params=None, name: str | None = None, guess=None):
        from .expr import parse  # the one place text becomes a function

        self.expression = parse(text, variables, params)
        if not self.expression.param_names:
            raise ModelError(
                f"The expression {text.strip()!r} has no parameters to fit: every name in it is "
                f"a variable ({', '.join(variables)}) or a constant."
            )
        self.variables = self.expression.variables
        self.param_names = self.expression.param_names
        self.formula = self.expression.text
        # the name goes into messages and titles: a long expression is cut there (the formula keeps it whole)
        text = self.expression.text
        self.name = name or short_name(text)
        self._guess = guess

    @classmethod
    def of(cls, expression, name: str) -> "ExpressionModel":
        """A model of an expression already made (gradfit.trace reads a Python function as one)."""
        self = cls.__new__(cls)
        self.expression, self.variables, self.param_names = expression, expression.variables, expression.param_names
        self.formula, self.name, self._guess = expression.text, name, None
        return self

    def value_and_jacobian(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The values (N,) and the Jacobian (N, P) at one parameter vector, by forward mode on the expression's
        tree (as fit_many differentiates a batch): for one curve several times faster than torch.func.jacfwd,
        which sends every operation through its transforms."""
        columns = variable_columns(x, len(self.variables), self.name)
        value, grads = self.expression.value_and_gradient(columns, list(params.unbind(-1)))
        shape = columns[0].shape

        def full(v):
            if isinstance(v, torch.Tensor):
                return v.expand(shape).to(x.dtype)
            return torch.full(shape, float(v), dtype=x.dtype, device=x.device)

        zero = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return full(value), torch.stack([zero if g is None else full(g) for g in grads], dim=-1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        columns = variable_columns(x, len(self.variables), self.name)
        values = params.unbind(-1)
        if params.ndim > 1:  # a batch of parameter vectors: line each up against the points
            values = [v.unsqueeze(-1) for v in values]
        out = self.expression(columns, values)
        # numpy's rule, the same as torch's: torch.broadcast_shapes runs through torch._refs (~20 µs a call)
        shape = np.broadcast_shapes(tuple(params.shape[:-1]) + (1,), tuple(columns[0].shape))
        if not isinstance(out, torch.Tensor):  # the expression is a constant
            return torch.full(shape, float(out), dtype=x.dtype, device=x.device)
        return out if out.shape == shape else out.expand(shape)

    def guess(self, x, y):
        variable_columns(x, len(self.variables), self.name)  # the right number of variables first
        return None if self._guess is None else self._guess(x, y)

    def program(self):
        if self._program is None:
            self._program = self.expression.program()
        return self._program

    _program = None


def lstsq_guess(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A linear model's guess: least squares of y on its design matrix (ones where the data are not finite)."""
    a = model.design_matrix(x)
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(y).all())):  # LAPACK would fail: ones instead
        return torch.ones(model.n_params, dtype=torch.float64)
    return torch.linalg.lstsq(a.cpu().double(), y.cpu().double().unsqueeze(-1)).solution.squeeze(-1)


def variable_columns(x: torch.Tensor, k: int, name: str) -> list[torch.Tensor]:
    """x as a list of k variables: (N,) for one, (N, k) split into columns for several."""
    if k == 1:
        return [x]
    if x.ndim < 2 or x.shape[-1] != k:
        raise ModelError(
            f"Model {name} takes {k} variables, so x needs {k} columns (shape (N, {k})), got shape {tuple(x.shape)}."
        )
    return list(x.unbind(-1))


def _term(name: str, power: int) -> str:
    return name if power == 0 else f"{name}*x" if power == 1 else f"{name}*x**{power}"


def quadratic() -> Polynomial:
    """a*x**2 + b*x + c, the seed article's model."""
    return Polynomial(2, ("a", "b", "c"), name="quadratic")


def linear() -> Polynomial:
    """slope*x + intercept."""
    return Polynomial(1, ("slope", "intercept"), name="linear")


def polynomial(degree: int) -> Polynomial:
    """A polynomial of any degree; parameter c<k> multiplies x**k.

    Args:
        degree: the highest power.

    Returns:
        Polynomial: the model.
    """
    return Polynomial(degree)

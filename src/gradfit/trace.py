"""A Python model function, read as the formula it computes: one call on stand-ins for x and the parameters.

``trace(f, names)`` calls ``f(x, a, b, ...)`` once with ``_Traced`` stand-ins in place of tensors. Each
arithmetic operator and each torch function the expression language knows (gradfit.expr_ops.FUNCTIONS) records a
node of a Python syntax tree — the same tree ``expr.parse`` makes from text — so the function becomes an
``expr.Expression``: exact derivatives on the tree, and a Program for the compiled many-curve solver. No text is
made into code: the tree is built from the operations the function performed, and ``ast.unparse`` of it is only
shown. The user's function is their own code, run once as they wrote it.

What a tree cannot hold stops the trace with the reason (``Untraceable``): Python control flow on a parameter or
x (if, while, and/or, comparisons), a torch function outside the language (torch.where, torch.clamp), indexing,
numpy, conversions to numbers (float(), .item()), a captured tensor of more than one value. Python loops over
fixed ranges and captured numbers (or one-value tensors) are fine: the loop is unrolled and the number baked in
at the time of the trace, which is taken anew for every fit (never cached by the function object).
"""

from __future__ import annotations

import ast
import inspect
import math
import numbers

import numpy as np
import torch

from .dual import LANGUAGE, broadcast_model
from .errors import ExpressionError
from .expr import MAX_DEPTH, Expression, check_depth, compile_tree
from .expr_ops import CONSTANTS, FUNCTIONS
from .models import ExpressionModel, FunctionModel, Model, short_name
from .numeric import NumericFunction, derivatives_for


class Untraceable(Exception):
    """The function did something an expression cannot hold; str() says what, in a few words."""


def _node(value) -> ast.expr:
    """The tree node of an operand: a traced value, or a number (a Python number or a one-value tensor)."""
    if isinstance(value, _Traced):
        return value.node
    if isinstance(value, bool):
        raise Untraceable("a True/False operand")
    if isinstance(value, numbers.Real):
        return ast.Constant(float(value))
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
        complex_ = value.dtype.is_complex if isinstance(value, torch.Tensor) else np.iscomplexobj(value)
        if size != 1 or complex_:
            raise Untraceable(f"a captured array of {size} values" if size != 1 else "a complex number")
        return ast.Constant(float(value.reshape(()).item()))
    raise Untraceable(f"an operand of type {type(value).__name__}")


class _Traced:
    """A stand-in for x or a parameter: every operation on it records a node of the tree."""

    __array_ufunc__ = None  # numpy's functions refuse it (TypeError), rather than make arrays of stand-ins

    def __init__(self, node: ast.expr):
        self.node = node

    def _binary(self, op, other, reflected=False):
        left, right = (_node(other), self.node) if reflected else (self.node, _node(other))
        return _Traced(ast.BinOp(left, op(), right))

    def __add__(self, other):
        return self._binary(ast.Add, other)

    def __radd__(self, other):
        return self._binary(ast.Add, other, True)

    def __sub__(self, other):
        return self._binary(ast.Sub, other)

    def __rsub__(self, other):
        return self._binary(ast.Sub, other, True)

    def __mul__(self, other):
        return self._binary(ast.Mult, other)

    def __rmul__(self, other):
        return self._binary(ast.Mult, other, True)

    def __truediv__(self, other):
        return self._binary(ast.Div, other)

    def __rtruediv__(self, other):
        return self._binary(ast.Div, other, True)

    def __pow__(self, other):
        return self._binary(ast.Pow, other)

    def __rpow__(self, other):
        return self._binary(ast.Pow, other, True)

    def __neg__(self):
        return _Traced(ast.UnaryOp(ast.USub(), self.node))

    def __pos__(self):
        return self

    def __bool__(self):
        raise Untraceable("Python control flow on x or a parameter (if, while, and/or)")

    def _compare(self, other):
        raise Untraceable("a comparison of x or a parameter (<, ==, max, min)")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _compare
    __hash__ = object.__hash__

    def __float__(self):
        raise Untraceable("a conversion to a Python number (float(), int(), math.*)")

    __int__ = __index__ = __complex__ = __float__

    def __array__(self, *args, **kwargs):
        raise Untraceable("a numpy function or array (write it with torch's)")

    def __getitem__(self, key):
        raise Untraceable("indexing a parameter or a result")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        method = getattr(torch.Tensor, name, None)
        if method is not None and method in LANGUAGE:  # x.exp(), a.square(), x.pow(2)
            return lambda *args, **kwargs: _apply(method, (self, *args), kwargs)
        raise Untraceable(f".{name}")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return _apply(func, args, kwargs or {})


class _TracedX(_Traced):
    """The stand-in for x: x[:, k] (or x[..., k]) is its column k, a variable of its own (a surface's x, y)."""

    def __init__(self, name: str):
        super().__init__(ast.Name(name, ast.Load()))
        self.columns: set[int] = set()

    def __getitem__(self, key):
        if (
            isinstance(key, tuple)
            and len(key) == 2
            and (key[0] is Ellipsis or key[0] == slice(None))
            and isinstance(key[1], int)
            and not isinstance(key[1], bool)
            and key[1] >= 0
        ):
            self.columns.add(key[1])
            return _Traced(ast.Name(f"{self.node.id}_{key[1]}", ast.Load()))
        raise Untraceable("indexing x other than by column (x[:, k])")


def _apply(func, args, kwargs) -> _Traced:
    """One torch call on stand-ins, as a node; a call the language does not have stops the trace."""
    kind = LANGUAGE.get(func)
    if kind is None or kwargs:
        name = getattr(func, "__name__", repr(func))
        owner = "torch.Tensor." if getattr(func, "__objclass__", None) is torch._C.TensorBase else "torch."  # noqa: SLF001 - torch's
        extra = " with keyword arguments" if kind is not None else ""
        raise Untraceable(f"{owner}{name}{extra}")
    kind, what = kind
    nodes = [_node(a) for a in args]
    if kind == "call":
        expected = FUNCTIONS[what][1]
        if len(nodes) != expected:
            raise Untraceable(f"{what} with {len(nodes)} arguments")
        return _Traced(ast.Call(ast.Name(what, ast.Load()), nodes, []))
    if kind == "neg":
        return _Traced(ast.UnaryOp(ast.USub(), nodes[0]))
    if kind == "square":
        return _Traced(ast.BinOp(nodes[0], ast.Pow(), ast.Constant(2.0)))
    if len(nodes) != 2:
        raise Untraceable(f"{getattr(func, '__name__', 'an operator')} with {len(nodes)} operands")
    left, right = (nodes[1], nodes[0]) if kind == "rbinary" else nodes
    return _Traced(ast.BinOp(left, what(), right))


def trace(function, variable: str, param_names, n_columns: int | None = None) -> Expression:
    """``function(x, *params)`` as an Expression in ``variable`` and ``param_names``; Untraceable if it cannot be.
    A function that reads x by column (x[:, k], for x of ``n_columns`` columns) has one variable per column,
    named ``{variable}_{k}``."""
    columns = [f"{variable}_{k}" for k in range(n_columns or 0)]
    reserved = set(CONSTANTS) | set(FUNCTIONS) | {variable, *columns}
    clash = [n for n in param_names if n in reserved]
    if clash or variable in CONSTANTS or variable in FUNCTIONS:
        raise Untraceable(f"the name {(clash or [variable])[0]!r}, which the expression language reserves")
    x = _TracedX(variable)
    stand_ins = [x] + [_Traced(ast.Name(n, ast.Load())) for n in param_names]
    try:
        out = function(*stand_ins)
    except Untraceable:
        raise
    except RecursionError:
        raise Untraceable("a formula nested too deeply") from None
    except Exception as e:  # what the function did with a stand-in that no tensor would refuse, or its own error
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "__array_ufunc__" in first:
            raise Untraceable("a numpy function (write it with torch's)") from None
        raise Untraceable(f"{type(e).__name__}: {first[:120]}") from None
    if not isinstance(out, _Traced):
        raise Untraceable(f"a result of type {type(out).__name__} that does not depend on x or a parameter")
    tree = ast.fix_missing_locations(ast.Expression(out.node))
    try:
        check_depth(tree)
    except ExpressionError:
        raise Untraceable(f"a formula nested deeper than {MAX_DEPTH}") from None
    variables = (variable,)
    if x.columns:
        if any(isinstance(n, ast.Name) and n.id == variable for n in ast.walk(tree)):
            raise Untraceable("x used both whole and by column")
        if n_columns is None or max(x.columns) >= n_columns:
            raise Untraceable(f"column {max(x.columns)} of an x that has {n_columns or 1}")
        variables = tuple(columns)
    return Expression(ast.unparse(tree), variables, tuple(param_names), compile_tree(tree.body), tree)


def same_values(function, expression: Expression, x: torch.Tensor, params: torch.Tensor) -> bool:
    """Whether the traced expression gives the function's own values at (x, params), to rounding: a check that
    nothing the trace could not see (global state, randomness) changes the function's value."""
    with torch.no_grad():
        own = function(x, *params.unbind(-1))
        traced = expression([x] if len(expression.variables) == 1 else list(x.unbind(-1)), list(params.unbind(-1)))
    if not isinstance(own, torch.Tensor):
        return False
    own, traced = torch.broadcast_tensors(own, torch.as_tensor(traced, dtype=own.dtype, device=own.device))
    close = torch.isclose(own, traced, rtol=1e-12, atol=0.0) | (torch.isnan(own) & torch.isnan(traced))
    scale = float(own[torch.isfinite(own)].abs().max()) if bool(torch.isfinite(own).any()) else 0.0
    near = (own - traced).abs() <= 1e-12 * max(scale, math.ulp(1.0))  # values at the level of cancellation
    return bool((close | near).all())


def traced_model(model: Model, x: torch.Tensor, start: torch.Tensor) -> tuple[Model, str | None]:
    """A Python function as the ExpressionModel of the formula it computes, and a note saying so; or the model
    as it is and a note saying why not (None when it is not a Python function). The trace is kept only where it
    gives the function's own values at (x, start): on the whole batch at once, exact derivatives on the tree,
    machine code where the batch is large."""
    if type(model) is not FunctionModel:
        return model, None
    variable = next(iter(inspect.signature(model.function).parameters))
    try:
        expression = trace(model.function, variable, model.param_names, x.shape[-1] if x.ndim == 2 else None)
    except Untraceable as why:
        return model, f"{model.name} runs as Python, not as a formula: its trace stopped at {why}"
    by_column = x.ndim == 1 or len(expression.variables) > 1  # (x of several columns read whole: not a formula)
    if x.ndim > 2 or not by_column or not same_values(model.function, expression, x, start):
        return model, f"{model.name} runs as Python, not as a formula: its trace did not give the function's values"
    return ExpressionModel.of(expression, model.name), f"{model.name} read as the formula {short_name(expression.text)}"


def model_to_fit(model: Model, x: torch.Tensor, start: torch.Tensor, derivatives: str) -> tuple[Model, str | None]:
    """The model a fit runs for ``model``, looked at once at (x, start): a Python function read as its formula
    where it can be (``derivatives`` "auto" or "exact"), else as itself: run on a whole batch at once with exact
    derivatives where gradfit.dual can (else by torch.func, curve by curve), or with estimated derivatives where
    autograd cannot give them (gradfit.numeric); and the trace's note (None when there is no trace to speak of, or
    when the derivatives are estimated: the model's own note says so)."""
    note = None
    if derivatives in ("auto", "exact"):
        model, note = traced_model(model, x, start)
    model = derivatives_for(model, x, start, derivatives)
    if type(model) is FunctionModel and note is not None:
        model, how = broadcast_model(model, x, start)
        note = f"{note}; it runs {how}"
    return model, None if isinstance(model, NumericFunction) else note

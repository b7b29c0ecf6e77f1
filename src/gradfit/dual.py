"""A Python model function run on a whole batch of curves at once, with exact derivatives by forward mode.

gradfit.trace reads a function as the formula it computes where it can. Where it cannot (``torch.where``, a
comparison, ``clamp``, a captured array of one value per point, a torch function outside the expression language
applied to x), ``fit_many`` still needs its values and Jacobian for thousands of curves at every step. torch.func's
``vmap(jacfwd(f))`` pushes one tangent per parameter through every operation at every point of every curve:
for 2,000 curves of 50 points, 20 times the function's own cost.

``Dual`` is a stand-in for a parameter, given to the function as a column (B, 1) of its values over the batch,
against x (N,) or (B, N). It carries its derivatives as a dict {parameter: derivative} holding only the
parameters below it, each in the smallest shape that broadcasts: a parameter's derivative of itself is the
number 1, an offset's stays 1 through a sum, a width's is (B, N) only where it meets x. That is the forward mode
``Expression.value_and_gradient`` runs on its tree, run here on the operations the function performs, with expr's
derivative rules; operations on x alone run as torch runs them. An operation on a parameter's value that has no
rule here raises ``NoRule`` with its name; fit_many then uses torch.func, as before.

``broadcast_model`` checks at the start that this gives the function's own values and autograd's derivatives,
curve by curve, on two parameter vectors: a function that mixes curves when given a batch (a sum over every
value, a reshape) is not run this way.
"""

from __future__ import annotations

import ast
import inspect
import math
import numbers

import numpy as np
import torch

from .expr_dual import DERIVATIVE_RULES, dual_binary, scaled
from .expr_ops import FUNCTIONS
from .models import FunctionModel

CLOSE = 1e-9  # relative: the batch's values and derivatives against the function's own and autograd's, per curve


def language_operations() -> dict:
    """torch's callables (functions and Tensor methods) that spell the expression language's operations -> what
    each is: ("call", name), ("binary", ast operator), ("rbinary", ast operator), ("neg", None) or ("square",
    None). gradfit.trace records them as a tree; Dual computes them with their derivatives."""
    out = {}
    for name, (function, _) in FUNCTIONS.items():
        out[function] = ("call", name)
        method = getattr(torch.Tensor, function.__name__, None)
        if method is not None:
            out[method] = ("call", name)
    aliases = {torch.erf: "erf", torch.erfc: "erfc", torch.arcsin: "arcsin", torch.arccos: "arccos"}
    aliases.update({torch.arctan: "arctan", torch.arctan2: "arctan2", torch.Tensor.arctan2: "arctan2"})
    out.update({function: ("call", name) for function, name in {**aliases, torch.special.expit: "sigmoid"}.items()})
    binary = {"add": ast.Add, "sub": ast.Sub, "subtract": ast.Sub, "mul": ast.Mult, "multiply": ast.Mult}
    binary.update({"div": ast.Div, "divide": ast.Div, "true_divide": ast.Div, "pow": ast.Pow})
    for name, op in binary.items():
        for owner in (torch, torch.Tensor):
            if hasattr(owner, name):
                out[getattr(owner, name)] = ("binary", op)
    for name, op in {"add": ast.Add, "sub": ast.Sub, "mul": ast.Mult, "truediv": ast.Div, "pow": ast.Pow}.items():
        out[getattr(torch.Tensor, f"__{name}__")] = ("binary", op)
        out[getattr(torch.Tensor, f"__r{name}__")] = ("rbinary", op)
    for function in (torch.neg, torch.negative, torch.Tensor.neg, torch.Tensor.__neg__):
        out[function] = ("neg", None)
    out[torch.square] = out[torch.Tensor.square] = ("square", None)
    return out


LANGUAGE = language_operations()


class NoRule(Exception):
    """The function did something to a parameter that Dual has no derivative rule for; str() says what."""


def _parts(value):
    """(value, derivatives) of an operand: a Dual's own, or a tensor's or a number's with none."""
    if isinstance(value, Dual):
        return value.value, value.d
    if isinstance(value, torch.Tensor):
        return value, {}
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value), {}
    raise NoRule(f"an operand of type {type(value).__name__}")


def _made(value, d: dict):
    """A result: a Dual where it depends on a parameter, else the plain tensor."""
    return Dual(value, d) if d else value


def _tensors(*values) -> list:
    """Numbers as tensors of the dtype and device of the first floating tensor among ``values`` (torch would
    make two numbers float32)."""
    like = next((v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    dtype, device = (torch.float64, None) if like is None else (like.dtype, like.device)
    return [v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=dtype, device=device) for v in values]


def _choose(condition, a, b, like: torch.Tensor):
    """torch.where(condition, a, b) in the dtype of ``like``: two numbers made a tensor first."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = torch.tensor(float(a), dtype=like.dtype, device=like.device)
    return torch.where(condition, a, b)


def _where(mask, d: dict, like) -> dict:
    """Derivatives kept where ``mask`` holds, zero elsewhere."""
    return {k: _choose(mask, g, 0.0, like) for k, g in d.items()}


def _unary(name: str, arg):
    a, da = _parts(arg)
    (a,) = _tensors(a)
    v = FUNCTIONS[name][0](a)
    slope = DERIVATIVE_RULES[name](a, v)
    return _made(v, {k: scaled(g, slope) for k, g in da.items()})


def _atan2(y, x):
    (yv, dy), (xv, dx) = _parts(y), _parts(x)
    yv, xv = _tensors(yv, xv)
    r2 = xv * xv + yv * yv
    d = {k: g * xv / r2 for k, g in dy.items()}
    for k, g in dx.items():
        d[k] = d.get(k, 0.0) - g * yv / r2
    return _made(torch.atan2(yv, xv), d)


def _binary(op, left, right):
    (a, da), (b, db) = _parts(left), _parts(right)
    return _made(*dual_binary(op, a, da, b, db))


def _select(condition, left, right):
    """torch.where(condition, left, right): each side's derivatives where it is taken."""
    if isinstance(condition, Dual):
        raise NoRule("torch.where on a parameter's value as the condition")
    (a, da), (b, db) = _parts(left), _parts(right)
    a, b = _tensors(a, b)
    d = {k: _choose(condition, da.get(k, 0.0), db.get(k, 0.0), a) for k in {*da, *db}}
    return _made(torch.where(condition, a, b), d)


def _clamp(arg, min=None, max=None):  # noqa: A002 (torch's own keyword names)
    if isinstance(min, Dual) or isinstance(max, Dual):
        raise NoRule("clamp with a parameter as a bound")
    a, da = _parts(arg)
    inside = torch.ones_like(a, dtype=torch.bool)  # as autograd: the derivative passes where min <= a <= max
    if min is not None:
        inside = inside & (a >= min)
    if max is not None:
        inside = inside & (a <= max)
    return _made(torch.clamp(a, min, max), _where(inside, da, a))


def _extreme(larger: bool):
    def pick(left, right):  # as autograd: each side's derivative where it wins, half of each where they tie
        (a, da), (b, db) = _parts(left), _parts(right)
        a, b = _tensors(a, b)
        wins = a > b if larger else a < b
        ties = a == b
        d = {}
        for k in {*da, *db}:
            ga, gb = da.get(k, 0.0), db.get(k, 0.0)
            d[k] = _choose(wins, ga, _choose(ties, (ga + gb) / 2, gb, a), a)
        return _made(torch.maximum(a, b) if larger else torch.minimum(a, b), d)

    return pick


def _compare(function):
    def compare(left, right):
        return function(_parts(left)[0], _parts(right)[0])  # a plain mask: a comparison has no derivative

    return compare


def _constant_of(function):
    def constant(arg, *args, **kwargs):  # a value that does not change with the parameters (ones_like, sign)
        return function(_parts(arg)[0], *args, **kwargs)

    return constant


def _rules() -> dict:
    """The operations beyond the language's arithmetic and functions that Dual knows, by torch callable."""
    rules = {}
    for owner in (torch, torch.Tensor):
        rules[owner.where] = _select if owner is torch else (lambda a, condition, b: _select(condition, a, b))
        for name in ("clamp", "clip"):
            rules[getattr(owner, name)] = _clamp
        rules[owner.maximum], rules[owner.minimum] = _extreme(True), _extreme(False)
        rules[owner.fmax], rules[owner.fmin] = _extreme(True), _extreme(False)
        for name in ("gt", "lt", "ge", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal"):
            rules[getattr(owner, name)] = _compare(getattr(torch, name))
        for name in ("sign", "zeros_like", "ones_like", "full_like", "floor", "ceil", "round", "isfinite", "isnan"):
            if hasattr(owner, name):
                rules[getattr(owner, name)] = _constant_of(getattr(torch, name))
    for name in ("gt", "lt", "ge", "le", "eq", "ne"):
        rules[getattr(torch.Tensor, f"__{name}__")] = _compare(getattr(torch, name))
    return rules


RULES = _rules()


def _apply(func, args, kwargs):
    """One torch call with a Dual among its arguments."""
    kind = LANGUAGE.get(func)
    if kind is not None and not kwargs:
        kind, what = kind
        if kind == "call":
            if what == "arctan2" and len(args) == 2:
                return _atan2(*args)
            if len(args) == 1:
                return _unary(what, args[0])
        elif kind == "neg":
            return _binary(ast.Mult, args[0], -1.0)
        elif kind == "square":
            return _binary(ast.Pow, args[0], 2.0)
        elif len(args) == 2:
            return _binary(what, *(args[::-1] if kind == "rbinary" else args))
    rule = RULES.get(func)
    if rule is not None:
        return rule(*args, **kwargs)
    name = getattr(func, "__name__", repr(func))
    owner = "torch.Tensor." if getattr(func, "__objclass__", None) is torch._C.TensorBase else "torch."  # noqa: SLF001 - torch's
    raise NoRule(f"{owner}{name} on a parameter")


class Dual:
    """A parameter's values over the batch, or a value made from them, with its derivatives (module docstring)."""

    __array_ufunc__ = None  # numpy's functions refuse it, rather than make arrays of Duals

    def __init__(self, value: torch.Tensor, d: dict):
        self.value, self.d = value, d

    def __add__(self, other):
        return _binary(ast.Add, self, other)

    def __radd__(self, other):
        return _binary(ast.Add, other, self)

    def __sub__(self, other):
        return _binary(ast.Sub, self, other)

    def __rsub__(self, other):
        return _binary(ast.Sub, other, self)

    def __mul__(self, other):
        return _binary(ast.Mult, self, other)

    def __rmul__(self, other):
        return _binary(ast.Mult, other, self)

    def __truediv__(self, other):
        return _binary(ast.Div, self, other)

    def __rtruediv__(self, other):
        return _binary(ast.Div, other, self)

    def __pow__(self, other):
        return _binary(ast.Pow, self, other)

    def __rpow__(self, other):
        return _binary(ast.Pow, other, self)

    def __neg__(self):
        return _binary(ast.Mult, self, -1.0)

    def __pos__(self):
        return self

    def __lt__(self, other):
        return _parts(self)[0] < _parts(other)[0]

    def __le__(self, other):
        return _parts(self)[0] <= _parts(other)[0]

    def __gt__(self, other):
        return _parts(self)[0] > _parts(other)[0]

    def __ge__(self, other):
        return _parts(self)[0] >= _parts(other)[0]

    def __eq__(self, other):
        return _parts(self)[0] == _parts(other)[0]

    def __ne__(self, other):
        return _parts(self)[0] != _parts(other)[0]

    __hash__ = object.__hash__

    def __bool__(self):
        return bool(self.value)  # one curve: as the function means it; a batch: torch's own "ambiguous" error

    def __float__(self):
        raise NoRule("a conversion of a parameter to a Python number")

    __int__ = __index__ = __complex__ = __float__

    def __array__(self, *args, **kwargs):
        raise NoRule("a numpy function on a parameter")

    def __getitem__(self, key):
        raise NoRule("indexing a parameter or a result")

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def device(self):
        return self.value.device

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        method = getattr(torch.Tensor, name, None)
        if method is not None and (method in LANGUAGE or method in RULES):  # amp.exp(), a.clamp(min=0)
            return lambda *args, **kwargs: _apply(method, (self, *args), kwargs)
        raise NoRule(f"torch.Tensor.{name} on a parameter")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return _apply(func, args, kwargs or {})


def evaluate(function, param_names, x: torch.Tensor, params: torch.Tensor):
    """``function(x, *params)`` over the rows of params (B, P) at once, with its derivatives: the value, shaped
    to broadcast to (B, N), and one derivative per parameter (None where zero), each shaped to broadcast too."""
    columns = [Dual(c.unsqueeze(-1), {name: 1.0}) for name, c in zip(param_names, params.unbind(-1))]
    out = function(x, *columns)
    value, d = _parts(out)
    return value, [d.get(name) for name in param_names]


class BroadcastFunction(FunctionModel):
    """A Python function fitted over a batch by one call on all its curves, derivatives by Dual (module
    docstring). One parameter vector (P,) runs the function as the user wrote it."""

    def __init__(self, model: FunctionModel, variable: str):
        self.function, self.param_names = model.function, model.param_names
        self.name, self.formula = model.name, model.formula
        self.variables = (variable,)  # x of one variable: (N,), or (B, N) one row per curve

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if params.ndim == 1:
            return super().forward(x, params)
        out = self.function(x, *(c.unsqueeze(-1) for c in params.unbind(-1)))
        return torch.as_tensor(out, dtype=x.dtype, device=x.device).expand(params.shape[:-1] + x.shape[-1:])

    def value_and_gradient(self, variables, params: list):
        """Expression.value_and_gradient's answer (fit_many's batched path): params as (B, 1) columns."""
        return evaluate(self.function, self.param_names, variables[0], torch.cat(params, dim=-1))

    def value_and_jacobian(self, x: torch.Tensor, params: torch.Tensor):
        """The values and Jacobian at one parameter vector (P,) or a batch (B, P): (N,) and (N, P), or (B, N) and
        (B, N, P)."""
        one = params.ndim == 1
        value, grads = evaluate(self.function, self.param_names, x, params.reshape(-1, params.shape[-1]))
        shape = (len(params) if not one else 1, x.shape[-1])
        full = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(shape)  # noqa: E731
        zero = torch.zeros(shape, dtype=x.dtype, device=x.device)
        jac = torch.stack([zero if g is None else full(g) for g in grads], dim=-1)
        return (full(value)[0], jac[0]) if one else (full(value), jac)


def broadcast_model(model: FunctionModel, x: torch.Tensor, start: torch.Tensor) -> tuple[FunctionModel, str]:
    """``model`` as a BroadcastFunction where, at two parameter vectors near ``start``, one call on both gives
    each curve's own values (the function called alone) and autograd's derivatives; else the model as it is.
    With a few words on how it runs."""
    if x.ndim != 1:
        return model, "curve by curve by torch.func (x of several columns)"
    variable = next(iter(inspect.signature(model.function).parameters))
    candidate = BroadcastFunction(model, variable)
    start = start.to(x.dtype)
    params = torch.stack([start, start * (1 + 1e-3) + 1e-3])
    try:
        value, jac = candidate.value_and_jacobian(x, params)
    except NoRule as why:
        return model, f"curve by curve by torch.func: gradfit.dual has no rule for {why}"
    except Exception as e:  # noqa: BLE001 (an if on a parameter over a batch, a shape that does not broadcast)
        first = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        return model, f"curve by curve by torch.func: one call on the whole batch failed ({first})"
    weights = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 1.5, x.shape), dtype=x.dtype, device=x.device)
    for b, p in enumerate(params):  # each curve alone: its values, and autograd's derivatives (one random sum)
        q = p.detach().clone().requires_grad_()
        own = model(x, q)
        (grad,) = torch.autograd.grad((own * weights).sum(), q, allow_unused=True)
        grad = torch.zeros_like(q) if grad is None else grad
        if not (_close(value[b], own.detach()) and _close((jac[b] * weights[:, None]).sum(dim=0), grad)):
            return (
                model,
                "curve by curve by torch.func: one call on the whole batch did not give each curve's own values",
            )
    return candidate, "on the whole batch at once, derivatives by forward mode"


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to CLOSE (relative to the largest finite value), NaN where the other is NaN."""
    finite = torch.isfinite(b)
    scale = float(b[finite].abs().max()) if bool(finite.any()) else 0.0
    near = (a - b).abs() <= CLOSE * max(scale, math.ulp(1.0))
    return bool((near | (a == b) | (torch.isnan(a) & torch.isnan(b))).all())

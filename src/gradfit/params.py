"""Bounds, fixed and tied parameters, for every method, by reparametrisation.

A bounded parameter p is written as a smooth function of an unbounded one u, so that
any solver can walk u freely while p stays inside its bounds (MINUIT's transforms,
as lmfit uses them):

    lower only:  p = lower - 1 + sqrt(u**2 + 1)
    upper only:  p = upper + 1 - sqrt(u**2 + 1)
    both:        p = lower + (sin(u) + 1) * (upper - lower) / 2

A fixed parameter is left out of what the solver sees and put back with its value; a tied one
(``{"g2_sigma": "g1_sigma", "g2_center": "g1_center + 1.5"}``, an expression of the others in gradfit's
expression language) is left out too and put back as its expression's value. The change of variables has a
Jacobian (``Constrained.gradient``): the solvers' Jacobians come from the model's by the chain rule, and the
covariance of the parameters the solver does not see, from the others' (as lmfit propagates it).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from .errors import ExpressionError, ModelError
from .expr import Expression, parse
from .models import Model
from .options import all_finite

Bounds = dict[str, tuple[float | None, float | None]]


def check_bounds(bounds, names: tuple[str, ...]) -> Bounds:
    """Validate ``{"b": (0, None)}``: known names, numbers or None, lower < upper."""
    if bounds is None:
        return {}
    if not isinstance(bounds, dict):
        raise ModelError(f"`bounds` must be a dict such as {{'b': (0, None)}}, got {type(bounds).__name__}.")
    out: Bounds = {}
    for name, pair in bounds.items():
        _known(name, names, "bounds")
        try:
            lower, upper = pair
        except (TypeError, ValueError):
            raise ModelError(
                f"bounds[{name!r}] must be a pair (lower, upper), None for no bound; got {pair!r}."
            ) from None
        lower, upper = _bound(lower, name, "lower", -math.inf), _bound(upper, name, "upper", math.inf)
        if not lower < upper:
            raise ModelError(f"bounds[{name!r}]: the lower bound {lower:g} must be below the upper bound {upper:g}.")
        if math.isfinite(lower) or math.isfinite(upper):
            out[name] = (lower, upper)
    return out


def check_fixed(fixed, names: tuple[str, ...], bounds: Bounds) -> dict[str, float]:
    """Validate ``{"c": 1.0}``: known names, finite values inside any bounds, at least one free parameter."""
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise ModelError(f"`fixed` must be a dict such as {{'c': 1.0}}, got {type(fixed).__name__}.")
    out = {}
    for name, value in fixed.items():
        _known(name, names, "fixed")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ModelError(f"fixed[{name!r}] must be a number, got {value!r}.") from None
        if not math.isfinite(value):
            raise ModelError(f"fixed[{name!r}] must be finite, got {value}.")
        lower, upper = bounds.get(name, (-math.inf, math.inf))
        if not lower <= value <= upper:
            raise ModelError(f"fixed[{name!r}] = {value:g} is outside its bounds ({lower:g}, {upper:g}).")
        out[name] = value
    if len(out) == len(names):
        raise ModelError("Every parameter is fixed: leave at least one free to fit.")
    return out


def expression_of_parameters(text, names, what: str, where: str, parse_error=ExpressionError) -> Expression:
    """``text`` parsed by gradfit.expr (never eval) as an expression of the parameters ``names`` only (no
    variables): a tie, a derived quantity. A syntax error is ``parse_error`` prefixed by ``where``; an unknown
    name is refused naming ``what`` ("The tie g2_sigma", "The quantity fwhm") and the parameters."""
    try:
        expression = parse(text, variables=())
    except ExpressionError as e:
        raise parse_error(f"{where}: {e}") from None
    unknown = [n for n in expression.param_names if n not in names]
    if unknown:
        raise ModelError(
            f"{what} = {text!r} refers to {unknown[0]!r}, which is not a parameter. "
            f"The parameters are: {', '.join(names)}."
        )
    return expression


def check_ties(ties, names: tuple[str, ...], bounds: Bounds, fixed: dict[str, float]) -> dict[str, Expression]:
    """Validate ``{"g2_sigma": "g1_sigma"}``: each tied parameter a known one, neither bounded nor fixed, its
    expression (parsed by gradfit.expr, never eval) of known parameters other than itself, and no cycle. Returns
    the expressions in an order where each comes after the tied parameters it uses."""
    if ties is None:
        return {}
    if not isinstance(ties, dict):
        raise ModelError(f"`tie` must be a dict such as {{'g2_sigma': 'g1_sigma'}}, got {type(ties).__name__}.")
    parsed = {}
    for name, text in ties.items():
        _known(name, names, "tie")
        if name in bounds or name in fixed:
            raise ModelError(f"{name} is tied, so it cannot also be {'bounded' if name in bounds else 'fixed'}.")
        expression = expression_of_parameters(text, names, f"The tie {name}", f"The tie of {name}", ModelError)
        if name in expression.param_names:
            raise ModelError(f"The tie {name} = {text!r} refers to {name} itself.")
        if not expression.param_names:
            raise ModelError(f"The tie {name} = {text!r} names no parameter: hold it with fixed={{{name!r}: ...}}.")
        parsed[name] = expression
    if len(parsed) + len(fixed) >= len(names):
        raise ModelError("Every parameter is tied or fixed: leave at least one free to fit.")
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join(path[path.index(name) :] + (name,))
            raise ModelError(f"The ties go round in a cycle: {cycle}. Tie each to free parameters.")
        if name in order or name not in parsed:
            return
        for used in parsed[name].param_names:
            visit(used, path + (name,))
        order.append(name)

    for name in parsed:
        visit(name, ())
    return {name: parsed[name] for name in order}


def _known(name, names, what: str) -> None:
    if name not in names:
        raise ModelError(f"`{what}` names unknown parameter {name!r}. The parameters are: {', '.join(names)}.")


def _bound(value, name: str, side: str, none: float) -> float:
    if value is None:
        return none
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"The {side} bound of {name!r} must be a number or None, got {value!r}.") from None
    if math.isnan(value):
        raise ModelError(f"The {side} bound of {name!r} must be a number or None, got nan.")
    return value


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z][A-Za-z0-9_]*"


def parse_bound(text: str) -> tuple[str, float | None, float | None]:
    """'b>0' -> ('b', 0, None); '0<c<10' -> ('c', 0, 10); 'c<=5' -> ('c', None, 5); '5>c' too."""
    t = text.replace(" ", "")
    m = re.fullmatch(rf"({_NUMBER})(<=?)({_NAME})(<=?)({_NUMBER})", t)
    if m:
        return m.group(3), float(m.group(1)), float(m.group(5))
    m = re.fullmatch(rf"({_NUMBER})(>=?)({_NAME})(>=?)({_NUMBER})", t)
    if m:
        return m.group(3), float(m.group(5)), float(m.group(1))
    m = re.fullmatch(rf"({_NAME})([<>]=?)({_NUMBER})", t)
    if m:
        name, op, value = m.group(1), m.group(2), float(m.group(3))
        return (name, value, None) if op.startswith(">") else (name, None, value)
    m = re.fullmatch(rf"({_NUMBER})([<>]=?)({_NAME})", t)
    if m:
        value, op, name = float(m.group(1)), m.group(2), m.group(3)
        return (name, None, value) if op.startswith(">") else (name, value, None)
    raise ValueError(f"write a bound as b>0, c<10 or 0<c<10; got '{text}'")


class Constrained(Model):
    """A model seen through bounds, fixed values and ties (check_ties); its own parameters are the free,
    unbounded u."""

    def __init__(self, base: Model, bounds: Bounds, fixed: dict[str, float], ties: dict[str, Expression] | None = None):
        self.base, self.bounds, self.fixed, self.ties = base, bounds, fixed, ties or {}
        self.user_names = base.param_names
        self.param_names = tuple(n for n in base.param_names if n not in fixed and n not in self.ties)
        self.name, self.formula = base.name, base.formula
        self.variables = getattr(base, "variables", ("x",))

    def __getattr__(self, name: str):
        if name == "value_and_jacobian" and hasattr(
            self.__dict__.get("base"), name
        ):  # a model that estimates its own Jacobian
            return self._value_and_jacobian
        raise AttributeError(name)

    def _value_and_jacobian(self, x: torch.Tensor, u: torch.Tensor):
        """The base model's value and Jacobian, by the chain rule through to_user."""
        value, jac = self.base.value_and_jacobian(x, self.to_user(u))
        return value, self.chain(jac, u)

    @property
    def free_index(self) -> list[int]:
        """Where each free parameter sits among the user's."""
        return [self.user_names.index(name) for name in self.param_names]

    def slopes(self, u: torch.Tensor) -> torch.Tensor:
        """d p / d u of each free parameter at u (..., free): the transform's Jacobian, which is diagonal (each
        user parameter depends on its own u only)."""
        out = []
        for name, v in zip(self.param_names, u.unbind(-1)):
            lower, upper = self.bounds.get(name, (-math.inf, math.inf))
            if math.isfinite(lower) and math.isfinite(upper):
                out.append(torch.cos(v) * ((upper - lower) / 2))
            elif math.isfinite(lower):
                out.append(v / torch.sqrt(v * v + 1))
            elif math.isfinite(upper):
                out.append(-v / torch.sqrt(v * v + 1))
            else:
                out.append(torch.ones_like(v))
        return torch.stack(out, dim=-1)

    def chain(self, jac: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A Jacobian by the user's parameters (..., N, P) as one by u (..., N, free): the chain rule."""
        if self.ties:
            return jac @ self.gradient(u)
        return jac[..., self.free_index] * self.slopes(u).unsqueeze(-2)

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        """d p / d u (..., P, free): a free parameter's slope, a fixed one's zeros, a tied one's by the chain
        rule through its expression (forward mode on its tree, gradfit.expr)."""
        slopes = self.slopes(u)
        zero = torch.zeros_like(slopes)
        rows = {name: zero for name in self.fixed}
        for j, name in enumerate(self.param_names):
            rows[name] = zero.clone()
            rows[name][..., j] = slopes[..., j]
        values = dict(zip(self.user_names, self.to_user(u).unbind(-1)))
        for name, expression in self.ties.items():
            _, grads = expression.value_and_gradient([], [values[n] for n in expression.param_names])
            rows[name] = (
                sum(
                    (torch.as_tensor(g, dtype=u.dtype, device=u.device).unsqueeze(-1) * rows[n])
                    for n, g in zip(expression.param_names, grads)
                    if g is not None
                )
                + zero
            )
        return torch.stack([rows[name] for name in self.user_names], dim=-2)

    def to_user(self, u: torch.Tensor) -> torch.Tensor:
        """Free unbounded values u -> every parameter in the user's terms, inside its bounds, ties holding."""
        free = dict(zip(self.param_names, u.unbind(-1)))
        values = {}
        for name in self.user_names:
            if name in self.fixed:
                values[name] = torch.full(u.shape[:-1], self.fixed[name], dtype=u.dtype, device=u.device)
                continue
            if name in self.ties:
                continue
            v = free[name]
            lower, upper = self.bounds.get(name, (-math.inf, math.inf))
            if math.isfinite(lower) and math.isfinite(upper):
                v = lower + (torch.sin(v) + 1) * ((upper - lower) / 2)
            elif math.isfinite(lower):
                v = lower - 1 + torch.sqrt(v * v + 1)
            elif math.isfinite(upper):
                v = upper + 1 - torch.sqrt(v * v + 1)
            values[name] = v
        for name, expression in self.ties.items():  # in order: a tie after the ties it uses
            value = expression([], [values[n] for n in expression.param_names])
            values[name] = torch.as_tensor(value, dtype=u.dtype, device=u.device).expand(u.shape[:-1])
        return torch.stack([values[name] for name in self.user_names], dim=-1)

    def to_free(self, p: torch.Tensor) -> torch.Tensor:
        """Every parameter in the user's terms -> the free unbounded values (the inverse of to_user)."""
        values = []
        for name, v in zip(self.user_names, p.unbind(-1)):
            if name in self.fixed or name in self.ties:
                continue
            lower, upper = self.bounds.get(name, (-math.inf, math.inf))
            if math.isfinite(lower) and math.isfinite(upper):
                v = torch.asin((2 * (v - lower) / (upper - lower) - 1).clamp(-1, 1))
            elif math.isfinite(lower):
                v = torch.sqrt(((v - lower + 1) ** 2 - 1).clamp_min(0))
            elif math.isfinite(upper):
                v = torch.sqrt(((upper - v + 1) ** 2 - 1).clamp_min(0))
            values.append(v)
        return torch.stack(values, dim=-1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.base(x, self.to_user(params))


def inside(p: torch.Tensor, names, bounds: Bounds) -> torch.Tensor:
    """Move starting values that sit on (or, for guesses, beyond) a bound just inside it: p (..., P), one
    vector or a batch.

    On a bound the transforms above are flat (their derivative is 0), so a solver
    starting there would never move.
    """
    if not bounds:
        return p
    values = p.clone()
    for i, name in enumerate(names):
        if name not in bounds:
            continue
        lower, upper = bounds[name]
        v = values[..., i]
        room = 1e-6 * (upper - lower) if math.isfinite(upper - lower) else 1e-6 * v.abs().clamp_min(1.0)
        low, high = (torch.as_tensor(b, dtype=v.dtype, device=v.device) for b in (lower + room, upper - room))
        values[..., i] = torch.minimum(torch.maximum(v, low), high)
    return values


def widths_positive(model: Model, values: np.ndarray, bounds, fixed, ties=None) -> tuple[np.ndarray, np.ndarray]:
    """Widths (parameters that enter squared: their sign means nothing) reported positive: ``values`` (B, P) in
    the user's terms, a copy with each negative free width made positive and the ties put back from it. A flip
    is kept only where it leaves the model unchanged: every tied value it changes is itself a width whose size
    it keeps (``g2_sigma = g1_sigma`` flips with g1_sigma; ``g2_center = g1_center + g1_sigma`` keeps g1_sigma's
    sign). A bounded, fixed or tied width keeps its sign. Returns the values and the (B, P) mask of flipped signs
    (a flipped parameter's row and column of a covariance change sign with it)."""
    names, even, ties = list(model.param_names), set(model.even_params), ties or {}
    values = np.array(values, dtype=np.float64, copy=True)
    flipped = np.zeros(values.shape, dtype=bool)
    view = Constrained(model, {}, fixed, ties) if ties else None
    tied = [names.index(n) for n in ties]
    for name in model.even_params:
        if name in bounds or name in fixed or name in ties:
            continue
        i = names.index(name)
        rows = values[:, i] < 0
        if not rows.any():
            continue
        trial = values[rows].copy()
        trial[:, i] *= -1
        keep = np.ones(len(trial), dtype=bool)
        if view is not None:
            with torch.no_grad():
                free = torch.as_tensor(trial[:, view.free_index])
                trial = view.to_user(free).double().numpy()
            before, after = values[rows][:, tied], trial[:, tied]
            changed = ~np.isclose(after, before, rtol=1e-12, atol=0)
            harmless = np.array([names[j] in even for j in tied])[None, :] & np.isclose(
                np.abs(after), np.abs(before), rtol=1e-12, atol=0
            )
            keep = ~(changed & ~harmless).any(axis=1)
        where = np.flatnonzero(rows)[keep]
        flipped[where] = np.sign(trial[keep]) != np.sign(values[where])
        values[where] = trial[keep]
    return values, flipped


def every_covariance(view: Model, user: torch.Tensor, free: list[int], cov_free, free_undetermined):
    """The covariance of every parameter from the free ones' (``view``: the model seen through its fixed and tied
    parameters, Constrained, or the model itself): a fixed parameter's row and column zero, a tied one's from the
    free ones' by the ties' gradient, G Cov Gᵀ (as lmfit propagates it). Also which parameters are undetermined
    (a free one the data do not pin, or a tie that depends on one)."""
    n = len(user)
    cov = np.zeros((n, n))
    cov[np.ix_(free, free)] = cov_free
    undetermined = np.zeros(n, dtype=bool)
    undetermined[free] = free_undetermined
    if getattr(view, "ties", None):
        with torch.no_grad():
            g = view.gradient(user[free]).double().cpu().numpy()
        cov = g @ np.where(np.isfinite(cov_free), cov_free, 0.0) @ g.T
        undetermined = (g[:, free_undetermined] != 0).any(axis=1)
        cov[undetermined, undetermined] = np.inf
    return cov, undetermined


def at_bounds(params: dict[str, float], bounds: Bounds, rtol: float = 1e-6) -> dict[str, str]:
    """The parameters that ended on a bound: name -> 'lower' or 'upper'."""
    out = {}
    for name, (lower, upper) in bounds.items():
        v = params[name]
        scale = max(abs(v), 1.0) if not math.isfinite(upper - lower) else upper - lower
        if math.isfinite(lower) and v - lower <= rtol * scale:
            out[name] = "lower"
        elif math.isfinite(upper) and upper - v <= rtol * scale:
            out[name] = "upper"
    return out


def start_values(model: Model, p0, x, y, dtype, device, bounds=None, fixed=None, tied=()) -> torch.Tensor:
    """Starting values of every parameter: p0 (inside any bounds), else the model's guess, else ones. A fixed or
    tied parameter needs no p0 (a tied one's is its tie's, made by Constrained)."""
    names = model.param_names
    bounds, fixed = bounds or {}, fixed or {}
    if isinstance(p0, dict) and tied:
        p0 = {**{n: 0.0 for n in tied}, **p0}
    if p0 is None:
        guess = model.guess(x, y)
        if isinstance(guess, torch.Tensor) and guess.shape == (len(names),) and all_finite(guess):
            start = guess.to(dtype=dtype, device=device)
        else:
            start = start_values(model, [1.0] * len(names) if guess is None else guess, x, y, dtype, device)
        for i, name in enumerate(names):
            if name in fixed:
                start[i] = fixed[name]
        return inside(start, names, bounds)  # a guess may fall outside the user's bounds: move it in
    if isinstance(p0, dict) and fixed:
        p0 = {**{n: v for n, v in fixed.items()}, **p0}  # a fixed parameter needs no p0
    if isinstance(p0, dict):
        unknown = [k for k in p0 if k not in names]
        if unknown:
            raise ModelError(f"p0 names unknown parameter {unknown[0]!r}. The parameters are: {', '.join(names)}.")
        missing = [n for n in names if n not in p0]
        if missing:
            raise ModelError(f"p0 gives no value for {', '.join(missing)}. Give all of: {', '.join(names)}.")
        values = [p0[n] for n in names]
    else:
        try:
            values = list(p0.tolist() if hasattr(p0, "tolist") else p0)
        except TypeError:
            raise ModelError(f"p0 must be a dict or a sequence of numbers, got {p0!r}.") from None
        if len(values) != len(names):
            raise ModelError(
                f"p0 has {len(values)} values but the model has {len(names)} parameters ({', '.join(names)})."
            )
    try:
        start = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device).clone()
    except (TypeError, ValueError):
        raise ModelError(f"p0 must hold numbers, got {values!r}.") from None
    bad = [n for n, v in zip(names, start.tolist()) if not math.isfinite(v)]
    if bad:
        raise ModelError(f"p0 must be finite, but {bad[0]} is {start[names.index(bad[0])].item()}.")
    for i, name in enumerate(names):
        if name in fixed:
            start[i] = fixed[name]
        lower, upper = bounds.get(name, (-math.inf, math.inf))
        if not lower <= float(start[i]) <= upper:
            raise ModelError(f"p0 {name}={float(start[i]):g} is outside its bounds ({lower:g}, {upper:g}).")
    return inside(start, names, bounds)

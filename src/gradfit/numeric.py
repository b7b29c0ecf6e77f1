"""Python functions autograd cannot differentiate, fitted with finite-difference derivatives.

A curve_fit user's first model is written with numpy (``a*np.exp(-k*t) + c``), or calls
scipy.special; a torch function may cut a parameter out of autograd's graph (``float(k)``,
``.item()``, ``.detach()``, an ``if`` on its value), so that autograd's derivative is exactly zero
where the curve does change. ``derivatives_for`` finds out which, at the start of a fit, and
``NumericFunction`` then stands in for the function: the same values, with the Jacobian estimated
as scipy's curve_fit estimates it (``scipy.optimize.approx_derivative``'s steps): 2-point by
default, 3-point or complex-step when asked. Every solver sees an ordinary model: its forward
is a torch.autograd.Function whose backward uses the estimated Jacobian, and
``value_and_jacobian`` gives both at once to the least-squares solvers.

Over a batch of parameter vectors (fit_many), the function is called once for all curves, with
each parameter as a column (B, 1) against x, where it broadcasts; else once per curve.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .errors import ModelError
from .models import FunctionModel

DERIVATIVES = ("auto", "exact", "2-point", "3-point", "cs")  # the user's choices; auto: exact where autograd can
_EPS = np.finfo(np.float64).eps
_RELATIVE_STEP = {"2-point": _EPS**0.5, "3-point": _EPS ** (1 / 3), "cs": _EPS**0.5}  # as scipy's approx_derivative


def check_derivatives(value) -> str:
    if value not in DERIVATIVES:
        raise ModelError(f"Unknown derivatives {value!r}. Choose one of: {', '.join(DERIVATIVES)}.")
    return value


def derivatives_for(model, x: torch.Tensor, p: torch.Tensor, derivatives: str = "auto"):
    """``model`` as it should be fitted: itself where autograd differentiates it, else a NumericFunction.

    Only a Python function (FunctionModel) is looked at: at the start p (P,), it must run on torch
    tensors and give autograd a derivative for every parameter that changes the curve (compared,
    for a random combination of the points, with a finite difference).
    """
    check_derivatives(derivatives)
    if not isinstance(model, FunctionModel) or isinstance(model, NumericFunction):
        if derivatives not in ("auto", "exact"):
            raise ModelError(
                f"derivatives={derivatives!r} is for Python functions; model {model.name} has exact "
                "derivatives of its own."
            )
        return model
    with warnings.catch_warnings():  # numpy and torch meeting each other's arrays complain as they are tried
        warnings.simplefilter("ignore")
        if derivatives not in ("auto", "exact"):
            return NumericFunction(model, derivatives, _runs_on(model, x, p), "asked for")
        why = _why_not_autograd(model, x, p)
        if why is None:
            return model
        if derivatives == "exact":
            raise ModelError(
                f"Model {model.name} has no exact derivatives: {why}. Leave derivatives='auto' to "
                "estimate them by finite differences."
            )
        return NumericFunction(model, "2-point", _runs_on(model, x, p), why)


def _first_line(e: Exception) -> str:
    """The exception's kind and first sentence."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0].split('. ')[0].rstrip('.')}" if text else type(e).__name__


def _runs_on(model: FunctionModel, x: torch.Tensor, p: torch.Tensor) -> str:
    """'numpy' where the function runs on numpy arrays, else 'torch' where it runs on tensors (cutting autograd's
    graph, say); a function that runs on neither is refused in one line."""
    failures = []
    for kind in ("numpy", "torch"):
        try:
            probe = NumericFunction(model, "2-point", kind, "")
            probe._call(x.double().cpu().numpy(), p.double().cpu().numpy()[None])  # noqa: SLF001 - this module's
            return kind
        except Exception as e:  # noqa: BLE001 (any failure: try the other kind of array)
            failures.append(_first_line(e).removeprefix("ModelError: "))
    raise ModelError(
        f"Model {model.name} failed on torch tensors at p0: {failures[1]}; and on numpy arrays: "
        f"{failures[0]}. Write it with torch or numpy operations, one value per point."
    )


def _why_not_autograd(model: FunctionModel, x: torch.Tensor, p: torch.Tensor) -> str | None:
    """None where autograd differentiates the function at p, else the reason in a few words."""
    q = p.detach().clone().requires_grad_()
    try:
        out = model.function(x, *q.unbind(-1))
    except Exception as e:  # noqa: BLE001 (numpy on a tensor that requires grad, and the like)
        return f"the function does not run on torch tensors ({_first_line(e)})"
    if not isinstance(out, torch.Tensor):
        return f"the function returns {type(out).__name__}, not a torch tensor"
    weights = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 1.5, out.shape), dtype=out.dtype)
    if out.requires_grad:
        (grad,) = torch.autograd.grad((out * weights).sum(), q, allow_unused=True)
        grad = torch.zeros_like(q) if grad is None else grad
    else:
        grad = torch.zeros_like(q)
    numeric = NumericFunction(model, "2-point", "torch", "")
    try:
        _, jac = numeric.value_and_jacobian(x, p.detach())
    except ModelError:
        raise  # (a shape that is not one value per point: said as such)
    except Exception:  # noqa: BLE001 (the function refuses a nearby point: no estimate to compare; autograd's stands)
        return None
    estimated = (jac * weights.reshape(-1, 1)).sum(dim=0)
    cut = [
        name
        for name, g, e in zip(model.param_names, grad.tolist(), estimated.tolist())
        if g == 0 and math.isfinite(e) and e != 0
    ]
    if cut:
        return (
            f"autograd gives no derivative for {', '.join(cut)} (the function cuts "
            f"{'it' if len(cut) == 1 else 'them'} out of the graph: float(), .item(), .detach() or an if on "
            "the value)"
        )
    return None


class NumericFunction(FunctionModel):
    """A Python function fitted with finite-difference derivatives (see the module's docstring)."""

    def __init__(self, model: FunctionModel, method: str, runs_on: str, why: str):
        self.function, self.variables = model.function, model.variables
        self.param_names, self.name, self.formula = model.param_names, model.name, model.formula
        self.method, self.runs_on, self.why = method, runs_on, why

    @property
    def note(self) -> str:
        reason = "" if self.why == "asked for" else f": {self.why}"
        how = "complex steps" if self.method == "cs" else f"{self.method} finite differences"
        return f"derivatives estimated by {how}{reason}"

    def forward(self, x: torch.Tensor, params: torch.Tensor, per_curve: bool = False) -> torch.Tensor:
        """f at params (P,), or at each row of params (B, P): x shared, or one row of x per curve."""
        return _Estimated.apply(params, x, self, per_curve)

    def value_and_jacobian(self, x: torch.Tensor, params: torch.Tensor, per_curve: bool = False):
        """f at params (P,) or (B, P), and its Jacobian d f / d params: (N,) and (N, P), or (B, N) and (B, N, P)."""
        value, jac = self._estimate(*self._numpy(x, params, per_curve))
        value, jac = (torch.as_tensor(a, dtype=params.dtype, device=params.device) for a in (value, jac))
        return (value[0], jac[0]) if params.ndim == 1 else (value, jac)

    def values(self, x: torch.Tensor, params: torch.Tensor, per_curve: bool = False) -> torch.Tensor:
        out = torch.as_tensor(self._call(*self._numpy(x, params, per_curve)), dtype=params.dtype, device=params.device)
        return out[0] if params.ndim == 1 else out

    @staticmethod
    def _numpy(x: torch.Tensor, params: torch.Tensor, per_curve: bool):
        p = params.detach().double().cpu().numpy()
        return x.detach().double().cpu().numpy(), p.reshape(-1, p.shape[-1]), per_curve

    def _estimate(self, x: np.ndarray, p: np.ndarray, per_curve: bool) -> tuple[np.ndarray, np.ndarray]:
        """Values (B, N) and Jacobians (B, N, P) at the rows of p, by scipy's steps: h = rel * max(1, |p|),
        signed as p, so that a step never crosses zero from a parameter's side."""
        f0 = self._call(x, p, per_curve)
        jac = np.empty(f0.shape + (p.shape[1],))
        rel = _RELATIVE_STEP[self.method]
        for j in range(p.shape[1]):
            h = rel * np.where(p[:, j] >= 0, 1.0, -1.0) * np.maximum(1.0, np.abs(p[:, j]))
            step = np.zeros_like(p)
            step[:, j] = h
            if self.method == "2-point":
                dp = (p + step)[:, j] - p[:, j]  # the step as it is represented
                jac[..., j] = (self._call(x, p + step, per_curve) - f0) / dp[:, None]
            elif self.method == "3-point":
                dp = (p + step)[:, j] - (p - step)[:, j]
                jac[..., j] = (self._call(x, p + step, per_curve) - self._call(x, p - step, per_curve)) / dp[:, None]
            else:  # complex step: exact to rounding for a function analytic in its parameters
                jac[..., j] = self._call(x, p + 1j * step, per_curve, complex).imag / h[:, None]
        return f0, jac

    def _call(self, x: np.ndarray, p: np.ndarray, per_curve: bool = False, dtype=float) -> np.ndarray:
        """f for each row of p (B, P) at x (shared, or per_curve: row i of x for curve i): (B, N). All rows at
        once where the function broadcasts parameters given as (B, 1) columns against x; else row by row."""
        B, n = p.shape[0], x.shape[1] if per_curve else x.shape[0]
        if B > 1 and x.ndim == (2 if per_curve else 1):
            try:
                out = self._run(x if per_curve else x[None, :], [p[:, j : j + 1] for j in range(p.shape[1])], dtype)
            except Exception:  # noqa: BLE001 (it does not broadcast: one curve at a time)
                out = None
            if out is not None and out.shape == (B, n):
                return out
        rows = [self._run(x[i] if per_curve else x, list(row), dtype) for i, row in enumerate(p)]
        return np.stack([np.broadcast_to(r, (n,)) if r.ndim == 0 else r for r in rows]).reshape(B, n)

    def _run(self, x: np.ndarray, values: list, dtype) -> np.ndarray:
        if self.runs_on == "torch":
            with torch.no_grad():
                out = self.function(torch.as_tensor(x), *(torch.as_tensor(v) for v in values))
            if not isinstance(out, torch.Tensor):
                raise ModelError(f"Model function {self.name} must return a torch tensor, got {type(out).__name__}.")
            out = out.numpy()
        else:
            out = self.function(x, *values)
        try:
            out = np.asarray(out, dtype=dtype)
        except (TypeError, ValueError):
            raise ModelError(
                f"Model function {self.name} must return numbers, one per point; got {type(out).__name__}."
            ) from None
        if out.ndim == 0:
            raise ModelError(
                f"Model function {self.name} returned one number for {x.shape[-1]} points; it must "
                "return one value per point."
            )
        if out.shape[-1] != x.shape[-1] and x.ndim == 1:
            raise ModelError(
                f"Model function {self.name} returned shape {out.shape} for {x.shape[0]} points; "
                "it must return one value per point."
            )
        return out


class _Estimated(torch.autograd.Function):
    """f(x; p) by the user's function; its backward uses the finite-difference Jacobian at p."""

    @staticmethod
    def forward(ctx, params, x, model: NumericFunction, per_curve: bool):
        if not ctx.needs_input_grad[0]:
            return model.values(x, params, per_curve)
        value, jac = model.value_and_jacobian(x, params, per_curve)
        ctx.save_for_backward(jac)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        (jac,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * jac).sum(dim=-2), None, None, None

"""A global fit's outcome (``GlobalResult``): the shared parameters with errors from all the data, each set's own,
and the per-set table; made from the solver's covariance by ``global_result``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .models import Model
from .params import at_bounds
from .uncertainty import NO_DOF_NOTE, bound_note, robust_note, tie_note


@dataclass
class GlobalResult:
    """The outcome of ``fit_global``: the shared parameters with errors from all the data, and each set's own.

    Arrays have one row per set, in the order of ``keys``.

    Attributes:
        model: the model fitted.
        keys: each set's name: its group value, or its index in the list given.
        param_names: the model's parameters.
        shared_names: the parameters common to every set.
        shared: name -> value of each shared parameter.
        shared_stderr: name -> standard error.
        shared_covariance: (S, S) covariance of the shared parameters.
        params: (B, P) each set's parameters, the shared ones repeated.
        stderr: (B, P) their standard errors.
        chi2: (B,) each set's (weighted) sum of squared residuals.
        n_points: (B,) each set's points.
        total_chi2: the sum of every set's χ².
        reduced_chi2: total_chi2 per degree of freedom.
        dof: the degrees of freedom: all points less all parameters.
        n_steps: Levenberg–Marquardt's steps.
        converged: whether a stopping rule was met.
        message: how the fit ended, in words.
        notes: what the message adds.
        bounds: name -> (lower, upper), as given.
        fixed: name -> the value every set holds it at (standard error 0).
        tied: name -> the expression of the others it is tied to (its standard error propagated).
        loss: "linear" (least squares) or the robust loss; chi2 is the plain residuals' either way.
        f_scale: where a robust loss starts to bend.
    """

    model: Model
    keys: np.ndarray  # each set's name: its group value, or its index in the list given
    param_names: tuple[str, ...]
    shared_names: tuple[str, ...]
    shared: dict[str, float]
    shared_stderr: dict[str, float]
    shared_covariance: np.ndarray  # (S, S)
    params: np.ndarray  # (B, P): each set's parameters, the shared ones repeated
    stderr: np.ndarray  # (B, P)
    chi2: np.ndarray  # (B,) each set's (weighted) sum of squared residuals
    n_points: np.ndarray  # (B,)
    total_chi2: float
    reduced_chi2: float
    dof: int
    n_steps: int
    converged: bool
    message: str
    notes: list[str] = field(default_factory=list)
    bounds: dict = field(default_factory=dict)  # name -> (lower, upper), as given
    fixed: dict = field(default_factory=dict)  # name -> the value every set holds it at
    tied: dict = field(default_factory=dict)  # name -> the expression of the others it is tied to
    loss: str = "linear"  # least squares, or a robust loss (gradfit.losses.ROBUST)
    f_scale: float = 1.0  # where a robust loss starts to bend

    @property
    def local_names(self) -> tuple[str, ...]:
        """The parameters each set fits for itself (not shared, fixed or tied)."""
        held = set(self.shared_names) | set(self.fixed) | set(self.tied)
        return tuple(n for n in self.param_names if n not in held)

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self) -> dict[str, np.ndarray]:
        """One row per set: its key, its parameters (the shared ones repeated), their standard errors, χ², points."""
        out = {"set": self.keys}
        for i, name in enumerate(self.param_names):
            out[name] = self.params[:, i]
        for i, name in enumerate(self.param_names):
            out[f"{name}_stderr"] = self.stderr[:, i]
        out.update(chi2=self.chi2, n_points=self.n_points)
        return out

    def to_pandas(self):
        """The per-set table as a pandas DataFrame (the columns of ``columns()``).

        Returns:
            pandas.DataFrame: the table.
        """
        import pandas as pd

        return pd.DataFrame(self.columns())

    def to_arrow(self):
        """The per-set table as a pyarrow Table (the columns of ``columns()``).

        Returns:
            pyarrow.Table: the table.
        """
        import pyarrow as pa

        return pa.table({k: pa.array(v.tolist() if k == "set" else v) for k, v in self.columns().items()})

    def report(self) -> str:
        """A readable report: the shared parameters with errors, χ², and the first sets' own parameters.

        Returns:
            str: the report.
        """
        width = max(len(n) for n in self.shared_names)
        lines = [
            "[[Global fit]]",
            f"    {self.model.name}: y = {self.model.formula}",
            f"    # data sets        = {len(self)}",
            f"    # data points      = {int(self.n_points.sum())}",
            f"    # variables        = {len(self.shared_names)} shared + {len(self.local_names)} x {len(self)} local",
            f"    converged          = {'yes' if self.converged else 'NO'}",
            f"    chi-square         = {self.total_chi2:.10g}",
            f"    reduced chi-square = {self.reduced_chi2:.10g}",
            "[[Shared parameters]]",
        ]
        for name in self.shared_names:
            value, err = self.shared[name], self.shared_stderr[name]
            rel = f" ({abs(err / value):.2%})" if value != 0 and math.isfinite(err) else ""
            lines.append(f"    {name:<{width}}: {value: .10g} +/- {err:.4g}{rel}")
        if self.fixed or self.tied:  # as lmfit's report marks them
            lines.append("[[Held parameters]]")
            lines += [f"    {name}: {value: .10g} (fixed)" for name, value in self.fixed.items()]
            lines += [f"    {name} = {text} (tied, in every set)" for name, text in self.tied.items()]
        lines += ["[[Message]]", f"    {self.message}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v:.6g}" for k, v in self.shared.items())
        return f"<GlobalResult {len(self)} sets of {self.model.name}: {values}; converged={self.converged}>"


@dataclass
class Held:
    """A global fit's bounds, fixed and tied parameters: every set's values in the user's terms (B, P), the model
    of the free parameters without bounds (whose Jacobian gave the statistics), and the free parameters' names."""

    user: torch.Tensor
    view: Model
    free: list[str]
    bounds: dict
    fixed: dict
    ties: dict
    robust: tuple | None = None  # (loss, f_scale)
    spread: float | None = None  # the robust cost at the optimum


def global_result(
    model, keys, names, common, solver, steps, converged, reason, n_points, absolute_sigma, note, held=None
):
    """The GlobalResult of a solved global fit (``solver``: global_fit's Schur LM at the user's free values)."""
    cs, cl, cross, chi2 = solver.covariance()
    cs, cl, cross_np, chi2 = (t.double().cpu().numpy() for t in (cs, cl, cross, chi2))
    B = len(keys)
    free = list(names) if held is None else held.free
    total = float(chi2.sum())
    dof = int(n_points.sum()) - len(common) - B * (len(free) - len(common))
    spread = total if held is None or held.robust is None else held.spread  # what the errors are scaled by
    factor = 1.0 if absolute_sigma else spread / dof if dof > 0 else math.inf
    s_err = np.sqrt(np.clip(np.diag(cs), 0, None) * factor)
    l_err = np.sqrt(np.clip(np.diagonal(cl, axis1=1, axis2=2), 0, None) * factor)
    cols_s = [names.index(free[i]) for i in solver.idx_s]  # where the solver's columns sit among the user's
    cols_l = [names.index(free[i]) for i in solver.idx_l]
    params = np.empty((B, len(names)))
    stderr = np.zeros((B, len(names)))  # (a fixed parameter's: 0)
    params[:, cols_s] = solver.s.double().cpu().numpy()
    params[:, cols_l] = solver.ell.double().cpu().numpy()
    stderr[:, cols_s] = s_err
    stderr[:, cols_l] = l_err
    notes = [note] if note else []
    if held is not None:
        params = held.user.detach().double().cpu().numpy().copy()
        if held.ties:  # a tied parameter's error: G C Gᵀ, C each set's covariance of the free parameters
            stderr[:, [names.index(n) for n in held.ties]] = _tied_stderr(held, solver, cs, cl, cross_np, factor)
        notes += _bound_notes(params, names, common, held.bounds)
        notes += [tie_note(name, expression) for name, expression in held.ties.items()]
        if held.robust is not None:
            notes.append(robust_note(held.robust))
    if dof <= 0:  # as gradfit.fit says it
        notes.append(NO_DOF_NOTE)
    state = "Converged" if converged else "Did not converge"
    message = f"{state} after {steps} steps: {reason}."
    if notes:
        message += " (" + "; ".join(notes) + ")"
    return GlobalResult(
        model=model,
        keys=keys,
        param_names=tuple(names),
        shared_names=common,
        shared=dict(zip(common, params[0, cols_s].tolist())),
        shared_stderr=dict(zip(common, s_err.tolist())),
        shared_covariance=cs * factor,
        params=params,
        stderr=stderr,
        chi2=chi2,
        n_points=n_points,
        total_chi2=total,
        reduced_chi2=total / dof if dof > 0 else math.inf,
        dof=dof,
        n_steps=steps,
        converged=converged,
        message=message,
        notes=notes,
        bounds={} if held is None else held.bounds,
        fixed={} if held is None else held.fixed,
        tied={} if held is None else {name: e.text for name, e in held.ties.items()},
        loss="linear" if held is None or held.robust is None else held.robust[0],
        f_scale=1.0 if held is None or held.robust is None else held.robust[1],
    )


def _tied_stderr(held: Held, solver, cs, cl, cross, factor) -> np.ndarray:
    """(B, tied): the tied parameters' standard errors, sqrt(diag(G C Gᵀ)) with G = d user / d free (the ties'
    gradient) and C each set's covariance of its free parameters, shared and own."""
    B, F = len(cl), len(held.free)
    s, own = np.array(solver.idx_s, dtype=int), np.array(solver.idx_l, dtype=int)
    C = np.empty((B, F, F))
    C[:, s[:, None], s] = cs
    C[:, own[:, None], own] = cl
    C[:, own[:, None], s] = cross
    C[:, s[:, None], own] = np.swapaxes(cross, 1, 2)
    names = list(held.view.user_names)
    free_user = held.user[:, [names.index(n) for n in held.free]]
    with torch.no_grad():
        G = held.view.gradient(free_user).double().cpu().numpy()  # (B, P, F)
    with np.errstate(invalid="ignore"):
        spread = np.einsum("bpf,bfg,bpg->bp", G, C * factor, G)
    return np.sqrt(np.clip(spread, 0, None))[:, [names.index(n) for n in held.ties]]


def _bound_notes(params, names, common, bounds) -> list[str]:
    """Which parameters ended on a bound: a shared one by name, a set's own by how many sets."""
    notes = []
    for name, bound in bounds.items():
        column = params[:, names.index(name)]
        values = column[:1] if name in common else column  # (a shared parameter is one value)
        sides = [side for side in (at_bounds({name: v}, {name: bound}).get(name) for v in values) if side]
        if sides and name in common:
            notes.append(bound_note(name, sides[0], bounds))
        elif sides:
            notes.append(f"{name} is at a bound in {len(sides)} of {len(params)} sets")
    return notes

"""What a FitResult says beyond its parameters, by the delta method through its covariance: the band around the
fitted curve (``FitResult.band``) and quantities derived from the parameters (``FitResult.derive``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._threads import TRANSFORMS


def band(result, x, level: float | None = 0.95, kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
    """FitResult.band: (lower, upper) around the fitted curve at x."""
    from scipy.stats import t as student

    from .data import as_array
    from .errors import OptionError

    if kind not in ("confidence", "prediction"):
        raise OptionError(f"kind is 'confidence' or 'prediction', got {kind!r}.")
    if level is not None and not (isinstance(level, (int, float)) and 0 < level < 1):
        raise OptionError(f"level is a probability between 0 and 1 (such as 0.95), or None for ±1σ; got {level!r}.")
    if kind == "prediction" and result.sigma is not None:
        raise OptionError(
            "A prediction band needs the noise at a new x; this fit was given sigma, so it is not known "
            "there. Draw the confidence band, or add the noise you expect to it yourself."
        )
    xt = torch.as_tensor(as_array(x, "x"), dtype=torch.float64)
    p = torch.tensor(list(result.params.values()), dtype=torch.float64)
    with torch.no_grad():
        curve = result.model(xt, p).double()
    curve = curve.expand(xt.shape[:1]).numpy() if curve.ndim == 0 else curve.numpy()
    with TRANSFORMS:  # torch.func is not safe in two threads at once (gradfit._threads)
        jac = torch.func.jacfwd(lambda q: result.model(xt, q).expand(xt.shape[:1]))(p).numpy()  # (points, P)
    cov = np.asarray(result.covariance, dtype=np.float64)
    finite = np.isfinite(cov).all()
    variance = np.einsum("np,pq,nq->n", jac, cov, jac) if finite else np.full(len(curve), np.inf)
    if kind == "prediction":
        variance = variance + result.reduced_chi2
    dof = max(result.n_points - (result.n_params - len(result.fixed) - len(result.tied)), 1)
    scale = 1.0 if level is None else float(student.ppf((1 + level) / 2, dof))
    half = scale * np.sqrt(np.clip(variance, 0, None))
    return curve - half, curve + half


def derive(result, quantities: dict[str, str]) -> dict[str, tuple[float, float]]:
    """FitResult.derive: name -> (value, stderr), each kept in result.derived."""
    from .errors import ModelError
    from .params import expression_of_parameters

    if not isinstance(quantities, dict) or not quantities:
        raise ModelError('`derive` takes a dict of name -> expression, such as {"fwhm": "2.3548*sigma"}.')
    names = list(result.params)
    values = [torch.tensor(v, dtype=torch.float64) for v in result.params.values()]
    out = {}
    for name, text in quantities.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ModelError(f"A derived quantity needs a name such as 'fwhm', got {name!r}.")
        expression = expression_of_parameters(text, names, f"The quantity {name}", f"The quantity {name}")
        used = [names.index(n) for n in expression.param_names]
        value, grads = expression.value_and_gradient([], [values[i] for i in used])
        g = np.zeros(len(names))
        for i, d in zip(used, grads):
            g[i] = 0.0 if d is None else float(d)
        touched = g != 0
        cov = np.asarray(result.covariance)[np.ix_(touched, touched)]
        variance = float(g[touched] @ cov @ g[touched]) if touched.any() else 0.0
        value = float(value)
        out[name] = (value, math.sqrt(variance) if variance >= 0 else math.nan)
        result.derived[name] = {"expression": expression.text, "value": value, "stderr": out[name][1]}
    return out

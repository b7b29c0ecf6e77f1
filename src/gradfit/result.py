"""FitResult: what a fit found, how sure it is, and how it got there."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, GradfitError
from .history import History
from .models import Model
from .result_json import SAVE_FORMAT, history_from_json, number_from_json, numbers_from_json


@dataclass
class FitResult:
    """The outcome of ``gradfit.fit``: the answer, how sure it is, and how it was reached.

    ``print(result.report())`` shows it all; ``result.to_dict()`` gives it as JSON-ready data.

    Attributes:
        model: the model fitted.
        method: the method that ran ("linear", "lm", "gd", ...).
        params: name -> value, in the model's order.
        stderr: name -> standard error (inf where the data do not determine a parameter).
        covariance: (P, P) array in the order of ``param_names``, from the Jacobian at the solution, scaled by the
            reduced χ² as scipy's curve_fit does (unscaled with ``absolute_sigma``).
        rmse: the root mean squared residual, unweighted.
        r2: the coefficient of determination, unweighted.
        chi2: the sum of squared residuals, weighted by sigma when given.
        reduced_chi2: chi2 per degree of freedom.
        aic: Akaike's information criterion (as lmfit computes it).
        bic: the Bayesian information criterion (as lmfit computes it).
        n_points: the points fitted.
        n_steps: the steps the method took.
        converged: whether a stopping rule was met (False also when a parameter is undetermined).
        message: how the fit ended, in words.
        history: every step: loss, RMSE, gradient norm, parameters.
        n_dropped: points left out by ``nan_policy="omit"``.
        gap_to_optimum: for models linear in their parameters, how far the (weighted) RMSE is above the exact
            least-squares optimum, relative (0 = at it).
        optimum_rmse: that optimum's RMSE.
        learning_rate: the gradient method's rate (None for the others).
        dtype: torch's dtype of the computation.
        device: where it ran.
        notes: what the message adds (derivatives estimated, a rate chosen, ...).
        rank: the rank of the Jacobian at the solution; below ``n_params``, some parameter is undetermined.
        undetermined: the parameters the data do not determine.
        bounds: name -> (lower, upper), as given.
        fixed: name -> the value it was held at.
        tied: name -> the expression of the others it is tied to.
        loss: "linear" (least squares) or the robust loss.
        f_scale: where a robust loss starts to bend.
        at_bound: name -> "lower" or "upper", for parameters that ended on a bound.
        x: the data fitted (after ``nan_policy``), float64.
        y: the data's y.
        sigma: the data's errors, where given.
        sample_of: set when x, y and sigma are a random sample of this many points (a streamed fit).
        starts: with ``fit(starts=N)``: how many starts, how many reached the best χ², which failed.
        derived: name -> expression, value and standard error, from ``derive``.
        columns: role -> the data's column name (``{"x": "two_theta", "y": "counts"}``).
        intervals: name -> [(probability, limit), ...], from ``conf_interval``.
    """

    model: Model
    method: str
    params: dict[str, float]
    stderr: dict[str, float]
    covariance: np.ndarray
    rmse: float
    r2: float
    chi2: float
    reduced_chi2: float
    aic: float
    bic: float
    n_points: int
    n_steps: int
    converged: bool
    message: str
    history: History
    n_dropped: int = 0
    gap_to_optimum: float | None = None
    optimum_rmse: float | None = None
    learning_rate: float | None = None
    dtype: torch.dtype = torch.float64
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)
    rank: int = -1  # rank of the Jacobian at the solution; < n_params: some parameter is undetermined
    undetermined: tuple[str, ...] = ()  # parameters the data do not determine (stderr inf); then not converged
    bounds: dict = field(default_factory=dict)  # name -> (lower, upper), as given
    fixed: dict = field(default_factory=dict)  # name -> value, held fixed
    tied: dict = field(default_factory=dict)  # name -> the expression of the others it is tied to
    loss: str = "linear"  # least squares, or a robust loss (gradfit.losses.ROBUST)
    f_scale: float = 1.0  # where a robust loss starts to bend
    at_bound: dict = field(default_factory=dict)  # name -> 'lower' or 'upper': ended on that bound
    x: np.ndarray | None = field(default=None, repr=False)  # the data fitted (after nan_policy), float64
    y: np.ndarray | None = field(default=None, repr=False)
    sigma: np.ndarray | None = field(default=None, repr=False)
    sample_of: int | None = None  # set when x, y, sigma are a random sample of this many points (a streamed fit)
    starts: dict = field(default_factory=dict)  # fit(starts=N): {"n", "reached", "best_chi2", "failed"}
    derived: dict = field(default_factory=dict)  # name -> {"expression", "value", "stderr"}: derive()
    columns: dict = field(default_factory=dict)  # role -> the data's column name: {"x": "two_theta", "y": "counts"}
    intervals: dict = field(default_factory=dict)  # name -> [(probability, limit), ...]: conf_interval()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.params)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of the parameters (NaN where a standard error is 0 or infinite)."""
        s = np.sqrt(np.diag(self.covariance))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.covariance / np.outer(s, s)

    def predict(self, x) -> np.ndarray:
        """The fitted curve at ``x`` (float64).

        Args:
            x: where to evaluate it.

        Returns:
            np.ndarray: the curve's values.
        """
        from .data import as_array

        xt = torch.as_tensor(as_array(x, "x"), dtype=self.dtype, device=self.device)
        p = torch.tensor(list(self.params.values()), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return self.model(xt, p).double().cpu().numpy()

    def components(self, x) -> dict[str, np.ndarray]:
        """Each part of a sum at ``x`` (float64): the parts add up to ``predict(x)`` (lmfit's ``eval_components``).

        Parts are keyed by their prefix as the parameters carry it ('g1', 'g2', 'l'), or by their own name where a part
        keeps its parameters' names (an expression added to built-ins). A model that is not a sum is one part.

        Args:
            x: where to evaluate them.

        Returns:
            dict: part -> its values.
        """
        from .data import as_array

        xt = torch.as_tensor(as_array(x, "x"), dtype=self.dtype, device=self.device)
        p = torch.tensor(list(self.params.values()), dtype=self.dtype, device=self.device)
        parts = getattr(self.model, "parts", None)
        if parts is None:
            return {self.model.name: self.predict(x)}
        out, start = {}, 0
        with torch.no_grad():
            for prefix, part in zip(self.model.prefixes, parts):
                values = part(xt, p[start : start + part.n_params]).double().cpu().numpy()
                out[prefix or part.name] = np.broadcast_to(values, (len(xt),)).copy()
                start += part.n_params
        return out

    def band(self, x, level: float | None = 0.95, kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
        """The band around the fitted curve at ``x``: (lower, upper), float64.

        Args:
            x: where to evaluate it.
            level: the probability covered, by Student's t with the fit's degrees of freedom; None: ±1 standard
                deviation exactly (what plot_fit draws by default).
            kind: "confidence": where the curve itself lies, from the covariance by the delta method
                (var f(x) = J(x) C J(x)ᵀ, J the curve's exact derivative by the parameters); "prediction": where a new
                point would fall, the noise's variance (the reduced χ²) added — only for fits without ``sigma``.

        Returns:
            tuple: (lower, upper) arrays.
        """
        from .result_uncertainty import band

        return band(self, x, level, kind)

    def derive(self, quantities: dict[str, str]) -> dict[str, tuple[float, float]]:
        """Quantities computed from the parameters, with standard errors.

        Each expression is parsed by gradfit's expression language (never eval), its names the parameters; its error is
        propagated through the covariance by the delta method, sqrt(g C gᵀ) with g its exact gradient. Kept in
        ``derived``, shown by ``report()`` and saved with the result.

        Args:
            quantities: name -> expression, ``{"fwhm": "2.3548*sigma", "half_life": "log(2)/k"}``.

        Returns:
            dict: name -> (value, stderr).
        """
        from .result_uncertainty import derive

        return derive(self, quantities)

    def conf_interval(self, sigmas=(1, 2, 3), names=None) -> dict[str, list[tuple[float, float]]]:
        """Profile-likelihood confidence intervals, as lmfit's ``conf_interval``.

        For each free parameter, the values on each side where the fit with that parameter held and the others re-fitted
        is worse by the F-test's margin for each level: asymmetric where the likelihood is. All the re-fits run as one
        batch. Kept in ``intervals``, shown by ``report()``.

        Args:
            sigmas: the levels, in σ (1, 2, 3); numbers under 1 are probabilities.
            names: the parameters (default: every free one).

        Returns:
            dict: lmfit's layout, name -> [(probability, lower), ..., (0, best), ..., (probability, upper)]; a limit
                never reached is ±inf, one a bound cuts off is the bound.
        """
        from .profile import conf_interval

        found = conf_interval(self, sigmas, names)
        self.intervals.update(found)
        return found

    def conf_interval2d(
        self, x_name: str, y_name: str, nx: int = 10, ny: int = 10, limits=None, nsigma=5, chi2_out: bool = False
    ):
        """lmfit's ``conf_interval2d``: two parameters held on a grid, the others re-fitted at every point, all at once.

        Args:
            x_name: the first parameter.
            y_name: the second parameter.
            nx: grid points along the first.
            ny: grid points along the second.
            limits: ((x_lo, x_hi), (y_lo, y_hi)); default ``nsigma`` standard errors each way.
            nsigma: the grid's half width in standard errors, when ``limits`` is not given.
            chi2_out: return χ² itself instead of lmfit's √((χ² − χ²₀)/χ²_ν).

        Returns:
            tuple: (x values, y values, grid (ny, nx)).
        """
        from .profile import conf_interval2d

        return conf_interval2d(self, x_name, y_name, nx, ny, limits, nsigma, chi2_out)

    def conf_region(self, x_name: str, y_name: str, sigmas=(1, 2, 3), grid: int = 40, nsigma=None) -> dict:
        """The numbers behind ``plots.plot_conf_interval2d``: χ² over a grid of two parameters, the others re-fitted.

        Args:
            x_name: the first parameter.
            y_name: the second parameter.
            sigmas: the levels, in σ.
            grid: the grid is grid x grid.
            nsigma: the grid's half width in standard errors (default: twice the widest level).

        Returns:
            dict: ``x``, ``y``, ``chi2`` on the grid, the χ² of each level (``levels``, with their
                ``probabilities``), the best χ² (``chi2_best``) and the χ² the covariance predicts (``ellipse``).
        """
        from .profile import region

        xs, ys, chi2, levels, probs, best, quadratic = region(self, x_name, y_name, sigmas, grid, nsigma)
        return {
            "x": xs,
            "y": ys,
            "chi2": chi2,
            "levels": levels,
            "probabilities": probs,
            "chi2_best": best,
            "ellipse": quadratic,
        }

    def save(self, path, *, data: bool = True) -> None:
        """Write the result to a JSON file (no pickle), written whole or not at all; ``gradfit.load_result`` reads it.

        The file holds the model (its name or expression; a Python function by its name, given again on load), the
        parameters, covariance, statistics, the history and the data's column names.

        Args:
            path: the file.
            data: keep the points fitted too, so that the loaded result predicts, draws and reports as this one does.
        """
        from .result_json import save

        save(self, path, data)

    def to_dict(self) -> dict:
        """A JSON-ready summary (infinite or undefined numbers become None)."""
        from .result_text import summary

        return summary(self)

    def report(self, min_correlation: float = 0.1) -> str:
        """A readable report: statistics, parameters with standard errors, correlations (and intervals, derived values).

        Args:
            min_correlation: correlations smaller than this (in size) are left out.

        Returns:
            str: the report.
        """
        from .result_text import report_text

        return report_text(self, min_correlation)

    def _repr_html_(self) -> str:
        """The result in a notebook: a small figure of the fit, the parameters, χ², and what to look at (strong
        correlations, parameters on their bounds)."""
        from .result_text import html_view

        return html_view(self)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v:.6g}" for k, v in self.params.items())
        return f"<FitResult {self.method}: {values}; rmse={self.rmse:.6g}, converged={self.converged}>"


# --- Saved results (the file's layout: gradfit.result_json) ------------------------------------------------------


def load_result(path, *, model=None) -> FitResult:
    """A result written by ``FitResult.save``.

    Args:
        path: the file.
        model: the Python function (or Model) it was fitted with, where it was one (a file cannot hold a function);
            built-ins and expressions are made again from the file.

    Returns:
        FitResult: the result as it was saved.
    """
    import json

    from .library import model_from_spec

    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"Result file '{path}' does not exist. Check the path.") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"'{path}' is not a saved gradfit result (not JSON: {str(e).splitlines()[0]}).") from None
    if not isinstance(saved, dict) or "gradfit_result" not in saved:
        raise DataError(f"'{path}' is not a saved gradfit result (written by FitResult.save).")
    if saved["gradfit_result"] != SAVE_FORMAT:
        raise DataError(
            f"'{path}' was saved in result format {saved['gradfit_result']!r}, and this gradfit reads format "
            f"{SAVE_FORMAT}: load it with the gradfit that wrote it, or upgrade."
        )
    try:
        made = model_from_spec(saved["model"], model)
        if list(made.param_names) != saved["param_names"]:
            raise DataError(f"'{path}': its model's parameters differ from the saved ones; was the file edited?")
        data = saved.get("data") or {}
        arrays = {
            k: None if data.get(k) is None else np.array(numbers_from_json(data[k]), dtype=np.float64) for k in "xy"
        }
        sigma = data.get("sigma")
        options = {f.name: saved[f.name] for f in fields(FitResult) if f.name in saved}
        options.update(
            model=made,
            params={k: number_from_json(v) for k, v in saved["params"].items()},
            stderr={k: number_from_json(v) for k, v in saved["stderr"].items()},
            covariance=np.array(numbers_from_json(saved["covariance"]), dtype=np.float64).reshape(
                len(made.param_names), -1
            ),
            history=history_from_json(saved["history"]),
            bounds={k: tuple(numbers_from_json(v)) for k, v in saved.get("bounds", {}).items()},
            derived={
                k: {**d, "value": number_from_json(d["value"]), "stderr": number_from_json(d["stderr"])}
                for k, d in saved.get("derived", {}).items()
            },
            undetermined=tuple(saved.get("undetermined", ())),
            intervals={
                k: [tuple(numbers_from_json(pair)) for pair in v] for k, v in saved.get("intervals", {}).items()
            },
            dtype=getattr(torch, saved.get("dtype", "float64")),
            device="cpu",  # (where the fit ran may not exist here)
            x=arrays["x"],
            y=arrays["y"],
            sigma=None if sigma is None else np.array(numbers_from_json(sigma), dtype=np.float64),
        )
        for name in ("rmse", "r2", "chi2", "reduced_chi2", "aic", "bic", "gap_to_optimum", "optimum_rmse"):
            options[name] = number_from_json(options.get(name))
        return FitResult(**options)
    except GradfitError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"'{path}' is not a complete saved gradfit result ({type(e).__name__}: {e}).") from None

"""BatchResult: what fit_many returns, a row per curve (tables, counts, a notebook's view)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .models import Model


STATUSES = ("converged", "max_steps", "diverged", "singular", "too_few_points")


@dataclass
class BatchResult:
    """Per-curve results of ``fit_many``: arrays with one row per curve.

    Attributes:
        model: the model fitted.
        method: the method that ran.
        params: (B, P) parameters, in the order of ``param_names``.
        stderr: (B, P) standard errors.
        rmse: (B,) root mean squared residuals, unweighted, over each curve's own points.
        chi2: (B,) weighted sums of squared residuals.
        n_points: (B,) points each curve had.
        n_steps: (B,) steps each curve took.
        status: (B,) "converged", "max_steps", "diverged", "singular" or "too_few_points".
        param_names: the parameters' names.
        notes: what every curve's fit shares (derivatives estimated, ...).
    """

    model: Model
    method: str
    params: np.ndarray  # (B, P)
    stderr: np.ndarray  # (B, P)
    rmse: np.ndarray  # (B,) unweighted, over each curve's own points
    chi2: np.ndarray  # (B,)
    n_points: np.ndarray  # (B,)
    n_steps: np.ndarray  # (B,)
    status: np.ndarray  # (B,) one of STATUSES
    param_names: tuple[str, ...] = field(default=())
    notes: list[str] = field(default_factory=list)  # what every curve's fit shares (derivatives estimated, ...)

    @property
    def converged(self) -> np.ndarray:
        return self.status == "converged"

    def __len__(self) -> int:
        return len(self.status)

    def counts(self) -> dict[str, int]:
        """How many curves ended in each status."""
        values, counts = np.unique(self.status, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}

    def columns(self) -> dict[str, np.ndarray]:
        """The result as named columns: each parameter, its ``_stderr``, rmse, chi2, n_points, n_steps, converged,
        status.

        Returns:
            dict: column name -> array (B,).
        """
        out = {}
        for i, name in enumerate(self.param_names):
            out[name] = self.params[:, i]
        for i, name in enumerate(self.param_names):
            out[f"{name}_stderr"] = self.stderr[:, i]
        out.update(
            rmse=self.rmse,
            chi2=self.chi2,
            n_points=self.n_points,
            n_steps=self.n_steps,
            converged=self.converged,
            status=self.status,
        )
        return out

    def to_pandas(self):
        """The result as a pandas DataFrame, one row per curve (the columns of ``columns()``).

        Returns:
            pandas.DataFrame: the table.
        """
        import pandas as pd

        return pd.DataFrame(self.columns())

    def to_arrow(self):
        """The result as a pyarrow Table, one row per curve (the columns of ``columns()``).

        Returns:
            pyarrow.Table: the table.
        """
        import pyarrow as pa

        return pa.table({k: pa.array(v) for k, v in self.columns().items()})

    def __repr__(self) -> str:
        return f"<BatchResult {self.method}: {len(self)} curves of {self.model.name}; {self.counts()}>"

    def _repr_html_(self, head: int = 5) -> str:
        """The result in a notebook: curves by status, the first rows, a histogram of the first parameter."""
        import html

        from .plots import inline_image, plot_histogram

        counts = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in self.counts().items())
        names = list(self.param_names)
        top = "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>rmse</th><th>status</th>"
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{v:.6g}</td>" for v in self.params[i])
            + f"<td>{self.rmse[i]:.4g}</td><td>{html.escape(str(self.status[i]))}</td></tr>"
            for i in range(min(head, len(self)))
        )
        picture = ""
        if names and self.converged.any():
            picture = inline_image(plot_histogram(self), f"histogram of {names[0]}")
        return (
            f"<div><b>{len(self):,} curves of {html.escape(self.model.name)}</b> by {html.escape(self.method)}"
            f"<table><tr><th>status</th><th>curves</th></tr>{counts}</table>"
            f"<table><tr>{top}</tr>{rows}</table>{'<p>…</p>' if len(self) > head else ''}{picture}</div>"
        )


def host_result(model: Model, p, stderr, rmse, chi2, n_points, steps, status) -> dict:
    """The per-curve arrays, back on the host as numpy (status as codes into STATUSES)."""
    status = status.clone()
    status[n_points < model.n_params] = 4
    codes = status.cpu().numpy()
    params = p.detach().double().cpu().numpy()
    params[codes == 4] = np.nan  # no fit without enough points
    return {
        "params": params,
        "stderr": stderr.double().cpu().numpy(),
        "rmse": rmse.double().cpu().numpy(),
        "chi2": chi2.double().cpu().numpy(),
        "n_points": n_points.long().cpu().numpy(),
        "n_steps": steps.cpu().numpy(),
        "status": codes.astype(np.int8),
    }

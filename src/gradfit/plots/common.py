"""What every figure shares: the article's colours, the run's data and names, sampling, log axes, the
paper style, the formats figures are written in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from ..history import History
from ..models import Model


DATA_COLOR = "C0"  # matplotlib's default blue, as in the article's scatter
PRED_COLOR = "red"  # the article's predictions
COMPONENT_COLORS = ("C2", "C4", "C1", "C5", "C6", "C8")  # the parts of a sum, dashed (never red or blue)
SMOOTH_POINTS = 400  # points on a fitted curve drawn between the data
LANDSCAPE_GRID = 80  # the loss is evaluated on an 80 x 80 grid
FIGURE_POINTS = 10_000  # figures draw at most this many points: of more, a random sample (and say so)
STEPS_MIN_WIDTH = 9.0  # inches: a steps figure of few panels is at least this wide
DENSE_POINTS = 60  # of more points, a step's predictions are drawn as a line
LOSS_BLOCK = 1 << 18  # grid points x data points evaluated at once for a landscape (2 MB per array)


@dataclass
class Trace:
    """A run that is not a FitResult (the demo's): the model, the data and the history."""

    model: Model
    x: object
    y: object
    history: History
    optimum_rmse: float | None = None
    sigma: object = None


def spread(first: int, last: int, n: int = 10) -> list[int]:
    """At most ``n`` whole numbers evenly spread from ``first`` to ``last``, both included."""
    count = last - first + 1
    if count <= n:
        return list(range(first, last + 1))
    return sorted({first + round(i * (count - 1) / (n - 1)) for i in range(n)})


def wrapped(text: str, fig, ax, fontsize: float = 10) -> str:
    """``text`` in lines that fit the axes' width (a title never runs past the figure's edges)."""
    import textwrap

    width_in = fig.get_figwidth() * ax.get_position().width
    per_line = max(20, int(width_in * 72 / (0.55 * fontsize)))  # characters of ~0.55 em
    return "\n".join(textwrap.wrap(text, per_line))


RUN_COLORS = ("C1", "C2", "C4", "C5", "C6", "C8", "C9", "C7")  # learning-rate runs: never red (predictions) or blue


def rate_verdict(rate: float, limit: float | None) -> str:
    """Where a learning rate stands against the stability limit 2/λmax of gradient descent on the loss."""
    if not limit:
        return ""
    if rate >= limit:
        return "above the limit, diverges"
    return "just under the limit" if rate >= 0.75 * limit else "below the limit, crawls"


FORMATS = ("png", "svg", "pdf")  # what write_plots writes: raster, and vector that stays vector


def check_formats(formats) -> tuple[str, ...]:
    """('png', 'svg') from a sequence or 'png,svg'; an unknown one refused naming the ones there are."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [str(f).strip().lower().lstrip(".") for f in items]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ValueError(f"Figures are written as {', '.join(FORMATS)}; got {', '.join(unknown) or 'none'}.")
    return tuple(dict.fromkeys(items))


PAPER = {  # publication defaults: small, clean, vector-friendly
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays text (editable, searchable)
    "svg.fonttype": "none",  # text in SVGs as text, not paths
}


def style(kind: str = "paper"):
    """A context in which figures get publication defaults: ``with gradfit.plots.style(): fig = plot_fit(r)``.

    Small fonts, thin lines, no top and right spines, 300 dpi, text kept as text in PDF and SVG. The article's look
    stays the default outside it.

    Args:
        kind: the style; "paper" is the one there is.

    Returns:
        A context manager (matplotlib's rc_context).
    """
    import matplotlib

    if kind != "paper":
        raise ValueError(f"The one style is 'paper'; got {kind!r}.")
    return matplotlib.rc_context(PAPER)


def plain_log(axis) -> None:
    """Plain numbers on a log axis (5, 0.05, 2e+03), not 5×10⁰; its minor ticks labelled only where the axis
    spans less than two decades (where they are all the labels there are)."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def run_label(item) -> str:
    if isinstance(item, History):
        return "run"
    return getattr(item, "method", None) or "run"


def run_data(run, what: str):
    """x, y and sigma to draw, as the run holds them (the demo's float32 tensors stay tensors); of more than
    FIGURE_POINTS points, a random sample (the same each time). A result that holds no data cannot be drawn."""
    if run.x is None or run.y is None:
        raise ValueError(
            f"{what} draws the data, and this result holds none (a fit on a Dask cluster keeps its "
            "rows on the workers, a result saved with data=False none); fit a sample in memory to draw it."
        )
    x, y, sigma = run.x, run.y, getattr(run, "sigma", None)
    if len(y) > FIGURE_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(y), FIGURE_POINTS, replace=False))
        sigma = None if sigma is None else sigma[np.ix_(keep, keep)] if sigma.ndim == 2 else sigma[keep]
        x, y = x[keep], y[keep]
    return x, y, sigma


def sampled_note(run) -> str:
    """'a random sample of 10,000 of 2,000,000 points' when the figures draw a sample of the points fitted
    (a streamed fit keeps one; more than FIGURE_POINTS in memory are sampled to draw), else ''."""
    if run.y is None:
        return ""
    shown = min(len(run.y), FIGURE_POINTS)
    total = getattr(run, "sample_of", None) or len(run.y)
    return f"a random sample of {shown:,} of {total:,} points" if shown < total else ""


def axis_names(run) -> tuple[str, str]:
    """The x and y axes' labels: the data's column names where the fit knows them (a file's, a DataFrame's),
    else 'x' and 'y'."""
    columns = getattr(run, "columns", None) or {}
    x_name = columns.get("x", "x")
    return (", ".join(x_name) if isinstance(x_name, (list, tuple)) else str(x_name)), str(columns.get("y", "y"))


def data_label(run) -> str:
    """The data's legend entry: 'data', or 'data (a random sample of 10,000 of N points)'."""
    sampled = sampled_note(run)
    return f"data ({sampled})" if sampled else "data"


def panel_dot_style(n: int) -> dict:
    """Marker options for a small panel of n points: smaller as the points grow (a panel 1.5 inches wide holds
    15 of the article's dots, not 300)."""
    if n <= 20:
        return {}
    return {"s": float(np.clip(600 / n, 1, 20)), "linewidths": 0, **({"alpha": 0.5} if n > 500 else {})}


def dot_style(n: int) -> dict:
    """Marker options for a scatter of n points: the default for a few, small and see-through for thousands."""
    return {} if n <= 1000 else {"s": 4, "alpha": 0.3, "linewidths": 0}


def check_one_variable(model: Model, what: str) -> None:
    variables = getattr(model, "variables", ("x",))
    if variables is not None and len(variables) != 1:
        raise ValueError(
            f"{what} draws curves of one variable; {model.name} has {len(variables)} ({', '.join(variables)})."
        )


def predict_curve(model: Model, x, params) -> np.ndarray:
    """Predictions at x, in x's own precision when x is a tensor (the demo's float32), else float64."""
    dtype = x.dtype if isinstance(x, torch.Tensor) else torch.float64
    xt = (
        torch.as_tensor(x, dtype=dtype)
        if isinstance(x, torch.Tensor)
        else torch.as_tensor(np.asarray(x, dtype=np.float64))
    )
    p = torch.tensor(list(params), dtype=dtype)
    with torch.no_grad():
        return model(xt, p).double().numpy()


def figure_and_axis(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def as_numpy(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64) if values is not None else None


def inline_image(fig, alt: str, dpi: float = 80) -> str:
    """A figure as an <img> holding its PNG (a data: URI), for an HTML view that must stand alone."""
    import base64
    import html
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

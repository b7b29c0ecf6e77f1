"""Pictures of finished runs. Nothing here fits; everything returns a matplotlib Figure.

A *run* is a FitResult, or anything with ``model``, ``x``, ``y`` and ``history``
(the demo's ``Trace``). Figures are built with ``matplotlib.figure.Figure``, not
pyplot, so drawing needs no GUI backend and keeps no global state; they still show
inline in a notebook. Colours follow the seed article: data blue, predictions red.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ._threads import TRANSFORMS
from .history import History
from .models import Model
from .solvers.problem import Whiten

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


def plot_data(x, y, *, ax=None, title: str | None = None, xlabel: str = "x", ylabel: str = "y") -> Figure:
    """The data as a blue scatter.

    Args:
        x: the points' x.
        y: the points' y.
        ax: the user's axis to draw into.
        title: the title (default: none).
        xlabel: the x axis's label.
        ylabel: the y axis's label.

    Returns:
        Figure: the figure drawn into.
    """
    fig, ax = _fig_ax(ax, figsize=(6.4, 4.8))
    ax.scatter(_np(x), _np(y), color=DATA_COLOR, label="data", **_dots(len(_np(y))))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def plot_steps(
    run,
    steps: Sequence[int] | None = None,
    ncols: int = 10,
    *,
    ylim: tuple[float, float] | None = None,
    panel_size: tuple[float, float] = (1.5, 3.0),
    like: Figure | None = None,
    axes=None,
) -> Figure:
    """The article's row of panels, one per step: data in blue, that step's predictions in red.

    Each panel shows the predictions the step measured its loss on (the parameters it started from), as the article's
    ``show_plot(step(params))`` does.

    Args:
        run: a FitResult (or a Trace of the demo, or a History with its data).
        steps: step numbers (default: ``ncols`` spread over the run); more than ``ncols`` wrap into rows.
        ncols: panels per row.
        ylim: every panel's y-axis (the article uses -75..120; default: automatic, shared).
        panel_size: one panel's (width, height) in inches.
        like: an earlier figure of the same shape whose margins to reuse instead of computing a tight layout again
            (the slowest part of drawing).
        axes: the user's axes, one per step, to draw into (their figure's layout is left to the user).

    Returns:
        Figure: the figure drawn into.
    """
    history = run.history
    _one_variable(run.model, "plot_steps")
    if not len(history):
        raise ValueError("The history has no steps to draw.")
    first = history[0].step
    steps = list(steps) if steps is not None else spread(first, history.last_step, ncols)
    rows = math.ceil(len(steps) / ncols)
    cols = min(len(steps), ncols)
    # a run of few steps gets wider panels (never one tiny panel), a long one the article's narrow ones
    width = max(panel_size[0], STEPS_MIN_WIDTH / cols) if cols < STEPS_MIN_WIDTH / panel_size[0] else panel_size[0]
    own_axes = axes
    if axes is None:
        fig = Figure(figsize=(width * cols, panel_size[1] * rows))
        axes = fig.subplots(rows, cols, squeeze=False, sharey=ylim is None).ravel()
    else:
        axes = np.ravel(axes)
        if len(axes) < len(steps):
            raise ValueError(f"plot_steps draws {len(steps)} steps; {len(axes)} axes were given.")
        fig = axes[0].figure
    shown, y, _ = _data(run, "plot_steps")
    x, y = _np(shown), _np(y)
    order = np.argsort(x)
    dots = _panel_dots(len(x))
    x_name, y_name = axis_names(run)
    dense = len(x) > DENSE_POINTS  # predictions of many points read better as a line than as dots
    for k, (ax, step) in enumerate(zip(axes, steps)):
        preds = _predict(run.model, shown, history.params_before(step - first))
        ax.scatter(x, y, color=DATA_COLOR, **dots)
        if dense:
            ax.plot(x[order], preds[order], color=PRED_COLOR, lw=1.2)
        else:
            ax.scatter(x[order], preds[order], color=PRED_COLOR, **dots)
        ax.set_title(f"step {step}", fontsize=9)
        if ylim is not None:
            ax.set_ylim(*ylim)
            outside = (preds < ylim[0]) | (preds > ylim[1])
            if outside.any():  # the frame hides them: say where they went, as the playground does
                extreme = preds[np.argmax(np.where(np.isfinite(preds), np.abs(preds), 0))]
                ax.annotate(  # above the panel, where it covers no point
                    f"predictions reach {extreme:.2g}",
                    (0.5, 1.0),
                    xycoords="axes fraction",
                    xytext=(0, 14),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    color=PRED_COLOR,
                )
        if k >= len(steps) - cols:  # the bottom row names the axis
            ax.set_xlabel(x_name, fontsize=8)
    axes[0].set_ylabel(y_name, fontsize=8)
    for ax in axes[len(steps) :]:
        ax.set_visible(False)
    sampled = _sampled(run)
    if sampled:
        fig.suptitle(sampled.capitalize(), fontsize=9)
    if own_axes is not None:  # (the user's figure: its layout is theirs)
        return fig
    if like is None:
        fig.tight_layout()
    else:
        sp = like.subplotpars
        fig.subplots_adjust(
            left=sp.left, right=sp.right, bottom=sp.bottom, top=sp.top, wspace=sp.wspace, hspace=sp.hspace
        )
    return fig


def plot_fit(
    result,
    *,
    points: int = SMOOTH_POINTS,
    axes=None,
    band: str | None = "confidence",
    level: float | None = None,
    components: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = "",
) -> Figure:
    """Data, the fitted curve drawn smoothly, a band around it, each part of a sum dashed, and residuals below.

    Residuals are normalized (residual/σ) when the fit had sigma, whitened with a covariance matrix. Axis labels are
    the data's column names.

    Args:
        result: a FitResult.
        points: points of the drawn curve.
        axes: a (curve, residuals) pair of the user's axes to draw into, or one axis (no residuals).
        band: "confidence" (where the curve lies), "prediction" (where a new point would fall) or None.
        level: the band's probability (0.95), or None for ±1σ exactly (``FitResult.band`` computes it).
        components: draw each part of a sum of models dashed.
        xlabel: replaces the x column's name (units: "2θ (deg)").
        ylabel: replaces the y column's name.
        title: "" for the default, None for none.

    Returns:
        Figure: the figure drawn into.
    """
    _one_variable(result.model, "plot_fit")
    x, y, sigma = (_np(a) for a in _data(result, "plot_fit"))
    if axes is None:
        fig = Figure(figsize=(7, 6))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        top, bottom = (axes, None) if not isinstance(axes, (list, tuple, np.ndarray)) else tuple(axes)
        fig = top.figure
    x_name, y_name = axis_names(result)
    grid = np.linspace(x.min(), x.max(), points)
    params = np.array(list(result.params.values()))
    curve = _predict(result.model, grid, params)
    if sigma is not None and len(x) <= 1000:  # error bars on thousands of points only blot them out
        yerr = np.sqrt(np.diag(sigma)) if sigma.ndim == 2 else sigma  # (a covariance matrix: each point's own)
        top.errorbar(x, y, yerr=yerr, fmt="none", ecolor=DATA_COLOR, alpha=0.5)
    top.scatter(x, y, color=DATA_COLOR, label=data_label(result), zorder=3, **_dots(len(x)))
    top.plot(grid, curve, color=PRED_COLOR, label="fit", zorder=4)
    if band is not None and np.isfinite(np.asarray(result.covariance)).all():
        lower, upper = result.band(grid, level=level, kind=band)
        what = "±1σ" if level is None else f"{level:.0%}"
        top.fill_between(grid, lower, upper, color=PRED_COLOR, alpha=0.2, label=f"{what} {band} band")
    parts = result.components(grid) if components and getattr(result.model, "parts", None) else {}
    for k, (name, values) in enumerate(parts.items()):
        top.plot(grid, values, color=COMPONENT_COLORS[k % len(COMPONENT_COLORS)], ls="--", lw=1.2, label=name)
    top.set_ylabel(y_name if ylabel is None else ylabel)
    if title is not None:
        top.set_title(title or f"{result.model.name}: RMSE {result.rmse:.4g}, R² {result.r2:.4f}")
    top.legend(fontsize=8 if parts else None)
    if bottom is None:
        top.set_xlabel(x_name if xlabel is None else xlabel)
        return fig
    residuals = y - _predict(result.model, x, params)
    label = "residual"
    if sigma is not None and sigma.ndim == 1:
        residuals, label = residuals / sigma, "residual / σ"
    elif sigma is not None:
        residuals, label = Whiten(torch.as_tensor(sigma))(torch.as_tensor(residuals)).numpy(), "whitened residual"
    bottom.axhline(0, color="0.5", lw=1)
    bottom.scatter(x, residuals, color=DATA_COLOR, **(_dots(len(x)) or {"s": 12}))
    bottom.set_xlabel(x_name if xlabel is None else xlabel)
    bottom.set_ylabel(label)
    if axes is None:
        fig.tight_layout()
    return fig


def plot_loss(results, labels: Sequence[str] | None = None, *, ax=None) -> Figure:
    """RMSE against step on a log axis, for one run or several overlaid.

    The exact optimum is drawn as a dashed line when a run knows it (models linear in their parameters). A run whose
    history ends early because it diverged is drawn up to its last finite step.

    Args:
        results: a FitResult, a Trace or a History, or a list of them.
        labels: one label per run, for the legend.
        ax: the user's axis to draw into.

    Returns:
        Figure: the figure drawn into.
    """
    items = results if isinstance(results, (list, tuple)) else [results]
    labels = list(labels) if labels is not None else [_label(r) for r in items]
    fig, ax = _fig_ax(ax, figsize=(7, 4.5))
    optimum = None
    for item, label in zip(items, labels):
        history = item if isinstance(item, History) else item.history
        steps = [r.step for r in history]
        ax.plot(steps, history.rmse, marker="." if len(steps) <= 50 else None, label=label)
        optimum = optimum or getattr(item, "optimum_rmse", None)
    if optimum:
        ax.axhline(optimum, color="0.3", ls="--", lw=1, label=f"exact optimum ({optimum:.4g})")
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_xlabel("step")
    ax.set_ylabel("RMSE (before the step)")
    ax.set_title("How the error fell")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_params(result, *, axes=None) -> Figure:
    """Each parameter's value after every step, with its final value dashed.

    Args:
        result: a FitResult (or a Trace, or a History).
        axes: one of the user's axes per parameter to draw into.

    Returns:
        Figure: the figure drawn into.
    """
    history = result.history
    names = history.param_names
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    if axes is None:
        fig = Figure(figsize=(4 * cols, 2.8 * rows))
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
    else:
        axes = np.ravel(axes)
        if len(axes) < len(names):
            raise ValueError(f"plot_params draws {len(names)} parameters; {len(axes)} axes were given.")
        fig = axes[0].figure
    steps = [0] + [r.step for r in history]
    values = np.array([history.init_params] + [r.params for r in history])
    for i, (ax, name) in enumerate(zip(axes, names)):
        ax.plot(steps, values[:, i], color=PRED_COLOR)
        ax.axhline(values[-1, i], color="0.4", ls="--", lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_landscape(
    result, params: tuple[str, str] | None = None, *, grid: int = LANDSCAPE_GRID, ax=None, title: str | None = ""
) -> Figure:
    """Contours of the loss over two parameters, the others held at their final values, with the optimizer's path.

    The range covers the path and the end.

    Args:
        result: a FitResult (or a Trace of the demo).
        params: the two parameters' names (default: the first two free ones).
        grid: the contours' grid is grid x grid.
        ax: the user's axis to draw into.
        title: "" for the default (wrapped to the figure's width), None for none.

    Returns:
        Figure: the figure drawn into.
    """
    names = result.history.param_names
    params = landscape_params(result, params)
    aa, bb, loss, path, (i, j) = landscape_grid(result, params, grid)
    final = path[-1]

    fig, ax = _fig_ax(ax, (7, 5.5))
    finite = np.isfinite(loss) & (loss > 0)
    shown = np.log10(np.where(finite, loss, np.nan))
    filled = ax.contourf(aa, bb, shown, levels=30, cmap="viridis")
    ax.contour(aa, bb, shown, levels=15, colors="white", linewidths=0.4, alpha=0.6)
    fig.colorbar(filled, ax=ax, label="log10 loss (mean squared error)")
    ax.plot(path[:, i], path[:, j], color=PRED_COLOR, marker="." if len(path) <= 200 else None, lw=1.2, label="path")
    ax.scatter([path[0, i]], [path[0, j]], color="white", edgecolor="k", zorder=4, label="start")
    ax.scatter([final[i]], [final[j]], color=PRED_COLOR, marker="*", s=150, edgecolor="k", zorder=5, label="end")
    ax.set_xlabel(params[0])
    ax.set_ylabel(params[1])
    others = [n for n in names if n not in params]
    held = (
        f" ({others[0]} held at its final value)"
        if len(others) == 1
        else f" ({', '.join(others)} held at their final values)"
        if others
        else ""
    )
    sampled = _sampled(result)
    on = f" (on {sampled})" if sampled else ""
    if title is not None:
        ax.set_title(title or wrapped(f"The loss over {params[0]} and {params[1]}{held}{on}", fig, ax), fontsize=10)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def wrapped(text: str, fig, ax, fontsize: float = 10) -> str:
    """``text`` in lines that fit the axes' width (a title never runs past the figure's edges)."""
    import textwrap

    width_in = fig.get_figwidth() * ax.get_position().width
    per_line = max(20, int(width_in * 72 / (0.55 * fontsize)))  # characters of ~0.55 em
    return "\n".join(textwrap.wrap(text, per_line))


def plot_conf_interval2d(
    result,
    x_name: str | None = None,
    y_name: str | None = None,
    *,
    sigmas=(1, 2, 3),
    grid: int = 40,
    nsigma: float | None = None,
    ax=None,
) -> Figure:
    """The confidence regions of two parameters over the loss landscape, beside the covariance's ellipses.

    The landscape as plot_landscape draws it (the others held at the best fit), the profile-likelihood regions at each
    level of ``sigmas`` (the others re-fitted at every point of the grid, one batch; the F-test for two parameters),
    solid, and the ellipses the covariance predicts, dashed: where they part, the standard errors' straight-line
    picture is wrong.

    Args:
        result: a FitResult with its data.
        x_name: the first parameter (default: the first free one).
        y_name: the second parameter (default: the second free one).
        sigmas: the levels drawn, in standard deviations' worth of probability (1, 2, 3).
        grid: the regions' grid is grid x grid.
        nsigma: the half width of the region, in standard errors (default: twice the widest level).
        ax: the user's axis to draw into.

    Returns:
        Figure: the figure drawn into.
    """
    x_name, y_name = landscape_params(result, None if x_name is None and y_name is None else (x_name, y_name))
    found = result.conf_region(x_name, y_name, sigmas, grid, nsigma)
    xs, ys, chi2, levels, probs = (found[k] for k in ("x", "y", "chi2", "levels", "probabilities"))
    quadratic = found["ellipse"]
    fig, ax = _fig_ax(ax, (6.5, 5.2))
    names = list(result.params)
    i, j = names.index(x_name), names.index(y_name)
    aa, bb = np.meshgrid(xs, ys)
    points = np.repeat(np.array(list(result.params.values()))[None, :], aa.size, axis=0)
    points[:, i], points[:, j] = aa.ravel(), bb.ravel()
    loss = _losses(result, points).reshape(aa.shape)
    finite = np.isfinite(loss) & (loss > 0)
    filled = ax.contourf(aa, bb, np.log10(np.where(finite, loss, np.nan)), levels=30, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="log10 loss, the others held at the best fit")
    labels = {level: f"{p:.1%}" for level, p in zip(levels, probs)}
    profile = ax.contour(aa, bb, chi2, levels=levels, colors="white", linewidths=1.6)
    ax.clabel(profile, fmt=labels, fontsize=8)
    if np.isfinite(quadratic).all():
        ax.contour(aa, bb, quadratic, levels=levels, colors="white", linewidths=1.0, linestyles="dashed")
    ax.scatter(
        [result.params[x_name]], [result.params[y_name]], color="white", marker="*", s=140, edgecolor="k", zorder=5
    )
    ax.plot([], [], color="white", lw=1.6, label="profile likelihood (others re-fitted)")
    ax.plot([], [], color="white", lw=1.0, ls="--", label="covariance ellipse")
    ax.legend(loc="upper right", fontsize=8, facecolor="0.3", labelcolor="white", framealpha=0.8)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(f"Confidence regions of {x_name} and {y_name}", fontsize=10)
    fig.tight_layout()
    return fig


def landscape_params(result, params=None) -> tuple[str, str]:
    """The two parameters to draw the landscape over: as given, or the first two free ones."""
    names = result.history.param_names
    fixed = getattr(result, "fixed", {}) or {}
    free = [n for n in names if n not in fixed]
    params = tuple(params) if params is not None else tuple(free[:2])
    if len(params) != 2 or any(p not in free for p in params) or params[0] == params[1]:
        raise ValueError(
            f"A landscape needs two different free parameters of: {', '.join(free)}; got {', '.join(params) or 'none'}."
        )
    return params


def landscape_grid(result, params: tuple[str, str], grid: int = LANDSCAPE_GRID, *, include=None, cover=None, held=None):
    """The loss on a grid over two parameters (the others at their final values), and the path.

    Returns (A, B, loss, path, (i, j)): meshgrids, the loss there, the parameters at the
    start and after every step (rows), and the two parameters' indexes. The grid covers
    the path, or only its rows where ``cover`` (a boolean mask) is true, and the rows
    of ``include`` (say the optimum). ``held``: the values of the other parameters
    (default: the final ones).
    """
    names = result.history.param_names
    history = result.history
    i, j = names.index(params[0]), names.index(params[1])
    path = np.array([history.init_params] + [r.params for r in history])
    final = path[-1]
    box = path if cover is None else path[np.asarray(cover, dtype=bool)]
    if include is not None:
        box = np.vstack([box, np.asarray(include, dtype=np.float64).reshape(-1, path.shape[1])])
    lo, hi = box[:, [i, j]].min(axis=0), box[:, [i, j]].max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(final[[i, j]]) * 0.2, 1e-3))
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    aa, bb = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    points = np.repeat((final if held is None else np.asarray(held, dtype=np.float64))[None, :], aa.size, axis=0)
    points[:, i], points[:, j] = aa.ravel(), bb.ravel()
    return aa, bb, _losses(result, points).reshape(aa.shape), path, (i, j)


def animate(result, path, *, max_frames: int = 60, fps: int = 8) -> Path:
    """The fit evolving beside its growing loss curve, as a GIF (Pillow) or an MP4 (needs ffmpeg).

    Args:
        result: a FitResult (or a Trace of the demo, or a History with its data).
        path: the file to write; its suffix, .gif or .mp4, picks the format.
        max_frames: long runs are thinned to this many frames spread over the run.
        fps: frames per second.

    Returns:
        Path: the file written.
    """
    from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"An animation is written as .gif or .mp4, got '{path.name}'.")
    if suffix == ".mp4" and not FFMpegWriter.isAvailable():
        raise ValueError("Writing MP4 needs ffmpeg, which is not installed; write a .gif instead.")
    fig, frame, count = animation_figure(result, max_frames)
    movie = FuncAnimation(fig, frame, frames=count, blit=False)
    writer = PillowWriter(fps=fps) if suffix == ".gif" else FFMpegWriter(fps=fps)
    movie.save(path, writer=writer)
    return path


def animation_figure(result, max_frames: int = 60):
    """What animate films: (the figure, frame(k) that draws frame k, the number of frames)."""
    _one_variable(result.model, "animate")
    history = result.history
    if not len(history):
        raise ValueError("The history has no steps to animate.")
    first = history[0].step
    steps = spread(first, history.last_step, max_frames)
    x, y, _ = (_np(a) for a in _data(result, "animate"))
    grid = np.linspace(x.min(), x.max(), SMOOTH_POINTS)
    curves = [_predict(result.model, grid, history.params_before(s - first)) for s in steps]

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    left.scatter(x, y, color=DATA_COLOR, label=data_label(result), **_dots(len(x)))
    (line,) = left.plot(grid, curves[0], color=PRED_COLOR, label="fit")
    pad = 0.15 * (y.max() - y.min() or 1.0)
    left.set_ylim(y.min() - pad, y.max() + pad)
    x_name, y_name = axis_names(result)
    left.set_xlabel(x_name)
    left.set_ylabel(y_name)
    left.legend(loc="upper left")
    title = left.set_title(f"step {steps[0]}: RMSE {history.rmse[steps[0] - first]:.4g}")  # room for it
    all_steps = [r.step for r in history]
    right.plot(all_steps, history.rmse, color="0.8")
    (grown,) = right.plot([], [], color=PRED_COLOR)
    (dot,) = right.plot([], [], "o", color=PRED_COLOR)
    optimum = getattr(result, "optimum_rmse", None)
    if optimum:  # so that a plateau is not read as "converged"
        right.axhline(optimum, color="0.3", ls="--", lw=1, label=f"the optimum's RMSE ({optimum:.4g})")
        right.legend(loc="upper right", fontsize=8)
    right.set_yscale("log")
    plain_log(right.yaxis)
    right.set_xlabel("step")
    right.set_ylabel("RMSE")
    fig.tight_layout()

    def frame(k):
        step = steps[k]
        line.set_ydata(curves[k])
        upto = step - first + 1
        grown.set_data(all_steps[:upto], history.rmse[:upto])
        dot.set_data([step], [history.rmse[step - first]])
        title.set_text(f"step {step}: RMSE {history.rmse[step - first]:.4g}")
        return line, grown, dot, title

    return fig, frame, len(steps)


RUN_COLORS = ("C1", "C2", "C4", "C5", "C6", "C8", "C9", "C7")  # learning-rate runs: never red (predictions) or blue


def rate_verdict(rate: float, limit: float | None) -> str:
    """Where a learning rate stands against the stability limit 2/λmax of gradient descent on the loss."""
    if not limit:
        return ""
    if rate >= limit:
        return "above the limit, diverges"
    return "just under the limit" if rate >= 0.75 * limit else "below the limit, crawls"


def plot_learning_rates(
    runs: Sequence[tuple[str, "Trace", int | None]],
    *,
    ylim=None,
    rates: Sequence[float] | None = None,
    limit: float | None = None,
    optimum: float | None = None,
    axes=None,
) -> Figure:
    """The classic figure: the same descent at several learning rates, side by side.

    Left: RMSE against step. Right: the data and each run's last curve.

    Args:
        runs: (label, run, diverged_at) for each rate: ``diverged_at`` is the step where the loss blew up (None if it
            did not); such a run is drawn up to its last finite step, a cross where it diverged.
        ylim: the right panel's y-axis.
        rates: each run's learning rate, to say where it stands against ``limit``.
        limit: the stability limit 2/λmax: the title and each run's label say where its rate stands.
        optimum: the best RMSE, drawn dashed, so that a plateau above it is not read as success.
        axes: a (left, right) pair of the user's axes to draw into.

    Returns:
        Figure: the figure drawn into.
    """
    if axes is None:
        fig = Figure(figsize=(12, 4.5))
        left, right = fig.subplots(1, 2)
    else:
        left, right = axes
        fig = left.figure
    x, y = _np(runs[0][1].x), _np(runs[0][1].y)
    right.scatter(x, y, color=DATA_COLOR, label="data", zorder=3)
    grid = np.linspace(x.min(), x.max(), SMOOTH_POINTS)
    crosses = []
    for k, (label, run, diverged_at) in enumerate(runs):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        history = run.history
        steps = [r.step for r in history]
        verdict = rate_verdict(rates[k], limit) if rates is not None else ""
        name = f"{label} ({verdict})" if verdict else label
        text = f"{name}: diverged at step {diverged_at}" if diverged_at else f"{name}: RMSE {history.rmse[-1]:.3g}"
        left.plot(steps, history.rmse, color=color, marker="." if len(steps) <= 30 else None, label=text)
        if diverged_at:
            crosses.append((diverged_at, color))
        if len(history):
            right.plot(grid, _predict(run.model, grid, history.final_params), color=color, label=label)
    if optimum:
        left.axhline(optimum, color="0.3", ls="--", lw=1, label=f"the optimum's RMSE ({optimum:.4g})")
    left.set_yscale("log")
    plain_log(left.yaxis)
    for step, color in crosses:  # where it blew up: at the top of the axis (its RMSE there is not finite)
        left.plot(
            [step],
            [0.97],
            "x",
            color=color,
            markersize=11,
            mew=2.5,
            transform=left.get_xaxis_transform(),
            clip_on=False,
        )
    left.set_xlabel("step")
    left.set_ylabel("RMSE (before the step)")
    if limit:
        left.set_title(f"Learning rates against the stability limit 2/λmax = {limit:.3g}", fontsize=10)
    else:
        left.set_title("The same descent at each learning rate", fontsize=10)
    left.legend(fontsize=8)
    pad = 0.5 * (y.max() - y.min() or 1.0)
    right.set_ylim(*(ylim or (y.min() - pad, y.max() + pad)))
    right.set_xlabel("x")
    right.set_ylabel("y")
    right.set_title("Where each run ended")
    right.legend(fontsize=8)
    if axes is None:
        fig.tight_layout()
    return fig


def plot_histogram(batch, name: str | None = None, *, bins: int = 40, ax=None) -> Figure:
    """A histogram of one parameter over the converged curves of a fit_many result.

    Args:
        batch: a BatchResult.
        name: the parameter (default: the first).
        bins: the histogram's bins.
        ax: the user's axis to draw into.

    Returns:
        Figure: the figure drawn into.
    """
    names = list(batch.param_names)
    name = names[0] if name is None else name
    if name not in names:
        raise ValueError(f"No parameter {name!r}; the parameters are {', '.join(names)}.")
    values = batch.params[batch.converged, names.index(name)]
    values = values[np.isfinite(values)]
    fig, ax = _fig_ax(ax, (5, 3.2))
    ax.hist(values, bins=bins, color=DATA_COLOR, alpha=0.8)
    ax.set_xlabel(name)
    ax.set_ylabel("curves")
    ax.set_title(f"{name} over {len(values):,} converged curves", fontsize=9)
    if ax.figure is fig and fig.axes == [ax]:
        fig.tight_layout()
    return fig


def thumbnail(result) -> Figure | None:
    """A small plot_fit for a notebook's view of a result; None where there is no curve to draw."""
    fig = Figure(figsize=(4.6, 3.6))
    axes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    try:
        plot_fit(result, axes=axes, title=None)
    except ValueError:
        return None
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    if axes[0].get_legend() is not None:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def inline_image(fig, alt: str, dpi: float = 80) -> str:
    """A figure as an <img> holding its PNG (a data: URI), for an HTML view that must stand alone."""
    import base64
    import html
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


FORMATS = ("png", "svg", "pdf")  # what write_plots writes: raster, and vector that stays vector


def write_plots(result, folder, formats=("png",), dpi: float | None = None) -> tuple[list[str], list[str]]:
    """Write the fit, loss, steps, params and landscape figures into ``folder``, in every one of ``formats``.

    Args:
        result: a FitResult.
        folder: an existing folder to write into.
        formats: any of "png", "svg", "pdf" (svg and pdf keep lines and text as vectors).
        dpi: the resolution of png files (matplotlib's default: 100).

    Returns:
        tuple: (written, skipped): the files written, and why a figure does not apply (a surface has no curve to
            draw; a one-parameter model has no landscape).
    """
    formats = check_formats(formats)
    folder = Path(folder)
    written, skipped = [], []
    figures = {
        "fit": lambda: plot_fit(result),
        "loss": lambda: plot_loss(result),
        "steps": lambda: plot_steps(result),
        "params": lambda: plot_params(result),
        "landscape": lambda: plot_landscape(result),
    }
    for name, draw in figures.items():
        try:
            fig = draw()
        except ValueError as e:  # the figure does not apply to this model
            skipped.append(f"{name}.{formats[0]}: {e}")
            continue
        for kind in formats:
            fig.savefig(folder / f"{name}.{kind}", **({} if dpi is None else {"dpi": dpi}))
            written.append(f"{name}.{kind}")
    return written, skipped


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


# --- helpers ---------------------------------------------------------------------------------


def plain_log(axis) -> None:
    """Plain numbers on a log axis (5, 0.05, 2e+03), not 5×10⁰; its minor ticks labelled only where the axis
    spans less than two decades (where they are all the labels there are)."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _label(item) -> str:
    if isinstance(item, History):
        return "run"
    return getattr(item, "method", None) or "run"


def _data(run, what: str):
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


def _sampled(run) -> str:
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
    sampled = _sampled(run)
    return f"data ({sampled})" if sampled else "data"


def _panel_dots(n: int) -> dict:
    """Marker options for a small panel of n points: smaller as the points grow (a panel 1.5 inches wide holds
    15 of the article's dots, not 300)."""
    if n <= 20:
        return {}
    return {"s": float(np.clip(600 / n, 1, 20)), "linewidths": 0, **({"alpha": 0.5} if n > 500 else {})}


def _dots(n: int) -> dict:
    """Marker options for a scatter of n points: the default for a few, small and see-through for thousands."""
    return {} if n <= 1000 else {"s": 4, "alpha": 0.3, "linewidths": 0}


def _one_variable(model: Model, what: str) -> None:
    variables = getattr(model, "variables", ("x",))
    if variables is not None and len(variables) != 1:
        raise ValueError(
            f"{what} draws curves of one variable; {model.name} has {len(variables)} ({', '.join(variables)})."
        )


def _predict(model: Model, x, params) -> np.ndarray:
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


def _losses(result, points: np.ndarray) -> np.ndarray:
    """The (weighted) mean squared error at each row of ``points``, on the points the figures draw, a block of
    rows at a time (vectorised where the model allows), so that memory stays small whatever the grid."""
    model = result.model
    xs, ys, sigma = _data(result, "The loss landscape")
    x, y = torch.as_tensor(_np(xs)), torch.as_tensor(_np(ys))
    whiten = None if sigma is None else Whiten(torch.as_tensor(_np(sigma)))
    p = torch.as_tensor(points)
    # the answers go into one array made first: small tensors made between the blocks' would pin the
    # heap above them, and the process would grow by a block's size with every block
    out = torch.empty(len(p), dtype=torch.float64)
    rows = max(1, LOSS_BLOCK // max(len(y), 1))
    with torch.no_grad():
        for start in range(0, len(p), rows):
            block = p[start : start + rows]
            try:
                with TRANSFORMS:  # torch.func is not safe in two threads at once (gradfit._threads)
                    preds = torch.vmap(lambda q: model(x, q))(block)
            except Exception:  # a model torch.vmap cannot batch: one point at a time
                preds = torch.stack([model(x, q) for q in block])
            r = preds - y
            if whiten is not None:  # (B, N) rows: whitened as the Jacobian's columns are
                r = whiten(r.T).T
            out[start : start + rows] = (r**2).mean(dim=-1)
    return out.numpy()


def _fig_ax(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _np(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64) if values is not None else None

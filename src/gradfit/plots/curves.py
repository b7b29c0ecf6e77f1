"""Figures of the data and the fit: the article's row of step panels, the fitted curve with its band and
residuals, the loss and the parameters step by step, a fit_many histogram."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..history import History
from ..solvers.problem import Whiten
from .common import (
    COMPONENT_COLORS,
    DATA_COLOR,
    DENSE_POINTS,
    PRED_COLOR,
    SMOOTH_POINTS,
    STEPS_MIN_WIDTH,
    as_numpy,
    axis_names,
    check_one_variable,
    data_label,
    dot_style,
    figure_and_axis,
    panel_dot_style,
    plain_log,
    predict_curve,
    run_data,
    run_label,
    sampled_note,
    spread,
)


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
    fig, ax = figure_and_axis(ax, figsize=(6.4, 4.8))
    ax.scatter(as_numpy(x), as_numpy(y), color=DATA_COLOR, label="data", **dot_style(len(as_numpy(y))))
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
    check_one_variable(run.model, "plot_steps")
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
    shown, y, _ = run_data(run, "plot_steps")
    x, y = as_numpy(shown), as_numpy(y)
    order = np.argsort(x)
    dots = panel_dot_style(len(x))
    x_name, y_name = axis_names(run)
    dense = len(x) > DENSE_POINTS  # predictions of many points read better as a line than as dots
    for k, (ax, step) in enumerate(zip(axes, steps)):
        preds = predict_curve(run.model, shown, history.params_before(step - first))
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
    sampled = sampled_note(run)
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
    check_one_variable(result.model, "plot_fit")
    x, y, sigma = (as_numpy(a) for a in run_data(result, "plot_fit"))
    if axes is None:
        fig = Figure(figsize=(7, 6))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        top, bottom = (axes, None) if not isinstance(axes, (list, tuple, np.ndarray)) else tuple(axes)
        fig = top.figure
    x_name, y_name = axis_names(result)
    grid = np.linspace(x.min(), x.max(), points)
    params = np.array(list(result.params.values()))
    curve = predict_curve(result.model, grid, params)
    if sigma is not None and len(x) <= 1000:  # error bars on thousands of points only blot them out
        yerr = np.sqrt(np.diag(sigma)) if sigma.ndim == 2 else sigma  # (a covariance matrix: each point's own)
        top.errorbar(x, y, yerr=yerr, fmt="none", ecolor=DATA_COLOR, alpha=0.5)
    top.scatter(x, y, color=DATA_COLOR, label=data_label(result), zorder=3, **dot_style(len(x)))
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
    residuals = y - predict_curve(result.model, x, params)
    label = "residual"
    if sigma is not None and sigma.ndim == 1:
        residuals, label = residuals / sigma, "residual / σ"
    elif sigma is not None:
        residuals, label = Whiten(torch.as_tensor(sigma))(torch.as_tensor(residuals)).numpy(), "whitened residual"
    bottom.axhline(0, color="0.5", lw=1)
    bottom.scatter(x, residuals, color=DATA_COLOR, **(dot_style(len(x)) or {"s": 12}))
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
    labels = list(labels) if labels is not None else [run_label(r) for r in items]
    fig, ax = figure_and_axis(ax, figsize=(7, 4.5))
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
    fig, ax = figure_and_axis(ax, (5, 3.2))
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

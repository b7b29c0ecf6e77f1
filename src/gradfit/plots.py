"""Pictures of finished runs. Nothing here fits; everything returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so that
drawing needs no GUI backend, keeps no global state and imports less.
"""

from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.figure import Figure

from .history import History
from .models import Model

DATA_COLOR = "C0"  # matplotlib's default blue, as in the article's scatter
PRED_COLOR = "red"  # the article's predictions


def spread(first: int, last: int, n: int = 10) -> list[int]:
    """At most ``n`` whole numbers evenly spread from ``first`` to ``last``, both included."""
    count = last - first + 1
    if count <= n:
        return list(range(first, last + 1))
    return sorted({first + round(i * (count - 1) / (n - 1)) for i in range(n)})


def plot_data(x, y, *, ax=None, title: str | None = None) -> Figure:
    """The data as a blue scatter."""
    fig, ax = _fig_ax(ax, figsize=(6.4, 4.8))
    ax.scatter(_np(x), _np(y), color=DATA_COLOR, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    return fig


def plot_steps(
    model: Model,
    x,
    y,
    history: History,
    *,
    steps: Sequence[int] | None = None,
    ylim: tuple[float, float] | None = None,
    panel_size: tuple[float, float] = (1.5, 3.0),
    like: Figure | None = None,
) -> Figure:
    """A row of panels, one per step: data in blue, that step's predictions in red.

    Each panel shows the predictions the step computed its loss from (the
    parameters it started from), as the article's ``show_plot(step(params))`` does.
    ``steps`` are step numbers from the history (default: up to 10 spread over
    the run); ``ylim`` fixes the y-axis of every panel (the article uses -75..120).
    ``like`` reuses the margins of an earlier figure of the same shape instead of
    computing a tight layout again (the slowest part of drawing a row of panels).
    """
    if not len(history):
        raise ValueError("The history has no steps to draw.")
    first = history[0].step
    steps = list(steps) if steps is not None else spread(first, history.last_step)
    fig = Figure(figsize=(panel_size[0] * len(steps), panel_size[1]))
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    x_t = torch.as_tensor(x)
    for ax, step in zip(axes, steps):
        before = torch.tensor(history.params_before(step - first), dtype=x_t.dtype)
        with torch.no_grad():
            preds = model(x_t, before)
        ax.scatter(_np(x), _np(y), color=DATA_COLOR)
        ax.scatter(_np(x), _np(preds), color=PRED_COLOR)
        ax.set_title(f"step {step}", fontsize=9)
        if ylim is not None:
            ax.set_ylim(*ylim)
    if like is None:
        fig.tight_layout()
    else:
        sp = like.subplotpars
        fig.subplots_adjust(left=sp.left, right=sp.right, bottom=sp.bottom, top=sp.top,
                            wspace=sp.wspace, hspace=sp.hspace)
    return fig


def _fig_ax(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _np(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return values

"""Pictures of finished runs. Nothing here fits; everything returns a matplotlib Figure.

A *run* is a FitResult, or anything with ``model``, ``x``, ``y`` and ``history``
(the demo's ``Trace``). Figures are built with ``matplotlib.figure.Figure``, not
pyplot, so drawing needs no GUI backend and keeps no global state; they still show
inline in a notebook. Colours follow the seed article: data blue, predictions red.

The figures live in ``curves`` (data, steps, fit, loss, parameters, histogram), ``landscape`` (the loss over two
parameters, confidence regions), ``motion`` (the animation, learning rates compared) and ``files``
(``write_plots``), on what ``common`` holds; every public name is here.
"""

from .common import (
    COMPONENT_COLORS,
    DATA_COLOR,
    DENSE_POINTS,
    FIGURE_POINTS,
    FORMATS,
    LANDSCAPE_GRID,
    LOSS_BLOCK,
    PAPER,
    PRED_COLOR,
    RUN_COLORS,
    SMOOTH_POINTS,
    STEPS_MIN_WIDTH,
    Trace,
    as_numpy,
    axis_names,
    check_formats,
    data_label,
    inline_image,
    plain_log,
    predict_curve,
    rate_verdict,
    run_data,
    sampled_note,
    spread,
    style,
    wrapped,
)
from .curves import plot_data, plot_fit, plot_histogram, plot_loss, plot_params, plot_steps, thumbnail
from .files import write_plots
from .landscape import landscape_grid, landscape_params, losses_at, plot_conf_interval2d, plot_landscape
from .motion import animate, animation_figure, plot_learning_rates

__all__ = [
    "COMPONENT_COLORS",
    "DATA_COLOR",
    "DENSE_POINTS",
    "FIGURE_POINTS",
    "FORMATS",
    "LANDSCAPE_GRID",
    "LOSS_BLOCK",
    "PAPER",
    "PRED_COLOR",
    "RUN_COLORS",
    "SMOOTH_POINTS",
    "STEPS_MIN_WIDTH",
    "Trace",
    "animate",
    "animation_figure",
    "as_numpy",
    "axis_names",
    "check_formats",
    "data_label",
    "inline_image",
    "landscape_grid",
    "landscape_params",
    "losses_at",
    "plain_log",
    "plot_conf_interval2d",
    "plot_data",
    "plot_fit",
    "plot_histogram",
    "plot_landscape",
    "plot_learning_rates",
    "plot_loss",
    "plot_params",
    "plot_steps",
    "predict_curve",
    "rate_verdict",
    "run_data",
    "sampled_note",
    "spread",
    "style",
    "thumbnail",
    "wrapped",
    "write_plots",
]

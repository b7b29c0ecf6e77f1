"""Runs that move: the fit's animation, and the same descent at several learning rates."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import (
    DATA_COLOR,
    PRED_COLOR,
    RUN_COLORS,
    SMOOTH_POINTS,
    Trace,
    as_numpy,
    axis_names,
    check_one_variable,
    data_label,
    dot_style,
    plain_log,
    predict_curve,
    rate_verdict,
    run_data,
    spread,
)


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
    check_one_variable(result.model, "animate")
    history = result.history
    if not len(history):
        raise ValueError("The history has no steps to animate.")
    first = history[0].step
    steps = spread(first, history.last_step, max_frames)
    x, y, _ = (as_numpy(a) for a in run_data(result, "animate"))
    grid = np.linspace(x.min(), x.max(), SMOOTH_POINTS)
    curves = [predict_curve(result.model, grid, history.params_before(s - first)) for s in steps]

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    left.scatter(x, y, color=DATA_COLOR, label=data_label(result), **dot_style(len(x)))
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
    x, y = as_numpy(runs[0][1].x), as_numpy(runs[0][1].y)
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
            right.plot(grid, predict_curve(run.model, grid, history.final_params), color=color, label=label)
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

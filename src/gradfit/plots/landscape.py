"""The loss landscape over two parameters, with the path over it, and the confidence regions drawn on it."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .._threads import TRANSFORMS
from ..solvers.problem import Whiten
from .common import LANDSCAPE_GRID, LOSS_BLOCK, PRED_COLOR, as_numpy, figure_and_axis, run_data, sampled_note, wrapped


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

    fig, ax = figure_and_axis(ax, (7, 5.5))
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
    sampled = sampled_note(result)
    on = f" (on {sampled})" if sampled else ""
    if title is not None:
        ax.set_title(title or wrapped(f"The loss over {params[0]} and {params[1]}{held}{on}", fig, ax), fontsize=10)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


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
    fig, ax = figure_and_axis(ax, (6.5, 5.2))
    names = list(result.params)
    i, j = names.index(x_name), names.index(y_name)
    aa, bb = np.meshgrid(xs, ys)
    points = np.repeat(np.array(list(result.params.values()))[None, :], aa.size, axis=0)
    points[:, i], points[:, j] = aa.ravel(), bb.ravel()
    loss = losses_at(result, points).reshape(aa.shape)
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
    return aa, bb, losses_at(result, points).reshape(aa.shape), path, (i, j)


def losses_at(result, points: np.ndarray) -> np.ndarray:
    """The (weighted) mean squared error at each row of ``points``, on the points the figures draw, a block of
    rows at a time (vectorised where the model allows), so that memory stays small whatever the grid."""
    model = result.model
    xs, ys, sigma = run_data(result, "The loss landscape")
    x, y = torch.as_tensor(as_numpy(xs)), torch.as_tensor(as_numpy(ys))
    whiten = None if sigma is None else Whiten(torch.as_tensor(as_numpy(sigma)))
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

"""Every figure of a fit written into a folder, in the formats asked for."""

from __future__ import annotations

from pathlib import Path


from .common import check_formats
from .curves import plot_fit, plot_loss, plot_params, plot_steps
from .landscape import plot_landscape


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

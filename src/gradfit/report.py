"""A self-contained HTML report of a fit: works offline, with plotly.js embedded once.

The charts are plotly's (the plotly package ships plotly.js); a few lines of our own
script move them when the step slider moves. Nothing is fetched from anywhere.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

from . import plots

MAX_FRAMES = 100  # slider positions, spread over the run (each holds a curve: the page's size)
CURVE_POINTS = 200


def report_html(result, settings: dict | None = None, title: str | None = None) -> str:
    """The report as one HTML document (a string)."""
    import plotly.graph_objects as go

    history = result.history
    n = len(history)
    positions = plots.spread(0, n, MAX_FRAMES)  # k: the parameters after k steps
    after = [history.init_params] + [r.params for r in history]
    rmse_after = [r.rmse for r in history] + [result.rmse]  # the RMSE at the parameters after k steps
    x, y = (plots.as_numpy(a) for a in plots.run_data(result, "The report")[:2])  # (at most FIGURE_POINTS of them)
    drawn = thinned(n)  # the history's steps drawn: all of a short run, a long one's thinned
    x_name, y_name = plots.axis_names(result)
    one_variable = len(getattr(result.model, "variables", ("x",)) or ("x",)) == 1

    frames, grid = [], None
    if one_variable:
        grid = np.linspace(x.min(), x.max(), CURVE_POINTS)
        # (curves to 6 significant digits: a pixel is a thousandth of a chart; the page a third the size)
        frames = [[float(f"{v:.6g}") for v in plots.predict_curve(result.model, grid, after[k])] for k in positions]
    state = {
        "steps": positions,
        "rmse": [rmse_after[k] for k in positions],
        "params": [list(after[k]) for k in positions],
        "names": list(history.param_names),
        "curves": frames,
    }

    sections = []
    # the step viewer: fit at the chosen step, and where it is on the loss curve
    loss_fig = go.Figure()
    loss_fig.add_trace(
        go.Scatter(x=drawn, y=[rmse_after[k] for k in drawn], mode="lines", name="RMSE", line={"color": "#999"})
    )
    loss_fig.add_trace(
        go.Scatter(
            x=[positions[-1]],
            y=[rmse_after[positions[-1]]],
            mode="markers",
            name="step",
            marker={"color": "red", "size": 10},
        )
    )
    if result.optimum_rmse:
        loss_fig.add_hline(y=result.optimum_rmse, line_dash="dash", annotation_text="exact optimum")
    loss_fig.update_layout(
        yaxis=log_ticks(rmse_after + ([result.optimum_rmse] if result.optimum_rmse else [])),
        yaxis_type="log",
        xaxis_title="steps taken",
        yaxis_title="RMSE",
        height=380,
        margin={"t": 30},
        showlegend=False,
    )
    fit_html = ""
    if one_variable:
        fit_fig = go.Figure()
        fit_fig.add_trace(
            go.Scatter(
                x=x.tolist(),
                y=y.tolist(),
                mode="markers",
                name=plots.data_label(result),
                marker={"color": "#1f77b4", **({"size": 3, "opacity": 0.4} if len(x) > 1000 else {})},
            )
        )
        fit_fig.add_trace(go.Scatter(x=grid.tolist(), y=frames[-1], mode="lines", name="fit", line={"color": "red"}))
        parts = result.components(grid) if getattr(result.model, "parts", None) else {}
        for k, (name, values) in enumerate(parts.items()):  # each part of a sum, dashed (as plots.plot_fit)
            color = PART_COLORS[k % len(PART_COLORS)]
            fit_fig.add_trace(
                go.Scatter(
                    x=grid.tolist(), y=values.tolist(), mode="lines", name=name, line={"dash": "dash", "color": color}
                )
            )
        pad = 0.15 * (y.max() - y.min() or 1.0)
        fit_fig.update_layout(
            xaxis_title=x_name,
            yaxis_title=y_name,
            height=380,
            margin={"t": 30},
            yaxis={"range": [y.min() - pad, y.max() + pad]},
        )
        fit_html = _div(fit_fig, "fit-plot")
    loss_html = _div(loss_fig, "loss-plot")
    sections.append(f"""
<h2>Watch it learn</h2>
<p><label for="step">Step</label>
<input type="range" id="step" min="0" max="{len(positions) - 1}" value="{len(positions) - 1}" step="1">
<span id="step-label"></span></p>
<div class="row"><div class="cell">{fit_html or "<p>(a model of several variables: no curve to draw)</p>"}</div>
<div class="cell">{loss_html}</div></div>
<p id="step-params"></p>{thinned_note(n, len(drawn))}""")

    try:
        params2 = plots.landscape_params(result)
    except ValueError:
        params2 = None
    if params2 is not None:
        aa, bb, loss, path, (i, j) = plots.landscape_grid(result, params2)
        shown = np.where(np.isfinite(loss) & (loss > 0), np.log10(np.where(loss > 0, loss, 1)), None)
        land = go.Figure()
        land.add_trace(
            go.Contour(
                x=aa[0].tolist(),
                y=bb[:, 0].tolist(),
                z=shown.tolist(),
                colorscale="Viridis",
                colorbar={"title": "log10 loss"},
            )
        )
        land.add_trace(
            go.Scatter(
                x=path[drawn, i].tolist(),
                y=path[drawn, j].tolist(),
                mode="lines+markers",
                name="path",
                line={"color": "red"},
                marker={"size": 3},
            )
        )
        land.update_layout(xaxis_title=params2[0], yaxis_title=params2[1], height=480, margin={"t": 30})
        others = [nm for nm in history.param_names if nm not in params2]
        held = (
            f" ({others[0]} held at its final value)"
            if len(others) == 1
            else f" (the others — {', '.join(others)} — held at their final values)"
            if others
            else ""
        )
        sampled = plots.sampled_note(result)
        on = f", on {sampled}" if sampled else ""
        sections.append(
            f"<h2>The loss landscape over {params2[0]} and {params2[1]}{held}{html.escape(on)}</h2>"
            + _div(land, "landscape")
        )

    title = title or f"gradfit report: {result.model.name}"
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='formula'>y = {html.escape(result.model.formula)}</p>",
            f"<p class='message {'ok' if result.converged else 'warn'}'>{html.escape(result.message)}</p>",
            "<div class='row'><div class='cell'>",
            _settings_table(result, settings),
            _data_table(x, y, result),
            "</div><div class='cell'>",
            _params_table(result),
            _stats_table(result),
            "</div></div>",
            *sections,
        ]
    )
    script = _SCRIPT.replace("__STATE__", json.dumps(state, allow_nan=False, default=_json_number))
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style><script>{plotly_js()}</script></head>"
        f"<body>{body}<script>{script}</script></body></html>"
    )


THIN_FROM = 200  # a history of more steps is drawn thinned: every step up to here, then log-spaced
THIN_POINTS = 300  # points the thinned rest is drawn at
PART_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22")  # plots.COMPONENT_COLORS


def log_ticks(values) -> dict:
    """A log axis labelled in plain numbers (0.5, 1, 2, 5, 10; 1e+22 for huge ones), not plotly's lone digits
    between the powers of ten (as the playground's RMSE axis)."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return {}
    lo, hi = math.floor(math.log10(min(finite))), math.ceil(math.log10(max(finite)))
    decades = max(hi - lo, 1)
    every = math.ceil(decades / 8)  # at most about eight labelled powers of ten
    vals = [m * 10.0**d for d in range(lo, hi + 1, every) for m in ((1, 2, 5) if decades <= 2 else (1,))]
    text = [f"{v:.3g}" if 1e-3 <= v < 1e5 else f"{v:.0e}" for v in vals]
    return {"tickvals": vals, "ticktext": text}


def thinned(n: int) -> list[int]:
    """The steps 0..n to draw: all of them up to THIN_FROM, then THIN_POINTS spaced evenly on a log scale, the last
    always: the start, where most happens, in full; a 20,000-step run's report stays small."""
    if n <= THIN_FROM:
        return list(range(n + 1))
    rest = np.unique(np.geomspace(THIN_FROM + 1, n, THIN_POINTS).round().astype(int))
    return list(range(THIN_FROM + 1)) + [int(k) for k in rest if k > THIN_FROM]


def thinned_note(n: int, shown: int) -> str:
    if shown >= n + 1:
        return ""
    return (
        f"<p class='note'>The {n:,} steps are drawn at {shown:,} of them (every step up to {THIN_FROM}, then "
        f"spaced evenly on a log scale of the step): the curves keep their shape, the page stays small. The slider "
        f"and the tables are exact.</p>"
    )


PLOTLY_BUNDLE = "plotly-cartesian.min.js"  # plotly.js's cartesian bundle (scatter, contour: all the report draws)


def plotly_js() -> str:
    """plotly.js to embed: its cartesian bundle, 1.5 MB instead of the full 4.8 MB, the same version as the plotly
    package's (4.1.1, from npm's plotly.js-cartesian-dist-min, MIT: gradfit/web/static/plotly-LICENSE.txt)."""
    from importlib.resources import files

    return (files("gradfit.web") / "static" / PLOTLY_BUNDLE).read_text(encoding="utf-8")


def write_report(result, path, settings: dict | None = None, title: str | None = None) -> Path:
    """Write the report to ``path`` and return it."""
    path = Path(path)
    path.write_text(report_html(result, settings, title), encoding="utf-8")
    return path


def _div(figure, div_id: str) -> str:
    """A plotly chart as a <div> that fills its column (plotly.js itself is embedded once, in <head>)."""
    import plotly.io as pio

    return pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        default_width="100%",
        config={"responsive": True, "displaylogo": False},
    )


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _table(caption: str, rows) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table><caption>{html.escape(caption)}</caption>{cells}</table>"


def _settings_table(result, settings) -> str:
    rows = [("model", result.model.name), ("method", result.method)]
    if result.learning_rate is not None:
        rows.append(("learning rate", f"{result.learning_rate:g}"))
    rows += [(k, v) for k, v in (settings or {}).items()]
    return _table("Settings", rows)


def _data_table(x, y, result) -> str:
    rows = [("points", f"{result.n_points:,}")]
    if result.n_dropped:
        rows.append(("dropped (NaN or inf)", f"{result.n_dropped:,}"))
    of = ""
    sampled = plots.sampled_note(result)
    if sampled:  # the figures and these rows show a sample of the points
        rows.append(("drawn", sampled))
        of = " (sample)"
    if x.ndim == 1:
        rows.append((f"x range{of}", f"{x.min():.6g} to {x.max():.6g}"))
    rows += [
        (f"y range{of}", f"{y.min():.6g} to {y.max():.6g}"),
        (f"y mean ± std{of}", f"{y.mean():.6g} ± {y.std():.4g}"),
    ]
    return _table("Data", rows)


def _params_table(result) -> str:
    head = "<tr><th>parameter</th><th>value</th><th>standard error</th><th></th></tr>"
    rows = []
    for name, value in result.params.items():
        err = result.stderr[name]
        note = (
            "fixed"
            if name in result.fixed
            else f"tied: = {html.escape(result.tied[name])}"
            if name in result.tied
            else f"at {result.at_bound[name]} bound"
            if name in result.at_bound
            else ""
        )
        err_text = "" if name in result.fixed else f"{err:.4g}"
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{value:.10g}</td><td>{err_text}</td><td>{note}</td></tr>")
    return f"<table class='params'><caption>Parameters</caption>{head}{''.join(rows)}</table>"


def _stats_table(result) -> str:
    rows = [
        ("RMSE", f"{result.rmse:.10g}"),
        ("R²", f"{result.r2:.10g}"),
        ("chi-square", f"{result.chi2:.6g}"),
        ("reduced chi-square", f"{result.reduced_chi2:.6g}"),
        ("AIC", f"{result.aic:.6g}"),
        ("BIC", f"{result.bic:.6g}"),
        ("steps", result.n_steps),
        ("converged", "yes" if result.converged else "NO"),
    ]
    if result.gap_to_optimum is not None:
        rows.append(("gap to the exact optimum", f"{result.gap_to_optimum:.3g}"))
    return _table("Goodness of fit", rows)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .formula { font-family: monospace; font-size: 1.1em; }
.message { padding: 0.6em; border-radius: 4px; } .ok { background: #e8f5e9; } .warn { background: #fff3e0; }
.row { display: flex; flex-wrap: wrap; gap: 2em; } .cell { flex: 1 1 480px; min-width: 0; }
table { border-collapse: collapse; margin: 1em 0; } caption { text-align: left; font-weight: bold; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
#step { width: 60%; vertical-align: middle; } #step-label { font-weight: bold; margin-left: 1em; }
"""

_SCRIPT = """
const state = __STATE__;
const slider = document.getElementById("step");
function show(i) {
  const k = state.steps[i];
  const rmse = state.rmse[i];
  document.getElementById("step-label").textContent =
    "after " + k + " step" + (k === 1 ? "" : "s") + ": RMSE " + (rmse === null ? "inf" : rmse.toPrecision(6));
  document.getElementById("step-params").textContent =
    state.names.map((n, j) => n + " = " + state.params[i][j].toPrecision(6)).join(",  ");
  if (state.curves.length) Plotly.restyle("fit-plot", {y: [state.curves[i]]}, [1]);
  Plotly.restyle("loss-plot", {x: [[k]], y: [[rmse]]}, [1]);
}
slider.addEventListener("input", () => show(Number(slider.value)));
// the charts were drawn as the page was read, before their columns had their final widths
document.querySelectorAll(".js-plotly-plot").forEach(div => Plotly.Plots.resize(div));
show(Number(slider.value));
"""

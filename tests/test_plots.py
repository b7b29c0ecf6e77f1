import warnings

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.contour import QuadContourSet
from PIL import Image

import gradfit
from gradfit import plots
from gradfit.plots import DATA_COLOR, PRED_COLOR, Trace, plot_data, plot_steps, spread

BLUE, RED = to_rgba(DATA_COLOR), to_rgba(PRED_COLOR)


@pytest.fixture(scope="module")
def run(golden):
    x, y = gradfit.seed_data()
    model = gradfit.quadratic()
    p0 = torch.tensor(golden["init_params"])
    _, history = gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-4, steps=10)
    return Trace(model, x, y, history)


def test_plot_steps_draws_one_panel_per_step_like_the_article(run):
    model, x, y, history = run.model, run.x, run.y, run.history
    fig = plot_steps(run, ylim=(-75, 120))
    assert len(fig.axes) == 10
    assert tuple(fig.get_size_inches()) == (15, 3)
    for i, ax in enumerate(fig.axes):
        data, preds = ax.collections  # two scatters per panel
        assert tuple(data.get_facecolor()[0]) == BLUE and tuple(preds.get_facecolor()[0]) == RED
        np.testing.assert_array_equal(data.get_offsets()[:, 1], y.numpy())
        # the red points are the predictions the step measured its loss on
        before = torch.tensor(history.params_before(i))
        np.testing.assert_array_equal(preds.get_offsets()[:, 1], model(x, before).numpy())
        assert ax.get_ylim() == (-75, 120)
        assert ax.get_title() == f"step {i + 1}"


def test_plot_steps_can_pick_steps(run):
    fig = plot_steps(run, [1, 5, 10])
    assert [ax.get_title() for ax in fig.axes] == ["step 1", "step 5", "step 10"]


def test_plot_data_is_a_blue_scatter(run):
    fig = plot_data(run.x, run.y, title="t")
    (ax,) = fig.axes
    (scatter,) = ax.collections
    assert tuple(scatter.get_facecolor()[0]) == BLUE
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y" and ax.get_title() == "t"


@pytest.mark.parametrize(
    "first,last,n,expected",
    [
        (1, 10, 10, list(range(1, 11))),
        (11, 13, 10, [11, 12, 13]),
        (1, 100, 10, [1, 12, 23, 34, 45, 56, 67, 78, 89, 100]),
    ],
)
def test_spread(first, last, n, expected):
    assert spread(first, last, n) == expected


def test_like_reuses_an_earlier_figures_margins(run):
    first = plot_steps(run, range(1, 6), ylim=(-75, 120))
    second = plot_steps(run, range(6, 11), ylim=(-75, 120), like=first)
    for attr in ("left", "right", "bottom", "top", "wspace"):
        assert getattr(second.subplotpars, attr) == getattr(first.subplotpars, attr)
    assert [ax.get_title() for ax in second.axes] == [f"step {s}" for s in range(6, 11)]


# --- the figures of a fit -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_gd(golden):
    x, y = gradfit.seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        return gradfit.fit(
            "quadratic", x, y, method="gd", scale=False, learning_rate=1e-4, max_steps=200, p0=golden["init_params"]
        )


@pytest.fixture(scope="module")
def peak():
    x = np.linspace(-5, 5, 60)
    y = 3 * np.exp(-((x - 0.5) ** 2) / (2 * 0.9**2)) + 0.05 * np.random.default_rng(0).normal(size=60)
    return gradfit.fit("gaussian", x, y, method="gd")


def test_plot_fit_draws_data_curve_band_and_residuals(peak):
    fig = plots.plot_fit(peak)
    top, bottom = fig.axes
    assert any(isinstance(c, PathCollection) and tuple(c.get_facecolor()[0]) == BLUE for c in top.collections)
    (curve,) = [line for line in top.get_lines() if line.get_label() == "fit"]
    assert len(curve.get_xdata()) == plots.SMOOTH_POINTS  # smooth, not only at the data
    assert curve.get_color() == PRED_COLOR
    bands = [c for c in top.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1 and bands[0].get_label() == "±1σ confidence band"
    assert bottom.get_ylabel() == "residual" and bottom.get_xlabel() == "x"
    assert top.get_title().startswith("gaussian: RMSE")
    # the band is the delta method's: at the peak it is about the amplitude's standard error
    i = int(np.argmax(curve.get_ydata()))
    half = np.abs(bands[0].get_paths()[0].vertices[:, 1] - curve.get_ydata()[i]).min()
    assert half < 3 * peak.stderr["amplitude"]


def test_plot_loss_overlays_runs_and_draws_the_optimum(raw_gd):
    x, y = gradfit.seed_data()
    lm = gradfit.fit("quadratic", x, y, method="lm")
    fig = plots.plot_loss([raw_gd, lm], labels=["gd", "lm"])
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["gd", "lm"] and any(label.startswith("exact optimum") for label in labels)
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    (gd_line,) = [line for line in ax.get_lines() if line.get_label() == "gd"]
    assert list(gd_line.get_ydata()) == raw_gd.history.rmse


def test_plot_params_has_one_panel_per_parameter(raw_gd):
    fig = plots.plot_params(raw_gd)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b", "c"]
    assert len(visible[0].get_lines()[0].get_xdata()) == len(raw_gd.history) + 1  # start + every step


def test_plot_landscape_contours_with_the_path_over_them(raw_gd):
    fig = plots.plot_landscape(raw_gd, ("a", "b"))
    ax = fig.axes[0]
    assert any(isinstance(c, QuadContourSet) for c in ax.collections) or ax.collections
    (path,) = [line for line in ax.get_lines() if line.get_label() == "path"]
    assert len(path.get_xdata()) == len(raw_gd.history) + 1
    xlo, xhi = ax.get_xlim()
    assert xlo <= min(path.get_xdata()) and max(path.get_xdata()) <= xhi  # the range covers the path
    assert ax.get_xlabel() == "a" and ax.get_ylabel() == "b" and "c held" in ax.get_title()
    with pytest.raises(ValueError, match="two different free parameters"):
        plots.plot_landscape(raw_gd, ("a", "a"))


def test_landscape_values_are_the_loss(raw_gd):
    aa, bb, loss, _, (i, j) = plots.landscape_grid(raw_gd, ("a", "b"), grid=5)
    final = np.array(raw_gd.history.final_params)
    p = final.copy()
    p[i], p[j] = aa[2, 3], bb[2, 3]
    x, y = raw_gd.x, raw_gd.y
    assert loss[2, 3] == pytest.approx(np.mean((p[0] * x**2 + p[1] * x + p[2] - y) ** 2), rel=1e-12)


def test_many_points_are_drawn_as_a_random_sample_and_the_landscape_is_its_loss():
    rng = np.random.default_rng(4)
    n = 30_000
    x = rng.uniform(-2, 3, n)
    sigma = rng.uniform(0.1, 0.3, n)
    y = 0.8 * x**2 - 1.5 * x + 2 + rng.normal(0, 1, n) * sigma
    result = gradfit.fit("quadratic", x, y, sigma=sigma)
    label = f"a random sample of {plots.FIGURE_POINTS:,} of {n:,} points"
    assert f"data ({label})" in plots.plot_fit(result).axes[0].get_legend_handles_labels()[1]
    assert label in plots.plot_landscape(result).axes[0].get_title().replace("\n", " ")  # (wrapped to fit)
    xs, ys, ss = plots.run_data(result, "test")
    where = {value: i for i, value in enumerate(x)}
    rows = np.array([where[value] for value in xs])
    assert len(set(rows)) == plots.FIGURE_POINTS and (ys == y[rows]).all() and (ss == sigma[rows]).all()
    aa, bb, loss, _, _ = plots.landscape_grid(result, ("a", "b"), grid=4)
    p = np.array(list(result.params.values()))
    p[0], p[1] = aa[1, 2], bb[1, 2]
    assert loss[1, 2] == pytest.approx(np.mean(((p[0] * xs**2 + p[1] * xs + p[2] - ys) / ss) ** 2), rel=1e-12)


def test_a_landscape_of_many_points_takes_little_memory():
    """It once evaluated the whole 80 x 80 grid at every point at once: 15 GB for 300,000 points."""
    import subprocess
    import sys

    code = """
import resource, numpy as np, gradfit
from gradfit import plots
rng = np.random.default_rng(0)
x = rng.uniform(-2, 3, 300_000)
result = gradfit.fit("quadratic", x, x**2 + rng.normal(0, 0.1, x.size))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plots.plot_landscape(result)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    grew = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(grew.stdout) < 100, grew.stdout  # MB over the fit's own peak


def test_plot_steps_wraps_into_rows_and_picks_steps(raw_gd):
    fig = plots.plot_steps(raw_gd, ncols=5, steps=range(1, 11))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 10 and fig.get_size_inches()[1] == 6  # two rows of three inches
    default = plots.plot_steps(raw_gd)
    assert [ax.get_title() for ax in default.axes][0] == "step 1"
    assert [ax.get_title() for ax in default.axes][-1] == f"step {raw_gd.n_steps}"


def test_surfaces_have_no_curve_to_draw():
    xx, yy = np.meshgrid(np.linspace(-2, 2, 8), np.linspace(-2, 2, 8))
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    z = np.exp(-(xx.ravel() ** 2) - yy.ravel() ** 2)
    result = gradfit.fit("gaussian2d", xy, z)
    with pytest.raises(ValueError, match="curves of one variable"):
        plots.plot_fit(result)


def test_write_plots_writes_the_five_files(tmp_path, raw_gd):
    written, skipped = plots.write_plots(raw_gd, tmp_path)
    assert written == ["fit.png", "loss.png", "steps.png", "params.png", "landscape.png"] and skipped == []
    for name in written:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] >= 600


def test_a_result_without_its_data_says_so_and_keeps_what_needs_none(tmp_path, raw_gd):
    import dataclasses

    bare = dataclasses.replace(raw_gd, x=None, y=None)
    for draw in (plots.plot_fit, plots.plot_steps, plots.plot_landscape):
        with pytest.raises(ValueError, match="this result holds none"):
            draw(bare)
    written, skipped = plots.write_plots(bare, tmp_path)
    assert written == ["loss.png", "params.png"] and len(skipped) == 3


def test_thousands_of_points_are_drawn_small_and_see_through():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, 5000)
    result = gradfit.fit("linear", x, 2 * x + rng.normal(0, 0.1, 5000))
    dots = plots.plot_fit(result).axes[0].collections[0]
    assert dots.get_sizes()[0] < 10 and dots.get_alpha() < 1
    few = plots.plot_fit(gradfit.fit("linear", x[:50], 2 * x[:50])).axes[0].collections[0]
    assert few.get_alpha() is None


def test_animation_is_a_gif_with_the_expected_frames(tmp_path, peak):
    path = plots.animate(peak, tmp_path / "fit.gif", max_frames=12)
    with Image.open(path) as img:
        assert img.format == "GIF" and img.n_frames == min(12, peak.n_steps) and img.size == (1000, 400)
    with pytest.raises(ValueError, match="written as .gif or .mp4"):
        plots.animate(peak, tmp_path / "fit.avi")


def test_the_animations_loss_axis_draws_the_optimum_so_a_plateau_is_not_read_as_converged(golden):
    from gradfit.demo import compare_learning_rates, summarize

    ((_, run, _),) = compare_learning_rates([1e-4])
    run.optimum_rmse = summarize(run.history).optimum_rmse
    fig, frame, count = plots.animation_figure(run, max_frames=20)
    assert count == 20
    (optimum,) = [line for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"]
    assert optimum.get_ydata()[0] == pytest.approx(run.optimum_rmse) and "optimum" in optimum.get_label()
    frame(count - 1)
    assert fig.axes[0].get_title() == f"step 20: RMSE {run.history.rmse[-1]:.4g}"


def test_compare_learning_rates_draws_a_diverging_run_without_crashing(tmp_path):
    from gradfit.demo import compare_learning_rates

    runs = compare_learning_rates([1e-5, 1e-4, 1e-3])
    (_, _, d1), (_, _, d2), (_, run3, d3) = runs
    assert d1 is None and d2 is None and d3 == 15  # the article's loop overflows at step 15 with lr 1e-3
    assert len(run3.history) == 14
    fig = plots.plot_learning_rates([(f"lr {r:g}", run, d) for r, run, d in runs])
    left = fig.axes[0]
    assert any("diverged at step 15" in line.get_label() for line in left.get_lines())


def test_fit_result_shows_as_a_table_in_notebooks(peak):
    text = peak._repr_html_()
    assert "<table>" in text and "amplitude" in text and "standard error" in text
    assert 'src="data:image/png;base64,' in text and "χ²" in text  # the fit, small, inline


def test_a_notebooks_view_points_at_strong_correlations_and_bounds_and_a_batch_has_one_too():
    import base64
    import io

    rng = np.random.default_rng(5)
    x = np.linspace(0, 4, 40)
    y = 2 * np.exp(-0.8 * x) + 0.3 + rng.normal(0, 0.01, 40)
    result = gradfit.fit("exp_decay", x, y, bounds={"offset": (0.35, 1)})
    text = result._repr_html_()
    corr = result.correlation
    names = result.param_names
    strong = [(names[i], names[j]) for i in range(3) for j in range(i + 1, 3) if abs(corr[i, j]) >= 0.9]
    assert "Worth a look" in text and "offset ended on its lower bound" in text
    assert all(f"C({a}, {b})" in text for a, b in strong)
    Y = np.stack([2 * np.exp(-k * x) + 0.3 + rng.normal(0, 0.01, 40) for k in rng.uniform(0.5, 1.0, 30)])
    batch = gradfit.fit_many("exp_decay", x, Y)
    view = batch._repr_html_()
    assert f"<td>converged</td><td>{batch.counts()['converged']:,}</td>" in view
    assert view.count("<tr>") >= 1 + 5 and "…" in view
    png = view.split("base64,")[1].split('"')[0]
    with Image.open(io.BytesIO(base64.b64decode(png))) as img:
        assert img.format == "PNG"
    fig = plots.plot_histogram(batch, "rate")
    assert fig.axes[0].get_xlabel() == "rate" and "30 converged curves" in fig.axes[0].get_title()


# --- figures for a paper: the data's names, the parts of a sum, normalized residuals, bands, formats ---------


def _two_peaks(sigma=None):
    import pandas as pd

    rng = np.random.default_rng(0)
    x = np.linspace(10, 60, 300)
    y = 3 * np.exp(-((x - 30) ** 2) / 8) + 2 * np.exp(-((x - 38) ** 2) / 18) + 0.02 * x + rng.normal(0, 0.05, 300)
    data = pd.DataFrame({"two_theta": x, "counts": y})
    start = [3, 30, 2, 2, 38, 3, 0.02, 0]
    return gradfit.fit("gaussian + gaussian + linear", data["two_theta"], data["counts"], sigma=sigma, p0=start)


def test_plot_fit_draws_each_part_dashed_and_names_the_axes_after_the_data():
    result = _two_peaks()
    fig = plots.plot_fit(result)
    top, bottom = fig.axes
    parts = {line.get_label(): line for line in top.get_lines() if line.get_linestyle() == "--"}
    assert list(parts) == ["g1", "g2", "l"]
    grid = parts["g1"].get_xdata()
    for name, values in result.components(grid).items():
        np.testing.assert_allclose(parts[name].get_ydata(), values)
        assert to_rgba(parts[name].get_color()) not in (RED, BLUE)
    assert top.get_ylabel() == "counts" and bottom.get_xlabel() == "two_theta"
    assert bottom.get_ylabel() == "residual"
    # a user's own axis and labels with units; no residual panel, no title
    from matplotlib.figure import Figure

    own = Figure()
    ax = own.subplots()
    drawn = plots.plot_fit(result, axes=ax, xlabel="2θ (deg)", ylabel="counts (1/s)", title=None, band=None)
    assert drawn is own and ax.get_xlabel() == "2θ (deg)" and ax.get_ylabel() == "counts (1/s)" and not ax.get_title()
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_a_weighted_fit_draws_normalized_residuals():
    sigma = np.full(300, 0.05)
    sigma[::2] = 0.1
    result = _two_peaks(sigma)
    _, bottom = plots.plot_fit(result).axes
    assert bottom.get_ylabel() == "residual / σ"
    dots = bottom.collections[0].get_offsets()
    expected = (result.y - result.predict(result.x)) / sigma
    np.testing.assert_allclose(np.asarray(dots)[:, 1], expected, rtol=1e-12)


def test_band_is_the_textbook_regression_band_at_any_level():
    """For a straight line, the confidence band is ŷ ± t·s·√(x₀ᵀ(XᵀX)⁻¹x₀) and the prediction band adds 1 under
    the root (s² the residual variance, t Student's with n − 2 degrees of freedom)."""
    from scipy.stats import t as student

    rng = np.random.default_rng(1)
    x = np.linspace(0, 10, 25)
    y = 0.7 * x + 1 + rng.normal(0, 0.5, 25)
    result = gradfit.fit("linear", x, y)
    X = np.column_stack([x, np.ones_like(x)])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    s2 = np.sum((y - X @ beta) ** 2) / 23
    at = np.array([-2.0, 0.0, 5.0, 12.0])
    x0 = np.column_stack([at, np.ones_like(at)])
    lever = np.einsum("ij,jk,ik->i", x0, np.linalg.inv(X.T @ X), x0)
    for level in (0.68, 0.95):
        t = student.ppf((1 + level) / 2, 23)
        for kind, extra in (("confidence", 0.0), ("prediction", 1.0)):
            lower, upper = result.band(at, level=level, kind=kind)
            half = t * np.sqrt(s2 * (lever + extra))
            np.testing.assert_allclose(upper - x0 @ beta, half, rtol=1e-9)
            np.testing.assert_allclose(x0 @ beta - lower, half, rtol=1e-9)
    lower, upper = result.band(at, level=None)  # ±1σ exactly
    np.testing.assert_allclose(upper - lower, 2 * np.sqrt(s2 * lever), rtol=1e-9)
    from gradfit.errors import OptionError

    with pytest.raises(OptionError, match="level is a probability"):
        result.band(at, level=95)
    weighted = gradfit.fit("linear", x, y, sigma=np.full(25, 0.5))
    with pytest.raises(OptionError, match="prediction band needs the noise"):
        weighted.band(at, kind="prediction")
    fig = plots.plot_fit(result, band="prediction", level=0.95)
    assert [c.get_label() for c in fig.axes[0].collections if isinstance(c, PolyCollection)] == ["95% prediction band"]


def test_steps_of_a_short_run_on_many_points_are_wide_panels_with_lines():
    result = _two_peaks()  # LM: a handful of steps, 300 points
    fig = plots.plot_steps(result)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == result.n_steps <= 10
    assert fig.get_figwidth() >= plots.STEPS_MIN_WIDTH
    for ax in panels:
        (line,) = ax.get_lines()  # the predictions as a line, not a smear of dots
        assert to_rgba(line.get_color()) == RED
        assert ax.collections[0].get_sizes()[0] <= 4  # the data's dots sized to 300 points
    assert panels[0].get_ylabel() == "counts" and panels[-1].get_xlabel() == "two_theta"


def test_titles_stay_inside_the_figure_and_log_axes_read_as_plain_numbers():
    result = _two_peaks()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plots.plot_landscape(result, ("g1_amplitude", "g1_center"), grid=10)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    for text in [fig.axes[0].title, *fig.axes[0].texts]:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
    x, y = gradfit.seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (50 steps of the article's gd do not converge: not the point here)
        loss = plots.plot_loss(gradfit.fit("quadratic", x, y, method="gd", learning_rate=1e-4, max_steps=50))
    FigureCanvasAgg(loss).draw()
    labels = [t.get_text() for t in loss.axes[0].get_yticklabels(minor=True) + loss.axes[0].get_yticklabels()]
    assert any(labels) and not any("times" in t or "^" in t for t in labels)


def test_figures_are_written_in_every_format_asked_and_vector_stays_vector(tmp_path, raw_gd):
    written, _ = plots.write_plots(raw_gd, tmp_path, formats="png,svg,pdf", dpi=50)
    assert sorted(written) == sorted(
        f"{n}.{k}" for n in ("fit", "loss", "steps", "params", "landscape") for k in ("png", "svg", "pdf")
    )
    svg = (tmp_path / "fit.svg").read_text()
    assert "<svg" in svg and "<image" not in svg  # lines and text, no embedded raster
    assert (tmp_path / "fit.pdf").read_bytes()[:4] == b"%PDF"
    with Image.open(tmp_path / "fit.png") as img:
        assert img.size == (350, 300)  # 7 x 6 inches at 50 dpi
    with pytest.raises(ValueError, match="Figures are written as png, svg, pdf; got jpg"):
        plots.write_plots(raw_gd, tmp_path, formats=["jpg"])


def test_the_command_line_writes_the_formats_and_dpi_asked(capsys, tmp_path, seed_csv):
    from conftest import run_cli

    out = tmp_path / "figs"
    code, _, _ = run_cli(
        capsys, "fit", seed_csv, "--model", "quadratic", "--plot", out, "--format", "svg,png", "--dpi", "40"
    )
    assert code == 0 and (out / "fit.svg").exists() and (out / "landscape.png").exists()
    with Image.open(out / "fit.png") as img:
        assert img.size == (280, 240)
    code, _, err = run_cli(capsys, "fit", seed_csv, "--model", "quadratic", "--dpi", "40")
    assert code == 2 and "--dpi is for the figures of --plot DIR" in err
    code, _, err = run_cli(capsys, "fit", seed_csv, "--model", "quadratic", "--plot", out, "--format", "tiff")
    assert code == 2 and "got tiff" in err


def test_the_paper_style_gives_publication_defaults_only_inside_it(raw_gd):
    import matplotlib

    with plots.style():
        fig = plots.plot_loss(raw_gd)
        assert matplotlib.rcParams["pdf.fonttype"] == 42
    assert fig.axes[0].xaxis.label.get_fontsize() == 8
    assert not fig.axes[0].spines["top"].get_visible()
    assert plots.plot_loss(raw_gd).axes[0].xaxis.label.get_fontsize() > 8  # the article's look outside it
    with pytest.raises(ValueError, match="The one style is 'paper'"):
        plots.style("poster")


def test_compare_learning_rates_is_titled_from_the_runs_and_never_reads_a_plateau_as_success():
    from gradfit.demo import compare_learning_rates, summarize

    rates = [5e-5, 1.1e-4, 1.2e-4, 1.0]
    runs = compare_learning_rates(rates)
    summary = summarize(runs[0][1].history)
    fig = plots.plot_learning_rates(
        [(f"lr {r:g}", run, d) for r, run, d in runs],
        rates=rates,
        limit=summary.max_stable_learning_rate,
        optimum=summary.optimum_rmse,
    )
    left = fig.axes[0]
    assert f"stability limit 2/λmax = {summary.max_stable_learning_rate:.3g}" in left.get_title()
    assert "Too small" not in left.get_title()
    labels = [line.get_label() for line in left.get_lines()]
    assert labels[0].startswith("lr 5e-05 (below the limit, crawls)")
    assert labels[1].startswith("lr 0.00011 (just under the limit)")
    assert labels[2].startswith("lr 0.00012 (above the limit, diverges)")
    assert labels[3].startswith("lr 1 (above the limit, diverges): diverged at step")
    (optimum,) = [line for line in left.get_lines() if line.get_label().startswith("the optimum's RMSE")]
    assert optimum.get_linestyle() == "--" and optimum.get_ydata()[0] == pytest.approx(summary.optimum_rmse)
    assert all(to_rgba(line.get_color()) != RED for line in left.get_lines() + fig.axes[1].get_lines())
    diverged_at = runs[3][2]
    (line,) = [ln for ln in left.get_lines() if ln.get_label().startswith("lr 1 ")]
    assert len(line.get_xdata()) == diverged_at - 1  # drawn up to its last finite step
    crosses = [ln for ln in left.get_lines() if ln.get_marker() == "x"]
    assert [float(c.get_xdata()[0]) for c in crosses] == [diverged_at]  # at the step where it diverged
    from matplotlib.figure import Figure

    own = Figure()
    pair = own.subplots(1, 2)
    assert plots.plot_learning_rates([(f"lr {r:g}", run, d) for r, run, d in runs[:2]], axes=pair) is own


def test_a_panel_whose_predictions_leave_the_frame_says_where_they_went():
    from gradfit.demo import compare_learning_rates

    (_, calm, _), (_, run, _) = compare_learning_rates([1e-4, 1.5e-4])
    inside = plots.plot_steps(calm, [20], ylim=(-75, 120))
    assert len(inside.axes[0].texts) == 0  # the article's rate: its last predictions are inside the frame
    fig = plots.plot_steps(run, [1, 15, 20], ylim=(-75, 120))
    notes = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert all(n and n[0].startswith("predictions reach") for n in notes)
    preds = plots.predict_curve(run.model, run.x, run.history.params_before(19))
    assert notes[2][0] == f"predictions reach {preds[np.argmax(np.abs(preds))]:.2g}"

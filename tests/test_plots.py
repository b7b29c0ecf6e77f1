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
    assert len(bands) == 1 and bands[0].get_label() == "±1σ"
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
    assert label in plots.plot_landscape(result).axes[0].get_title()
    xs, ys, ss = plots._data(result, "test")
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

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

import gradfit
from gradfit.plots import DATA_COLOR, PRED_COLOR, plot_data, plot_steps, spread

BLUE, RED = to_rgba(DATA_COLOR), to_rgba(PRED_COLOR)


@pytest.fixture(scope="module")
def run(golden):
    x, y = gradfit.seed_data()
    model = gradfit.quadratic()
    p0 = torch.tensor(golden["init_params"])
    _, history = gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-4, steps=10)
    return model, x, y, history


def test_plot_steps_draws_one_panel_per_step_like_the_article(run):
    model, x, y, history = run
    fig = plot_steps(model, x, y, history, ylim=(-75, 120))
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
    model, x, y, history = run
    fig = plot_steps(model, x, y, history, steps=[1, 5, 10])
    assert [ax.get_title() for ax in fig.axes] == ["step 1", "step 5", "step 10"]


def test_plot_data_is_a_blue_scatter(run):
    _, x, y, _ = run
    fig = plot_data(x, y, title="t")
    (ax,) = fig.axes
    (scatter,) = ax.collections
    assert tuple(scatter.get_facecolor()[0]) == BLUE
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y" and ax.get_title() == "t"


@pytest.mark.parametrize("first,last,n,expected", [
    (1, 10, 10, list(range(1, 11))),
    (11, 13, 10, [11, 12, 13]),
    (1, 100, 10, [1, 12, 23, 34, 45, 56, 67, 78, 89, 100]),
])
def test_spread(first, last, n, expected):
    assert spread(first, last, n) == expected


def test_like_reuses_an_earlier_figures_margins(run):
    model, x, y, history = run
    first = plot_steps(model, x, y, history, steps=range(1, 6), ylim=(-75, 120))
    second = plot_steps(model, x, y, history, steps=range(6, 11), ylim=(-75, 120), like=first)
    for attr in ("left", "right", "bottom", "top", "wspace"):
        assert getattr(second.subplotpars, attr) == getattr(first.subplotpars, attr)
    assert [ax.get_title() for ax in second.axes] == [f"step {s}" for s in range(6, 11)]

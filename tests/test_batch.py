"""fit_many: each curve's answer equals a single fit of it; failures are marked, never silently wrong."""

import math
import warnings

import numpy as np
import pytest
import torch

import gradfit
from gradfit.batch import fit_long, fit_many
from gradfit.errors import DataError, ModelError, OptionError

SAME_AS_SINGLE = 1e-8  # relative, parameters of a batched fit against gradfit.fit of the same curve
RNG = np.random.default_rng(42)


def _quadratics(b=200, n=15, per_curve_x=False):
    x = np.arange(float(n)) if not per_curve_x else np.sort(RNG.uniform(0, 14, size=(b, n)), axis=1)
    true = np.stack([RNG.uniform(0.5, 1.5, b), RNG.uniform(-6, -4, b), RNG.uniform(8, 12, b)], 1)
    xx = np.broadcast_to(x, (b, n))
    y = true[:, :1] * xx**2 + true[:, 1:2] * xx + true[:, 2:] + RNG.normal(size=(b, n))
    return x, y


GAUSS = "a*exp(-(x - m)**2/(2*s**2)) + c"


def _peaks(b=60, n=50):
    x = np.linspace(-5, 5, n)
    true = np.stack([RNG.uniform(2, 4, b), RNG.uniform(-1, 1, b), RNG.uniform(0.5, 1.5, b), RNG.uniform(0, 0.5, b)], 1)
    model = gradfit.get_model(GAUSS)
    y = model(torch.tensor(x), torch.tensor(true)).numpy() + 0.05 * RNG.normal(size=(b, n))
    return x, y, true * RNG.uniform(0.9, 1.1, size=true.shape)


def _single(model, x, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        return gradfit.fit(model, x, y, **kw)


@pytest.mark.parametrize("backend", ["compiled", "torch"])  # where LM runs (test_compiled.py)
@pytest.mark.parametrize("method", ["auto", "lm"])
@pytest.mark.parametrize("per_curve_x", [False, True])
def test_quadratics_equal_single_fits(method, per_curve_x, backend):
    x, y = _quadratics(per_curve_x=per_curve_x)
    result = fit_many("quadratic", x, y, method=method, backend=backend if method == "lm" else "auto")
    assert result.method == ("linear" if method == "auto" else "lm")
    assert result.counts() == {"converged": len(y)}
    for i in range(0, len(y), 17):
        xi = x if x.ndim == 1 else x[i]
        single = _single("quadratic", xi, y[i])
        np.testing.assert_allclose(result.params[i], list(single.params.values()), rtol=SAME_AS_SINGLE)
        np.testing.assert_allclose(result.stderr[i], list(single.stderr.values()), rtol=1e-6)
        assert result.rmse[i] == pytest.approx(single.rmse, rel=1e-10)
        np.testing.assert_allclose(result.params[i], np.polyfit(xi, y[i], 2), rtol=SAME_AS_SINGLE)


@pytest.mark.parametrize("backend", ["compiled", "torch"])  # where LM runs (test_compiled.py)
def test_nonlinear_peaks_equal_single_fits(backend):
    x, y, p0 = _peaks()
    result = fit_many(GAUSS, x, y, p0=p0, backend=backend)
    assert result.counts() == {"converged": len(y)}
    for i in range(0, len(y), 7):
        single = _single(GAUSS, x, y[i], p0=p0[i])
        np.testing.assert_allclose(result.params[i], list(single.params.values()), rtol=SAME_AS_SINGLE)
        np.testing.assert_allclose(result.stderr[i], list(single.stderr.values()), rtol=1e-5)


def test_python_function_and_builtin_guess():
    x, y, _ = _peaks(b=12)

    def peak(x, a, m, s, c):
        return a * torch.exp(-((x - m) ** 2) / (2 * s**2)) + c

    from_function = fit_many(peak, x, y, p0=[3.0, 0.0, 1.0, 0.2])
    assert from_function.converged.all() and from_function.param_names == ("a", "m", "s", "c")
    # a built-in without p0 takes its own guess for each curve
    builtin = fit_many("gaussian + constant", x, y)
    assert builtin.converged.all()
    np.testing.assert_allclose(builtin.params[:, 1], from_function.params[:, 1], rtol=1e-6)


def test_ragged_curves_by_nan_padding_and_mask():
    x, y = _quadratics(b=20)
    padded = y.copy()
    padded[3, 10:] = np.nan  # a shorter curve
    mask = np.ones_like(y, dtype=bool)
    mask[5, :4] = False
    result = fit_many("quadratic", x, padded, mask=mask)
    assert result.n_points[3] == 10 and result.n_points[5] == 11 and result.n_points[0] == 15
    np.testing.assert_allclose(result.params[3], np.polyfit(x[:10], y[3, :10], 2), rtol=SAME_AS_SINGLE)
    np.testing.assert_allclose(result.params[5], np.polyfit(x[4:], y[5, 4:], 2), rtol=SAME_AS_SINGLE)


def test_sigma_weights_like_a_single_fit():
    x, y = _quadratics(b=10)
    sigma = np.linspace(0.5, 2.0, x.size)
    result = fit_many("quadratic", x, y, sigma=sigma)
    single = _single("quadratic", x, y[4], sigma=sigma)
    np.testing.assert_allclose(result.params[4], list(single.params.values()), rtol=SAME_AS_SINGLE)
    np.testing.assert_allclose(result.stderr[4], list(single.stderr.values()), rtol=1e-6)
    assert result.chi2[4] == pytest.approx(single.chi2, rel=1e-10)


@pytest.mark.parametrize("backend", ["compiled", "torch"])  # where LM runs (test_compiled.py)
def test_mixed_success_and_failure_in_one_batch(backend):
    x, y, p0 = _peaks(b=6)
    y[1, :] = np.nan
    y[1, :3] = [1.0, 2.0, 3.0]  # three points for four parameters
    y[2] = 0.5  # a flat line, from a start with no peak: its centre and width are not determined
    p0[2] = [0.0, 0.0, 1.0, 0.5]
    p0[3] = [3.0, 0.0, 1e-3, 0.0]  # a start where the curve is almost a spike ...
    y[4] = 1e300 * np.ones(x.size)  # ... and data whose squares overflow
    result = fit_many(GAUSS, x, y, p0=p0, max_steps=50, backend=backend)
    status = list(result.status)
    assert status[0] == "converged" and status[5] == "converged"
    assert status[1] == "too_few_points" and np.isnan(result.params[1]).all()
    assert status[2] == "singular" and np.isinf(result.stderr[2, 1:3]).all()  # centre and width: undetermined
    assert status[4] == "diverged"
    assert set(result.counts()) <= set(gradfit.batch.STATUSES)
    assert not result.converged[[1, 2, 4]].any()


@pytest.mark.parametrize("backend", ["compiled", "torch"])  # where LM runs (test_compiled.py)
def test_max_steps_is_reported_per_curve(backend):
    x, y, p0 = _peaks(b=4)
    result = fit_many(GAUSS, x, y, p0=p0 * 3, max_steps=2, backend=backend)
    assert (result.status == "max_steps").any() and (result.n_steps <= 2 + 2).all()


def test_chunks_give_the_same_answers():
    x, y = _quadratics(b=50, per_curve_x=True)
    whole = fit_many("quadratic", x, y)
    chunked = fit_many("quadratic", x, y, chunk_size=7)
    np.testing.assert_array_equal(whole.params, chunked.params)


def test_tables():
    x, y = _quadratics(b=5)
    result = fit_many("quadratic", x, y)
    frame = result.to_pandas()
    assert list(frame.columns[:6]) == ["a", "b", "c", "a_stderr", "b_stderr", "c_stderr"]
    assert len(frame) == 5 and frame["converged"].all()
    table = result.to_arrow()
    assert table.num_rows == 5 and table.column("status").to_pylist() == ["converged"] * 5


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"method": "bfgs"}, OptionError, "Unknown method 'bfgs' for fit_many. Choose one of: auto, linear, lm, gd"),
        ({"method": "lm", "learning_rate": 0.1}, OptionError, "Method 'lm' takes no learning rate"),
        ({"method": "linear", "model": GAUSS}, ModelError, "needs a model linear in its parameters"),
        ({"Y": np.zeros(15)}, DataError, r"`Y` must be \(curves, points\)"),
        ({"x": np.arange(14.0)}, DataError, r"`x` must be shared, shape \(15,\)"),
        ({"p0": [1.0, 2.0]}, ModelError, r"p0 must be \(3,\) for every curve"),
        ({"p0": [1.0, math.nan, 2.0]}, ModelError, "p0 must be finite"),
        ({"mask": np.ones((2, 2), bool)}, DataError, r"`mask` must be \(4, 15\)"),
        ({"sigma": -np.ones(15)}, DataError, "`sigma` must be finite and > 0"),
        ({"max_steps": 0}, OptionError, "max_steps must be a whole number >= 1"),
        ({"device": "tpu"}, OptionError, "device must be a torch device such as 'cpu' or 'cuda', got 'tpu'"),
        ({"device": "cuda"}, OptionError, "device='cuda' needs a CUDA GPU, and this machine has none"),
        ({"Y": np.zeros((4, 15)) + 1j}, DataError, "`Y` holds complex numbers"),
    ],
)
def test_bad_input(kwargs, error, match, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on the CPU machines the tests run on
    x, y = _quadratics(b=4)
    args = {"model": "quadratic", "x": x, "Y": y}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fit_many(args.pop("model"), args.pop("x"), args.pop("Y"), **args)


GRADIENT_SAME_AS_SINGLE = 1e-7  # both stop when the gradient is 1e-10 of its start: close, not identical


@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs"])
def test_gradient_methods_equal_single_fits(method):
    x, y, p0 = _peaks(b=8)
    result = fit_many(GAUSS, x, y, p0=p0, method=method)
    assert result.method == method and result.converged.all(), result.counts()
    for i in (0, 5):
        single = _single(GAUSS, x, y[i], p0=p0[i], method=method)
        assert single.converged
        np.testing.assert_allclose(result.params[i], list(single.params.values()), rtol=GRADIENT_SAME_AS_SINGLE)
    exact = fit_many(GAUSS, x, y, p0=p0, method="lm")
    np.testing.assert_allclose(result.params, exact.params, rtol=1e-6)


@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs"])
def test_gradient_methods_are_one_code_for_one_curve_and_many(method):
    # solvers.descent is the loop and the update of both: after k steps every curve of a batch stands where
    # gradfit.fit's own k-th step on that curve stands, step for step (the two differ in the last bits of the
    # standardizing transform only), whatever the other curves in the batch do
    x, y, p0 = _peaks(b=3)
    for k in (1, 6, 40) if method != "lbfgs" else (1, 3, 6):  # (L-BFGS has arrived by step 10)
        many = fit_many(GAUSS, x, y, p0=p0, method=method, learning_rate=0.05, max_steps=k, backend="torch")
        assert (many.n_steps == k).all()
        for i in range(3):
            one = _single(GAUSS, x, y[i], p0=p0[i], method=method, learning_rate=0.05, max_steps=k, tol=0)
            assert len(one.history) == k
            np.testing.assert_allclose(many.params[i], list(one.params.values()), rtol=1e-10, atol=1e-13)


def test_lbfgs_with_a_small_rate_still_reaches_full_quasi_newton_steps():
    # the rate starts L-BFGS's line search short of its step; a first step that lowers the loss is doubled up to
    # the full one, so 1e-3 costs a few evaluations, not a thousand steps (it took 348 at 0.05 before)
    x, y, p0 = _peaks(b=4)
    exact = fit_many(GAUSS, x, y, p0=p0, method="lm")
    for rate in (1.0, 1e-3):
        result = fit_many(GAUSS, x, y, p0=p0, method="lbfgs", learning_rate=rate)
        assert result.converged.all() and result.n_steps.max() < 60, (rate, result.n_steps)
        np.testing.assert_allclose(result.params, exact.params, rtol=1e-6)
        one = _single(GAUSS, x, y[0], p0=p0[0], method="lbfgs", learning_rate=rate)
        assert one.converged and one.n_steps < 60, one.message
        np.testing.assert_allclose(list(one.params.values()), exact.params[0], rtol=1e-6)


def test_gradient_methods_mark_divergence_and_max_steps():
    x, y, p0 = _peaks(b=3)
    result = fit_many(GAUSS, x, y, p0=p0, method="gd", learning_rate=50.0, max_steps=100)
    assert set(result.status) <= {"diverged", "max_steps"} and not result.converged.any()
    short = fit_many(GAUSS, x, y, p0=p0, method="adam", max_steps=5)
    assert (short.status == "max_steps").all() and (short.n_steps == 5).all()


def test_a_model_that_cuts_a_parameter_out_of_the_graph_is_fitted_with_estimated_derivatives():
    """.item() cannot run under vmap, and gives autograd no derivative for c: it was refused ('cannot be fitted
    over a batch'); now its derivatives are estimated, curve by curve, and the answers are the clean model's."""
    x, y, p0 = _peaks(b=3)

    def scalar_model(x, a, m, s, c):
        return a * torch.exp(-((x - m) ** 2) / (2 * s**2)) + c.item()

    def clean(x, a, m, s, c):
        return a * torch.exp(-((x - m) ** 2) / (2 * s**2)) + c

    cut, exact = fit_many(scalar_model, x, y, p0=p0), fit_many(clean, x, y, p0=p0)
    assert cut.converged.all() and "autograd gives no derivative for c" in cut.notes[0]
    assert exact.notes == ["clean read as the formula a * exp(-(x - m) ** 2.0 / (2.0 * s ** 2.0)) + c"]
    np.testing.assert_allclose(cut.params, exact.params, rtol=1e-6)


@pytest.mark.parametrize("method", ["auto", "lm", "adam"])
def test_no_curves_give_an_empty_result(method):
    """A batch of no curves (an empty Dask partition, a filter that kept nothing) is an empty result, not a crash."""
    result = fit_many("gaussian", np.linspace(-1, 1, 20), np.zeros((0, 20)), method=method)
    assert len(result) == 0 and result.params.shape == (0, 3) and result.stderr.shape == (0, 3)
    table = result.to_pandas()
    assert len(table) == 0 and list(table.columns)[:3] == ["amplitude", "center", "sigma"]
    assert result.counts() == {}


def test_batched_lbfgs_reaches_each_curves_optimum_from_its_guess():
    """No p0: each curve starts from its batched guess; L-BFGS lands where LM does (the optimum), curve by curve."""
    x, y, _ = _peaks(b=60)
    result = fit_many(GAUSS, x, y, method="lbfgs")
    exact = fit_many(GAUSS, x, y, method="lm")
    assert result.converged.all(), result.counts()
    # s enters squared: its sign is whichever side each solver came from
    np.testing.assert_allclose(np.abs(result.params), np.abs(exact.params), rtol=1e-6)
    np.testing.assert_allclose(result.chi2, exact.chi2, rtol=1e-12)
    short = fit_many(GAUSS, x, y, method="lbfgs", max_steps=2)
    assert (short.status == "max_steps").all() and (short.n_steps <= 2).all()


def test_curves_on_one_grid_share_x_and_a_batched_guess(monkeypatch):
    x, y, _ = _peaks(b=30)
    model = gradfit.get_model("gaussian + constant")
    shared = fit_many(model, x, y)

    def refuse(*args):
        raise AssertionError("guessed curve by curve")

    monkeypatch.setattr(type(model.parts[0]), "guess", refuse)  # the batched guess must serve
    per_curve = fit_many(model, np.tile(x, (30, 1)), y)  # the same x given for every curve
    np.testing.assert_array_equal(per_curve.params, shared.params)
    # long format with the rows shuffled: each curve's points are put in order of x, so they line up too
    rows = RNG.permutation(30 * x.size)
    groups = np.repeat(np.arange(30), x.size)[rows]
    names, long = fit_long(model, groups, np.tile(x, 30)[rows], y.ravel()[rows])
    np.testing.assert_allclose(long.params, shared.params, rtol=1e-12)
    for i in (0, 13, 29):
        single = _single(model, x, y[i], p0=shared.params[i])
        np.testing.assert_allclose(long.params[i], list(single.params.values()), rtol=SAME_AS_SINGLE)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_one_rule_for_a_parameter_the_data_do_not_determine(backend):
    """a*exp(b*x + c): only a*exp(c) shows in the curve, so a and c are not determined, b is. fit and fit_many
    say the same: those two standard errors are infinite, b's finite and equal, and neither calls the fit
    converged (fit_many: status 'singular'; fit: converged False, undetermined named, a warning naming them)."""
    model = "a*exp(b*x + c)"
    x = np.linspace(0, 2, 30)
    y = 2.0 * np.exp(0.7 * x) * (1 + 0.01 * np.cos(5 * x))
    p0 = [1.0, 0.5, 0.2]
    many = fit_many(model, x, np.stack([y, 2 * y]), p0=p0, backend=backend)
    with pytest.warns(
        gradfit.ConvergenceWarning,
        match=r"do not determine a, c \(Jacobian rank 2 < 3\): their "
        r"standard errors are infinite",
    ):
        one = gradfit.fit(model, x, y, p0=p0, method="lm")
    assert list(many.status) == ["singular", "singular"] and not one.converged
    assert one.undetermined == ("a", "c") and "Ended where the data do not determine every parameter" in one.message
    stderr = np.array(list(one.stderr.values()))
    assert np.isinf(stderr[[0, 2]]).all() and np.isfinite(stderr[1])
    np.testing.assert_array_equal(np.isinf(many.stderr[0]), np.isinf(stderr))
    np.testing.assert_allclose(many.stderr[0, 1], stderr[1], rtol=1e-6)


# --- bounds and fixed parameters: the change of variables of gradfit.fit, over the batch ----------------------

ON_A_BOUND = 1e-12  # relative: a parameter the loss pushes against its bound ends on it
NEAR_SINGLE = 1e-4  # of a standard error: batched and single fits end in the same flat valley to rounding


def _decays(b=24, n=40):
    x = np.linspace(0, 4, n)
    true = np.column_stack([RNG.uniform(1, 3, b), RNG.uniform(0.5, 1.5, b), RNG.uniform(-0.2, 0.2, b)])
    return x, true[:, :1] * np.exp(-true[:, 1:2] * x) + true[:, 2:] + 0.02 * RNG.normal(size=(b, n))


@pytest.mark.parametrize("method", ["lm", "lbfgs"])
def test_a_fixed_parameter_over_many_curves_equals_the_model_with_its_value_written_in(method):
    """Against an independent oracle: the same model with the fixed value substituted by hand; a fixed parameter
    has standard error 0 and does not count as fitted (its degrees of freedom are the reduced model's)."""
    x, Y = _decays()
    held = gradfit.fit_many("exp_decay", x, Y, p0=[2.0, 1.0, 0.0], fixed={"offset": 0.1}, method=method)
    by_hand = gradfit.fit_many("amplitude*exp(-rate*x) + 0.1", x, Y, p0=[2.0, 1.0], method=method)
    assert list(held.status) == list(by_hand.status) == ["converged"] * len(Y)
    np.testing.assert_allclose(held.params[:, :2], by_hand.params, rtol=1e-8 if method == "lm" else 1e-6)
    np.testing.assert_array_equal(held.params[:, 2], 0.1)
    np.testing.assert_allclose(held.stderr[:, :2], by_hand.stderr, rtol=1e-6)
    np.testing.assert_array_equal(held.stderr[:, 2], 0.0)
    np.testing.assert_allclose(held.chi2, by_hand.chi2, rtol=1e-10)


def test_bounds_over_many_curves_equal_single_fits_with_the_same_bounds():
    x, Y = _decays()
    bounds = {"rate": (0.8, 1.2)}
    many = gradfit.fit_many("exp_decay", x, Y, p0=[2.0, 1.0, 0.0], bounds=bounds)
    single = [_single("exp_decay", x, y, p0=[2.0, 1.0, 0.0], bounds=bounds) for y in Y]
    assert list(many.status) == ["converged"] * len(Y)
    rate = many.params[:, 1]
    assert ((rate >= 0.8) & (rate <= 1.2)).all()
    on = [i for i, s in enumerate(single) if s.params["rate"] in (0.8, 1.2)]
    assert 3 <= len(on) < len(Y)  # some curves pushed onto a bound, some inside
    np.testing.assert_allclose(rate[on], [single[i].params["rate"] for i in on], rtol=ON_A_BOUND)
    want = np.array([list(s.params.values()) for s in single])
    errors = np.array([list(s.stderr.values()) for s in single])
    assert (np.abs(many.params - want) <= NEAR_SINGLE * errors).all()
    np.testing.assert_allclose(many.stderr, errors, rtol=1e-5)


def test_a_bounded_width_keeps_its_sign_and_a_free_one_is_reported_positive():
    x, y, p0 = _peaks(b=6)
    y, p0 = y - p0[:, 3:], p0[:, :3] * [1, 1, -1]  # no offset (the built-in gaussian has none); negative widths
    free = gradfit.fit_many("gaussian", x, y, p0=p0)
    bounded = gradfit.fit_many("gaussian", x, y, p0=p0, bounds={"sigma": (-5, 0)})
    assert (free.params[:, 2] > 0).all() and (bounded.params[:, 2] < 0).all()
    np.testing.assert_allclose(-bounded.params[:, 2], free.params[:, 2], rtol=1e-8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"fixed": {"c": 1.0}}, ModelError, "`fixed` names unknown parameter 'c'"),
        ({"bounds": {"rate": (2, 1)}}, ModelError, "lower bound 2 must be below the upper bound 1"),
        ({"bounds": {"rate": (0, 0.5)}}, ModelError, r"p0 rate=1 is outside its bounds \(0, 0.5\)\.$"),
        (
            {"bounds": {"rate": (0, 0.5)}, "p0": "rows"},
            ModelError,
            r"outside its bounds \(0, 0.5\) for 24 of 24 curves",
        ),
        ({"fixed": {"offset": 0.0}, "method": "linear"}, OptionError, "'linear' cannot honour bounds"),
        (
            {"fixed": {"offset": 0.0}, "backend": "compiled"},
            OptionError,
            "bounds, fixed and tied parameters run on torch",
        ),
    ],
)
def test_bad_bounds_and_fixed_values_are_refused_in_one_line(kwargs, error, match):
    x, Y = _decays()
    p0 = np.tile([2.0, 1.0, 0.0], (len(Y), 1)) if kwargs.pop("p0", None) == "rows" else [2.0, 1.0, 0.0]
    with pytest.raises(error, match=match):
        gradfit.fit_many("exp_decay", x, Y, p0=p0, **kwargs)


def test_tied_parameters_over_many_curves_equal_single_fits_with_the_same_ties():
    """Each curve's values and standard errors (a tied one's propagated from the covariance) equal gradfit.fit's."""
    x = np.linspace(-5, 5, 121)
    truth = np.column_stack([RNG.uniform(2, 4, 12), RNG.uniform(-1, -0.5, 12), RNG.uniform(0.4, 0.8, 12)])
    model = gradfit.get_model("gaussian + gaussian")
    full = np.column_stack([truth, truth[:, :1] * 0.6, truth[:, 1:2] + 1.5, truth[:, 2:]])
    Y = model(torch.tensor(x), torch.tensor(full)).numpy() + 0.03 * RNG.normal(size=(12, 121))
    ties = {"g2_sigma": "g1_sigma", "g2_center": "g1_center + 1.5"}
    p0 = full * RNG.uniform(0.9, 1.1, full.shape)
    many = gradfit.fit_many(model, x, Y, p0=p0, tie=ties)
    assert list(many.status) == ["converged"] * 12
    for row, y, start in zip(range(12), Y, p0):
        one = _single(model, x, y, p0=start, tie=ties)
        np.testing.assert_allclose(many.params[row], list(one.params.values()), rtol=SAME_AS_SINGLE)
        np.testing.assert_allclose(many.stderr[row], list(one.stderr.values()), rtol=1e-6)

"""Bounds and fixed parameters, for every method, against curve_fit as the oracle."""

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

import gradfit
from gradfit.errors import ConvergenceWarning, ModelError
from gradfit.params import parse_bound
from problems import PROBLEMS, exp_decay

PROB = PROBLEMS[1]  # a*exp(-b*x) + c, true (5, 1.3, 0.5)
X, Y = PROB["x"], PROB["y"]
PARAM_RTOL = 1e-6

BOUNDED_METHODS = ["auto", "lm", "gd", "lbfgs", "adam", "nesterov"]


def _curve_fit(f, p0, **kw):
    return curve_fit(f, X, Y, p0=p0, ftol=1e-14, xtol=1e-14, gtol=1e-14, **kw)


@pytest.mark.parametrize("method", BOUNDED_METHODS)
def test_a_bound_that_binds_holds_for_every_method(method):
    # the best rate is about 1.3; with b <= 1 the fit must stop at the bound, as curve_fit's does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a bound bends the landscape (it is a change of variables): gd needs a smaller step than its default
        rate = {"learning_rate": 0.1} if method == "gd" else {}
        result = gradfit.fit(exp_decay, X, Y, p0=[4.0, 0.5, 0.0], method=method, bounds={"b": (None, 1.0)}, **rate)
    assert result.params["b"] <= 1.0
    assert result.at_bound == {"b": "upper"}
    assert "b is at its upper bound 1" in result.message and "(at upper bound)" in result.report()
    expected, _ = curve_fit(lambda x, a, c: 1.0 * 0 + a * np.exp(-1.0 * x) + c, X, Y, p0=[4, 0])
    np.testing.assert_allclose([result.params["a"], result.params["c"]], expected, rtol=1e-4)


@pytest.mark.parametrize("method", BOUNDED_METHODS)
def test_bounds_that_do_not_bind_change_nothing(method):
    free = gradfit.fit(exp_decay, X, Y, p0=[4.0, 1.0, 0.0], method=method)
    bounded = gradfit.fit(
        exp_decay, X, Y, p0=[4.0, 1.0, 0.0], method=method, bounds={"a": (0, None), "b": (0.1, 10), "c": (None, 5)}
    )
    np.testing.assert_allclose(list(bounded.params.values()), list(free.params.values()), rtol=PARAM_RTOL)
    np.testing.assert_allclose(list(bounded.stderr.values()), list(free.stderr.values()), rtol=1e-3)
    assert bounded.at_bound == {}


def test_fixed_parameter_matches_curve_fit_of_the_reduced_model():
    result = gradfit.fit(exp_decay, X, Y, p0=[4.0, 1.0, 0.0], fixed={"c": 0.5})
    popt, pcov = _curve_fit(lambda x, a, b: a * np.exp(-b * x) + 0.5, [4.0, 1.0])
    np.testing.assert_allclose([result.params["a"], result.params["b"]], popt, rtol=PARAM_RTOL)
    np.testing.assert_allclose(result.covariance[:2, :2], pcov, rtol=1e-4)
    assert result.params["c"] == 0.5 and result.stderr["c"] == 0.0
    assert result.reduced_chi2 == pytest.approx(result.chi2 / (len(X) - 2))
    assert "c: " in result.report() and "(fixed)" in result.report()
    assert result.history.param_names == ("a", "b", "c") and result.history[-1].params[2] == 0.5


@pytest.mark.parametrize("method", ["gd", "lbfgs", "lm"])
def test_fixed_works_for_every_method(method):
    result = gradfit.fit(exp_decay, X, Y, p0=[4.0, 1.0, 0.0], fixed={"c": 0.5}, method=method)
    popt, _ = _curve_fit(lambda x, a, b: a * np.exp(-b * x) + 0.5, [4.0, 1.0])
    np.testing.assert_allclose([result.params["a"], result.params["b"]], popt, rtol=1e-5)


def test_bounds_with_curve_fit_as_the_oracle():
    popt, _ = curve_fit(
        exp_decay_np,
        X,
        Y,
        p0=[4.0, 0.5, 0.0],
        bounds=([-np.inf, 0, -np.inf], [np.inf, 1.0, np.inf]),
        ftol=1e-14,
        xtol=1e-14,
        gtol=1e-14,
    )
    result = gradfit.fit(exp_decay, X, Y, p0=[4.0, 0.5, 0.0], bounds={"b": (0, 1.0)})
    np.testing.assert_allclose(list(result.params.values()), popt, rtol=1e-5)


def exp_decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def test_history_is_in_the_users_parameters():
    with pytest.warns(ConvergenceWarning):  # 50 steps are not enough; what they visited is the point
        result = gradfit.fit(
            exp_decay, X, Y, p0=[4.0, 0.5, 0.0], bounds={"b": (0, 1.0)}, method="gd", max_steps=50, learning_rate=0.1
        )
    assert all(0 <= r.params[1] <= 1.0 for r in result.history)
    assert result.history.init_params[1] == pytest.approx(0.5, rel=1e-6)


def test_a_guess_outside_the_bounds_is_moved_inside():
    x = np.linspace(-5, 5, 60)
    y = 3 * np.exp(-((x - 0.7) ** 2) / (2 * 0.9**2))
    result = gradfit.fit("gaussian", x, y, bounds={"center": (1.0, 2.0)})
    assert 1.0 <= result.params["center"] <= 2.0 and result.at_bound == {"center": "lower"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bounds": {"d": (0, 1)}}, "`bounds` names unknown parameter 'd'"),
        ({"bounds": {"b": (2, 1)}}, "lower bound 2 must be below the upper bound 1"),
        ({"bounds": {"b": 5}}, r"bounds\['b'\] must be a pair"),
        ({"bounds": {"b": ("low", 1)}}, "lower bound of 'b' must be a number or None"),
        ({"fixed": {"z": 1}}, "`fixed` names unknown parameter 'z'"),
        ({"fixed": {"a": 1, "b": 1, "c": 1}}, "Every parameter is fixed"),
        ({"fixed": {"c": math.nan}}, "must be finite"),
        ({"fixed": {"b": 3}, "bounds": {"b": (0, 1)}}, r"fixed\['b'\] = 3 is outside its bounds"),
        ({"p0": [4, 2, 0], "bounds": {"b": (0, 1)}}, "p0 b=2 is outside its bounds"),
    ],
)
def test_bad_bounds_and_fixed(kwargs, match):
    kwargs.setdefault("p0", [4.0, 0.5, 0.0])
    with pytest.raises(ModelError, match=match):
        gradfit.fit(exp_decay, X, Y, **kwargs)


def test_linear_method_refuses_constraints():
    with pytest.raises(gradfit.OptionError, match="cannot honour bounds, fixed or tied"):
        gradfit.fit("quadratic", X, Y, method="linear", fixed={"c": 1.0})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("b>0", ("b", 0.0, None)),
        ("b >= 0", ("b", 0.0, None)),
        ("c<10", ("c", None, 10.0)),
        ("0<c<10", ("c", 0.0, 10.0)),
        ("-1e-3<=k<=2.5", ("k", -1e-3, 2.5)),
        ("5>c", ("c", None, 5.0)),
        ("10>c>0", ("c", 0.0, 10.0)),
    ],
)
def test_parse_bound(text, expected):
    assert parse_bound(text) == expected


@pytest.mark.parametrize("text", ["b", "b=0", "0<c>10", "b>x", "1<2", ""])
def test_parse_bound_refuses(text):
    with pytest.raises(ValueError, match="write a bound as"):
        parse_bound(text)


def test_bounded_gd_backtracks_by_default():
    # with its fixed default rate, gd overshoots on this bounded problem (see the test above, which gives 0.1);
    # left to itself it takes Armijo's backtracking line search and lands on the bound
    result = gradfit.fit(exp_decay, X, Y, p0=[4.0, 0.5, 0.0], method="gd", bounds={"b": (None, 1.0)})
    assert result.converged and result.at_bound == {"b": "upper"}
    assert len({r.learning_rate for r in result.history}) > 1  # the rate adapts
    expected, _ = curve_fit(lambda x, a, c: a * np.exp(-1.0 * x) + c, X, Y, p0=[4, 0])
    np.testing.assert_allclose([result.params["a"], result.params["c"]], expected, rtol=1e-4)


@pytest.mark.parametrize("bound, side", [((0.9, 3.0), "lower"), ((-3.0, 0.1), "upper"), ((0.9, None), "lower")])
def test_an_optimum_on_a_bound_is_reached_in_a_few_dozen_steps(bound, side):
    """The centre's unconstrained optimum (0.4) lies outside its bounds. Through the change of variables LM
    crawled toward the bound (1,000 steps, not converged); held on the bound as an active set, the fit ends in a
    few dozen steps at scipy least_squares(method='trf')'s answer, and says the centre is on its bound."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(4)
    x = np.linspace(-5, 5, 100)
    y = 2.0 * np.exp(-((x - 0.4) ** 2) / (2 * 0.8**2)) + 0.05 * rng.normal(size=x.size)
    lower = -np.inf if bound[0] is None else bound[0]
    upper = np.inf if bound[1] is None else bound[1]
    start = [1.5, min(max(0.4, lower + 0.5), upper - 0.05), 1.0]
    trf = least_squares(
        lambda p: p[0] * np.exp(-((x - p[1]) ** 2) / (2 * p[2] ** 2)) - y,
        start,
        bounds=([-np.inf, lower, -np.inf], [np.inf, upper, np.inf]),
        method="trf",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    result = gradfit.fit("gaussian", x, y, p0=start, bounds={"center": bound})
    assert result.converged and result.n_steps <= 60
    assert result.at_bound == {"center": side}
    np.testing.assert_allclose(list(result.params.values()), trf.x, rtol=1e-7)
    assert "center held on its bound" in result.message


# --- tied parameters: an expression of the others, as lmfit's `expr` -------------------------------------

TIES = {"g2_sigma": "g1_sigma", "g2_center": "g1_center + 1.5"}
AS_LMFIT = 1e-6  # relative: lmfit's answers from its own least squares (MINPACK) and its propagation of errors


def _two_peaks(seed=1):
    rng = np.random.default_rng(seed)
    x = np.linspace(-5, 5, 201)

    def peak(a, c, s):
        return a * np.exp(-((x - c) ** 2) / (2 * s**2))

    return x, peak(3, -0.8, 0.6) + peak(2, 0.7, 0.6) + 0.05 * rng.normal(size=x.size)


START = dict(g1_amplitude=3, g1_center=-1, g1_sigma=0.5, g2_amplitude=2)


@pytest.mark.parametrize("method", ["auto", "lm", "lbfgs"])
def test_tied_parameters_equal_the_model_with_the_ties_written_in(method):
    x, y = _two_peaks()
    tied = gradfit.fit("gaussian + gaussian", x, y, p0=START, tie=TIES, method=method)
    by_hand = gradfit.fit(
        "a1*exp(-(x - c1)**2/(2*s**2)) + a2*exp(-(x - (c1 + 1.5))**2/(2*s**2))",
        x,
        y,
        p0=dict(a1=3, c1=-1, s=0.5, a2=2),
        method=method,
    )
    rtol = 1e-8 if method != "lbfgs" else 1e-6
    for mine, theirs in [("g1_amplitude", "a1"), ("g1_center", "c1"), ("g1_sigma", "s"), ("g2_amplitude", "a2")]:
        assert tied.params[mine] == pytest.approx(by_hand.params[theirs], rel=rtol)
        assert tied.stderr[mine] == pytest.approx(by_hand.stderr[theirs], rel=1e-6)
    assert tied.params["g2_sigma"] == tied.params["g1_sigma"]
    assert tied.params["g2_center"] == pytest.approx(tied.params["g1_center"] + 1.5, rel=1e-15)
    # derived, not free: the degrees of freedom and the information criteria count four parameters
    assert tied.reduced_chi2 == pytest.approx(by_hand.reduced_chi2, rel=1e-8)
    assert tied.aic == pytest.approx(by_hand.aic, rel=1e-8) and tied.bic == pytest.approx(by_hand.bic, rel=1e-8)
    assert "g2_center tied: g2_center = g1_center + 1.5" in tied.message
    report = " ".join(tied.report().split())
    assert "== 'g1_center + 1.5'" in report and "# variables = 4" in report
    if method == "auto":  # and the HTML report's table of parameters
        from gradfit.report import report_html

        assert "tied: = g1_center + 1.5" in report_html(tied)


def test_tied_parameters_and_their_errors_equal_lmfits():
    """lmfit's own way: a composite of two Models with prefixes, the ties as `expr`; a tied parameter's standard
    error propagated from the covariance (lmfit through the uncertainties package)."""
    import lmfit  # a test dependency (pyproject.toml, [test])

    def peak(x, amplitude, center, sigma):  # gradfit's gaussian (lmfit's own is normalized to its area)
        return amplitude * np.exp(-((x - center) ** 2) / (2 * sigma**2))

    x, y = _two_peaks(seed=3)
    model = lmfit.Model(peak, prefix="g1_") + lmfit.Model(peak, prefix="g2_")
    params = model.make_params(**{k: v for k, v in START.items()}, g2_center=0.5, g2_sigma=0.5)
    for name, expression in TIES.items():
        params[name].set(expr=expression)
    # (scipy's least_squares under lmfit: its default leastsq's errors come from a finite-difference Jacobian, 3e-6
    # from these)
    theirs = model.fit(y, params, x=x, method="least_squares")
    mine = gradfit.fit("gaussian + gaussian", x, y, p0=START, tie=TIES)
    for name in mine.params:
        assert mine.params[name] == pytest.approx(theirs.params[name].value, rel=AS_LMFIT), name
        assert mine.stderr[name] == pytest.approx(theirs.params[name].stderr, rel=AS_LMFIT), name
    assert mine.chi2 == pytest.approx(theirs.chisqr, rel=AS_LMFIT) and mine.aic == pytest.approx(theirs.aic, rel=1e-6)


def test_a_tie_of_a_tie_with_bounds_on_the_free_ones():
    """A tie may use another tied parameter (taken in order) and a bounded one; the bound holds, the ties hold."""
    x, y = _two_peaks(seed=2)
    ties = {"g2_sigma": "g1_sigma", "g2_amplitude": "0.7*g1_amplitude*g2_sigma/g1_sigma"}
    result = gradfit.fit(
        "gaussian + gaussian",
        x,
        y,
        p0=dict(g1_amplitude=3, g1_center=-1, g1_sigma=0.5, g2_center=0.5),
        tie=ties,
        bounds={"g1_sigma": (0.1, 0.55)},
    )
    assert result.params["g1_sigma"] == pytest.approx(0.55, rel=1e-12)  # pushed onto its upper bound
    assert result.params["g2_sigma"] == result.params["g1_sigma"]
    assert result.params["g2_amplitude"] == pytest.approx(0.7 * result.params["g1_amplitude"], rel=1e-14)
    assert result.stderr["g2_amplitude"] == pytest.approx(0.7 * result.stderr["g1_amplitude"], rel=1e-6)


@pytest.mark.parametrize(
    "tie, match",
    [
        ({"g3_sigma": "g1_sigma"}, "`tie` names unknown parameter 'g3_sigma'"),
        ({"g2_sigma": "g1_sigmaa"}, "refers to 'g1_sigmaa', which is not a parameter"),
        ({"g2_sigma": "2*g2_sigma"}, "refers to g2_sigma itself"),
        ({"g2_sigma": "g1_sigma", "g1_sigma": "g2_sigma"}, "cycle: g2_sigma -> g1_sigma -> g2_sigma"),
        ({"g2_sigma": "__import__('os')"}, "The tie of g2_sigma:"),
        ({"g2_sigma": "0.5"}, "names no parameter"),
        ({"g1_center": "g2_center"}, "g1_center is tied, so it cannot also be bounded"),
        ("g2_sigma=g1_sigma", "`tie` must be a dict"),
    ],
)
def test_bad_ties_are_refused_naming_the_names(tie, match):
    x, y = _two_peaks()
    with pytest.raises(ModelError, match=re.escape(match) if "->" in match else match):
        gradfit.fit("gaussian + gaussian", x, y, tie=tie, bounds={"g1_center": (-2, 2)})


def test_widths_are_reported_positive_only_where_the_model_is_unchanged():
    """A negative width is flipped with the ties that follow it (g2_sigma = g1_sigma), and kept where a tie uses it
    unevenly (g2_center = g1_center + g1_sigma): either way the reported parameters draw the fitted curve."""
    from gradfit.library import get_model
    from gradfit.params import check_ties, widths_positive

    model = get_model("gaussian + gaussian")
    x = torch.linspace(0, 10, 50, dtype=torch.float64)
    values = np.array([[3.0, 4.0, -0.5, 2.0, 5.5, -0.5], [3.0, 4.0, -0.5, 2.0, 3.5, 0.7]])
    even = check_ties({"g2_sigma": "g1_sigma"}, model.param_names, {}, {})
    uneven = check_ties({"g2_center": "g1_center + g1_sigma"}, model.param_names, {}, {})
    got, flipped = widths_positive(model, values[:1], {}, {}, even)
    np.testing.assert_array_equal(got[0], [3.0, 4.0, 0.5, 2.0, 5.5, 0.5])
    np.testing.assert_array_equal(flipped[0], [False, False, True, False, False, True])
    got, flipped = widths_positive(model, values[1:], {}, {}, uneven)
    np.testing.assert_array_equal(got[0], values[1])  # flipping g1_sigma would move g2's centre: kept
    assert not flipped.any()
    got, _ = widths_positive(model, values, {}, {})  # no ties: every free width positive
    assert (got[:, [2, 5]] > 0).all()
    for before, after in zip(values, got):
        assert torch.allclose(model(x, torch.as_tensor(before)), model(x, torch.as_tensor(after)), rtol=1e-14)


def test_fit_many_keeps_a_tie_on_a_width_when_it_reports_the_width_positive():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    Y = 3 * np.exp(-((x - 4) ** 2) / 0.5) + 2 * np.exp(-((x - 5.5) ** 2) / 0.5) + 0.05 * rng.normal(size=(40, 200))
    # starts with negative widths: the fitted widths come out negative, and are reported positive
    fitted = gradfit.fit_many("gaussian + gaussian", x, Y, p0=[3, 4, -0.6, 2, 5.5, -0.6], tie={"g2_sigma": "g1_sigma"})
    names = list(fitted.param_names)
    assert (fitted.params[:, names.index("g1_sigma")] > 0).all()
    np.testing.assert_array_equal(fitted.params[:, names.index("g2_sigma")], fitted.params[:, names.index("g1_sigma")])

"""Profile-likelihood confidence intervals (gradfit.profile): equal to lmfit's conf_interval and conf_interval2d on
lmfit's documented examples, exact for a model linear in its parameters, and at each limit the re-fitted χ² is the
F-test's threshold by an independent re-fit (scipy's least_squares)."""

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.stats import f as f_dist

import gradfit
from gradfit.errors import OptionError

LMFIT = 1e-4  # relative, against lmfit (its own root search stops at rtol 0.5e-4)


def _lmfit_example():
    """lmfit's documentation (confidence.rst): 1/(a x) + b, 100 points, noise 0.1."""
    x = np.linspace(0.3, 10, 100)
    y = 1 / (0.1 * x) + 2 + 0.1 * np.random.RandomState(0).randn(x.size)
    return x, y


def _two_decays():
    """lmfit's documentation's second example: two exponentials, asymmetric intervals."""
    x = np.linspace(1, 10, 250)
    y = 3.0 * np.exp(-x / 2) - 5.0 * np.exp(-(x - 0.1) / 10.0) + 0.1 * np.random.RandomState(0).randn(x.size)
    return x, y


def _lmfit_fit(x, y, residual, start):
    import lmfit

    params = lmfit.create_params(**start)
    mini = lmfit.Minimizer(lambda p: residual(p, x) - y, params, nan_policy="propagate")
    with np.errstate(all="ignore"):  # (Nelder-Mead's wilder trial points overflow exp)
        first = mini.minimize(method="Nelder")
    return mini, mini.minimize(method="leastsq", params=first.params)


def _as_array(ci):
    return {name: np.array([v for _, v in pairs]) for name, pairs in ci.items()}


def test_equal_to_lmfits_conf_interval_on_its_documented_example():
    import lmfit

    x, y = _lmfit_example()
    mini, best = _lmfit_fit(x, y, lambda p, x: 1 / (p["a"] * x) + p["b"], {"a": 0.1, "b": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = lmfit.conf_interval(mini, best)
    result = gradfit.fit("1/(a*x) + b", x, y, p0={"a": 0.1, "b": 1})
    got = result.conf_interval()
    assert list(got) == ["a", "b"]
    for name in got:
        assert [p for p, _ in got[name]] == pytest.approx([p for p, _ in expected[name]], abs=1e-12)
        np.testing.assert_allclose(_as_array(got)[name], _as_array(expected)[name], rtol=LMFIT)
    assert result.intervals == got


def test_asymmetric_intervals_equal_lmfits_and_the_threshold_by_an_independent_refit():
    import lmfit

    x, y = _two_decays()

    def curve(p, x):
        return p["a1"] * np.exp(-x / p["t1"]) + p["a2"] * np.exp(-(x - 0.1) / p["t2"])

    mini, best = _lmfit_fit(x, y, curve, {"a1": 4, "a2": 4, "t1": 3, "t2": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = lmfit.conf_interval(mini, best, sigmas=[1, 2])
    result = gradfit.fit(
        "a1*exp(-x/t1) + a2*exp(-(x - 0.1)/t2)", x, y, p0={k: best.params[k].value for k in "a1 t1 a2 t2".split()}
    )
    got = result.conf_interval(sigmas=(1, 2))
    for name in expected:
        np.testing.assert_allclose(_as_array(got)[name], _as_array(expected)[name], rtol=LMFIT)
    lows, highs = _as_array(got)["t1"][:2], _as_array(got)["t1"][3:]
    assert highs[1] - result.params["t1"] > 1.2 * (result.params["t1"] - lows[0])  # asymmetric, as lmfit finds it

    # the oracle: at each limit, scipy's least_squares with that parameter held finds the F-test's χ²
    names = list(result.params)
    n, k = len(x), len(names)
    chi2_best = float(np.sum((result.predict(x) - y) ** 2))
    for name, pairs in got.items():
        j = names.index(name)
        for prob, value in pairs:
            if prob == 0:
                continue
            start = np.array([result.params[m] for m in names])

            def residual(q, value=value, j=j):
                p = np.insert(q, j, value)
                return p[0] * np.exp(-x / p[1]) + p[2] * np.exp(-(x - 0.1) / p[3]) - y

            fit = least_squares(residual, np.delete(start, j), xtol=1e-15, ftol=1e-15, gtol=1e-15)
            chi2 = 2 * fit.cost
            target = chi2_best * (1 + f_dist.ppf(prob, 1, n - k) / (n - k))
            assert chi2 == pytest.approx(target, rel=1e-8), (name, prob)


def test_a_model_linear_in_its_parameters_has_the_covariances_interval_exactly():
    """χ² is exactly quadratic: the limit is the best value ± √F.ppf(P; 1, n − k) standard errors."""
    rng = np.random.default_rng(3)
    x = np.linspace(0, 5, 40)
    y = 1.5 * x - 2 + rng.normal(0, 0.3, 40)
    result = gradfit.fit("slope*x + intercept", x, y, method="lm")
    got = result.conf_interval(sigmas=(1, 2, 0.9))  # 0.9: a probability, as lmfit reads it
    for name, pairs in got.items():
        for prob, value in pairs:
            if prob == 0:
                assert value == result.params[name]
                continue
            t = math.sqrt(f_dist.ppf(prob, 1, 38))
            offset = abs(value - result.params[name])
            assert offset == pytest.approx(t * result.stderr[name], rel=1e-7), (name, prob)
    assert [p for p, _ in got["slope"]] == pytest.approx(
        [
            math.erf(2 / math.sqrt(2)),
            0.9,
            math.erf(1 / math.sqrt(2)),
            0.0,
            math.erf(1 / math.sqrt(2)),
            0.9,
            math.erf(2 / math.sqrt(2)),
        ]
    )
    # a model of one free parameter (nothing else to re-fit), and a fixed parameter left out
    one = gradfit.fit("slope*x + intercept", x, y, method="lm", fixed={"intercept": -2.0}).conf_interval(sigmas=(1,))
    assert list(one) == ["slope"] and one["slope"][0][1] < one["slope"][1][1] < one["slope"][2][1]


def test_a_bound_cuts_the_interval_off_and_robust_or_dataless_fits_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    x = np.linspace(0, 4, 50)
    y = 3 * np.exp(-1.2 * x) + 0.5 + rng.normal(0, 0.02, 50)
    free = gradfit.fit("exp_decay", x, y)
    cap = free.params["rate"] + 1.5 * free.stderr["rate"]
    bounded = gradfit.fit("exp_decay", x, y, bounds={"rate": (0, cap)})
    got = bounded.conf_interval(sigmas=(1, 2, 3))
    highs = [v for _, v in got["rate"][4:]]
    assert highs[0] < cap and highs[1] == cap and highs[2] == cap  # 2σ and 3σ lie beyond the bound
    np.testing.assert_allclose(
        [v for _, v in got["amplitude"]], [v for _, v in free.conf_interval(sigmas=(1, 2, 3))["amplitude"]], rtol=1e-6
    )  # (the bound is far from the best fit: the same profile)
    robust = gradfit.fit("exp_decay", x, y, loss="soft_l1")
    with pytest.raises(OptionError, match="robust loss 'soft_l1'"):
        robust.conf_interval()
    with pytest.raises(OptionError, match="No free parameter 'tau'"):
        free.conf_interval(names=["tau"])
    with pytest.raises(OptionError, match="sigmas are positive numbers"):
        free.conf_interval(sigmas=(0, 1))
    free.save(tmp_path / "r.json", data=False)
    with pytest.raises(OptionError, match="holds no data"):
        gradfit.load_result(tmp_path / "r.json").conf_interval()


def test_intervals_are_reported_and_saved(tmp_path):
    x, y = _lmfit_example()
    result = gradfit.fit("1/(a*x) + b", x, y, p0={"a": 0.1, "b": 1})
    result.conf_interval(sigmas=(1, 2))
    text = result.report()
    assert "[[Confidence intervals]]" in text and "95.45%" in text and "_BEST_" in text
    block = text.split("[[Confidence intervals]]")[1]
    row = next(line for line in block.splitlines() if line.strip().startswith("a:"))
    low1 = result.intervals["a"][1][1] - result.params["a"]
    assert f"{low1:+.5g}" in row
    result.save(tmp_path / "r.json")
    again = gradfit.load_result(tmp_path / "r.json")
    assert again.intervals == result.intervals


def test_conf_interval2d_equals_lmfits():
    import lmfit

    x, y = _two_decays()

    def curve(p, x):
        return p["a1"] * np.exp(-x / p["t1"]) + p["a2"] * np.exp(-(x - 0.1) / p["t2"])

    mini, best = _lmfit_fit(x, y, curve, {"a1": 4, "a2": 4, "t1": 3, "t2": 3})
    result = gradfit.fit(
        "a1*exp(-x/t1) + a2*exp(-(x - 0.1)/t2)", x, y, p0={k: best.params[k].value for k in "a1 t1 a2 t2".split()}
    )
    limits = ((2.6, 3.4), (11.0, 12.8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex, ey, expected = lmfit.conf_interval2d(mini, best, "a1", "t2", 8, 7, limits=[(3.4, 2.6), (12.8, 11.0)])
    gx, gy, got = result.conf_interval2d("a1", "t2", 8, 7, limits=limits)
    np.testing.assert_allclose(gx, ex[::-1] if ex[0] > ex[-1] else ex)
    assert got.shape == (7, 8)
    grid = expected[::-1, ::-1] if ex[0] > ex[-1] else expected
    np.testing.assert_allclose(got, grid, rtol=LMFIT, atol=1e-6)
    _, _, chi2 = result.conf_interval2d("a1", "t2", 8, 7, limits=limits, chi2_out=True)
    assert chi2.min() >= result.chi2 * (1 - 1e-9)
    with pytest.raises(OptionError, match="two different parameters"):
        result.conf_interval2d("a1", "a1")


def test_the_confidence_region_figure_draws_profile_contours_and_ellipses():
    x, y = _two_decays()
    result = gradfit.fit("a1*exp(-x/t1) + a2*exp(-(x - 0.1)/t2)", x, y, p0={"a1": 3, "t1": 1.3, "a2": -4.3, "t2": 11.8})
    from gradfit.plots import plot_conf_interval2d

    fig = plot_conf_interval2d(result, "a1", "t2", grid=15, sigmas=(1, 2))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "a1" and ax.get_ylabel() == "t2"
    assert "Confidence regions of a1 and t2" in ax.get_title()
    labels = [t.get_text() for t in ax.texts]
    assert "68.3%" in labels and "95.4%" in labels
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["profile likelihood (others re-fitted)", "covariance ellipse"]
    dashed = [c for c in ax.collections if getattr(c, "get_linestyle", lambda: None)() and c.get_linestyle()[0][1]]
    assert dashed, "the covariance ellipses are dashed"


def test_the_command_line_reports_and_writes_the_intervals(capsys, tmp_path):
    import json

    from conftest import run_cli

    x, y = _lmfit_example()
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    out_json = tmp_path / "fit.json"
    code, out, _ = run_cli(
        capsys, "fit", data, "--model", "1/(a*x) + b", "--p0", "a=0.1,b=1", "--conf-interval", "1,2", "--json", out_json
    )
    assert code == 0 and "[[Confidence intervals]]" in out
    expected = gradfit.fit("1/(a*x) + b", x, y, p0={"a": 0.1, "b": 1}).conf_interval(sigmas=(1, 2))
    written = json.loads(out_json.read_text())["intervals"]
    for name, pairs in expected.items():
        np.testing.assert_allclose([v for _, v in written[name]], [v for _, v in pairs], rtol=1e-12)
    out_json.unlink()
    code, _, err = run_cli(capsys, "fit", data, "--model", "1/(a*x) + b", "--conf-interval", "0,1", "--json", out_json)
    assert code == 2 and "--conf-interval: levels are positive numbers" in err and not out_json.exists()
    code, _, err = run_cli(capsys, "fit", data, "--model", "1/(a*x) + b", "--loss", "huber", "--conf-interval")
    assert code == 2 and "robust loss 'huber'" in err and len(err.strip().splitlines()) == 1


def test_the_direct_boundary_and_the_refitted_profiles_find_the_same_limits(monkeypatch):
    """conf_interval solves for each limit directly first (_boundary); a limit it does not settle is found by
    re-fitting the profile. With the first switched off, the second alone gives the same limits."""
    import gradfit.profile

    x, y = _two_decays()
    result = gradfit.fit("a1*exp(-x/t1) + a2*exp(-(x - 0.1)/t2)", x, y, p0={"a1": 3, "t1": 1.3, "a2": -4.3, "t2": 11.8})
    direct = _as_array(result.conf_interval(sigmas=(1, 2)))
    monkeypatch.setattr(gradfit.profile, "BOUNDARY_ROUNDS", 0)
    refitted = _as_array(result.conf_interval(sigmas=(1, 2)))
    for name in direct:
        np.testing.assert_allclose(direct[name], refitted[name], rtol=1e-7)

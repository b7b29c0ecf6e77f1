"""gradfit.fit against independent oracles: scipy's curve_fit, numpy's least squares, NIST's certified values."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

import gradfit
from gradfit.errors import ConvergenceWarning, FitError
from nist_strd import PROBLEMS as NIST
from problems import PROBLEMS, exp_decay

# Tolerances, named once.
PARAM_RTOL = 1e-6  # parameters against curve_fit (the bar, for every converging method)
STDERR_RTOL = 1e-4  # standard errors against curve_fit, for lm/auto
GRADIENT_STDERR_RTOL = 1e-3  # for gradient methods: their stopping point differs in the last digits
OPTIMUM_RTOL = 1e-9  # RMSE against numpy's exact least squares on the seed data
CERTIFIED_DIGITS = 6  # NIST: significant digits that auto must reach

ITERATIVE = [m for m in gradfit.METHODS if m != "linear"]


def _numpy_model(f):
    if f == "quadratic":
        return lambda x, a, b, c: a * x**2 + b * x + c
    return lambda x, *p: f(torch.tensor(x), *torch.tensor(p)).numpy()


@pytest.fixture(scope="module")
def oracle():
    """curve_fit's answer for each test problem, with tight tolerances."""
    answers = {}
    for prob in PROBLEMS:
        p0 = prob["p0"] if prob["p0"] is not None else [0.0, 0.0, 0.0]
        popt, pcov = curve_fit(_numpy_model(prob["f"]), prob["x"], prob["y"], p0=p0, ftol=1e-14, xtol=1e-14, gtol=1e-14)
        answers[prob["name"]] = (popt, np.sqrt(np.diag(pcov)), pcov)
    return answers


@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("prob", PROBLEMS, ids=[p["name"] for p in PROBLEMS])
def test_every_method_finds_curve_fits_answer(method, prob, oracle):
    popt, perr, _ = oracle[prob["name"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # every method must converge here
        result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["p0"], method=method)
    assert result.converged, result.message
    np.testing.assert_allclose(list(result.params.values()), popt, rtol=PARAM_RTOL)
    stderr_rtol = STDERR_RTOL if method in ("lm", "auto") else GRADIENT_STDERR_RTOL
    np.testing.assert_allclose(list(result.stderr.values()), perr, rtol=stderr_rtol)
    expected_method = method if method != "auto" else "linear" if prob["f"] == "quadratic" else "lm"
    assert result.method == expected_method
    if prob["true"] is not None:  # and the answer is near the truth the data were made from
        np.testing.assert_allclose(list(result.params.values()), prob["true"], rtol=0.1)


def test_covariance_matches_curve_fit(oracle):
    prob = PROBLEMS[1]
    _, _, pcov = oracle[prob["name"]]
    result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["p0"])
    np.testing.assert_allclose(result.covariance, pcov, rtol=STDERR_RTOL)
    assert result.covariance.shape == (3, 3)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_sigma_weights_like_curve_fit(absolute_sigma):
    prob = PROBLEMS[1]
    sigma = np.linspace(0.02, 0.2, len(prob["x"]))
    popt, pcov = curve_fit(
        _numpy_model(prob["f"]),
        prob["x"],
        prob["y"],
        p0=prob["p0"],
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        ftol=1e-14,
        xtol=1e-14,
        gtol=1e-14,
    )
    result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["p0"], sigma=sigma, absolute_sigma=absolute_sigma)
    np.testing.assert_allclose(list(result.params.values()), popt, rtol=PARAM_RTOL)
    np.testing.assert_allclose(result.covariance, pcov, rtol=STDERR_RTOL)
    residuals = (result.predict(prob["x"]) - prob["y"]) / sigma
    assert result.chi2 == pytest.approx(float(residuals @ residuals), rel=1e-12)


def test_seed_default_reaches_the_optimum_in_at_most_20_iterations(golden):
    x, y = gradfit.seed_data()
    result = gradfit.fit("quadratic", x, y)
    exact = np.linalg.lstsq(np.vander(np.array(golden["X"]), 3), np.array(golden["Y"]), rcond=None)[0]
    exact_rmse = math.sqrt(np.mean((np.vander(np.array(golden["X"]), 3) @ exact - golden["Y"]) ** 2))
    assert abs(result.rmse - exact_rmse) <= OPTIMUM_RTOL * exact_rmse
    assert result.n_steps <= 20 and result.converged
    assert result.gap_to_optimum <= 1e-9
    assert result.message.startswith("Converged") and "auto chose linear" in result.message


def test_lm_on_the_seed_data_also_reaches_the_optimum_in_at_most_20_iterations(golden):
    x, y = gradfit.seed_data()
    result = gradfit.fit("quadratic", x, y, method="lm")
    assert result.n_steps <= 20 and result.converged
    assert abs(result.rmse - golden["least_squares_rmse"]) <= OPTIMUM_RTOL * golden["least_squares_rmse"]
    np.testing.assert_allclose(list(result.params.values()), golden["least_squares_params"], rtol=1e-9)


def test_linear_method_is_one_exact_solve_and_refuses_nonlinear_models(oracle):
    x, y = gradfit.seed_data()
    result = gradfit.fit("quadratic", x, y, method="linear")
    assert result.n_steps == 1 and result.gap_to_optimum == 0.0
    popt, perr, _ = oracle["seed quadratic"]
    np.testing.assert_allclose(list(result.stderr.values()), perr, rtol=STDERR_RTOL)
    with pytest.raises(gradfit.ModelError, match="Method 'linear' needs a model linear in its parameters"):
        gradfit.fit(exp_decay, PROBLEMS[1]["x"], PROBLEMS[1]["y"], method="linear")


def test_seed_gd_with_scaling_reaches_the_optimum_within_5000_steps(golden):
    x, y = gradfit.seed_data()
    result = gradfit.fit("quadratic", x, y, method="gd")
    assert result.n_steps <= 5000
    assert result.rmse <= golden["least_squares_rmse"] * (1 + 1e-6)
    first_close = next(r.step for r in result.history if r.rmse <= golden["least_squares_rmse"] * (1 + 1e-6))
    assert first_close <= 5000


def test_seed_gd_unscaled_from_the_articles_start_reproduces_the_article(golden):
    x, y = gradfit.seed_data()
    with pytest.warns(ConvergenceWarning, match="did not converge in 20 steps"):
        result = gradfit.fit(
            "quadratic",
            x,
            y,
            method="gd",
            scale=False,
            learning_rate=1e-4,
            max_steps=20,
            p0=golden["init_params"],
            dtype=torch.float32,
        )
    assert not result.converged and result.n_steps == 20
    for record, rmse, after in zip(result.history, golden["rmse"], golden["params_after_step"]):
        assert record.rmse == pytest.approx(rmse, rel=1e-9)
        assert record.params == pytest.approx(after, rel=1e-9)
    assert result.gap_to_optimum > 10  # and it says how far it still is


def test_nist_problems_are_in_this_file_correctly():
    # A typo in the data would move the optimum: scipy from NIST's near start must land on the certified values.
    from scipy.optimize import least_squares

    for name, prob in NIST.items():
        x, y = np.array(prob["x"], float), np.array(prob["y"], float)
        f = _numpy_model(prob["f"])
        fit = least_squares(
            lambda p: f(x, *p) - y, prob["start2"], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10000
        )
        np.testing.assert_allclose(fit.x, prob["certified"], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("start", ["start1", "start2"])
@pytest.mark.parametrize("name", list(NIST))
def test_auto_reaches_certified_values_on_nist_problems(name, start):
    prob = NIST[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob[start])
    got = np.array(list(result.params.values()))
    np.testing.assert_allclose(got, prob["certified"], rtol=10**-CERTIFIED_DIGITS, err_msg=name)
    assert result.converged


def test_statistics_match_their_definitions():
    prob = PROBLEMS[2]
    result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["p0"])
    resid = result.predict(prob["x"]) - prob["y"]
    n, k = len(resid), 3
    chi2 = float(resid @ resid)
    assert result.rmse == pytest.approx(math.sqrt(chi2 / n), rel=1e-12)
    assert result.r2 == pytest.approx(1 - chi2 / np.sum((prob["y"] - prob["y"].mean()) ** 2), rel=1e-12)
    assert result.chi2 == pytest.approx(chi2, rel=1e-12)
    assert result.reduced_chi2 == pytest.approx(chi2 / (n - k), rel=1e-12)
    assert result.aic == pytest.approx(n * math.log(chi2 / n) + 2 * k, rel=1e-12)
    assert result.bic == pytest.approx(n * math.log(chi2 / n) + math.log(n) * k, rel=1e-12)
    assert result.gap_to_optimum is None  # not a linear model: no closed-form optimum


@pytest.mark.parametrize("kind", ["list", "numpy", "torch", "pandas", "polars", "float32 numpy"])
def test_any_array_like_input(kind):
    prob = PROBLEMS[1]
    x, y = prob["x"], prob["y"]
    if kind == "list":
        x, y = x.tolist(), y.tolist()
    elif kind == "torch":
        x, y = torch.tensor(x), torch.tensor(y)
    elif kind == "pandas":
        import pandas as pd

        x, y = pd.Series(x), pd.Series(y)
    elif kind == "polars":
        import polars as pl

        x, y = pl.Series(x), pl.Series(y)
    elif kind == "float32 numpy":
        x, y = x.astype(np.float32), y.astype(np.float32)
    result = gradfit.fit(exp_decay, x, y, p0=prob["p0"])
    reference = gradfit.fit(exp_decay, np.asarray(x, float), np.asarray(y, float), p0=prob["p0"])
    assert result.params == reference.params  # cast to float64 the same way, whatever came in


def test_p0_by_name_or_position_and_defaults():
    prob = PROBLEMS[1]
    by_name = gradfit.fit(exp_decay, prob["x"], prob["y"], p0={"a": 4.0, "b": 1.0, "c": 0.0})
    by_position = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=[4.0, 1.0, 0.0])
    assert by_name.params == by_position.params
    default = gradfit.fit(exp_decay, prob["x"], prob["y"])  # ones, as curve_fit
    assert default.params == pytest.approx(by_name.params, rel=1e-8)
    assert default.history.init_params == (1.0, 1.0, 1.0)


def test_a_model_object_and_a_python_function_agree():
    x = np.linspace(-2, 2, 30)
    y = 0.5 * x**2 - x + 2 + 0.01 * np.sin(9 * x)
    as_model = gradfit.fit(gradfit.quadratic(), x, y)
    as_function = gradfit.fit(lambda x, a, b, c: a * x**2 + b * x + c, x, y)
    np.testing.assert_allclose(list(as_model.params.values()), list(as_function.params.values()), rtol=1e-10)
    assert as_function.param_names == ("a", "b", "c")


def test_max_steps_gives_a_convergence_warning_that_says_what_to_change():
    prob = PROBLEMS[1]
    with pytest.warns(ConvergenceWarning, match="did not converge in 5 steps.*Consider increasing max_steps"):
        result = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], method="gd", max_steps=5)
    assert not result.converged and result.n_steps == 5
    assert "reached max_steps=5" in result.message


def test_the_result_says_which_rule_stopped_the_fit():
    prob = PROBLEMS[1]
    assert (
        "gradient fell below gtol" in gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], method="gd").message
    )
    loose = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], method="lm", tol={"ftol": 1e-3})
    assert "loss stopped decreasing (ftol=0.001)" in loose.message


def test_divergence_raises_with_the_history_so_far():
    x, y = gradfit.seed_data()
    with pytest.raises(FitError, match=r"at step \d+ \(learning_rate=1\).*Try a smaller learning rate") as info:
        gradfit.fit("quadratic", x, y, method="gd", scale=False, learning_rate=1.0)
    history = info.value.history
    assert len(history) > 0 and all(math.isfinite(r.loss) for r in history)


def test_learning_rate_auto_backtracks_for_gd_on_raw_parameters(golden):
    x, y = gradfit.seed_data()
    # the raw seed problem: condition number 64,000, and no fixed rate above 1.2e-4 is stable
    with pytest.warns(ConvergenceWarning):  # 500 steps are not enough on raw parameters, but ...
        result = gradfit.fit("quadratic", x, y, method="gd", scale=False, learning_rate="auto", max_steps=500)
    rates = [r.learning_rate for r in result.history]
    assert len(set(rates)) > 1  # the rate adapts
    assert result.rmse < golden["rmse"][-1]  # and gets further than the article's 20 steps
    assert all(b <= a * (1 + 1e-12) for a, b in zip(result.history.loss, result.history.loss[1:]))


def test_learning_rate_auto_probes_for_adam():
    prob = PROBLEMS[1]
    result = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], method="adam", learning_rate="auto")
    assert result.converged
    assert "chosen by a 30-step probe" in result.message


def test_callback_sees_each_step():
    prob = PROBLEMS[1]
    seen = []
    result = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], callback=seen.append)
    assert seen == result.history.records and len(seen) == result.n_steps


def test_nan_policy_omit_drops_and_reports():
    prob = PROBLEMS[1]
    y = prob["y"].copy()
    y[[3, 10]] = [np.nan, np.inf]
    result = gradfit.fit(exp_decay, prob["x"], y, p0=prob["p0"], nan_policy="omit")
    keep = np.isfinite(y)
    reference = gradfit.fit(exp_decay, prob["x"][keep], y[keep], p0=prob["p0"])
    assert result.params == reference.params
    assert result.n_dropped == 2 and result.n_points == len(y) - 2
    assert "2 dropped" in result.report()


def test_report_reads_like_lmfits():
    x, y = gradfit.seed_data()
    report = gradfit.fit("quadratic", x, y).report()
    for part in (
        "[[Model]]",
        "[[Fit Statistics]]",
        "[[Variables]]",
        "[[Correlations]]",
        "R-squared",
        "reduced chi-square",
        "a: ",
        "+/-",
        "C(a, b)",
        "gap to optimum",
        "Converged",
    ):
        assert part in report


def test_to_dict_is_json_ready():
    x, y = gradfit.seed_data()
    d = json.loads(json.dumps(gradfit.fit("quadratic", x, y).to_dict()))
    for key in ("params", "stderr", "covariance", "rmse", "r2", "n_steps", "converged", "message", "method"):
        assert key in d
    assert list(d["params"]) == ["a", "b", "c"] and len(d["covariance"]) == 3


def test_predict_evaluates_the_fitted_curve():
    x, y = gradfit.seed_data()
    result = gradfit.fit("quadratic", x, y)
    p = result.params
    assert result.predict([2.0, 20.0]) == pytest.approx(
        [p["a"] * 4 + p["b"] * 2 + p["c"], p["a"] * 400 + p["b"] * 20 + p["c"]], rel=1e-12
    )


def test_auto_restarts_when_lm_ends_where_a_parameter_is_undetermined():
    prob = NIST["BoxBOD"]
    result = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["start1"])
    assert result.rank == 2
    assert any("restarted from p0" in note for note in result.notes)
    plain = None
    with pytest.warns(ConvergenceWarning, match=r"do not determine b2 \(Jacobian rank 1 < 2\)"):
        plain = gradfit.fit(prob["f"], prob["x"], prob["y"], p0=prob["start1"], method="lm")
    assert plain.rank < 2  # lm alone slides to the degenerate point, and says so


def test_as_many_points_as_parameters_gives_infinite_stderr():
    result = gradfit.fit("quadratic", [0.0, 1.0, 2.0], [1.0, 2.0, 5.0])
    assert result.params == pytest.approx({"a": 1.0, "b": 0.0, "c": 1.0}, abs=1e-12)
    assert all(math.isinf(v) for v in result.stderr.values())
    assert "no degrees of freedom" in result.message


def test_float32_fits_run_in_float32():
    prob = PROBLEMS[1]
    result = gradfit.fit(exp_decay, prob["x"], prob["y"], p0=prob["p0"], dtype=torch.float32, method="lm")
    assert result.dtype == torch.float32
    np.testing.assert_allclose(list(result.params.values()), [5.0, 1.3, 0.5], rtol=0.05)


@pytest.mark.parametrize("weighted", [False, True])
def test_large_linear_fits_stream_the_design_matrix_and_agree(monkeypatch, weighted):
    from gradfit.solvers import problem as problem_module

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 10, 5000)
    y = 0.9 * x**2 - 5.5 * x + 10 + rng.normal(size=x.size)
    sigma = rng.uniform(0.5, 2, x.size) if weighted else None
    whole = gradfit.fit("quadratic", x, y, sigma=sigma)
    monkeypatch.setattr(problem_module, "STREAM_ABOVE", 1000)  # stream anything above 1,000 elements
    monkeypatch.setattr(problem_module, "CHUNK_ROWS", 777)  # in uneven chunks
    streamed = gradfit.fit("quadratic", x, y, sigma=sigma)
    np.testing.assert_allclose(list(streamed.params.values()), list(whole.params.values()), rtol=1e-10)
    np.testing.assert_allclose(list(streamed.stderr.values()), list(whole.stderr.values()), rtol=1e-8)
    assert streamed.rmse == pytest.approx(whole.rmse, rel=1e-12) and streamed.chi2 == pytest.approx(
        whole.chi2, rel=1e-12
    )
    assert streamed.history[0].grad_norm == pytest.approx(whole.history[0].grad_norm, rel=1e-9)
    np.testing.assert_allclose(
        list(streamed.params.values()), np.polyfit(x, y, 2, w=None if sigma is None else 1 / sigma), rtol=1e-9
    )

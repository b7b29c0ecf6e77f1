"""FitResult: saved and loaded (JSON, no pickle), the parts of a sum, the data's column names."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import gradfit
from gradfit.cli import main
from gradfit.errors import ConvergenceWarning, DataError, ExpressionError, ModelError

RNG = np.random.default_rng(7)
X = np.linspace(0, 10, 120)
PEAKS = 3 * np.exp(-((X - 4) ** 2) / 1.0) + 2 * np.exp(-((X - 6.5) ** 2) / 1.6) + 0.1 * X + 0.5
Y = PEAKS + RNG.normal(0, 0.05, len(X))
DECAY = 4 * np.exp(-0.4 * X) + 0.3 + RNG.normal(0, 0.02, len(X))


def _decay_torch(x, a, k):
    return a * torch.exp(-k * x)


def _decay_numpy(x, a, k):  # autograd cannot see through numpy: fitted with estimated derivatives
    return a * np.exp(-k * x)


FITS = {
    "builtin": lambda: gradfit.fit("gaussian", X, 3 * np.exp(-((X - 4) ** 2) / 2) + RNG.normal(0, 0.05, len(X))),
    "sum": lambda: gradfit.fit("gaussian + gaussian + linear", X, Y, p0=[3, 4, 0.7, 2, 6.5, 0.9, 0.1, 0.5]),
    "builtin + expression": lambda: gradfit.fit(
        "gaussian + gaussian + m*x + c", X, Y, p0=[3, 4, 0.7, 2, 6.5, 0.9, 0, 0]
    ),
    "expression": lambda: gradfit.fit("a*exp(-k*t) + c", X, DECAY, variables="t", p0=[3, 0.1, 0]),
    "polynomial": lambda: gradfit.fit("poly3", X, Y),
    "traced function": lambda: gradfit.fit(_decay_torch, X, 5 * np.exp(-0.3 * X) + RNG.normal(0, 0.01, len(X))),
    "bounds and ties": lambda: gradfit.fit(
        "gaussian + gaussian + linear",
        X,
        Y,
        p0=[2.4, 4, 0.7, 2, 6.5, 0.9, 0.1, 0.5],
        bounds={"g1_amplitude": (0, 2.5), "l_slope": (-math.inf, 1)},
        tie={"g2_sigma": "g1_sigma"},
    ),
    "correlated errors": lambda: gradfit.fit("quadratic", X[:30], Y[:30], sigma=np.eye(30) * 0.01 + 0.001),
    "gradient descent": lambda: gradfit.fit("quadratic", X, Y, method="gd", max_steps=50),
}


def _same(a: gradfit.FitResult, b: gradfit.FitResult):
    """Everything a result says, equal: numbers exactly (JSON keeps float64's digits)."""
    assert a.to_dict() == b.to_dict()
    assert a.report() == b.report()
    assert a.params == b.params and a.stderr == b.stderr
    np.testing.assert_array_equal(a.covariance, b.covariance)
    for field in ("rmse", "r2", "chi2", "aic", "bic", "n_points", "n_steps", "method", "message", "notes", "rank"):
        va, vb = getattr(a, field), getattr(b, field)
        assert va == vb or (math.isnan(va) and math.isnan(vb)), field
    for field in ("bounds", "fixed", "tied", "at_bound", "undetermined", "columns", "loss", "f_scale", "dtype"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.history.param_names == b.history.param_names and a.history.init_params == b.history.init_params
    assert a.history.to_csv() == b.history.to_csv()
    np.testing.assert_array_equal(a.predict(a.x), b.predict(a.x))
    for role in ("x", "y", "sigma"):
        np.testing.assert_array_equal(getattr(a, role), getattr(b, role))


@pytest.mark.parametrize("kind", list(FITS))
def test_a_saved_result_loads_as_it_was(kind, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = FITS[kind]()
    path = tmp_path / "fit.json"
    result.save(path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))
    _same(result, gradfit.load_result(path))


def test_a_python_function_is_given_again_on_load(tmp_path):
    y = 5 * np.exp(-0.3 * X) + RNG.normal(0, 0.01, len(X))
    result = gradfit.fit(_decay_numpy, X, y, p0=[1, 0.1])
    result.save(tmp_path / "f.json")
    with pytest.raises(ModelError, match="fitted with the Python function '_decay_numpy'.*model=f"):
        gradfit.load_result(tmp_path / "f.json")
    with pytest.raises(ModelError, match=r"parameters \(a, k, c\), the saved one \(a, k\)"):
        gradfit.load_result(tmp_path / "f.json", model=lambda x, a, k, c: a * np.exp(-k * x) + c)
    _same(result, gradfit.load_result(tmp_path / "f.json", model=_decay_numpy))


def test_a_loaded_result_draws_and_reports_as_the_original(tmp_path):
    from gradfit.plots import plot_fit, write_plots
    from gradfit.report import report_html

    result = FITS["sum"]()
    result.save(tmp_path / "fit.json")
    loaded = gradfit.load_result(tmp_path / "fit.json")
    for run, folder in ((result, tmp_path / "a"), (loaded, tmp_path / "b")):
        folder.mkdir()
        assert write_plots(run, folder) == (["fit.png", "loss.png", "steps.png", "params.png", "landscape.png"], [])
    drawn = [[line.get_ydata() for line in plot_fit(run).axes[0].lines] for run in (result, loaded)]
    for a, b in zip(*drawn):
        np.testing.assert_array_equal(a, b)
    assert report_html(loaded) == report_html(result)


def test_data_false_keeps_the_answer_but_not_the_points(tmp_path):
    from gradfit.plots import plot_fit

    result = FITS["sum"]()
    result.save(tmp_path / "lean.json", data=False)
    result.save(tmp_path / "full.json")
    assert "data" not in json.loads((tmp_path / "lean.json").read_text())
    loaded = gradfit.load_result(tmp_path / "lean.json")
    assert loaded.x is None and loaded.y is None and loaded.params == result.params
    np.testing.assert_array_equal(loaded.predict(X), result.predict(X))
    with pytest.raises(ValueError, match="holds none .*saved with data=False"):
        plot_fit(loaded)


def test_infinite_and_undefined_numbers_survive_the_file(tmp_path):
    x = np.linspace(0, 1, 20)
    with pytest.warns(ConvergenceWarning):  # b and c enter only as b + c: the data cannot tell them apart
        result = gradfit.fit("a*x + b + c", x, 2 * x + 1)
    assert math.isinf(result.stderr["b"])
    result.save(tmp_path / "u.json")
    loaded = gradfit.load_result(tmp_path / "u.json")
    assert loaded.undetermined == result.undetermined and math.isinf(loaded.stderr["b"])
    _same(result, loaded)


def _saved(tmp_path, edit) -> str:
    result = FITS["expression"]()
    result.save(tmp_path / "fit.json")
    saved = json.loads((tmp_path / "fit.json").read_text())
    edit(saved)
    (tmp_path / "edited.json").write_text(json.dumps(saved))
    return tmp_path / "edited.json"


def test_a_file_is_never_run_as_code(tmp_path):
    """The model's expression in a file is parsed by gradfit.expr like any user text: not eval'd, not unpickled."""

    def inject(saved):
        saved["model"]["expression"] = "__import__('os').system('touch pwned')"

    with pytest.raises(ExpressionError):
        gradfit.load_result(_saved(tmp_path, inject))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda s: s.update(gradfit_result=2), DataError, "saved in result format 2, and this gradfit reads format 1"),
        (lambda s: s.pop("params"), DataError, "not a complete saved gradfit result"),
        (lambda s: s.update(param_names=["a", "b"]), DataError, "its model's parameters differ from the saved ones"),
        (lambda s: s.update(model={"builtin": "no_such_model"}), ModelError, "'no_such_model' is not a built-in"),
        (lambda s: s.pop("gradfit_result"), DataError, "is not a saved gradfit result"),
    ],
)
def test_a_bad_file_is_refused_in_one_line(tmp_path, edit, error, match):
    with pytest.raises(error, match=match) as e:
        gradfit.load_result(_saved(tmp_path, edit))
    assert "\n" not in str(e.value)


def test_files_that_are_not_results_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        gradfit.load_result(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="is not a saved gradfit result \\(not JSON"):
        gradfit.load_result(tmp_path / "text.json")


def test_components_are_the_parts_of_a_sum():
    result = FITS["sum"]()
    parts = result.components(X)
    assert list(parts) == ["g1", "g2", "l"]
    p = result.params
    for prefix in ("g1", "g2"):  # each part by its own formula, at its own parameters
        amplitude, center, sigma = (p[f"{prefix}_{n}"] for n in ("amplitude", "center", "sigma"))
        np.testing.assert_allclose(parts[prefix], amplitude * np.exp(-((X - center) ** 2) / (2 * sigma**2)), rtol=1e-13)
    np.testing.assert_allclose(parts["l"], p["l_slope"] * X + p["l_intercept"], rtol=1e-13)
    np.testing.assert_allclose(sum(parts.values()), result.predict(X), rtol=1e-13)


def test_components_name_an_expression_part_by_itself_and_a_single_model_by_its_name():
    result = FITS["builtin + expression"]()
    parts = result.components(X)
    assert list(parts) == ["g1", "g2", "m*x + c"]
    np.testing.assert_allclose(parts["m*x + c"], result.params["m"] * X + result.params["c"], rtol=1e-13)
    np.testing.assert_allclose(sum(parts.values()), result.predict(X), rtol=1e-13)
    constant = gradfit.fit("a + 0*x", X, Y).components(X[:5])  # a part constant in x still has one value per x
    assert list(constant) == ["a + 0*x"] and constant["a + 0*x"].shape == (5,)


def test_the_data_column_names_are_kept(tmp_path):
    pd.DataFrame({"two_theta": X, "counts": Y}).to_csv(tmp_path / "d.csv", index=False)
    frame = pd.read_csv(tmp_path / "d.csv")
    assert gradfit.fit("poly3", frame.two_theta, frame.counts).columns == {"x": "two_theta", "y": "counts"}
    assert gradfit.fit("poly3", X, Y).columns == {}
    out = tmp_path / "saved.json"
    assert main(["fit", str(tmp_path / "d.csv"), "--model", "poly3", "--save", str(out), "--quiet"]) == 0
    loaded = gradfit.load_result(out)
    assert loaded.columns == {"x": "two_theta", "y": "counts"}
    expected = gradfit.fit("poly3", frame.two_theta, frame.counts)
    assert loaded.params == pytest.approx(expected.params, rel=1e-12)


def test_save_refuses_a_folder_that_does_not_exist_and_writes_nothing(tmp_path, capsys):
    pd.DataFrame({"x": X, "y": Y}).to_csv(tmp_path / "d.csv", index=False)
    code = main(["fit", str(tmp_path / "d.csv"), "--save", str(tmp_path / "nope" / "s.json"), "--quiet"])
    assert code == 2
    assert "--save" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


# --- derived quantities: the delta method through the covariance ------------------------------------------


def test_derived_quantities_equal_the_uncertainties_package():
    """fwhm and area of a Gaussian, a half-life: values and errors as `uncertainties` propagates them (linear
    error propagation with the parameters' correlations), to rounding."""
    from uncertainties import correlated_values, umath

    peak = FITS["builtin"]()
    got = peak.derive({"fwhm": "2*sqrt(2*log(2))*sigma", "area": "amplitude*abs(sigma)*sqrt(2*pi)"})
    a, c, s = correlated_values(list(peak.params.values()), peak.covariance)
    for (value, err), expected in zip(
        (got["fwhm"], got["area"]),
        (2 * umath.sqrt(2 * umath.log(2)) * s, a * s * umath.sqrt(2 * np.pi)),  # (s > 0: abs(s) is s)
    ):
        assert value == pytest.approx(expected.nominal_value, rel=1e-12)
        assert err == pytest.approx(expected.std_dev, rel=1e-10)
    decay = FITS["expression"]()
    value, err = decay.derive({"half_life": "log(2)/k"})["half_life"]
    _, k, _ = correlated_values(list(decay.params.values()), decay.covariance)
    assert (value, err) == pytest.approx(((umath.log(2) / k).nominal_value, (umath.log(2) / k).std_dev), rel=1e-10)


def test_derived_errors_agree_with_monte_carlo():
    """Draws of the parameters from their (Gaussian) distribution: the spread of the derived quantity matches
    the delta method's error where the quantity is nearly linear over that spread."""
    peak = FITS["builtin"]()
    value, err = peak.derive({"area": "amplitude*sigma*sqrt(2*pi)"})["area"]
    draws = np.random.default_rng(0).multivariate_normal(list(peak.params.values()), peak.covariance, 400_000)
    area = draws[:, 0] * draws[:, 2] * np.sqrt(2 * np.pi)
    assert area.mean() == pytest.approx(value, rel=1e-3)
    assert area.std() == pytest.approx(err, rel=0.01)


def test_derived_quantities_are_reported_saved_and_refused_in_one_line(tmp_path):
    peak = FITS["builtin"]()
    peak.derive({"fwhm": "2.3548*sigma"})
    assert "[[Derived]]" in peak.report() and "fwhm" in peak.report() and "== '2.3548*sigma'" in peak.report()
    peak.save(tmp_path / "p.json")
    loaded = gradfit.load_result(tmp_path / "p.json")
    assert loaded.derived == peak.derived and loaded.report() == peak.report()
    assert peak.to_dict()["derived"]["fwhm"]["stderr"] == pytest.approx(2.3548 * peak.stderr["sigma"], rel=1e-12)
    for bad, error, match in (
        ({"w": "2*width"}, ModelError, "refers to 'width', which is not a parameter. The parameters are: amplitude"),
        ({"w": "__import__('os')"}, ExpressionError, "The quantity w:"),
        ({"w": "sigma +"}, ExpressionError, "The quantity w:"),
        ("2*sigma", ModelError, "takes a dict of name -> expression"),
        ({"2w": "sigma"}, ModelError, "needs a name such as 'fwhm'"),
    ):
        with pytest.raises(error, match=match) as e:
            peak.derive(bad)
        assert "\n" not in str(e.value)

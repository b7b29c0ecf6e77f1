"""The built-in models: each recovers known parameters from noisy data, starting from its own guess."""

import numpy as np
import pytest
import torch

import gradfit
from gradfit.errors import ModelError

WITHIN_STDERR = 5  # a recovered parameter lies within this many standard errors of the truth
NOISE = 0.01  # noise, relative to the curve's largest value

# model -> (x, true parameters in the model's order)
CASES = {
    "constant": (np.linspace(0, 1, 30), [2.5]),
    "linear": (np.linspace(0, 5, 30), [1.5, -2.0]),
    "quadratic": (np.linspace(-3, 3, 30), [0.5, -1.0, 2.0]),
    "poly3": (np.linspace(-2, 2, 40), [0.3, -0.5, 1.0, 2.0]),
    "exponential": (np.linspace(0, 2, 40), [3.0, 0.8]),
    "exp_decay": (np.linspace(0, 5, 50), [4.0, 1.2, 0.7]),
    "power_law": (np.linspace(0.5, 5, 40), [2.0, 1.7]),
    "logistic": (np.linspace(-5, 5, 60), [1.0, 6.0, 1.5, 0.5]),
    "gaussian": (np.linspace(-5, 5, 80), [3.0, 0.7, 0.9]),
    "lorentzian": (np.linspace(-5, 5, 80), [2.0, -0.4, 0.6]),
    "pseudo_voigt": (np.linspace(-5, 5, 100), [2.0, 0.2, 0.8, 0.3]),
    "voigt": (np.linspace(-6, 6, 120), [3.0, 0.4, 0.7, 0.5]),
    "moffat": (np.linspace(-5, 5, 100), [2.0, 0.4, 0.8, 1.7]),
    "skewed_gaussian": (np.linspace(-5, 5, 120), [3.0, 0.3, 0.9, 2.0]),
    "lognormal": (np.linspace(0.05, 10, 150), [3.0, 1.2, 0.4]),
    "split_lorentzian": (np.linspace(-6, 6, 120), [3.0, 0.3, 0.5, 1.2]),
    "pearson7": (np.linspace(-6, 6, 120), [3.0, 0.3, 0.9, 2.5]),
    "pearson4": (np.linspace(-8, 8, 160), [3.0, 0.3, 1.2, 2.0, 1.5]),
    "student_t": (np.linspace(-8, 8, 160), [4.0, 0.5, 3.0]),
    "breit_wigner": (np.linspace(-20, 20, 200), [1.0, 0.5, 2.0, 3.0]),
    "damped_oscillator": (np.linspace(0, 6, 150), [1.0, 3.0, 0.1]),
    "dho": (np.linspace(0.05, 10, 150), [2.0, 4.0, 0.5, 1.5]),
    "expgaussian": (np.linspace(-4, 10, 150), [3.0, 0.5, 0.6, 0.8]),
    "doniach": (np.linspace(-6, 6, 150), [3.0, 0.2, 0.7, 0.2]),
    "skewed_voigt": (np.linspace(-6, 6, 150), [3.0, 0.3, 0.8, 0.3, 1.5]),
    "step": (np.linspace(-5, 5, 100), [2.0, 0.4, 1.5]),
    "step_erf": (np.linspace(-5, 5, 100), [2.0, 0.4, 0.8]),
    "step_atan": (np.linspace(-10, 10, 150), [2.0, 0.4, 0.8]),
    "step_logistic": (np.linspace(-5, 5, 100), [2.0, 0.4, 0.6]),
    "rectangle": (np.linspace(-5, 10, 150), [2.0, 0.0, 1.5, 5.0, 1.0]),
    "rectangle_erf": (np.linspace(-5, 10, 150), [2.0, 0.0, 0.8, 5.0, 0.5]),
    "rectangle_atan": (np.linspace(-10, 15, 200), [2.0, 0.0, 0.4, 5.0, 0.3]),
    "rectangle_logistic": (np.linspace(-5, 10, 150), [2.0, 0.0, 0.6, 5.0, 0.4]),
    "thermal_bose": (np.linspace(0.2, 5, 100), [1.0, 0.0, 0.8]),
    "thermal_maxwell": (np.linspace(0, 5, 100), [1.0, 0.5, 0.8]),
    "thermal_fermi": (np.linspace(-3, 3, 100), [1.0, 0.5, 0.3]),
    "sine": (np.linspace(0, 10, 120), [1.5, 0.35, 0.6]),
    "damped_sine": (np.linspace(0, 10, 150), [2.0, 0.25, 0.5, 0.3]),
}


def _data(name, x, true, seed=0):
    model = gradfit.get_model(name)
    clean = model(torch.tensor(x), torch.tensor(true, dtype=torch.float64)).numpy()
    rng = np.random.default_rng(seed)
    return clean + NOISE * np.abs(clean).max() * rng.normal(size=len(clean))


def _recovered(result, true):
    got = np.array(list(result.params.values()))
    err = np.array(list(result.stderr.values()))
    return np.all(np.abs(got - true) <= WITHIN_STDERR * err), got, err


# amplitude*exp((x - center)/kt) is exp((x - center + kt*log(amplitude))/kt): amplitude and center are one
# parameter, as in lmfit; a fit holds one of them (here amplitude at 1, what the guess assumes)
HELD = {name: {"amplitude": 1.0} for name in CASES if name.startswith("thermal_")}


def _free(name, values):
    held = HELD.get(name, {})
    return [v for n, v in zip(gradfit.get_model(name).param_names, values) if n not in held]


@pytest.mark.parametrize("method", ["auto", "lbfgs"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_builtin_recovers_known_parameters_from_its_guess(name, method):
    x, true = CASES[name]
    y = _data(name, x, true)
    result = gradfit.fit(name, x, y, method=method, fixed=HELD.get(name))  # no p0: the model's guess
    assert result.converged, result.message
    free = [n for n in result.params if n not in HELD.get(name, {})]
    got = np.array([result.params[n] for n in free])
    err = np.array([result.stderr[n] for n in free])
    assert np.all(np.abs(got - _free(name, true)) <= WITHIN_STDERR * err), f"{name}: got {got}, true {true}, {err}"


NEW_SHAPES = [name for name in CASES if list(CASES).index(name) >= list(CASES).index("split_lorentzian")]
NEW_SHAPES = NEW_SHAPES[: NEW_SHAPES.index("thermal_fermi") + 1]


@pytest.mark.parametrize("method", ["lm", "lbfgs"])
@pytest.mark.parametrize("name", NEW_SHAPES)
def test_fit_many_recovers_each_new_shape_from_its_batched_guess(name, method):
    """Curves around the truth, each from the batched guess: every one recovered within its errors (LM), or to
    the fit of that curve alone (L-BFGS; its errors are the same covariance)."""
    x, true = CASES[name]
    rng = np.random.default_rng(11)
    model = gradfit.get_model(name)
    truths = np.asarray(true) * rng.uniform(0.9, 1.1, size=(8, len(true)))
    for k, held in HELD.get(name, {}).items():
        truths[:, model.param_names.index(k)] = held
    clean = model(torch.tensor(x), torch.tensor(truths)).numpy()
    Y = clean + NOISE * np.abs(clean).max(axis=1, keepdims=True) * rng.normal(size=clean.shape)
    many = gradfit.fit_many(name, x, Y, method=method, fixed=HELD.get(name))
    assert np.all(many.converged), many.message if hasattr(many, "message") else many.status
    free = [j for j, n in enumerate(model.param_names) if n not in HELD.get(name, {})]
    err = many.stderr[:, free]
    assert np.all(np.abs(many.params[:, free] - truths[:, free]) <= WITHIN_STDERR * err), name


def test_gaussian2d_over_two_variables():
    xx, yy = np.meshgrid(np.linspace(-3, 3, 25), np.linspace(-2, 4, 25))
    xy = np.stack([xx.ravel(), yy.ravel()], axis=1)
    true = [5.0, 0.3, 1.0, 0.8, 1.2, 0.5]
    model = gradfit.get_model("gaussian2d")
    assert model.param_names == ("amplitude", "x0", "y0", "sigma_x", "sigma_y", "offset")
    z = model(torch.tensor(xy), torch.tensor(true, dtype=torch.float64)).numpy()
    z = z + 0.05 * np.random.default_rng(1).normal(size=len(z))
    for method in ("auto", "gd"):
        result = gradfit.fit("gaussian2d", xy, z, method=method)
        ok, got, err = _recovered(result, true)
        assert ok and result.converged, (method, got)
    with pytest.raises(ModelError, match=r"Model gaussian2d takes 2 variables \(x, y\), but x has 1 column"):
        gradfit.fit("gaussian2d", xy[:, 0], z)


def test_composite_models_prefix_their_parameters_and_fit():
    x = np.linspace(-5, 5, 120)
    model = gradfit.get_model("gaussian + linear")
    assert model.param_names == ("g_amplitude", "g_center", "g_sigma", "l_slope", "l_intercept")
    true = [3.0, 0.5, 0.8, 0.2, 1.0]
    y = model(torch.tensor(x), torch.tensor(true, dtype=torch.float64)).numpy()
    y = y + 0.02 * np.random.default_rng(2).normal(size=len(x))
    result = gradfit.fit("gaussian + linear", x, y)
    ok, got, _ = _recovered(result, true)
    assert ok and result.converged, got
    two = gradfit.get_model("gaussian + gaussian")
    assert two.param_names[:3] == ("g1_amplitude", "g1_center", "g1_sigma") and two.param_names[3] == "g2_amplitude"


def test_composite_of_linear_parts_is_linear():
    model = gradfit.get_model("linear + poly2")
    assert model.is_linear
    x = np.linspace(0, 1, 10)
    assert model.design_matrix(torch.tensor(x)).shape == (10, 5)


def test_an_expression_and_a_builtin_agree():
    x, true = CASES["exp_decay"]
    y = _data("exp_decay", x, true)
    builtin = gradfit.fit("exp_decay", x, y)
    typed = gradfit.fit("amplitude*exp(-rate*x) + offset", x, y, p0=list(builtin.params.values()))
    np.testing.assert_allclose(list(typed.params.values()), list(builtin.params.values()), rtol=1e-8)


def test_expressions_in_other_variables():
    t = np.linspace(0, 10, 80)
    y = 2 * np.sin(1.5 * t + 0.3)
    result = gradfit.fit("A*sin(w*t + p)", t, y, variables="t", p0={"A": 1.8, "w": 1.45, "p": 0.2})
    np.testing.assert_allclose(list(result.params.values()), [2, 1.5, 0.3], rtol=1e-8)


@pytest.mark.parametrize(
    "text,match",
    [
        ("gausian", "Unknown model 'gausian'. Choose one of: constant, linear"),
        ("x", "'x' has no parameters to fit"),
        ("2*x", "has no parameters to fit"),
    ],
)
def test_model_text_errors(text, match):
    with pytest.raises(ModelError, match=match):
        gradfit.get_model(text)


def test_every_builtin_has_a_formula_names_and_a_guess():
    for name, entry in gradfit.LIBRARY.items():
        model = entry.make()
        assert model.formula and model.param_names
        x = torch.linspace(0.5, 5, 30, dtype=torch.float64)
        xin = torch.stack([x, x.flip(0)], dim=1) if getattr(model, "variables", ("x",)) == ("x", "y") else x
        guess = model.guess(xin, torch.linspace(1, 2, 30, dtype=torch.float64))
        assert guess is not None and guess.shape == (model.n_params,) and bool(torch.isfinite(guess).all()), name


def test_widths_are_reported_positive():
    x = np.linspace(-5, 5, 60)
    y = 3 * np.exp(-((x - 0.5) ** 2) / (2 * 0.9**2)) + 0.02 * np.random.default_rng(3).normal(size=60)
    negative = gradfit.fit("gaussian", x, y, p0=[2.5, 0.3, -1.0])  # a start with a negative width
    positive = gradfit.fit("gaussian", x, y, p0=[2.5, 0.3, 1.0])
    assert negative.params["sigma"] > 0
    np.testing.assert_allclose(list(negative.params.values()), list(positive.params.values()), rtol=1e-8)
    np.testing.assert_allclose(negative.covariance, positive.covariance, rtol=1e-6, atol=1e-12)
    assert gradfit.get_model("gaussian + linear").even_params == ("g_sigma",)
    batch = gradfit.fit_many("gaussian", x, np.stack([y, y]), p0=[[2.5, 0.3, -1.0], [2.5, 0.3, 1.0]])
    np.testing.assert_allclose(batch.params[0], batch.params[1], rtol=1e-8)


BATCHED = [name for name in CASES if getattr(gradfit.get_model(name), "guess_many", None) is not None]


def _curves(name, x, true, count=40, seed=3):
    """Curves of the model at parameters scattered around ``true``, with noise, and some awkward rows."""
    rng = np.random.default_rng(seed)
    model = gradfit.get_model(name)
    params = np.asarray(true) * rng.uniform(0.5, 1.5, size=(count, len(true)))
    clean = model(torch.tensor(x), torch.tensor(params)).numpy()
    Y = clean + NOISE * np.abs(clean).max(axis=1, keepdims=True) * rng.normal(size=clean.shape)
    Y[0] = -Y[0]  # upside down
    Y[1] = 0.0  # flat zero
    Y[2] = rng.normal(size=len(x))  # noise only
    Y[3, : len(x) // 2] = -1.0  # half negative
    return Y


@pytest.mark.parametrize("name", BATCHED)
def test_batched_guesses_equal_the_guess_of_each_curve(name):
    x, true = CASES[name]
    Y = _curves(name, x, true)
    order = np.random.default_rng(4).permutation(len(x))  # x need not be sorted
    x, Y = x[order], Y[:, order]
    model = gradfit.get_model(name)
    many = model.guess_many(x, Y)
    one = np.stack([model.guess(torch.tensor(x), torch.tensor(row)).numpy() for row in Y])
    assert many.shape == (len(Y), model.n_params)
    np.testing.assert_allclose(many, one, rtol=1e-9, atol=1e-12)


def test_batched_gaussian2d_guesses_equal_each_curve():
    model = gradfit.get_model("gaussian2d")
    xx, yy = np.meshgrid(np.arange(7.0), np.arange(6.0))
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    rng = np.random.default_rng(5)
    true = np.array([5.0, 3.0, 2.5, 1.2, 0.8, 1.0]) * rng.uniform(0.7, 1.3, size=(30, 6))
    Z = model(torch.tensor(xy), torch.tensor(true)).numpy() + 0.05 * rng.normal(size=(30, 42))
    Z[0] = 0.0
    many = model.guess_many(xy, Z)
    one = np.stack([model.guess(torch.tensor(xy), torch.tensor(row)).numpy() for row in Z])
    np.testing.assert_allclose(many, one, rtol=1e-9, atol=1e-12)


def test_fit_many_guesses_all_curves_at_once_where_it_can(monkeypatch):
    x, true = CASES["gaussian"]
    Y = _curves("gaussian", x, true, count=200)[4:]  # the well-behaved rows
    expected = gradfit.fit_many("gaussian", x, Y)  # batched guesses
    calls = []
    original = gradfit.models.ExpressionModel.guess
    monkeypatch.setattr(gradfit.models.ExpressionModel, "guess", lambda self, *a: calls.append(1) or original(self, *a))
    again = gradfit.fit_many("gaussian", x, Y)
    assert not calls  # never curve by curve
    np.testing.assert_array_equal(again.params, expected.params)
    per_curve = np.stack([gradfit.get_model("gaussian").guess(torch.tensor(x), torch.tensor(row)).numpy() for row in Y])
    from_guesses = gradfit.fit_many("gaussian", x, Y, p0=per_curve)
    np.testing.assert_allclose(expected.params, from_guesses.params, rtol=1e-10)


def test_ragged_curves_and_curves_at_their_own_x_guess_in_groups_like_each_curve(monkeypatch):
    x, true = CASES["gaussian"]
    Y = _curves("gaussian", x, true, count=60)[4:]
    model = gradfit.get_model("gaussian")
    ragged = Y.copy()
    ragged[::3, :7] = np.nan  # a third of the curves lack their first points, one lacks more
    ragged[5, -4:] = np.nan
    rng = np.random.default_rng(3)
    own_x = np.sort(x + rng.uniform(-0.01, 0.01, size=Y.shape), axis=1)  # every curve at its own x
    for xs, ys in ((x, ragged), (own_x, Y)):
        expected = []
        for i in range(len(ys)):
            keep = np.isfinite(ys[i])
            xi = (xs if xs.ndim == 1 else xs[i])[keep]
            expected.append(model.guess(torch.tensor(xi), torch.tensor(ys[i][keep])).numpy())
        calls = []
        monkeypatch.setattr(gradfit.models.ExpressionModel, "guess", lambda self, *a: calls.append(1))
        part = gradfit.batch.Chunk(
            model,
            torch.tensor(xs),
            xs.ndim == 1,
            torch.tensor(np.nan_to_num(ys)),
            torch.tensor(np.isfinite(ys).astype(float)),
        )
        got = part.guess().numpy()
        monkeypatch.undo()
        assert not calls  # the batched rule, a group at a time
        np.testing.assert_allclose(got, np.array(expected), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["gaussian + linear", "lorentzian + quadratic", "exp_decay + constant"])
def test_composites_guess_all_curves_at_once_like_each_curve(name):
    model = gradfit.get_model(name)
    assert model.guess_many is not None
    x = np.linspace(-4, 5, 60)
    rng = np.random.default_rng(6)
    base = np.exp(-((x[None, :] - rng.uniform(-1, 1, (30, 1))) ** 2)) * rng.uniform(1, 3, (30, 1))
    Y = base + 0.3 * x[None, :] + rng.normal(0, 0.02, (30, 60))
    many = model.guess_many(x, Y)
    one = np.stack([model.guess(torch.tensor(x), torch.tensor(row)).numpy() for row in Y])
    np.testing.assert_allclose(many, one, rtol=1e-9, atol=1e-10)


def test_a_composite_with_a_part_that_cannot_guess_in_batches_guesses_curve_by_curve():
    from gradfit.composite import Composite
    from gradfit.models import FunctionModel

    assert gradfit.get_model("damped_sine + linear").guess_many is not None  # every built-in has a batched rule
    assert Composite([FunctionModel(lambda x, a: a * x), gradfit.get_model("linear")]).guess_many is None


@pytest.mark.parametrize("n", [3, 5, 9, 33])
def test_batched_damped_sine_guess_on_short_curves(n):
    model = gradfit.get_model("damped_sine")
    x = np.linspace(0, 4, n)
    Y = np.exp(-0.3 * x) * np.sin(2 * np.pi * 0.4 * x + np.linspace(0, 1, 6)[:, None]) * 2
    one = np.stack([model.guess(torch.tensor(x), torch.tensor(row)).numpy() for row in Y])
    np.testing.assert_allclose(model.guess_many(x, Y), one, rtol=1e-9, atol=1e-12)


def test_builtins_added_to_an_expression_are_parts_of_their_own():
    """'gaussian + slope*x + intercept' is a Gaussian (prefixed parameters, its own guess) plus the expression's
    own terms, never an expression in which 'gaussian' is a constant parameter: the same optimum as scipy's
    curve_fit of the same function."""
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(3)
    x = np.linspace(-5, 5, 120)
    truth = dict(g_amplitude=3.0, g_center=0.7, g_sigma=0.9, slope=0.4, intercept=-1.0)

    def f(x, amplitude, center, sigma, slope, intercept):
        return amplitude * np.exp(-((x - center) ** 2) / (2 * sigma**2)) + slope * x + intercept

    y = f(x, *truth.values()) + 0.05 * rng.normal(size=x.size)
    result = gradfit.fit("gaussian + slope*x + intercept", x, y)
    assert result.model.param_names == tuple(truth)
    expected, _ = curve_fit(f, x, y, p0=list(truth.values()))
    np.testing.assert_allclose(list(result.params.values()), expected, rtol=1e-6)
    assert result.chi2 == pytest.approx(float(((f(x, *expected) - y) ** 2).sum()), rel=1e-9)
    other = gradfit.get_model("slope*x + gaussian - c")  # anywhere in the sum; a subtracted term keeps its sign
    assert other.param_names == ("g_amplitude", "g_center", "g_sigma", "slope", "c")
    p = torch.tensor([2.0, 0.5, 1.0, 0.3, 0.2], dtype=torch.float64)
    xt = torch.tensor(x)
    np.testing.assert_allclose(other(xt, p).numpy(), f(x, 2.0, 0.5, 1.0, 0.3, 0.0) - 0.2, rtol=1e-12)


@pytest.mark.parametrize("text", ["gaussian*x + c", "gaussian + gaussian*x", "-gaussian + c*x", "exp(gaussian*x)"])
def test_a_builtin_used_as_a_parameter_is_refused(text):
    with pytest.raises(ModelError, match="is a built-in model, which can only be added as a term of its own"):
        gradfit.get_model(text)


def test_an_expression_that_never_uses_its_variable_is_refused():
    with pytest.raises(ModelError, match=r"never uses the variable x: it found only A, t, tau, c"):
        gradfit.get_model("A*exp(-t/tau)+c")
    assert gradfit.get_model("A*exp(-t/tau)+c", variables="t").param_names == ("A", "tau", "c")
    assert gradfit.get_model("gaussian + c").param_names[-1] == "c"  # a constant term beside a built-in is fine


LMFIT_SHAPES = {  # gradfit's built-in -> lmfit.lineshapes' function of the same parameters, in order (and form)
    "voigt": ("voigt", [2.5, 0.3, 0.8, 0.4]),
    "moffat": ("moffat", [2.0, 0.4, 0.8, 1.7]),
    "skewed_gaussian": ("skewed_gaussian", [3.0, 0.3, 0.9, -2.0]),
    "lognormal": ("lognormal", [3.0, 1.2, 0.4]),
    "split_lorentzian": ("split_lorentzian", [3.0, 0.3, 0.5, 1.2]),
    "pearson7": ("pearson7", [3.0, 0.3, 0.9, 2.5]),
    "pearson4": ("pearson4", [3.0, 0.3, 1.2, 2.0, 1.5]),
    "student_t": ("students_t", [4.0, 0.5, 3.0]),
    "breit_wigner": ("breit_wigner", [1.0, 0.5, 2.0, 3.0]),
    "damped_oscillator": ("damped_oscillator", [1.0, 3.0, 0.1]),
    "dho": ("dho", [2.0, 4.0, 0.5, 2.0]),
    "expgaussian": ("expgaussian", [3.0, 0.5, 0.6, 0.8]),
    "doniach": ("doniach", [3.0, 0.2, 0.7, 0.2]),
    "skewed_voigt": ("skewed_voigt", [3.0, 0.3, 0.8, 0.3, 1.5]),
    **{
        f"step_{form}" if form != "linear" else "step": ("step", [2.0, 0.4, 1.5], form)
        for form in ("linear", "erf", "atan", "logistic")
    },
    **{
        f"rectangle_{form}" if form != "linear" else "rectangle": ("rectangle", [2.0, 0.0, 1.5, 5.0, 1.0], form)
        for form in ("linear", "erf", "atan", "logistic")
    },
    "thermal_bose": ("thermal_distribution", [1.5, 0.0, 0.8], "bose"),
    "thermal_maxwell": ("thermal_distribution", [1.5, 0.5, 3.0], "maxwell"),
    "thermal_fermi": ("thermal_distribution", [1.5, 0.5, 2.0], "fermi"),
}
SHAPE_GRID = {  # where a shape is defined (else -60 to 60)
    "lognormal": np.linspace(0.01, 60, 3000),
    "thermal_bose": np.linspace(0.05, 60, 3000),  # a pole at x = center + kt*log(1/amplitude)
}


@pytest.mark.parametrize("name", list(LMFIT_SHAPES))
def test_line_shapes_named_as_lmfits_are_lmfits(name):
    """Values equal lmfit.lineshapes' on a grid that reaches far into the tails (1e-12 of the peak, 1e-10 where
    the value is not tiny), with lmfit's parameter names in lmfit's order."""
    import inspect

    from lmfit import lineshapes

    function_name, values, *form = LMFIT_SHAPES[name]
    function = getattr(lineshapes, function_name)
    model = gradfit.get_model(name)
    assert list(model.param_names) == list(inspect.signature(function).parameters)[1 : 1 + len(values)]
    x = SHAPE_GRID.get(name, np.linspace(-60, 60, 3001))
    got = model(torch.tensor(x), torch.tensor(values, dtype=torch.float64)).numpy()
    expected = function(x.copy(), *values, *form)
    assert np.max(np.abs(got - expected)) <= 1e-12 * np.abs(expected).max()
    big = np.abs(expected) > 1e-8 * np.abs(expected).max()
    np.testing.assert_allclose(got[big], expected[big], rtol=1e-10)


def test_docs_show_every_builtin_with_its_figure_and_lmfits_name():
    """docs/models.md's table is what docs/draw_models.py makes from the library now, and every figure exists."""
    import importlib.util
    from pathlib import Path

    from gradfit.library import LIBRARY

    docs = Path(__file__).parent.parent / "docs"
    spec = importlib.util.spec_from_file_location("draw_models", docs / "draw_models.py")
    draw_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draw_models)
    assert set(draw_models.EXAMPLES) == set(LIBRARY)
    assert draw_models.table() in (docs / "models.md").read_text(), "run: python docs/draw_models.py"
    assert all((docs / "models" / f"{name}.png").stat().st_size > 0 for name in LIBRARY)
    assert len(LIBRARY) >= 34

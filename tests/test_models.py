import numpy as np
import pytest
import torch

import gradfit
from gradfit.errors import ModelError

RTOL = 1e-12  # float64 evaluation of the same polynomial by two routes


def test_quadratic_is_the_articles_function():
    model = gradfit.quadratic()
    assert model.param_names == ("a", "b", "c")
    x = torch.arange(0, 15).float()
    params = torch.tensor([0.3, -1.2, 4.0])
    a, b, c = params
    article = a * (x**2) + (b * x) + c  # the article's func(), float32
    assert torch.equal(model(x, params), article)


@pytest.mark.parametrize("degree", range(0, 6))
def test_polynomial_matches_numpy_polyval(degree):
    rng = np.random.default_rng(degree)
    coeffs = rng.normal(size=degree + 1)
    x = np.linspace(-3, 3, 21)
    model = gradfit.polynomial(degree)
    got = model(torch.tensor(x), torch.tensor(coeffs)).numpy()
    np.testing.assert_allclose(got, np.polyval(coeffs, x), rtol=RTOL, atol=1e-12)
    assert got.shape == x.shape
    assert model.param_names[0] == f"c{degree}" and model.param_names[-1] == "c0"


def test_design_matrix_reproduces_forward():
    model = gradfit.polynomial(3)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    p = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(model.design_matrix(x) @ p, model(x, p), rtol=RTOL, atol=0)


def test_autograd_gradient_equals_the_analytic_one():
    # d mean((A p - y)^2) / dp = 2/N A^T (A p - y)
    model = gradfit.quadratic()
    x, y = (t.double() for t in gradfit.seed_data())
    p = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64, requires_grad=True)
    gradfit.mse(model(x, p), y).backward()
    a = model.design_matrix(x)
    expected = 2 / len(x) * a.T @ (a @ p.detach() - y)
    torch.testing.assert_close(p.grad, expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize(
    "name,expected",
    [("linear", ("slope", "intercept")), ("quadratic", ("a", "b", "c")), ("poly4", ("c4", "c3", "c2", "c1", "c0"))],
)
def test_models_by_name(name, expected):
    assert gradfit.get_model(name).param_names == expected


def test_get_model_passes_a_model_through():
    model = gradfit.quadratic()
    assert gradfit.get_model(model) is model


def test_unknown_model_lists_the_choices():
    with pytest.raises(ModelError, match=r"Unknown model 'quadr'\. Choose one of: constant, linear, quadratic, polyN"):
        gradfit.get_model("quadr")


@pytest.mark.parametrize("degree", [-1, 2.0, True])
def test_bad_polynomial_degree(degree):
    with pytest.raises(ModelError, match="degree must be a whole number"):
        gradfit.Polynomial(degree)


def test_non_linear_model_has_no_design_matrix():
    class Exp(gradfit.Model):
        name, param_names, formula = "exp", ("a", "k"), "a*exp(k*x)"

        def forward(self, x, params):
            a, k = params.unbind(-1)
            return a * torch.exp(k * x)

    with pytest.raises(ModelError, match="not linear in its parameters"):
        Exp().design_matrix(torch.zeros(3))


def test_formula_reads_like_the_math():
    assert gradfit.quadratic().formula == "a*x**2 + b*x + c"
    assert gradfit.linear().formula == "slope*x + intercept"


@pytest.mark.parametrize(
    "name",
    ["gaussian", "damped_sine", "pseudo_voigt", "gaussian + linear", "gaussian + poly2", "a*exp(-b*x) + 3", "c + 0*x"],
)
def test_an_expressions_own_jacobian_is_autograds(name):
    """One fit of an expression (or a sum of them with linear parts) takes its Jacobian from forward mode on
    the expression's tree, not torch.func.jacfwd (5x faster per fit): the same numbers to 1e-12."""
    model = gradfit.get_model(name)
    x = torch.linspace(0.1, 3.0, 17, dtype=torch.float64)
    p = torch.linspace(0.4, 1.3, model.n_params, dtype=torch.float64)
    value, jac = model.value_and_jacobian(x, p)
    want_value = model(x, p)
    want_jac = torch.func.jacfwd(lambda q: model(x, q))(p)
    assert value.shape == (17,) and jac.shape == (17, model.n_params)
    torch.testing.assert_close(value, want_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jac, want_jac, rtol=1e-12, atol=1e-12)

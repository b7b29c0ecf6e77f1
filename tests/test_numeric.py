"""Python functions autograd cannot differentiate (gradfit.numeric): numpy, scipy.special, and torch functions
that cut a parameter out of the graph. Oracle: scipy's curve_fit of the same function, and known truths."""

import math

import numpy as np
import pytest
import torch
from scipy import special
from scipy.optimize import curve_fit

import gradfit
from gradfit.errors import ModelError

SAME_AS_SCIPY = 1e-6  # relative, per parameter: answers equal curve_fit's on the same function
RNG = np.random.default_rng(11)
T = np.linspace(0, 5, 40)
Y = 3 * np.exp(-1.3 * T) + 0.5 + 0.02 * RNG.normal(size=T.size)


def decay(t, a, k, c):  # the first thing a curve_fit user types
    return a * np.exp(-k * t) + c


SCIPY = curve_fit(decay, T, Y, p0=[1, 1, 0])[0]


@pytest.mark.parametrize("method", ["auto", "lm", "adam", "lbfgs", "momentum"])
def test_a_numpy_function_fits_as_curve_fit_fits_it(method):
    result = gradfit.fit(decay, T, Y, p0=[1, 1, 0], method=method, max_steps=50000)
    assert result.converged
    np.testing.assert_allclose(list(result.params.values()), SCIPY, rtol=SAME_AS_SCIPY)
    assert (
        "derivatives estimated by 2-point finite differences: the function does not run on torch tensors"
        in result.message
    )


def test_standard_errors_are_curve_fits_with_bounds_too():
    popt, pcov = curve_fit(decay, T, Y, p0=[1, 1, 0])
    result = gradfit.fit(decay, T, Y, p0=[1, 1, 0])
    np.testing.assert_allclose(list(result.stderr.values()), np.sqrt(np.diag(pcov)), rtol=1e-4)
    bounded = gradfit.fit(decay, T, Y, p0=[1, 1, 0], bounds={"k": (0, None)})
    np.testing.assert_allclose(list(bounded.params.values()), popt, rtol=SAME_AS_SCIPY)
    np.testing.assert_allclose(list(bounded.stderr.values()), np.sqrt(np.diag(pcov)), rtol=1e-4)


def test_scipy_special_and_the_derivatives_asked_for():
    x = np.linspace(0.1, 4, 50)
    y = 2 * special.erf(0.7 * x) + 0.01 * RNG.normal(size=x.size)

    def f(x, a, k):
        return a * special.erf(k * x)

    expected = curve_fit(f, x, y, p0=[1, 1])[0]
    for how in ("2-point", "3-point"):
        result = gradfit.fit(f, x, y, p0=[1, 1], derivatives=how)
        np.testing.assert_allclose(list(result.params.values()), expected, rtol=SAME_AS_SCIPY)
        assert f"derivatives estimated by {how} finite differences" in result.message
    # complex steps: exact to rounding for a function analytic in its parameters (erf is not defined for
    # complex numbers in scipy.special, exp is)
    result = gradfit.fit(decay, T, Y, p0=[1, 1, 0], derivatives="cs")
    np.testing.assert_allclose(list(result.params.values()), SCIPY, rtol=SAME_AS_SCIPY)
    assert "derivatives estimated by complex steps" in result.message


def test_estimated_jacobians_against_the_exact_one():
    from gradfit.models import FunctionModel
    from gradfit.numeric import NumericFunction

    p = torch.tensor([2.0, 0.8, 0.3], dtype=torch.float64)
    x = torch.tensor(T)
    exact = torch.stack([torch.exp(-0.8 * x), -2.0 * x * torch.exp(-0.8 * x), torch.ones_like(x)], dim=1)
    for how, tolerance in (("2-point", 1e-7), ("3-point", 1e-9), ("cs", 1e-14)):
        model = NumericFunction(FunctionModel(decay), how, "numpy", "asked for")
        value, jac = model.value_and_jacobian(x, p)
        np.testing.assert_allclose(value.numpy(), decay(T, 2.0, 0.8, 0.3), rtol=1e-15)
        np.testing.assert_allclose(jac.numpy(), exact.numpy(), atol=tolerance, rtol=0)
        # a batch of parameter vectors, the function called once with (B, 1) columns: the same numbers
        values, jacs = model.value_and_jacobian(x, torch.stack([p, 2 * p]))
        np.testing.assert_allclose(jacs[0].numpy(), jac.numpy(), rtol=1e-15)
        assert values.shape == (2, T.size) and jacs.shape == (2, T.size, 3)


@pytest.mark.parametrize(
    "model",
    [
        lambda x, a, k: a * torch.exp(-float(k) * x),
        lambda x, a, k: a * torch.exp(-k.item() * x),
        lambda x, a, k: a * torch.exp(-k.detach() * x),
    ],
    ids=["float", "item", "detach"],
)
def test_a_parameter_cut_out_of_autograds_graph_is_estimated_not_stuck(model):
    """Autograd's derivative for k is exactly zero (the curve does change with it): before, the fit 'converged'
    with k stuck at p0 and stderr 0."""
    y = 3 * np.exp(-1.3 * T) + 0.02 * RNG.normal(size=T.size)
    expected, _ = curve_fit(lambda t, a, k: a * np.exp(-k * t), T, y, p0=[1, 1])
    result = gradfit.fit(model, T, y, p0=[1, 1])
    np.testing.assert_allclose(list(result.params.values()), expected, rtol=SAME_AS_SCIPY)
    assert result.stderr["k"] > 0
    assert "autograd gives no derivative for k (the function cuts it out of the graph" in result.message


def test_many_curves_of_a_numpy_function_equal_curve_fit_curve_by_curve():
    true = np.stack([RNG.uniform(2, 4, 60), RNG.uniform(0.5, 2, 60), RNG.uniform(0, 1, 60)], 1)
    Ys = true[:, :1] * np.exp(-true[:, 1:2] * T) + true[:, 2:] + 0.02 * RNG.normal(size=(60, T.size))
    expected = np.array([curve_fit(decay, T, y, p0=[1, 1, 0])[0] for y in Ys])
    for method in ("auto", "lbfgs"):
        result = gradfit.fit_many(decay, T, Ys, p0=[1, 1, 0], method=method)
        assert result.converged.all(), result.counts()
        np.testing.assert_allclose(result.params, expected, rtol=1e-5 if method == "lbfgs" else SAME_AS_SCIPY)
        assert result.notes and "derivatives estimated by 2-point finite differences" in result.notes[0]
    # a function that does not broadcast over (B, 1) columns (math.exp of a parameter) runs curve by curve,
    # and curves at their own x too
    one_by_one = gradfit.fit_many(
        lambda t, a, k, c: a * math.exp(-k) ** t + c, np.tile(T, (60, 1)) + np.arange(60)[:, None] * 0, Ys, p0=[1, 1, 0]
    )
    np.testing.assert_allclose(one_by_one.params, expected, rtol=SAME_AS_SCIPY)


def test_derivatives_option_is_checked():
    with pytest.raises(ModelError, match="Unknown derivatives 'central'. Choose one of: auto, exact"):
        gradfit.fit(decay, T, Y, p0=[1, 1, 0], derivatives="central")
    with pytest.raises(ModelError, match="is for Python functions; model gaussian has exact derivatives"):
        gradfit.fit("gaussian", T, Y, derivatives="3-point")
    with pytest.raises(ModelError, match="has no exact derivatives: the function does not run on torch tensors"):
        gradfit.fit(decay, T, Y, p0=[1, 1, 0], derivatives="exact")


def test_a_function_that_fails_on_both_kinds_of_array_is_refused_in_one_line():
    with pytest.raises(ModelError, match="failed on torch tensors at p0: .*; and on numpy arrays: ") as info:
        gradfit.fit(lambda t, a: a * t.no_such_method(), T, Y)
    assert "\n" not in str(info.value)

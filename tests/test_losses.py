import re
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit, least_squares

import gradfit
from gradfit.errors import OptionError
from gradfit.losses import ROBUST, rho


def test_mse_and_rmse_match_numpy():
    rng = np.random.default_rng(0)
    preds, actual = rng.normal(size=50), rng.normal(size=50)
    expected = np.mean((preds - actual) ** 2)
    got = gradfit.mse(torch.tensor(preds), torch.tensor(actual)).item()
    assert abs(got - expected) <= 1e-14 * expected
    got_rmse = gradfit.rmse(torch.tensor(preds), torch.tensor(actual)).item()
    assert abs(got_rmse - np.sqrt(expected)) <= 1e-14 * np.sqrt(expected)


def test_mse_is_zero_for_a_perfect_fit():
    y = torch.arange(5.0)
    assert gradfit.mse(y, y).item() == 0.0


# --- robust losses, against scipy.optimize.least_squares and curve_fit ---------------------------------


AS_SCIPY = 1e-6  # relative: scipy's least_squares run to tight tolerances, the same minimum
TRUTH = (2.5, 1.3, 0.3)


def _outliers(seed=0, n=60):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, n)
    y = TRUTH[0] * np.exp(-TRUTH[1] * x) + TRUTH[2] + 0.02 * rng.normal(size=n)
    y[[5, 17, 40]] += [1.5, -1.0, 2.0]  # three outliers
    return x, y


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


@pytest.mark.parametrize("loss", [name for name in ROBUST if name != "linear"])
def test_rho_and_its_derivatives(loss):
    """ρ' and ρ'' are the derivatives of ρ (autograd as the oracle), ρ(z) ~ z near 0 (least squares there)."""
    z = torch.linspace(0.01, 9.0, 50, dtype=torch.float64, requires_grad=True)
    r0, r1, r2 = rho(loss, z)
    (d1,) = torch.autograd.grad(r0.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    np.testing.assert_allclose(r1.detach(), d1.detach(), rtol=1e-12)
    np.testing.assert_allclose(r2.detach(), d2, rtol=1e-12, atol=1e-15)
    small = torch.tensor([1e-8], dtype=torch.float64)
    assert rho(loss, small)[0].item() == pytest.approx(1e-8, rel=1e-6)


@pytest.mark.parametrize("f_scale", [0.05, 1.0])
@pytest.mark.parametrize("loss", [name for name in ROBUST if name != "linear"])
def test_robust_fits_equal_scipy_least_squares_and_curve_fits_errors(loss, f_scale):
    x, y = _outliers()
    theirs = least_squares(
        lambda p: _decay(x, *p) - y, [2, 1, 0], loss=loss, f_scale=f_scale, xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cov = curve_fit(_decay, x, y, p0=[2, 1, 0], loss=loss, f_scale=f_scale, method="trf")
    mine = gradfit.fit("exp_decay", x, y, p0=[2, 1, 0], loss=loss, f_scale=f_scale)
    assert mine.converged
    np.testing.assert_allclose(list(mine.params.values()), theirs.x, rtol=AS_SCIPY)
    np.testing.assert_allclose(list(mine.stderr.values()), np.sqrt(np.diag(cov)), rtol=1e-5)
    assert f"robust loss {loss} (f_scale={f_scale:g})" in mine.message
    assert f"loss               = {loss} (f_scale {f_scale:g})" in mine.report()
    assert mine.to_dict()["loss"] == loss and mine.to_dict()["f_scale"] == f_scale


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_gradient_methods_minimise_the_same_robust_loss(method):
    x, y = _outliers(seed=1)
    lm = gradfit.fit("exp_decay", x, y, p0=[2, 1, 0], loss="soft_l1", f_scale=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = gradfit.fit("exp_decay", x, y, p0=[2, 1, 0], loss="soft_l1", f_scale=0.1, method=method)
    np.testing.assert_allclose(
        list(other.params.values()), list(lm.params.values()), rtol=1e-4 if method == "adam" else 1e-6
    )


def test_weights_and_a_robust_loss_as_least_squares_on_the_weighted_residuals():
    x, y = _outliers(seed=2)
    sigma = np.random.default_rng(3).uniform(0.01, 0.03, x.size)
    theirs = least_squares(lambda p: (_decay(x, *p) - y) / sigma, [2, 1, 0], loss="huber", f_scale=2.0, xtol=1e-15)
    mine = gradfit.fit("exp_decay", x, y, sigma=sigma, p0=[2, 1, 0], loss="huber", f_scale=2.0)
    np.testing.assert_allclose(list(mine.params.values()), theirs.x, rtol=AS_SCIPY)


def test_a_robust_loss_stays_near_the_truth_where_least_squares_is_pulled_away():
    x, y = _outliers(seed=4)
    plain = np.array(list(gradfit.fit("exp_decay", x, y).params.values()))
    robust = np.array(list(gradfit.fit("exp_decay", x, y, loss="cauchy", f_scale=0.05).params.values()))
    assert np.abs(robust - TRUTH).max() < 0.05 < np.abs(plain - TRUTH).max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "l1"}, "Unknown loss 'l1'. Choose one of: linear, soft_l1, huber, cauchy, arctan."),
        ({"loss": "huber", "f_scale": 0}, "f_scale must be a positive finite number, got 0"),
        ({"loss": "huber", "method": "linear"}, "Method 'linear' cannot minimise the robust loss 'huber'"),
    ],
)
def test_bad_robust_options_are_refused_in_one_line(kwargs, match):
    x, y = _outliers()
    with pytest.raises(OptionError, match=re.escape(match)):
        gradfit.fit("quadratic", x, y, **kwargs)

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


# --- robust losses in fit_many: the same transform over a batch ---------------------------------------


def _many_outliers(n_curves=12, seed=3):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, 60)
    Y = TRUTH[0] * np.exp(-TRUTH[1] * x) + TRUTH[2] + 0.02 * rng.normal(size=(n_curves, len(x)))
    for row in Y:
        row[rng.choice(len(x), 3, replace=False)] += rng.uniform(-2, 2, 3)
    return x, Y


@pytest.mark.parametrize("loss, f_scale", [("soft_l1", 0.05), ("huber", 0.1), ("cauchy", 1.0), ("arctan", 0.05)])
def test_fit_many_with_a_robust_loss_is_fit_curve_by_curve(loss, f_scale):
    """Every curve as gradfit.fit gives it (values, curve_fit's standard errors, the plain χ²) and as
    least_squares gives it."""
    x, Y = _many_outliers()
    batch = gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=[1, 1, 0], loss=loss, f_scale=f_scale)
    assert f"robust loss {loss}" in " ".join(batch.notes)
    for b in range(len(Y)):
        if batch.status[b] != "converged":  # (an arctan curve may run off to fit an outlier, as fit's does)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = gradfit.fit("a*exp(-k*x) + c", x, Y[b], p0=[1, 1, 0], loss=loss, f_scale=f_scale)
        np.testing.assert_allclose(batch.params[b], list(one.params.values()), rtol=1e-7)
        np.testing.assert_allclose(batch.stderr[b], list(one.stderr.values()), rtol=1e-6)
        # (the plain χ² is not stationary at the robust minimum: it moves at first order with the parameters)
        assert batch.chi2[b] == pytest.approx(one.chi2, rel=1e-7)
        assert batch.rmse[b] == pytest.approx(one.rmse, rel=1e-7)
        expected = least_squares(
            lambda p: _decay(x, *p) - Y[b], [1, 1, 0], loss=loss, f_scale=f_scale, ftol=1e-15, xtol=1e-15, gtol=1e-15
        )
        ours = least_squares(
            lambda p: _decay(x, *p) - Y[b], batch.params[b], loss=loss, f_scale=f_scale, max_nfev=1
        ).cost  # least_squares' own cost at our parameters (it stops at once)
        assert ours <= expected.cost * (1 + 1e-9)  # never a worse minimum than least_squares'
        if expected.cost <= ours * (1 + 1e-9):  # the same one (a bounded loss may stop least_squares elsewhere)
            np.testing.assert_allclose(batch.params[b], expected.x, rtol=AS_SCIPY)
    assert (batch.status == "converged").sum() >= len(Y) - 2


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_fit_many_gradient_methods_minimise_the_same_robust_loss(method):
    x, Y = _many_outliers(n_curves=6)
    lm = gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=[2, 1, 0], loss="cauchy", f_scale=0.1)
    steps = {"lbfgs": 2000, "adam": 20_000}[method]
    other = gradfit.fit_many(
        "a*exp(-k*x) + c", x, Y, p0=[2, 1, 0], loss="cauchy", f_scale=0.1, method=method, max_steps=steps, tol=1e-12
    )
    np.testing.assert_allclose(other.params, lm.params, rtol=1e-4)


def test_fit_many_robust_with_sigma_ragged_curves_and_bounds():
    x, Y = _many_outliers(n_curves=5)
    Y[1, 50:] = np.nan  # a shorter curve
    sigma = np.linspace(0.02, 0.04, Y.shape[1])
    bounds = {"k": (0, 1.25)}
    batch = gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=[2, 1, 0], sigma=sigma, loss="huber", bounds=bounds)
    for b in range(len(Y)):
        keep = np.isfinite(Y[b])
        one = gradfit.fit(
            "a*exp(-k*x) + c", x[keep], Y[b][keep], p0=[2, 1, 0], sigma=sigma[keep], loss="huber", bounds=bounds
        )
        np.testing.assert_allclose(batch.params[b], list(one.params.values()), rtol=1e-6)
        assert batch.params[b][1] <= 1.25


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loss="cauchy", method="linear"), "Method 'linear' cannot minimise the robust loss 'cauchy'"),
        (dict(loss="cauchy", backend="compiled"), "backend='compiled' cannot run a robust loss"),
        (dict(loss="l1"), "Unknown loss 'l1'"),
        (dict(loss="huber", f_scale=0), "f_scale must be a positive finite number, got 0"),
    ],
)
def test_fit_many_refuses_bad_robust_options(kwargs, match):
    x, Y = _many_outliers(n_curves=2)
    with pytest.raises(OptionError, match=match):
        gradfit.fit_many("a*exp(-k*x) + c", x, Y, **kwargs)


def test_fit_many_command_line_takes_a_robust_loss(tmp_path):
    import pandas as pd

    from gradfit.cli import main

    x, Y = _many_outliers(n_curves=4)
    rows = [{"curve": b, "t": xi, "v": yi} for b, row in enumerate(Y) for xi, yi in zip(x, row)]
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    out = tmp_path / "out.parquet"
    args = ["fit-many", str(tmp_path / "long.csv"), "--group", "curve", "--model", "a*exp(-k*x) + c"]
    assert main([*args, "--p0", "1,1,0", "--loss", "soft_l1", "--f-scale", "0.05", "--out", str(out), "--quiet"]) == 0
    expected = gradfit.fit_many("a*exp(-k*x) + c", x, Y, p0=[1, 1, 0], loss="soft_l1", f_scale=0.05)
    np.testing.assert_allclose(pd.read_parquet(out)[["a", "k", "c"]].to_numpy(), expected.params, rtol=1e-10)
    assert main([*args, "--loss", "l2", "--out", str(tmp_path / "bad.parquet"), "--quiet"]) == 2
    assert not (tmp_path / "bad.parquet").exists()

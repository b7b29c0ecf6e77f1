"""gradfit.special: the Faddeeva function and the Voigt profile against scipy (and lmfit's line shape)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import voigt_profile as scipy_voigt
from scipy.special import wofz as scipy_wofz

from gradfit.special import ASYMPTOTIC_FROM, voigt_profile, wofz


def _grid():
    x = np.concatenate([-np.logspace(-3, 3, 300)[::-1], [0.0], np.logspace(-3, 3, 300)])
    y = np.logspace(-4, 2, 120)
    xx, yy = np.meshgrid(x, y)
    return xx + 1j * yy


def test_wofz_equals_scipy_over_the_upper_half_plane():
    z = _grid()
    expected = scipy_wofz(z)
    got = wofz(torch.as_tensor(z)).numpy()
    assert np.max(np.abs(got - expected) / np.abs(expected)) < 1e-13
    # its real part is the Voigt profile: relative accuracy there too, also far in the tails where it is tiny
    assert np.max(np.abs(got.real - expected.real) / np.abs(expected.real)) < 1e-10
    # on the real axis (a pure Gaussian's w) within the rational approximation's region, and w(0) = 1
    x = np.linspace(-ASYMPTOTIC_FROM, ASYMPTOTIC_FROM, 1001)[np.abs(np.linspace(-12, 12, 1001)) <= 5]
    np.testing.assert_allclose(wofz(torch.as_tensor(x + 0j)).numpy(), scipy_wofz(x + 0j), rtol=1e-13)
    assert complex(wofz(torch.tensor(0j, dtype=torch.complex128))) == pytest.approx(1.0, abs=1e-15)


def test_the_derivative_is_w_prime_and_matches_finite_differences():
    z = torch.tensor([0.5 + 0.3j, 3 + 0.01j, -7 + 0.5j, 15 + 2j, 0.01 + 40j], dtype=torch.complex128)
    expected = -2 * z * wofz(z) + 2j / math.sqrt(math.pi)
    h = 1e-6
    numeric = (scipy_wofz(z.numpy() + h) - scipy_wofz(z.numpy() - h)) / (2 * h)
    np.testing.assert_allclose(expected.numpy(), numeric, rtol=1e-7)
    assert torch.autograd.gradcheck(wofz, (z.clone().requires_grad_(),), eps=1e-6, atol=1e-8)
    tangent = torch.ones_like(z)
    _, jvp = torch.func.jvp(wofz, (z,), (tangent,))  # forward mode: w'(z) times the tangent
    np.testing.assert_allclose(jvp.numpy(), expected.numpy(), rtol=1e-13)


@pytest.mark.parametrize("sigma, gamma", [(1.0, 0.5), (0.3, 2.0), (2.0, 1e-3), (1e-2, 1.0), (0.8, 0.0)])
def test_the_voigt_profile_equals_scipy_and_lmfit(sigma, gamma):
    from lmfit.lineshapes import voigt as lmfit_voigt

    x = np.linspace(-50, 50, 2001)
    got = voigt_profile(torch.as_tensor(x), sigma, gamma).numpy()
    np.testing.assert_allclose(got, scipy_voigt(x, sigma, gamma), rtol=1e-10)
    np.testing.assert_allclose(got, lmfit_voigt(x, 1.0, 0.0, sigma, gamma), rtol=1e-10)
    assert np.trapezoid(got, x) == pytest.approx(1.0, rel=0.02 + 2 * gamma / 50)  # area 1 (the tails beyond ±50 aside)


def test_the_voigt_profile_is_differentiable_in_x_sigma_and_gamma():
    args = (
        torch.tensor([0.3, -2.0, 10.0, 30.0], dtype=torch.float64, requires_grad=True),
        torch.tensor(0.7, dtype=torch.float64, requires_grad=True),
        torch.tensor(0.4, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(voigt_profile, args, eps=1e-6, atol=1e-9)
    x = args[0].detach()
    forward = torch.func.jacfwd(lambda s: voigt_profile(x, s, 0.4))(torch.tensor(0.7, dtype=torch.float64))
    sigma = torch.tensor(0.7, dtype=torch.float64)
    backward = torch.autograd.functional.jacobian(lambda s: voigt_profile(x, s, 0.4), sigma)
    np.testing.assert_allclose(forward.numpy(), backward.numpy(), rtol=1e-12)


# --- the voigt built-in and voigt() in the expression language -----------------------------------------------


def _voigt_data(n_curves=1, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-10, 10, 300)
    truth = np.column_stack(
        [rng.uniform(3, 6, n_curves), rng.uniform(-2, 2, n_curves), rng.uniform(0.4, 1, n_curves)]
        + [rng.uniform(0.3, 1, n_curves)]
    )
    Y = np.stack([a * scipy_voigt(x - c, s, g) for a, c, s, g in truth]) + rng.normal(0, 0.01, (n_curves, len(x)))
    return x, Y, truth


def test_the_voigt_model_is_lmfits_line_shape_with_exact_derivatives():
    import gradfit
    from lmfit.lineshapes import voigt as lmfit_voigt

    model = gradfit.get_model("voigt")
    assert model.param_names == ("amplitude", "center", "sigma", "gamma")  # lmfit's names; amplitude = area
    x = torch.linspace(-200, 200, 4001, dtype=torch.float64)
    p = torch.tensor([2.5, 0.3, 0.8, 0.4], dtype=torch.float64)
    np.testing.assert_allclose(model(x, p).numpy(), lmfit_voigt(x.numpy(), 2.5, 0.3, 0.8, 0.4), rtol=1e-10)
    _, grads = model.expression.value_and_gradient([x], list(p))
    jac = torch.autograd.functional.jacobian(lambda q: model(x, q), p)
    np.testing.assert_allclose(torch.stack(grads, 1).numpy(), jac.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method", ["auto", "lbfgs"])
def test_a_voigt_fit_recovers_known_parameters_from_its_own_guess(method):
    import gradfit

    x, Y, truth = _voigt_data()
    result = gradfit.fit("voigt", x, Y[0], method=method, max_steps=5000)
    assert result.converged
    for value, err, true in zip(result.params.values(), result.stderr.values(), truth[0]):
        assert abs(value - true) < 5 * err


def test_fit_many_of_voigt_peaks_runs_on_torch_and_equals_fit():
    import gradfit
    from gradfit.errors import OptionError

    x, Y, truth = _voigt_data(n_curves=40, seed=1)
    batch = gradfit.fit_many("voigt", x, Y)
    assert (batch.status == "converged").all()
    assert np.mean(np.all(np.abs(batch.params - truth) < 5 * batch.stderr, axis=1)) > 0.9
    for b in range(0, 40, 8):
        one = gradfit.fit("voigt", x, Y[b])
        np.testing.assert_allclose(batch.params[b], list(one.params.values()), rtol=1e-7)
    with pytest.raises(OptionError, match=r"uses voigt\(\), which only torch computes"):
        gradfit.fit_many("voigt + linear", x, Y, backend="compiled")


def test_voigt_is_a_function_of_the_expression_language():
    import gradfit
    from gradfit.cli import main

    x, Y, truth = _voigt_data(seed=2)
    y = Y[0] + 0.05 * x + 0.2
    result = gradfit.fit("a*voigt(x - c, s, g) + m*x + b", x, y, p0=[4, 0, 0.7, 0.5, 0, 0])
    assert result.params["a"] == pytest.approx(truth[0][0], rel=0.02)
    sum_of = gradfit.fit("voigt + linear", x, y)
    assert sum_of.params["v_amplitude"] == pytest.approx(result.params["a"], rel=1e-6)
    assert main(["models"]) == 0


def test_exprel_equals_scipys_and_its_slope_autograds():
    from scipy.special import exprel as scipy_exprel

    from gradfit.special import EXPREL_SERIES_BELOW, exprel, exprel_slope

    u = np.concatenate([np.linspace(-30, 30, 601), np.geomspace(1e-12, 1e-2, 60), -np.geomspace(1e-12, 1e-2, 60), [0]])
    value = exprel(torch.tensor(u))
    np.testing.assert_allclose(value.numpy(), scipy_exprel(u), rtol=2e-15)
    t = torch.tensor(u, requires_grad=True)
    expected = torch.autograd.grad(exprel(t).sum(), t)[0].numpy()  # the series' or expm1's own derivative
    got = exprel_slope(torch.tensor(u), value).numpy()
    far = np.abs(u) > 1e-2  # here autograd of expm1(u)/u is exact; nearer 0, the series is checked below
    np.testing.assert_allclose(got[far], expected[far], rtol=1e-12)
    # (e^u − exprel(u))/u = Σ u^k (k+1)/(k+2)!: 1/2 + u/3 + u²/8 + u³/30 ...; near 0 both sides of the switch
    for v in (
        -3 * EXPREL_SERIES_BELOW,
        -EXPREL_SERIES_BELOW / 2,
        0.0,
        EXPREL_SERIES_BELOW / 2,
        3 * EXPREL_SERIES_BELOW,
    ):
        series = 1 / 2 + v / 3 + v**2 / 8 + v**3 / 30 + v**4 / 144
        slope = exprel_slope(torch.tensor([v], dtype=torch.float64), exprel(torch.tensor([v], dtype=torch.float64)))
        assert float(slope) == pytest.approx(series, rel=1e-9)


def test_dho_is_finite_and_smooth_through_zero():
    """dho's Bose factor at x = 0 is a removable singularity: the model's value there is lmfit's special case,
    and its neighbours join it."""
    from lmfit.lineshapes import dho

    import gradfit

    x = np.array([-1e-9, 0.0, 1e-9, 1e-6])
    p = [2.0, 4.0, 0.5, 1.5]
    got = gradfit.get_model("dho")(torch.tensor(x), torch.tensor(p, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, dho(x, *p), rtol=1e-6)
    assert got[1] == pytest.approx(dho(0.0, *p), rel=1e-14)


def test_log_abs_gamma_of_complex_numbers_equals_scipys_with_its_derivatives():
    from scipy.special import loggamma, psi

    from gradfit.special import digamma_complex, loggamma_abs

    a, b = np.meshgrid(np.geomspace(0.51, 300, 40), np.linspace(-50, 50, 41))
    got = loggamma_abs(torch.tensor(a), torch.tensor(b)).numpy()
    expected = loggamma(a + 1j * b).real
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(digamma_complex(torch.tensor(a), torch.tensor(b)).numpy(), psi(a + 1j * b), rtol=1e-13)
    # d/da log|Γ| = Re ψ, d/db = −Im ψ: against central differences of scipy's
    h = 1e-6
    da = (loggamma(a + h + 1j * b).real - loggamma(a - h + 1j * b).real) / (2 * h)
    db = (loggamma(a + 1j * (b + h)).real - loggamma(a + 1j * (b - h))).real / (2 * h)
    np.testing.assert_allclose(psi(a + 1j * b).real, da, rtol=1e-6, atol=1e-6)  # (differences of values ~1e3)
    np.testing.assert_allclose(-psi(a + 1j * b).imag, db, rtol=1e-6, atol=1e-6)


def test_voigt_with_gamma_tied_to_sigma_is_lmfits_voigt_model():
    """lmfit's VoigtModel ties gamma to sigma by default; gradfit's voigt leaves it free, and tie= gives lmfit's."""
    import lmfit

    import gradfit

    x, Y, _ = _voigt_data()
    y = Y[0]
    ours = gradfit.fit("voigt", x, y, tie={"gamma": "sigma"})
    model = lmfit.models.VoigtModel()
    theirs = model.fit(y, model.guess(y, x=x), x=x)
    for name in ("amplitude", "center", "sigma", "gamma"):
        assert ours.params[name] == pytest.approx(theirs.params[name].value, rel=1e-6)
    for name in ("amplitude", "center", "sigma"):
        assert ours.stderr[name] == pytest.approx(theirs.params[name].stderr, rel=1e-3)
    assert ours.params["gamma"] == ours.params["sigma"]

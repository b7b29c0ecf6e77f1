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

"""Special functions torch lacks, differentiable, on any device: the Faddeeva function w(z) and the Voigt profile.

w(z) = exp(−z²) erfc(−iz), for Im z ≥ 0 (all a line shape needs: z = (x + iγ)/(σ√2) with γ ≥ 0):

- |z| ≤ ASYMPTOTIC_FROM: Weideman's rational approximation (J.A.C. Weideman, "Computation of the complex error
  function", SIAM J. Numer. Anal. 31 (1994) 1497–1518) with N = 40 terms: w(z) ≈ 2 p(Z)/(L − iz)² +
  1/(√π (L − iz)), Z = (L + iz)/(L − iz), L = √(N/√2), p a polynomial whose coefficients are the FFT of
  exp(−t²)(L² + t²) at t = L tan(θ/2) (computed once);
- beyond: the asymptotic series w(z) ≈ i/(√π z) Σ_k (2k−1)!!/(2z²)^k (20 terms), plus exp(−z²) near the real
  axis (where it is the whole real part: a Voigt profile's Gaussian far out when γ → 0).

Accuracy against scipy.special.wofz (tests/test_special.py), over x in [−1000, 1000], y in [1e−4, 100]: w to
2e−14 relative, its real part — the Voigt profile — to 1e−10 relative (measured 4e−11); γ = 0 is the Gaussian
exactly. (For 0 < γ < 1e−4 σ the profile's far Gaussian tail, below ~1e−15 of its peak, loses relative digits.)
The derivative is exact for w: w'(z) = −2z w(z) + 2i/√π, used by autograd (backward and forward mode).
"""

from __future__ import annotations

import math

import numpy as np
import torch

N_TERMS = 40
ASYMPTOTIC_FROM = 12.0  # |z| beyond which the asymptotic series is used
ASYMPTOTIC_TERMS = 20
_SQRT_PI = math.sqrt(math.pi)


def _weideman_coefficients(n: int) -> tuple[np.ndarray, float]:
    """The polynomial's coefficients (highest power first) and L, as Weideman computes them."""
    m = 2 * n
    k = np.arange(-m + 1, m)
    scale = math.sqrt(n / math.sqrt(2))
    t = scale * np.tan(k * np.pi / m / 2)
    f = np.concatenate([[0.0], np.exp(-(t**2)) * (scale**2 + t**2)])
    a = np.real(np.fft.fft(np.fft.fftshift(f))) / (2 * m)
    return a[1 : n + 1][::-1].copy(), scale


_COEFFICIENTS, _L = _weideman_coefficients(N_TERMS)


def _w(z: torch.Tensor) -> torch.Tensor:
    """w(z) for Im z ≥ 0, no autograd of its own (see ``wofz``)."""
    near = z.abs() <= ASYMPTOTIC_FROM
    # Weideman (only where it is used: elsewhere a harmless stand-in, so no inf or NaN is made)
    zn = torch.where(near, z, torch.zeros_like(z))
    denominator = _L - 1j * zn
    big_z = (_L + 1j * zn) / denominator
    p = torch.zeros_like(zn)
    for c in _COEFFICIENTS:  # Horner, highest power first
        p = p * big_z + float(c)
    rational = 2 * p / denominator**2 + (1 / _SQRT_PI) / denominator
    # the asymptotic series far out
    zf = torch.where(near, torch.full_like(z, ASYMPTOTIC_FROM + 1), z)
    inverse_2z2 = 1 / (2 * zf * zf)
    term, total = torch.ones_like(zf), torch.ones_like(zf)
    for k in range(1, ASYMPTOTIC_TERMS):
        term = term * (2 * k - 1) * inverse_2z2
        total = total + term
    series = 1j / (_SQRT_PI * zf) * total
    # near the real axis w(z) = exp(−z²) + (2i/√π) F(z), F Dawson's function, whose expansion the series is: the
    # Gaussian term is all of the real part there (a Voigt profile with γ → 0); elsewhere it is below e^−50
    gaussian = (zf.real**2 - zf.imag**2) > 50
    series = series + torch.where(gaussian, torch.exp(-torch.where(gaussian, zf * zf, torch.zeros_like(zf))), 0)
    return torch.where(near, rational, series)


class _Faddeeva(torch.autograd.Function):
    """w(z) with its exact derivative w'(z) = −2z w(z) + 2i/√π (holomorphic: torch's convention is
    grad · conj(w') backward, w' · tangent forward). torch.func's vmap and jacfwd run it as they run torch ops."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return _w(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (z,) = inputs
        ctx.save_for_backward(z, output)
        ctx.save_for_forward(z, output)

    @staticmethod
    def backward(ctx, grad):
        z, w = ctx.saved_tensors
        return grad * torch.conj(-2 * z * w + 2j / _SQRT_PI)

    @staticmethod
    def jvp(ctx, tangent):
        z, w = ctx.saved_tensors
        return (-2 * z * w + 2j / _SQRT_PI) * tangent


def wofz(z: torch.Tensor) -> torch.Tensor:
    """The Faddeeva function w(z) = exp(−z²) erfc(−iz) of a complex tensor with Im z ≥ 0 (scipy's wofz there),
    differentiable (backward and forward mode), on any device."""
    z = torch.as_tensor(z)
    if not z.is_complex():
        z = z.to(torch.complex128 if z.dtype == torch.float64 else torch.complex64)
    return _Faddeeva.apply(z)


def voigt_profile(x: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The Voigt profile (a Gaussian of standard deviation ``sigma`` convolved with a Lorentzian of half width
    ``gamma``, area 1), as scipy.special.voigt_profile: Re w(z) / (|σ|√(2π)), z = (x + i|γ|)/(|σ|√2).
    Differentiable in x, σ and γ through w's exact derivative."""
    dtype = _real_dtype(x, sigma, gamma)
    x, sigma, gamma = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype) for v in (x, sigma, gamma)))
    sigma, gamma = sigma.abs(), gamma.abs()  # (widths: their sign means nothing)
    z = torch.complex(x, gamma) / (sigma * math.sqrt(2))
    profile = wofz(z).real / (sigma * math.sqrt(2 * math.pi))
    # γ = 0 is a Gaussian, exactly (the rational approximation's real part is good to ~1e−17 of the peak only)
    gaussian = torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return torch.where(gamma == 0, gaussian, profile)


def voigt_and_partials(x: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor):
    """The Voigt profile V and its partial derivatives by x, sigma and gamma, from w and w' = −2zw + 2i/√π (what
    the expression language's forward mode needs): with s = |σ|√2, z = (x + i|γ|)/s,
    dV/dx = Re w'/(s·σ√(2π)), dV/dγ = −Im w'/(s·σ√(2π)), dV/dσ = −Re(w'z)/(σ·σ√(2π)) − V/σ (signs of σ, γ
    applied)."""
    dtype = _real_dtype(x, sigma, gamma)
    x, sigma, gamma = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype) for v in (x, sigma, gamma)))
    s_abs, g_abs = sigma.abs(), gamma.abs()
    norm = s_abs * math.sqrt(2 * math.pi)
    z = torch.complex(x, g_abs) / (s_abs * math.sqrt(2))
    with torch.no_grad():
        w = _w(z)
    slope = -2 * z * w + 2j / _SQRT_PI
    value = torch.where(g_abs == 0, torch.exp(-0.5 * (x / s_abs) ** 2) / norm, w.real / norm)
    d_x = slope.real / (s_abs * math.sqrt(2) * norm)
    d_gamma = -slope.imag / (s_abs * math.sqrt(2) * norm) * torch.sign(gamma)
    d_sigma = (-(slope * z).real / (s_abs * norm) - value / s_abs) * torch.sign(sigma)
    return value, d_x, d_sigma, d_gamma


def _real_dtype(*values) -> torch.dtype:
    """float32 when every tensor given is float32 (numbers follow the tensors), else float64."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    return torch.float32 if tensors and all(t.dtype == torch.float32 for t in tensors) else torch.float64


EXPREL_SERIES_BELOW = 1e-4  # |u| under which exprel and its slope come from their Taylor series


def exprel(u: torch.Tensor) -> torch.Tensor:
    """(exp(u) − 1)/u, 1 at u = 0, as scipy.special.exprel: the removable singularity of a Bose factor
    x/(1 − exp(−x/γ)) = γ/exprel(−x/γ). Near 0 its Taylor series 1 + u/2 + u²/6 + u³/24 (error below 1e−17)."""
    u = torch.as_tensor(u)
    small = u.abs() < EXPREL_SERIES_BELOW
    safe = torch.where(small, torch.ones_like(u), u)
    return torch.where(small, 1 + u * (1 / 2 + u * (1 / 6 + u / 24)), torch.expm1(safe) / safe)


def exprel_slope(u: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """d exprel(u)/du = (exp(u) − exprel(u))/u, from its series 1/2 + u/3 + u²/8 near 0."""
    small = u.abs() < EXPREL_SERIES_BELOW
    safe = torch.where(small, torch.ones_like(u), u)
    return torch.where(small, 1 / 2 + u * (1 / 3 + u / 8), (torch.exp(safe) - value) / safe)


def heaviside(u: torch.Tensor) -> torch.Tensor:
    """1 where u ≥ 0, else 0 (lmfit's split_lorentzian takes x ≥ center as the right side)."""
    u = torch.as_tensor(u)
    return (u >= 0).to(u.dtype if u.is_floating_point() else torch.get_default_dtype())


LOGGAMMA_SHIFT = 16  # log Γ(z) = log Γ(z + n) − Σ log(z + k): Stirling's series is used at Re z + n ≥ 16
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156, -3617 / 122400)  # B2m/(2m(2m−1))
_DIGAMMA = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12)  # B2m/(2m)


def _shifted(a: torch.Tensor, b: torch.Tensor):
    """z = a + ib, and w = z + n with n = LOGGAMMA_SHIFT (complex, float64 or complex64 as a and b)."""
    a, b = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(b))
    z = torch.complex(a, b)
    return z, z + LOGGAMMA_SHIFT


def loggamma_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log |Γ(a + ib)|, the real part of the complex log-gamma function (Pearson IV's normalization), for a > 0:
    Stirling's series at z + 16 (8 terms: below 1e−16 there), brought back by the recurrence. Equal to
    scipy.special.loggamma(a + ib).real to 1e−13 (tests/test_special.py)."""
    z, w = _shifted(a, b)
    series = (w - 0.5) * torch.log(w) - w + 0.5 * math.log(2 * math.pi)
    inverse, power = 1 / w, 1 / w
    for c in _STIRLING:
        series = series + c * power
        power = power * inverse * inverse
    back = sum(torch.log(torch.abs(z + k)) for k in range(LOGGAMMA_SHIFT))
    return series.real - back


def digamma_complex(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ψ(a + ib), the derivative of log Γ: d log|Γ|/da = Re ψ, d log|Γ|/db = −Im ψ (Cauchy–Riemann)."""
    z, w = _shifted(a, b)
    series = torch.log(w) - 0.5 / w
    inverse2, power = 1 / (w * w), 1 / (w * w)
    for c in _DIGAMMA:
        series = series - c * power
        power = power * inverse2
    return series - sum(1 / (z + k) for k in range(LOGGAMMA_SHIFT))

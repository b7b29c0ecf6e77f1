"""The built-ins' guesses for one curve: starting values from the data by robust rules of thumb (a peak's
height and width from the data, frequencies from an FFT, rates from log-linear fits)."""

from __future__ import annotations

import math

import numpy as np


def sorted_points(x, y):
    order = np.argsort(x)
    return x[order], y[order]


def _edge_baseline(x, y):
    """The straight line through the means of the first and last tenth of the points (x sorted)."""
    k = max(1, len(x) // 10)
    x0, y0, x1, y1 = x[:k].mean(), y[:k].mean(), x[-k:].mean(), y[-k:].mean()
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
    return y0 + slope * (x - x0)


def peak_of(x, y):
    """Height, position and half width at half maximum of the largest peak (or dip) above the edges."""
    x, y = sorted_points(x, y)
    rest = y - _edge_baseline(x, y)
    i = int(np.argmax(np.abs(rest)))
    height = rest[i]
    above = np.abs(rest) >= abs(height) / 2
    # the run of points above half height around the peak
    lo, hi = i, i
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and above[hi + 1]:
        hi += 1
    spacing = np.median(np.diff(x)) if len(x) > 1 else 1.0
    hwhm = max((x[hi] - x[lo]) / 2, spacing / 2, 1e-12)
    return height, x[i], hwhm


def guess_constant(x, y):
    return [np.mean(y)]


def guess_exponential(x, y):  # amplitude*exp(rate*x)
    sign = 1.0 if np.median(y) >= 0 else -1.0
    ok = sign * y > 0
    if ok.sum() < 2:
        return [np.mean(y) or 1.0, 0.0]
    rate, log_a = np.polyfit(x[ok], np.log(sign * y[ok]), 1)
    return [sign * math.exp(log_a), rate]


def guess_decay(x, y):  # amplitude*exp(-rate*x) + offset
    x, y = sorted_points(x, y)
    k = max(1, len(x) // 10)
    offset = y[-k:].mean()
    rest = y - offset
    amplitude_at_start = rest[:k].mean()
    sign = 1.0 if amplitude_at_start >= 0 else -1.0
    ok = sign * rest > abs(amplitude_at_start) * 0.05
    if ok.sum() >= 2:
        slope, log_a = np.polyfit(x[ok], np.log(sign * rest[ok]), 1)
        rate = max(-slope, 1e-12)
        return [sign * math.exp(log_a), rate, offset]
    span = x[-1] - x[0] or 1.0
    return [amplitude_at_start, 3.0 / span, offset]


def guess_power_law(x, y):  # amplitude*x**exponent
    ok = (x > 0) & (y != 0)
    sign = (1.0 if np.median(y[ok]) >= 0 else -1.0) if ok.any() else 1.0
    ok &= sign * y > 0
    if ok.sum() < 2:
        return [1.0, 1.0]
    exponent, log_a = np.polyfit(np.log(x[ok]), np.log(sign * y[ok]), 1)
    return [sign * math.exp(log_a), exponent]


def guess_logistic(x, y):  # bottom + (top - bottom)*sigmoid(rate*(x - center))
    # bottom is the level on the left and top the level on the right (top < bottom for a falling curve)
    x, y = sorted_points(x, y)
    k = max(1, len(x) // 10)
    bottom, top = y[:k].mean(), y[-k:].mean()
    center = x[int(np.argmin(np.abs(y - (bottom + top) / 2)))]
    span = x[-1] - x[0] or 1.0
    return [bottom, top, 8.0 / span, center]


def guess_gaussian(x, y):  # amplitude*exp(-(x - center)**2/(2*sigma**2))
    height, center, hwhm = peak_of(x, y)
    return [height, center, hwhm / math.sqrt(2 * math.log(2))]


def guess_lorentzian(x, y):  # amplitude*gamma**2/((x - center)**2 + gamma**2)
    height, center, hwhm = peak_of(x, y)
    return [height, center, hwhm]


def guess_pseudo_voigt(x, y):  # amplitude, center, width, fraction
    height, center, hwhm = peak_of(x, y)
    return [height, center, hwhm, 0.5]


# A Voigt profile with sigma = gamma = s has half width 1.80 s (Olivero's FWHM formula) and peak height
# Re w(i/√2)/(s√(2π)) = 0.2087/s: the guess starts there, its area (lmfit's amplitude) from the peak's height.
VOIGT_HWHM, VOIGT_PEAK = 1.8006, 0.20870


def guess_voigt(x, y):  # amplitude (area), center, sigma, gamma
    height, center, hwhm = peak_of(x, y)
    s = hwhm / VOIGT_HWHM
    return [height * s / VOIGT_PEAK, center, s, s]


def guess_moffat(x, y):  # amplitude (height), center, sigma, beta: beta 1 makes sigma the half width
    height, center, hwhm = peak_of(x, y)
    return [height, center, hwhm, 1.0]


def weighted_moments(x, w):
    """The area, mean, variance and skewness of weights w (B, N) over x (N,)."""
    area = w.sum(axis=1)
    safe = np.where(area > 0, area, 1.0)
    mean = (w * x).sum(axis=1) / safe
    d = x - mean[:, None]
    var = np.maximum((w * d**2).sum(axis=1) / safe, 1e-300)
    return area, mean, var, (w * d**3).sum(axis=1) / safe / var**1.5


def skew_normal_moments(x, w):
    """A skew-normal's (area, location, scale, shape) from the area, mean, variance and skewness of weights w (B, N)
    over x (N,), the moment equations inverted (skewness clipped to what a skew normal can have)."""
    area, mean, var, skew = weighted_moments(x, w)
    skew = np.clip(skew, -0.99, 0.99)
    c = np.cbrt(2 * np.abs(skew) / (4 - math.pi))  # |δ|√(2/π) / sqrt(1 - 2δ²/π) from the skewness
    delta = np.sign(skew) * np.sqrt(math.pi / 2) * c / np.sqrt(1 + c * c)
    scale = np.sqrt(var / (1 - 2 * delta**2 / math.pi))
    shape = delta / np.sqrt(1 - delta**2)
    return area, mean - scale * delta * math.sqrt(2 / math.pi), scale, shape


def guess_skewed_gaussian(x, y):  # amplitude (area), center, sigma, gamma: a skew normal's moments
    x, y = sorted_points(x, y)
    w = np.clip(y - _edge_baseline(x, y), 0, None) * np.gradient(x)
    if w.sum() <= 0:
        height, center, hwhm = peak_of(x, y)
        sigma = hwhm / math.sqrt(2 * math.log(2))
        return [height * sigma * math.sqrt(2 * math.pi), center, sigma, 0.0]
    return [float(v[0]) for v in skew_normal_moments(x, w[None, :])]


def guess_lognormal(x, y):  # amplitude (area), center, sigma: the moments of log x under the curve
    x, y = sorted_points(x, y)
    w = np.clip(y - _edge_baseline(x, y), 0, None) * np.gradient(x)
    keep = (x > 0) & (w > 0)
    if keep.sum() < 2:
        return [float(np.trapezoid(y, x)) if len(x) > 1 else 1.0, 0.0, 1.0]
    logs, w = np.log(x[keep]), w[keep]
    center = float(np.average(logs, weights=w))
    sigma = float(np.sqrt(np.average((logs - center) ** 2, weights=w))) or 1.0
    return [float(w.sum()), center, sigma]


def frequency_of(x, y):
    """The strongest frequency of y(x), from an FFT of y resampled on an even grid."""
    x, y = sorted_points(x, y)
    n = max(len(x), 16)
    grid = np.linspace(x[0], x[-1], n)
    values = np.interp(grid, x, y) - np.mean(y)
    spectrum = np.abs(np.fft.rfft(values * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, d=grid[1] - grid[0]) if x[-1] > x[0] else np.zeros(len(spectrum))
    i = int(np.argmax(spectrum[1:]) + 1) if len(spectrum) > 1 else 0
    if 1 <= i < len(spectrum) - 1:  # refine between bins (parabola through the peak's three values)
        a, b, c = np.log(spectrum[i - 1 : i + 2] + 1e-300)
        denom = a - 2 * b + c
        i = i + (0.5 * (a - c) / denom if denom != 0 else 0.0)
    return float(i * (freqs[1] if len(freqs) > 1 else 0.0))


def _sine_fit(x, y, frequency, envelope=None):
    """Amplitude and phase of y ≈ A*sin(2πfx + φ)·envelope, by linear least squares in sin and cos."""
    w = 2 * math.pi * frequency
    env = np.ones_like(x) if envelope is None else envelope
    basis = np.stack([np.sin(w * x) * env, np.cos(w * x) * env], axis=1)
    (s, c), *_ = np.linalg.lstsq(basis, y - (np.mean(y) if envelope is None else 0), rcond=None)
    return math.hypot(s, c), math.atan2(c, s)


def guess_sine(x, y):  # amplitude*sin(2*pi*frequency*x + phase)
    f = frequency_of(x, y)
    amplitude, phase = _sine_fit(x, y, f)
    return [amplitude, f, phase]


def guess_damped_sine(x, y):  # amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)
    x, y = sorted_points(x, y)
    f = frequency_of(x, y)
    # the decay from the envelope: log of the running peak size against x
    n = max(4, len(x) // 8)
    chunks = [slice(i, i + n) for i in range(0, len(x) - n + 1, n)]
    cx = np.array([x[c].mean() for c in chunks])
    cy = np.array([np.abs(y[c]).max() for c in chunks])
    ok = cy > 0
    decay = max(-np.polyfit(cx[ok], np.log(cy[ok]), 1)[0], 0.0) if ok.sum() >= 2 else 0.0
    amplitude, phase = _sine_fit(x, y, f, np.exp(-decay * x))
    return [amplitude, decay, f, phase]


def guess_gaussian2d(xy, z):  # amplitude, x0, y0, sigma_x, sigma_y, offset
    x, y = xy[:, 0], xy[:, 1]
    offset = float(np.percentile(z, 10))
    w = np.clip(z - offset, 0, None)
    if w.sum() <= 0:
        w = np.ones_like(z)
    x0, y0 = np.average(x, weights=w), np.average(y, weights=w)
    sx = math.sqrt(max(np.average((x - x0) ** 2, weights=w), 1e-24))
    sy = math.sqrt(max(np.average((y - y0) ** 2, weights=w), 1e-24))
    return [float(z.max() - offset), x0, y0, sx, sy, offset]

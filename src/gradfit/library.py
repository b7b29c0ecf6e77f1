"""The built-in models, each with parameter names, a formula and a ``guess`` from the data.

Every formula is written in the safe expression language, so what ``gradfit models``
prints is exactly what is fitted. Guesses are robust rules of thumb in numpy (peak
height and width from the data, frequencies from an FFT, rates from log-linear
fits): good enough that ``p0`` is optional for every built-in.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import ModelError
from .models import Composite, ExpressionModel, FunctionModel, Model, linear, polynomial, quadratic


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    make: Callable[[], Model]


def _expression(
    name: str, text: str, guess=None, params=None, variables=("x",), even=(), many=None
) -> Callable[[], Model]:
    """A built-in written in the expression language. ``even``: widths that enter only squared, so that
    their sign means nothing; fits report them positive. ``many``: the guess rule for all rows of Y at once;
    ``guess``: the rule for one curve (default: ``many`` on a batch of one, so that the two never differ)."""
    guess = _one(many) if guess is None else guess

    def make():
        model = ExpressionModel(text, variables=variables, params=params, name=name, guess=_as_guess(guess))
        model.even_params = tuple(even)
        if many is not None:
            model.guess_many = _as_guess_many(many)
        return model

    return make


def _as_guess(rule):
    """Wrap a numpy rule (x, y) -> list of floats as a Model.guess on tensors."""

    def guess(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xn = x.detach().double().cpu().numpy()
        yn = y.detach().double().cpu().numpy()
        values = [float(v) if math.isfinite(v) else 1.0 for v in rule(xn, yn)]
        return torch.tensor(values, dtype=y.dtype, device=y.device)

    return guess


def _as_guess_many(rule):
    """Wrap a batched numpy rule (x, Y) -> (B, P) as Model.guess_many: non-finite values become 1, as in guess."""

    def guess_many(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            values = np.asarray(
                rule(np.asarray(x, dtype=np.float64), np.asarray(Y, dtype=np.float64)), dtype=np.float64
            )
        return np.where(np.isfinite(values), values, 1.0)

    return guess_many


# --- guesses -------------------------------------------------------------------------


def _sorted(x, y):
    order = np.argsort(x)
    return x[order], y[order]


def _edge_baseline(x, y):
    """The straight line through the means of the first and last tenth of the points (x sorted)."""
    k = max(1, len(x) // 10)
    x0, y0, x1, y1 = x[:k].mean(), y[:k].mean(), x[-k:].mean(), y[-k:].mean()
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
    return y0 + slope * (x - x0)


def _peak(x, y):
    """Height, position and half width at half maximum of the largest peak (or dip) above the edges."""
    x, y = _sorted(x, y)
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


def _guess_constant(x, y):
    return [np.mean(y)]


def _guess_exponential(x, y):  # amplitude*exp(rate*x)
    sign = 1.0 if np.median(y) >= 0 else -1.0
    ok = sign * y > 0
    if ok.sum() < 2:
        return [np.mean(y) or 1.0, 0.0]
    rate, log_a = np.polyfit(x[ok], np.log(sign * y[ok]), 1)
    return [sign * math.exp(log_a), rate]


def _guess_decay(x, y):  # amplitude*exp(-rate*x) + offset
    x, y = _sorted(x, y)
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


def _guess_power_law(x, y):  # amplitude*x**exponent
    ok = (x > 0) & (y != 0)
    sign = (1.0 if np.median(y[ok]) >= 0 else -1.0) if ok.any() else 1.0
    ok &= sign * y > 0
    if ok.sum() < 2:
        return [1.0, 1.0]
    exponent, log_a = np.polyfit(np.log(x[ok]), np.log(sign * y[ok]), 1)
    return [sign * math.exp(log_a), exponent]


def _guess_logistic(x, y):  # bottom + (top - bottom)*sigmoid(rate*(x - center))
    # bottom is the level on the left and top the level on the right (top < bottom for a falling curve)
    x, y = _sorted(x, y)
    k = max(1, len(x) // 10)
    bottom, top = y[:k].mean(), y[-k:].mean()
    center = x[int(np.argmin(np.abs(y - (bottom + top) / 2)))]
    span = x[-1] - x[0] or 1.0
    return [bottom, top, 8.0 / span, center]


def _guess_gaussian(x, y):  # amplitude*exp(-(x - center)**2/(2*sigma**2))
    height, center, hwhm = _peak(x, y)
    return [height, center, hwhm / math.sqrt(2 * math.log(2))]


def _guess_lorentzian(x, y):  # amplitude*gamma**2/((x - center)**2 + gamma**2)
    height, center, hwhm = _peak(x, y)
    return [height, center, hwhm]


def _guess_pseudo_voigt(x, y):  # amplitude, center, width, fraction
    height, center, hwhm = _peak(x, y)
    return [height, center, hwhm, 0.5]


# A Voigt profile with sigma = gamma = s has half width 1.80 s (Olivero's FWHM formula) and peak height
# Re w(i/√2)/(s√(2π)) = 0.2087/s: the guess starts there, its area (lmfit's amplitude) from the peak's height.
VOIGT_HWHM, VOIGT_PEAK = 1.8006, 0.20870


def _guess_voigt(x, y):  # amplitude (area), center, sigma, gamma
    height, center, hwhm = _peak(x, y)
    s = hwhm / VOIGT_HWHM
    return [height * s / VOIGT_PEAK, center, s, s]


def _guess_moffat(x, y):  # amplitude (height), center, sigma, beta: beta 1 makes sigma the half width
    height, center, hwhm = _peak(x, y)
    return [height, center, hwhm, 1.0]


def _moments(x, w):
    """The area, mean, variance and skewness of weights w (B, N) over x (N,)."""
    area = w.sum(axis=1)
    safe = np.where(area > 0, area, 1.0)
    mean = (w * x).sum(axis=1) / safe
    d = x - mean[:, None]
    var = np.maximum((w * d**2).sum(axis=1) / safe, 1e-300)
    return area, mean, var, (w * d**3).sum(axis=1) / safe / var**1.5


def _skew_normal_moments(x, w):
    """A skew-normal's (area, location, scale, shape) from the area, mean, variance and skewness of weights w (B, N)
    over x (N,), the moment equations inverted (skewness clipped to what a skew normal can have)."""
    area, mean, var, skew = _moments(x, w)
    skew = np.clip(skew, -0.99, 0.99)
    c = np.cbrt(2 * np.abs(skew) / (4 - math.pi))  # |δ|√(2/π) / sqrt(1 - 2δ²/π) from the skewness
    delta = np.sign(skew) * np.sqrt(math.pi / 2) * c / np.sqrt(1 + c * c)
    scale = np.sqrt(var / (1 - 2 * delta**2 / math.pi))
    shape = delta / np.sqrt(1 - delta**2)
    return area, mean - scale * delta * math.sqrt(2 / math.pi), scale, shape


def _guess_skewed_gaussian(x, y):  # amplitude (area), center, sigma, gamma: a skew normal's moments
    x, y = _sorted(x, y)
    w = np.clip(y - _edge_baseline(x, y), 0, None) * np.gradient(x)
    if w.sum() <= 0:
        height, center, hwhm = _peak(x, y)
        sigma = hwhm / math.sqrt(2 * math.log(2))
        return [height * sigma * math.sqrt(2 * math.pi), center, sigma, 0.0]
    return [float(v[0]) for v in _skew_normal_moments(x, w[None, :])]


def _guess_lognormal(x, y):  # amplitude (area), center, sigma: the moments of log x under the curve
    x, y = _sorted(x, y)
    w = np.clip(y - _edge_baseline(x, y), 0, None) * np.gradient(x)
    keep = (x > 0) & (w > 0)
    if keep.sum() < 2:
        return [float(np.trapezoid(y, x)) if len(x) > 1 else 1.0, 0.0, 1.0]
    logs, w = np.log(x[keep]), w[keep]
    center = float(np.average(logs, weights=w))
    sigma = float(np.sqrt(np.average((logs - center) ** 2, weights=w))) or 1.0
    return [float(w.sum()), center, sigma]


def _frequency(x, y):
    """The strongest frequency of y(x), from an FFT of y resampled on an even grid."""
    x, y = _sorted(x, y)
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


def _guess_sine(x, y):  # amplitude*sin(2*pi*frequency*x + phase)
    f = _frequency(x, y)
    amplitude, phase = _sine_fit(x, y, f)
    return [amplitude, f, phase]


def _guess_damped_sine(x, y):  # amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)
    x, y = _sorted(x, y)
    f = _frequency(x, y)
    # the decay from the envelope: log of the running peak size against x
    n = max(4, len(x) // 8)
    chunks = [slice(i, i + n) for i in range(0, len(x) - n + 1, n)]
    cx = np.array([x[c].mean() for c in chunks])
    cy = np.array([np.abs(y[c]).max() for c in chunks])
    ok = cy > 0
    decay = max(-np.polyfit(cx[ok], np.log(cy[ok]), 1)[0], 0.0) if ok.sum() >= 2 else 0.0
    amplitude, phase = _sine_fit(x, y, f, np.exp(-decay * x))
    return [amplitude, decay, f, phase]


def _guess_gaussian2d(xy, z):  # amplitude, x0, y0, sigma_x, sigma_y, offset
    x, y = xy[:, 0], xy[:, 1]
    offset = float(np.percentile(z, 10))
    w = np.clip(z - offset, 0, None)
    if w.sum() <= 0:
        w = np.ones_like(z)
    x0, y0 = np.average(x, weights=w), np.average(y, weights=w)
    sx = math.sqrt(max(np.average((x - x0) ** 2, weights=w), 1e-24))
    sy = math.sqrt(max(np.average((y - y0) ** 2, weights=w), 1e-24))
    return [float(z.max() - offset), x0, y0, sx, sy, offset]


# --- the same guesses for many curves at once (shared x, every point used) -------------------
#
# Each equals its one-curve rule above row by row (tests/test_library.py checks it); fit_many uses them
# instead of calling the rule once per curve, which costs ~0.1 ms a curve.


def _sorted_many(x, Y):
    order = np.argsort(x, kind="stable")
    return x[order], Y[:, order]


def _line_fits(t, V, ok):
    """Least-squares lines v ≈ slope*t + intercept through each row's points where ``ok`` (as np.polyfit)."""
    w = ok.astype(np.float64)
    n = w.sum(axis=1)
    tm = (w * t).sum(axis=1) / n
    vm = (w * np.where(ok, V, 0.0)).sum(axis=1) / n
    dt = np.where(ok, t - tm[:, None], 0.0)
    slope = (dt * np.where(ok, V - vm[:, None], 0.0)).sum(axis=1) / (dt * dt).sum(axis=1)
    return slope, vm - slope * tm


def _edges(Y, k):
    return Y[:, :k].mean(axis=1), Y[:, -k:].mean(axis=1)


def _peak_many(x, Y):
    x, Y = _sorted_many(x, Y)
    B, N = Y.shape
    k = max(1, N // 10)
    x0, x1 = x[:k].mean(), x[-k:].mean()
    y0, y1 = _edges(Y, k)
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else np.zeros(B)
    rest = Y - (y0[:, None] + slope[:, None] * (x - x0))
    i = np.argmax(np.abs(rest), axis=1)
    height = rest[np.arange(B), i]
    below = ~(np.abs(rest) >= np.abs(height)[:, None] / 2)
    at = np.arange(N)
    # the run of points above half height around the peak: from after the last point below it on the left
    # to before the first one on the right
    lo = np.where(below & (at < i[:, None]), at, -1).max(axis=1) + 1
    hi = np.where(below & (at > i[:, None]), at, N).min(axis=1) - 1
    spacing = np.median(np.diff(x)) if N > 1 else 1.0
    hwhm = np.maximum(np.maximum((x[hi] - x[lo]) / 2, spacing / 2), 1e-12)
    return height, x[i], hwhm


def _many_constant(x, Y):
    return Y.mean(axis=1)[:, None]


def _many_exponential(x, Y):
    sign = np.where(np.median(Y, axis=1) >= 0, 1.0, -1.0)[:, None]
    ok = sign * Y > 0
    rate, log_a = _line_fits(x, np.log(np.where(ok, sign * Y, 1.0)), ok)
    mean = Y.mean(axis=1)
    few = ok.sum(axis=1) < 2
    return np.stack(
        [np.where(few, np.where(mean != 0, mean, 1.0), sign[:, 0] * np.exp(log_a)), np.where(few, 0.0, rate)], axis=1
    )


def _many_decay(x, Y):
    x, Y = _sorted_many(x, Y)
    k = max(1, Y.shape[1] // 10)
    offset = Y[:, -k:].mean(axis=1)
    rest = Y - offset[:, None]
    start = rest[:, :k].mean(axis=1)
    sign = np.where(start >= 0, 1.0, -1.0)[:, None]
    ok = sign * rest > np.abs(start)[:, None] * 0.05
    slope, log_a = _line_fits(x, np.log(np.where(ok, sign * rest, 1.0)), ok)
    span = x[-1] - x[0] or 1.0
    fitted = ok.sum(axis=1) >= 2
    return np.stack(
        [
            np.where(fitted, sign[:, 0] * np.exp(log_a), start),
            np.where(fitted, np.maximum(-slope, 1e-12), 3.0 / span),
            offset,
        ],
        axis=1,
    )


def _many_power_law(x, Y):
    ok = (x > 0) & (Y != 0)
    with warnings.catch_warnings():  # a row with no usable point has no median: its sign is then +1
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(ok, Y, np.nan), axis=1)
    sign = np.where(ok.any(axis=1), np.where(median >= 0, 1.0, -1.0), 1.0)[:, None]
    ok &= sign * Y > 0
    exponent, log_a = _line_fits(np.log(np.where(x > 0, x, 1.0)), np.log(np.where(ok, sign * Y, 1.0)), ok)
    fitted = ok.sum(axis=1) >= 2
    return np.stack([np.where(fitted, sign[:, 0] * np.exp(log_a), 1.0), np.where(fitted, exponent, 1.0)], axis=1)


def _many_logistic(x, Y):
    x, Y = _sorted_many(x, Y)
    k = max(1, Y.shape[1] // 10)
    bottom, top = _edges(Y, k)
    center = x[np.argmin(np.abs(Y - ((bottom + top) / 2)[:, None]), axis=1)]
    span = x[-1] - x[0] or 1.0
    return np.stack([bottom, top, np.full_like(bottom, 8.0 / span), center], axis=1)


def _many_gaussian(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm / math.sqrt(2 * math.log(2))], axis=1)


def _many_lorentzian(x, Y):
    return np.stack(_peak_many(x, Y), axis=1)


def _many_pseudo_voigt(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm, np.full_like(height, 0.5)], axis=1)


def _many_moffat(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm, np.ones_like(height)], axis=1)


def _above_baseline(x, Y):
    """x sorted, and each row's area element above the line through its edges (clipped at 0): weights for
    moments."""
    x, Y = _sorted_many(x, Y)
    k = max(1, Y.shape[1] // 10)
    y0, y1 = _edges(Y, k)
    x0, x1 = x[:k].mean(), x[-k:].mean()
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else np.zeros(len(Y))
    return x, np.clip(Y - (y0[:, None] + slope[:, None] * (x - x0)), 0, None) * np.gradient(x)


def _many_skewed_gaussian(x, Y):
    x, w = _above_baseline(x, Y)
    area, center, sigma, gamma = _skew_normal_moments(x, w)
    flat = ~(area > 0)  # nothing above the baseline: the shape unskewed, where the largest point is
    if flat.any():
        height, middle, hwhm = _peak_many(x, Y[flat])
        sigma[flat] = hwhm / math.sqrt(2 * math.log(2))
        area[flat], center[flat], gamma[flat] = height * sigma[flat] * math.sqrt(2 * math.pi), middle, 0.0
    return np.stack([area, center, sigma, gamma], axis=1)


def _many_voigt(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    s = hwhm / VOIGT_HWHM
    return np.stack([height * s / VOIGT_PEAK, center, s, s], axis=1)


# --- batched rules that guess one curve as a batch of one (so the two can never differ) -------------------


def _one(rule):
    """A one-curve guess (x, y) -> list from a batched rule (x, Y) -> (B, P)."""

    def guess(x, y):
        with np.errstate(all="ignore"):
            return list(np.asarray(rule(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)[None]))[0])

    return guess


def _columns(*values):
    """Columns, numbers or (B,) arrays, stacked as a (B, P) guess."""
    return np.stack(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)), axis=1)


def _from_peak(make):
    """A batched rule from the largest peak's height, center and half width: make(h, c, w) -> parameters."""
    return lambda x, Y: _columns(*make(*_peak_many(x, Y)))


STUDENT_T_DOF = 5.0  # the guessed degrees of freedom of student_t, and its peak per unit area there
STUDENT_T_PEAK = math.exp(math.lgamma(3.0) - math.lgamma(2.5)) / math.sqrt(5.0 * math.pi)
# dho's guess: gamma (the temperature) half the center (from gamma = center, L-BFGS can slide to gamma -> 0,
# where the Bose factor's classical limit makes the loss flat), and its Bose factor 1 - exp(-x/gamma) there
BOSE_AT_CENTER = 1 - math.exp(-2)


def _many_breit_wigner(x, Y):
    """A Fano line A(qγ + d)²/(γ² + d²), d = x − center, γ = sigma/2: A is the level far out (the edges), its
    maximum A(1 + q²) at d = γ/q, its zero at d = −qγ (left of the maximum when q > 0)."""
    height, top, hwhm = _peak_many(x, Y)
    xs, Ys = _sorted_many(x, Y)
    k = max(1, Ys.shape[1] // 10)
    level = np.mean(_edges(Ys, k), axis=0)
    bottom = xs[np.argmin(Ys, axis=1)]
    q = np.where(top >= bottom, 1.0, -1.0) * np.sqrt(np.abs(height / level))
    return _columns(level, top - hwhm / q, 2 * hwhm, q)


def _many_expgaussian(x, Y):
    """An exponentially modified Gaussian's moments inverted: mean c + τ, variance σ² + τ², skewness 2τ³/var^1.5
    (τ = 1/gamma; skewness kept inside what the shape can have, 0 to 2)."""
    x, w = _above_baseline(x, Y)
    area, mean, var, skew = _moments(x, w)
    tau = np.sqrt(var) * np.cbrt(np.clip(skew, 0.05, 1.9) / 2)
    return _columns(area, mean - tau, np.sqrt(np.maximum(var - tau**2, 1e-24)), 1 / tau)


STEP_QUARTER = {  # the argument (x - center)/sigma where each form reaches 3/4 of its height
    "linear": 0.25,
    "erf": 0.4769362762044699,  # erfinv(1/2)
    "atan": 1.0,
    "logistic": math.log(3),
}


def _rises(x, T, level, first=True):
    """Per row, the first (or last) x where T >= level."""
    above = T >= level
    at = np.arange(T.shape[1])
    i = np.where(above, at, T.shape[1]).min(axis=1) if first else np.where(above, at, -1).max(axis=1)
    return x[np.clip(i, 0, T.shape[1] - 1)]


def _many_step(quarter):
    """A step from 0 to amplitude: amplitude the change from the left edge to the right, center where it is half
    done, sigma from where it is a quarter and three quarters done."""

    def rule(x, Y):
        x, Y = _sorted_many(x, Y)
        k = max(1, Y.shape[1] // 10)
        left, right = _edges(Y, k)
        T = (Y - left[:, None]) / (right - left)[:, None]
        spacing = np.median(np.diff(x)) if len(x) > 1 else 1.0
        width = np.abs(_rises(x, T, 0.75) - _rises(x, T, 0.25)) / (2 * quarter)
        return _columns(right - left, _rises(x, T, 0.5), np.maximum(width, spacing / 2))

    return rule


def _many_rectangle(quarter):
    """A rise then a fall back to the edges' level: amplitude the mean height of the points above half way, each
    center where that height is half reached, each sigma from the quarter and three-quarter points."""

    def rule(x, Y):
        x, Y = _sorted_many(x, Y)
        k = max(1, Y.shape[1] // 10)
        base = np.mean(_edges(Y, k), axis=0)[:, None]
        high = Y - base >= (Y.max(axis=1, keepdims=True) - base) / 2
        top = np.where(high, Y - base, 0.0).sum(axis=1) / np.maximum(high.sum(axis=1), 1)
        T = (Y - base) / top[:, None]
        spacing = np.median(np.diff(x)) if len(x) > 1 else 1.0
        up = np.abs(_rises(x, T, 0.75) - _rises(x, T, 0.25)) / (2 * quarter)
        down = np.abs(_rises(x, T, 0.25, first=False) - _rises(x, T, 0.75, first=False)) / (2 * quarter)
        center1, center2 = _rises(x, T, 0.5), _rises(x, T, 0.5, first=False)
        return _columns(top, center1, np.maximum(up, spacing / 2), center2, np.maximum(down, spacing / 2))

    return rule


def _many_thermal(offset):
    """1/(amplitude*exp((x - center)/kt) + offset) with amplitude 1: log(1/y − offset) is the line
    (x − center)/kt, fitted where it is defined."""

    def rule(x, Y):
        with np.errstate(all="ignore"):
            Z = np.log(1 / Y - offset)
        ok = np.isfinite(Z)
        slope, intercept = _line_fits(x, np.where(ok, Z, 0.0), ok)
        kt = np.where(ok.sum(axis=1) >= 2, 1 / slope, np.nan)
        return _columns(1.0, -intercept * kt, kt)

    return rule


def _many_gaussian2d(xy, Z):
    x, y = xy[:, 0], xy[:, 1]
    offset = np.percentile(Z, 10, axis=1)
    w = np.clip(Z - offset[:, None], 0, None)
    w = np.where((w.sum(axis=1) <= 0)[:, None], 1.0, w)
    total = w.sum(axis=1)
    x0, y0 = (w * x).sum(axis=1) / total, (w * y).sum(axis=1) / total
    sx = np.sqrt(np.maximum((w * (x - x0[:, None]) ** 2).sum(axis=1) / total, 1e-24))
    sy = np.sqrt(np.maximum((w * (y - y0[:, None]) ** 2).sum(axis=1) / total, 1e-24))
    return np.stack([Z.max(axis=1) - offset, x0, y0, sx, sy, offset], axis=1)


def _frequency_many(x, Y):
    """_frequency for every row at once: the same even grid (x is shared), one FFT per row."""
    x, Y = _sorted_many(x, Y)
    B, N = Y.shape
    n = max(N, 16)
    grid = np.linspace(x[0], x[-1], n)
    # np.interp row by row, with the weights the shared x gives every row
    j = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, max(N - 2, 0))
    if N > 1:
        step = x[j + 1] - x[j]
        t = np.where(step > 0, (grid - x[j]) / np.where(step > 0, step, 1.0), 0.0)
        values = Y[:, j] + (Y[:, j + 1] - Y[:, j]) * t
    else:
        values = np.repeat(Y[:, :1], n, axis=1)
    values = values - Y.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(values * np.hanning(n), axis=1))
    m = spectrum.shape[1]
    freqs = np.fft.rfftfreq(n, d=grid[1] - grid[0]) if x[-1] > x[0] else np.zeros(m)
    i = (np.argmax(spectrum[:, 1:], axis=1) + 1) if m > 1 else np.zeros(B, dtype=int)
    inside = (i >= 1) & (i < m - 1)
    rows = np.arange(B)
    lo, hi = np.clip(i - 1, 0, m - 1), np.clip(i + 1, 0, m - 1)
    a, b, c = (np.log(spectrum[rows, k] + 1e-300) for k in (lo, i, hi))
    denom = a - 2 * b + c
    shift = np.where(inside & (denom != 0), 0.5 * (a - c) / np.where(denom != 0, denom, 1.0), 0.0)
    return (i + shift) * (freqs[1] if len(freqs) > 1 else 0.0)


def _many_sine(x, Y):  # amplitude*sin(2*pi*frequency*x + phase)
    f = _frequency_many(x, Y)
    amplitude, phase = _sine_fits(x, Y - Y.mean(axis=1, keepdims=True), f)
    return np.stack([amplitude, f, phase], axis=1)


def _many_damped_sine(x, Y):  # amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)
    x, Y = _sorted_many(x, Y)
    f = _frequency_many(x, Y)
    # the decay from the envelope: log of each chunk's peak size against x, as _guess_damped_sine
    N = len(x)
    n = max(4, N // 8)
    m = (N - n) // n + 1 if N >= n else 0
    cx = x[: m * n].reshape(m, n).mean(axis=1)
    cy = np.abs(Y[:, : m * n].reshape(len(Y), m, n)).max(axis=2)
    ok = cy > 0
    slope, _ = _line_fits(cx, np.log(np.where(ok, cy, 1.0)), ok)
    decay = np.where(ok.sum(axis=1) >= 2, np.maximum(-np.nan_to_num(slope, nan=0.0), 0.0), 0.0)
    amplitude, phase = _sine_fits(x, Y, f, np.exp(-decay[:, None] * x))
    return np.stack([amplitude, decay, f, phase], axis=1)


def _sine_fits(x, v, f, envelope=None):
    """_sine_fit for every row of v: amplitude and phase of v ≈ A*sin(2πfx + φ)·envelope (rows already centred
    where there is no envelope)."""
    w = 2 * math.pi * f[:, None]
    s, c = np.sin(w * x), np.cos(w * x)
    if envelope is not None:
        s, c = s * envelope, c * envelope
    # each row's 2-parameter least squares in sin and cos, by its normal equations ...
    ss, cc, sc = (s * s).sum(axis=1), (c * c).sum(axis=1), (s * c).sum(axis=1)
    bs, bc = (s * v).sum(axis=1), (c * v).sum(axis=1)
    det = ss * cc - sc * sc
    good = det > 1e-10 * ss * cc
    safe = np.where(good, det, 1.0)
    amp_s, amp_c = (cc * bs - sc * bc) / safe, (ss * bc - sc * bs) / safe
    for r in np.flatnonzero(~good):  # ... or, where sin and cos are nearly parallel, numpy's lstsq as one curve's
        amp_s[r], amp_c[r] = np.linalg.lstsq(np.stack([s[r], c[r]], axis=1), v[r], rcond=None)[0]
    return np.hypot(amp_s, amp_c), np.arctan2(amp_c, amp_s)


# --- the library -----------------------------------------------------------------------

LIBRARY: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("constant", "a flat line", _expression("constant", "c", _guess_constant, many=_many_constant)),
        Entry("linear", "a straight line", linear),
        Entry("quadratic", "a parabola, the seed article's model", quadratic),
        Entry("polyN", "a polynomial of degree N (poly3, poly5, ...); c<k> multiplies x**k", lambda: polynomial(3)),
        Entry(
            "exponential",
            "exponential growth or decay",
            _expression("exponential", "amplitude*exp(rate*x)", _guess_exponential, many=_many_exponential),
        ),
        Entry(
            "exp_decay",
            "exponential decay to an offset",
            _expression("exp_decay", "amplitude*exp(-rate*x) + offset", _guess_decay, many=_many_decay),
        ),
        Entry(
            "power_law",
            "a power law",
            _expression("power_law", "amplitude*x**exponent", _guess_power_law, many=_many_power_law),
        ),
        Entry(
            "logistic",
            "an S-curve from bottom to top",
            _expression(
                "logistic", "bottom + (top - bottom)*sigmoid(rate*(x - center))", _guess_logistic, many=_many_logistic
            ),
        ),
        Entry(
            "gaussian",
            "a Gaussian peak",
            _expression(
                "gaussian",
                "amplitude*exp(-(x - center)**2/(2*sigma**2))",
                _guess_gaussian,
                even=("sigma",),
                many=_many_gaussian,
            ),
        ),
        Entry(
            "lorentzian",
            "a Lorentzian peak",
            _expression(
                "lorentzian",
                "amplitude*gamma**2/((x - center)**2 + gamma**2)",
                _guess_lorentzian,
                params=("amplitude", "center", "gamma"),
                even=("gamma",),
                many=_many_lorentzian,
            ),
        ),
        Entry(
            "voigt",
            "a Voigt profile (a Gaussian convolved with a Lorentzian; amplitude is its area, as lmfit's)",
            _expression(
                "voigt",
                "amplitude*voigt(x - center, sigma, gamma)",
                _guess_voigt,
                params=("amplitude", "center", "sigma", "gamma"),
                even=("sigma", "gamma"),
                many=_many_voigt,
            ),
        ),
        Entry(
            "moffat",
            "a Moffat peak (a Lorentzian whose wings fall as the power 2*beta; lmfit's)",
            _expression(
                "moffat",
                "amplitude/(((x - center)/sigma)**2 + 1)**beta",
                _guess_moffat,
                params=("amplitude", "center", "sigma", "beta"),
                even=("sigma",),
                many=_many_moffat,
            ),
        ),
        Entry(
            "skewed_gaussian",
            "a Gaussian skewed by an error function (amplitude is its area; lmfit's)",
            _expression(
                "skewed_gaussian",
                "amplitude/(sigma*sqrt(2*pi))*exp(-(x - center)**2/(2*sigma**2))"
                "*(1 + erf(gamma*(x - center)/(sigma*sqrt(2))))",
                _guess_skewed_gaussian,
                params=("amplitude", "center", "sigma", "gamma"),
                many=_many_skewed_gaussian,
            ),
        ),
        Entry(
            "lognormal",
            "a log-normal peak over x > 0 (amplitude is its area; lmfit's)",
            _expression(
                "lognormal",
                "amplitude/(x*sigma*sqrt(2*pi))*exp(-(log(x) - center)**2/(2*sigma**2))",
                _guess_lognormal,
                params=("amplitude", "center", "sigma"),
                even=("sigma",),
            ),
        ),
        Entry(
            "pseudo_voigt",
            "a mix of a Lorentzian and a Gaussian of the same half width",
            _expression(
                "pseudo_voigt",
                "amplitude*(fraction/(1 + ((x - center)/width)**2) + "
                "(1 - fraction)*exp(-log(2)*((x - center)/width)**2))",
                _guess_pseudo_voigt,
                params=("amplitude", "center", "width", "fraction"),
                even=("width",),
                many=_many_pseudo_voigt,
            ),
        ),
        Entry(
            "split_lorentzian",
            "a Lorentzian with its own half width on each side (amplitude is its area; lmfit's)",
            _expression(
                "split_lorentzian",
                "2*amplitude/(pi*(sigma + sigma_r))*(sigma**2*(1 - heaviside(x - center))/(sigma**2 + (x - center)**2)"
                " + sigma_r**2*heaviside(x - center)/(sigma_r**2 + (x - center)**2))",
                params=("amplitude", "center", "sigma", "sigma_r"),
                many=_from_peak(lambda h, c, w: (math.pi * h * w, c, w, w)),
            ),
        ),
        Entry(
            "pearson7",
            "a Pearson VII peak, Lorentzian at expon 1, Gaussian as expon grows (amplitude is its area; lmfit's)",
            _expression(
                "pearson7",
                "amplitude*exp(gammaln(expon) - gammaln(expon - 0.5))/(sqrt(pi)*sigma)"
                "*(1 + ((x - center)/sigma)**2)**(-expon)",
                params=("amplitude", "center", "sigma", "expon"),
                even=("sigma",),
                many=_from_peak(lambda h, c, w: (math.pi * h * w, c, w, 1.0)),
            ),
        ),
        Entry(
            "pearson4",
            "a Pearson IV peak: pearson7 with a skew (amplitude is its area; lmfit's)",
            _expression(
                "pearson4",
                "amplitude/sigma*exp(2*(loggamma_abs(expon, skew/2) - gammaln(expon)) - gammaln(expon - 0.5)"
                " - gammaln(0.5) + gammaln(expon) - expon*log(1 + ((x - center)/sigma)**2)"
                " - skew*arctan((x - center)/sigma))",
                params=("amplitude", "center", "sigma", "expon", "skew"),
                many=_from_peak(lambda h, c, w: (math.pi * h * w, c, w, 1.0, 0.0)),
            ),
        ),
        Entry(
            "student_t",
            "Student's t distribution, sigma its degrees of freedom (amplitude is its area; lmfit's)",
            _expression(
                "student_t",
                "amplitude*exp(gammaln((sigma + 1)/2) - gammaln(sigma/2))/sqrt(sigma*pi)"
                "*(1 + (x - center)**2/sigma)**(-(sigma + 1)/2)",
                params=("amplitude", "center", "sigma"),
                many=_from_peak(lambda h, c, w: (h / STUDENT_T_PEAK, c, STUDENT_T_DOF)),
            ),
        ),
        Entry(
            "breit_wigner",
            "a Breit-Wigner-Fano resonance: a peak beside a dip, level amplitude far out (lmfit's)",
            _expression(
                "breit_wigner",
                "amplitude*(q*sigma/2 + x - center)**2/((sigma/2)**2 + (x - center)**2)",
                params=("amplitude", "center", "sigma", "q"),
                many=_many_breit_wigner,
            ),
        ),
        Entry(
            "damped_oscillator",
            "a driven damped oscillator's amplitude: 1 at x = 0, resonance at center (lmfit's)",
            _expression(
                "damped_oscillator",
                "amplitude/sqrt((1 - (x/center)**2)**2 + (2*sigma*x/center)**2)",
                params=("amplitude", "center", "sigma"),
                even=("center", "sigma"),
                many=_from_peak(lambda h, c, w: (2 * h * w / np.abs(c), np.abs(c), w / np.abs(c))),
            ),
        ),
        Entry(
            "dho",
            "a damped harmonic oscillator with a Bose factor, gamma the temperature (lmfit's)",
            _expression(
                "dho",
                "4*amplitude*sigma*center*gamma"
                "/(pi*exprel(-x/gamma)*((x - center)**2 + sigma**2)*((x + center)**2 + sigma**2))",
                params=("amplitude", "center", "sigma", "gamma"),
                many=_from_peak(lambda h, c, w: (math.pi * h * w * BOSE_AT_CENTER, np.abs(c), w, np.abs(c) / 2)),
            ),
        ),
        Entry(
            "expgaussian",
            "an exponentially modified Gaussian: a Gaussian with an exponential tail to the right (lmfit's)",
            _expression(
                "expgaussian",
                "amplitude*gamma/2*exp(gamma*(center + gamma*sigma**2/2 - x))"
                "*erfc((center + gamma*sigma**2 - x)/(sqrt(2)*sigma))",
                params=("amplitude", "center", "sigma", "gamma"),
                many=_many_expgaussian,
            ),
        ),
        Entry(
            "doniach",
            "the Doniach-Sunjic line of photoemission, gamma its asymmetry (lmfit's)",
            _expression(
                "doniach",
                "amplitude/sigma**(1 - gamma)*cos(pi*gamma/2 + (1 - gamma)*arctan((x - center)/sigma))"
                "/(1 + ((x - center)/sigma)**2)**((1 - gamma)/2)",
                params=("amplitude", "center", "sigma", "gamma"),
                many=_from_peak(lambda h, c, w: (h * w, c, w, 0.0)),
            ),
        ),
        Entry(
            "skewed_voigt",
            "a Voigt profile skewed by an error function (amplitude is its area; lmfit's)",
            _expression(
                "skewed_voigt",
                "amplitude*voigt(x - center, sigma, gamma)*(1 + erf(skew*(x - center)/(sqrt(2)*sigma)))",
                params=("amplitude", "center", "sigma", "gamma", "skew"),
                many=_from_peak(
                    lambda h, c, w: (h * w / VOIGT_HWHM / VOIGT_PEAK, c, w / VOIGT_HWHM, w / VOIGT_HWHM, 0.0)
                ),
            ),
        ),
        Entry(
            "step",
            "a step from 0 up to amplitude, a straight ramp of width sigma (lmfit's step, form 'linear')",
            _expression(
                "step",
                "amplitude*(abs((x - center)/sigma + 0.5) - abs((x - center)/sigma - 0.5) + 1)/2",
                params=("amplitude", "center", "sigma"),
                many=_many_step(STEP_QUARTER["linear"]),
            ),
        ),
        Entry(
            "step_erf",
            "a step from 0 up to amplitude, an erf curve of width sigma (lmfit's step, form 'erf')",
            _expression(
                "step_erf",
                "amplitude*(1 + erf((x - center)/sigma))/2",
                params=("amplitude", "center", "sigma"),
                many=_many_step(STEP_QUARTER["erf"]),
            ),
        ),
        Entry(
            "step_atan",
            "a step from 0 up to amplitude, an atan curve of width sigma (lmfit's step, form 'atan')",
            _expression(
                "step_atan",
                "amplitude*(0.5 + arctan((x - center)/sigma)/pi)",
                params=("amplitude", "center", "sigma"),
                many=_many_step(STEP_QUARTER["atan"]),
            ),
        ),
        Entry(
            "step_logistic",
            "a step from 0 up to amplitude, a logistic curve of width sigma (lmfit's step, form 'logistic')",
            _expression(
                "step_logistic",
                "amplitude*(1 - 1/(1 + exp((x - center)/sigma)))",
                params=("amplitude", "center", "sigma"),
                many=_many_step(STEP_QUARTER["logistic"]),
            ),
        ),
        Entry(
            "rectangle",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'linear')",
            _expression(
                "rectangle",
                "amplitude*(abs((x - center1)/sigma1 + 1) - abs((x - center1)/sigma1 - 1)"
                " + abs((center2 - x)/sigma2 + 1) - abs((center2 - x)/sigma2 - 1))/4",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=_many_rectangle(STEP_QUARTER["linear"] * 2),
            ),
        ),
        Entry(
            "rectangle_erf",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'erf')",
            _expression(
                "rectangle_erf",
                "amplitude*(erf((x - center1)/sigma1) + erf((center2 - x)/sigma2))/2",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=_many_rectangle(STEP_QUARTER["erf"]),
            ),
        ),
        Entry(
            "rectangle_atan",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'atan')",
            _expression(
                "rectangle_atan",
                "amplitude*(arctan((x - center1)/sigma1) + arctan((center2 - x)/sigma2))/pi",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=_many_rectangle(STEP_QUARTER["atan"]),
            ),
        ),
        Entry(
            "rectangle_logistic",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'logistic')",
            _expression(
                "rectangle_logistic",
                "amplitude*(1 - 1/(1 + exp((x - center1)/sigma1)) - 1/(1 + exp((center2 - x)/sigma2)))",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=_many_rectangle(STEP_QUARTER["logistic"]),
            ),
        ),
        Entry(
            "thermal_bose",
            "the Bose-Einstein distribution over energy x (lmfit's thermal_distribution, form 'bose')",
            _expression(
                "thermal_bose",
                "1/(amplitude*exp((x - center)/kt) - 1)",
                params=("amplitude", "center", "kt"),
                many=_many_thermal(-1.0),
            ),
        ),
        Entry(
            "thermal_maxwell",
            "the Maxwell-Boltzmann distribution over energy x (lmfit's thermal_distribution, form 'maxwell')",
            _expression(
                "thermal_maxwell",
                "1/(amplitude*exp((x - center)/kt))",
                params=("amplitude", "center", "kt"),
                many=_many_thermal(0.0),
            ),
        ),
        Entry(
            "thermal_fermi",
            "the Fermi-Dirac distribution over energy x (lmfit's thermal_distribution, form 'fermi')",
            _expression(
                "thermal_fermi",
                "1/(amplitude*exp((x - center)/kt) + 1)",
                params=("amplitude", "center", "kt"),
                many=_many_thermal(1.0),
            ),
        ),
        Entry(
            "sine",
            "a sine wave",
            _expression("sine", "amplitude*sin(2*pi*frequency*x + phase)", _guess_sine, many=_many_sine),
        ),
        Entry(
            "damped_sine",
            "a sine wave dying away",
            _expression(
                "damped_sine",
                "amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)",
                _guess_damped_sine,
                many=_many_damped_sine,
            ),
        ),
        Entry(
            "gaussian2d",
            "a 2-D Gaussian spot on an offset, over (x, y)",
            _expression(
                "gaussian2d",
                "amplitude*exp(-(x - x0)**2/(2*sigma_x**2) - (y - y0)**2/(2*sigma_y**2)) + offset",
                _guess_gaussian2d,
                params=("amplitude", "x0", "y0", "sigma_x", "sigma_y", "offset"),
                variables=("x", "y"),
                even=("sigma_x", "sigma_y"),
                many=_many_gaussian2d,
            ),
        ),
    ]
}
_POLY = re.compile(r"poly(\d{1,2})")


def builtin(name: str) -> Model | None:
    """A fresh built-in model by name ('gaussian', 'poly5', ...), or None."""
    if name in LIBRARY and name != "polyN":
        return LIBRARY[name].make()
    match = _POLY.fullmatch(name)
    return polynomial(int(match.group(1))) if match else None


def get_model(model, *, variables=("x",), params=None) -> Model:
    """A ``Model`` from any way of naming one.

    Text that is a built-in name, or built-in names joined by '+', is the library's; any other text is an
    expression in the ``variables``, read by the safe expression language (never ``eval``).

    Args:
        model: a ``Model`` (returned as is), a Python function ``f(x, a, b, ...)``, a built-in name ("gaussian",
            "poly3"), a sum of built-in names ("gaussian + linear"), or an expression ("a*exp(-b*x) + c").
        variables: the names of the independent variables in an expression.
        params: an expression's parameter names in the order wanted (default: order of first appearance).

    Returns:
        Model: the model.

    Raises:
        ModelError: an unknown name or a function gradfit cannot fit.
        ExpressionError: an expression that does not parse, saying where.
    """
    if params is not None and not (isinstance(model, str) and not all(builtin(p.strip()) for p in model.split("+"))):
        raise ModelError(
            "`params` orders the parameters of an expression; a built-in model, a Model or a "
            "function has its own order."
        )
    if isinstance(model, Model):
        return model
    if callable(model) and not isinstance(model, str):
        return FunctionModel(model)
    if not isinstance(model, str):
        raise ModelError(f"A model is a name, an expression, a Python function or a Model, got {type(model).__name__}.")
    parts = [p.strip() for p in model.split("+")]
    found = [builtin(p) for p in parts]
    if all(found):
        return found[0] if len(found) == 1 else Composite(found)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model.strip()) and model.strip() not in (variables or ()):
        # a bare name that is not a model: most likely a typo of one
        choices = ", ".join(n for n in LIBRARY)
        raise ModelError(
            f"Unknown model {model.strip()!r}. Choose one of: {choices}; or write an expression such as a*x + b."
        )
    expression = ExpressionModel(model, variables=variables, params=params)
    return _with_builtin_terms(expression, variables) or _uses_a_variable(expression)


def _with_builtin_terms(model: ExpressionModel, variables) -> Composite | None:
    """'gaussian + m*x + c': built-ins added to an expression are parts of their own (prefixed parameters,
    their own guesses) beside the expression's own terms; never parameters named after a model. None when
    the expression names no built-in."""
    text = model.expression.text
    models = sorted(n for n in model.param_names if builtin(n) is not None)
    if not models:
        return None
    terms = model.expression.terms()
    added = [t for sign, t in terms if sign == "+" and builtin(t) is not None]
    misused = [n for n in models if n not in added or n in _names_outside(terms, n)]
    if misused:
        raise ModelError(
            f"{misused[0]!r} in {text!r} is a built-in model, which can only be added as a term of its "
            f"own ('{misused[0]} + a*x + b'). Add it once, or rename that parameter."
        )
    rest = [(sign, t) for sign, t in terms if t not in added]
    rest_text = " ".join(f"{'' if i == 0 and sign == '+' else sign} {t}".strip() for i, (sign, t) in enumerate(rest))
    parts = [builtin(t) for _, t in terms if t in added]
    if rest_text:
        parts.append(ExpressionModel(rest_text, variables=variables))
    return Composite(parts, own_names=(len(parts) - 1,) if rest_text else ())


def _names_outside(terms, name: str) -> set[str]:
    """The names used by terms other than the bare ``name`` itself."""
    from .expr import parse

    found = set()
    for _, t in terms:
        if t != name:
            found |= parse(t, ()).names()
    return found


def _uses_a_variable(model: ExpressionModel) -> ExpressionModel:
    """An expression in none of its variables fits a constant: most likely the data's x has another name."""
    names = model.expression.names()
    if names & set(model.variables):
        return model
    given = ", ".join(model.variables)
    error = ModelError(
        f"The expression {model.expression.text!r} never uses the variable {given}: it found only "
        f"{', '.join(model.param_names)}, all taken as parameters. Write the formula in {given}, or "
        "name the variable (variables=('t',) in Python, --x COLUMN on the command line)."
    )
    error.found = model.param_names  # the command line looks for them among the data's columns
    raise error


# --- A model as data (a saved result names its model; gradfit.result.load_result makes it again) -------------


def model_spec(model: Model) -> dict:
    """What makes ``model`` again, as JSON-ready data: a built-in by name, an expression by its text, variables
    and parameter order, a sum by its parts; a Python function (or a Model of one's own) by its name only, to be
    given again when the spec is read (``model_from_spec(spec, model=f)``)."""
    if isinstance(model, Composite):
        parts = [model_spec(part) for part in model.parts]
        return {"sum": parts, "own_names": [i for i, p in enumerate(model.prefixes) if not p]}
    made = builtin(model.name)
    if made is not None and made.formula == model.formula and made.param_names == model.param_names:
        return {"builtin": model.name}
    if type(model) is ExpressionModel:
        spec = {"expression": model.formula, "variables": list(model.variables), "params": list(model.param_names)}
        return spec if model.name == model.formula else {**spec, "name": model.name}
    return {"function": model.name, "params": list(model.param_names)}


def model_from_spec(spec: dict, model=None) -> Model:
    """The model ``model_spec`` describes; ``model``: the function (or Model) a spec of kind 'function' names."""
    if "sum" in spec:
        parts = [model_from_spec(part, model) for part in spec["sum"]]
        return Composite(parts, own_names=tuple(spec.get("own_names", ())))
    if "builtin" in spec:
        made = builtin(spec["builtin"])
        if made is None:
            raise ModelError(f"The saved model {spec['builtin']!r} is not a built-in of this gradfit.")
        return made
    if "expression" in spec:
        return ExpressionModel(
            spec["expression"], variables=tuple(spec["variables"]), params=spec["params"], name=spec.get("name")
        )
    if "function" not in spec:
        raise ModelError("The saved model is none of: builtin, expression, sum, function.")
    if model is None:
        raise ModelError(
            f"The result was fitted with the Python function {spec['function']!r}, which a file cannot hold: "
            "give it again, load_result(path, model=f)."
        )
    made = get_model(model)
    if list(made.param_names) != list(spec["params"]):
        raise ModelError(
            f"The model given has parameters ({', '.join(made.param_names)}), the saved one "
            f"({', '.join(spec['params'])}): give the function the result was fitted with."
        )
    return made

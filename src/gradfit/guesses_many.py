"""The same guesses for many curves at once (shared x, every point used), as fit_many makes them; the newer
shapes' rules are written once, batched, and guess one curve as a batch of one (so the two never differ)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .guesses import VOIGT_HWHM, VOIGT_PEAK, skew_normal_moments, weighted_moments


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


def edge_means(Y, k):
    return Y[:, :k].mean(axis=1), Y[:, -k:].mean(axis=1)


def _peak_many(x, Y):
    x, Y = _sorted_many(x, Y)
    B, N = Y.shape
    k = max(1, N // 10)
    x0, x1 = x[:k].mean(), x[-k:].mean()
    y0, y1 = edge_means(Y, k)
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


def many_constant(x, Y):
    return Y.mean(axis=1)[:, None]


def many_exponential(x, Y):
    sign = np.where(np.median(Y, axis=1) >= 0, 1.0, -1.0)[:, None]
    ok = sign * Y > 0
    rate, log_a = _line_fits(x, np.log(np.where(ok, sign * Y, 1.0)), ok)
    mean = Y.mean(axis=1)
    few = ok.sum(axis=1) < 2
    return np.stack(
        [np.where(few, np.where(mean != 0, mean, 1.0), sign[:, 0] * np.exp(log_a)), np.where(few, 0.0, rate)], axis=1
    )


def many_decay(x, Y):
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


def many_power_law(x, Y):
    ok = (x > 0) & (Y != 0)
    with warnings.catch_warnings():  # a row with no usable point has no median: its sign is then +1
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(ok, Y, np.nan), axis=1)
    sign = np.where(ok.any(axis=1), np.where(median >= 0, 1.0, -1.0), 1.0)[:, None]
    ok &= sign * Y > 0
    exponent, log_a = _line_fits(np.log(np.where(x > 0, x, 1.0)), np.log(np.where(ok, sign * Y, 1.0)), ok)
    fitted = ok.sum(axis=1) >= 2
    return np.stack([np.where(fitted, sign[:, 0] * np.exp(log_a), 1.0), np.where(fitted, exponent, 1.0)], axis=1)


def many_logistic(x, Y):
    x, Y = _sorted_many(x, Y)
    k = max(1, Y.shape[1] // 10)
    bottom, top = edge_means(Y, k)
    center = x[np.argmin(np.abs(Y - ((bottom + top) / 2)[:, None]), axis=1)]
    span = x[-1] - x[0] or 1.0
    return np.stack([bottom, top, np.full_like(bottom, 8.0 / span), center], axis=1)


def many_gaussian(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm / math.sqrt(2 * math.log(2))], axis=1)


def many_lorentzian(x, Y):
    return np.stack(_peak_many(x, Y), axis=1)


def many_pseudo_voigt(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm, np.full_like(height, 0.5)], axis=1)


def many_moffat(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    return np.stack([height, center, hwhm, np.ones_like(height)], axis=1)


def _above_baseline(x, Y):
    """x sorted, and each row's area element above the line through its edges (clipped at 0): weights for
    moments."""
    x, Y = _sorted_many(x, Y)
    k = max(1, Y.shape[1] // 10)
    y0, y1 = edge_means(Y, k)
    x0, x1 = x[:k].mean(), x[-k:].mean()
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else np.zeros(len(Y))
    return x, np.clip(Y - (y0[:, None] + slope[:, None] * (x - x0)), 0, None) * np.gradient(x)


def many_skewed_gaussian(x, Y):
    x, w = _above_baseline(x, Y)
    area, center, sigma, gamma = skew_normal_moments(x, w)
    flat = ~(area > 0)  # nothing above the baseline: the shape unskewed, where the largest point is
    if flat.any():
        height, middle, hwhm = _peak_many(x, Y[flat])
        sigma[flat] = hwhm / math.sqrt(2 * math.log(2))
        area[flat], center[flat], gamma[flat] = height * sigma[flat] * math.sqrt(2 * math.pi), middle, 0.0
    return np.stack([area, center, sigma, gamma], axis=1)


def many_voigt(x, Y):
    height, center, hwhm = _peak_many(x, Y)
    s = hwhm / VOIGT_HWHM
    return np.stack([height * s / VOIGT_PEAK, center, s, s], axis=1)


def one_curve(rule):
    """A one-curve guess (x, y) -> list from a batched rule (x, Y) -> (B, P)."""

    def guess(x, y):
        with np.errstate(all="ignore"):
            return list(np.asarray(rule(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)[None]))[0])

    return guess


def stacked_columns(*values):
    """Columns, numbers or (B,) arrays, stacked as a (B, P) guess."""
    return np.stack(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)), axis=1)


def from_peak(make):
    """A batched rule from the largest peak's height, center and half width: make(h, c, w) -> parameters."""
    return lambda x, Y: stacked_columns(*make(*_peak_many(x, Y)))


STUDENT_T_DOF = 5.0  # the guessed degrees of freedom of student_t, and its peak per unit area there
STUDENT_T_PEAK = math.exp(math.lgamma(3.0) - math.lgamma(2.5)) / math.sqrt(5.0 * math.pi)


# dho's guess: gamma (the temperature) half the center (from gamma = center, L-BFGS can slide to gamma -> 0,
# where the Bose factor's classical limit makes the loss flat), and its Bose factor 1 - exp(-x/gamma) there
BOSE_AT_CENTER = 1 - math.exp(-2)


def many_breit_wigner(x, Y):
    """A Fano line A(qγ + d)²/(γ² + d²), d = x − center, γ = sigma/2: A is the level far out (the edges), its
    maximum A(1 + q²) at d = γ/q, its zero at d = −qγ (left of the maximum when q > 0)."""
    height, top, hwhm = _peak_many(x, Y)
    xs, Ys = _sorted_many(x, Y)
    k = max(1, Ys.shape[1] // 10)
    level = np.mean(edge_means(Ys, k), axis=0)
    bottom = xs[np.argmin(Ys, axis=1)]
    q = np.where(top >= bottom, 1.0, -1.0) * np.sqrt(np.abs(height / level))
    return stacked_columns(level, top - hwhm / q, 2 * hwhm, q)


def many_expgaussian(x, Y):
    """An exponentially modified Gaussian's moments inverted: mean c + τ, variance σ² + τ², skewness 2τ³/var^1.5
    (τ = 1/gamma; skewness kept inside what the shape can have, 0 to 2)."""
    x, w = _above_baseline(x, Y)
    area, mean, var, skew = weighted_moments(x, w)
    tau = np.sqrt(var) * np.cbrt(np.clip(skew, 0.05, 1.9) / 2)
    return stacked_columns(area, mean - tau, np.sqrt(np.maximum(var - tau**2, 1e-24)), 1 / tau)


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


def many_step(quarter):
    """A step from 0 to amplitude: amplitude the change from the left edge to the right, center where it is half
    done, sigma from where it is a quarter and three quarters done."""

    def rule(x, Y):
        x, Y = _sorted_many(x, Y)
        k = max(1, Y.shape[1] // 10)
        left, right = edge_means(Y, k)
        T = (Y - left[:, None]) / (right - left)[:, None]
        spacing = np.median(np.diff(x)) if len(x) > 1 else 1.0
        width = np.abs(_rises(x, T, 0.75) - _rises(x, T, 0.25)) / (2 * quarter)
        return stacked_columns(right - left, _rises(x, T, 0.5), np.maximum(width, spacing / 2))

    return rule


def many_rectangle(quarter):
    """A rise then a fall back to the edges' level: amplitude the mean height of the points above half way, each
    center where that height is half reached, each sigma from the quarter and three-quarter points."""

    def rule(x, Y):
        x, Y = _sorted_many(x, Y)
        k = max(1, Y.shape[1] // 10)
        base = np.mean(edge_means(Y, k), axis=0)[:, None]
        high = Y - base >= (Y.max(axis=1, keepdims=True) - base) / 2
        top = np.where(high, Y - base, 0.0).sum(axis=1) / np.maximum(high.sum(axis=1), 1)
        T = (Y - base) / top[:, None]
        spacing = np.median(np.diff(x)) if len(x) > 1 else 1.0
        up = np.abs(_rises(x, T, 0.75) - _rises(x, T, 0.25)) / (2 * quarter)
        down = np.abs(_rises(x, T, 0.25, first=False) - _rises(x, T, 0.75, first=False)) / (2 * quarter)
        center1, center2 = _rises(x, T, 0.5), _rises(x, T, 0.5, first=False)
        return stacked_columns(top, center1, np.maximum(up, spacing / 2), center2, np.maximum(down, spacing / 2))

    return rule


def many_thermal(offset):
    """1/(amplitude*exp((x - center)/kt) + offset) with amplitude 1: log(1/y − offset) is the line
    (x − center)/kt, fitted where it is defined."""

    def rule(x, Y):
        with np.errstate(all="ignore"):
            Z = np.log(1 / Y - offset)
        ok = np.isfinite(Z)
        slope, intercept = _line_fits(x, np.where(ok, Z, 0.0), ok)
        kt = np.where(ok.sum(axis=1) >= 2, 1 / slope, np.nan)
        return stacked_columns(1.0, -intercept * kt, kt)

    return rule


def many_gaussian2d(xy, Z):
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
    """frequency_of for every row at once: the same even grid (x is shared), one FFT per row."""
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


def many_sine(x, Y):  # amplitude*sin(2*pi*frequency*x + phase)
    f = _frequency_many(x, Y)
    amplitude, phase = _sine_fits(x, Y - Y.mean(axis=1, keepdims=True), f)
    return np.stack([amplitude, f, phase], axis=1)


def many_damped_sine(x, Y):  # amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)
    x, Y = _sorted_many(x, Y)
    f = _frequency_many(x, Y)
    # the decay from the envelope: log of each chunk's peak size against x, as guess_damped_sine
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

"""The catalogue of built-in models (LIBRARY), each with parameter names, a formula and a ``guess`` from the data.

Every formula is written in the safe expression language, so what ``gradfit models``
prints is exactly what is fitted. Guesses are robust rules of thumb in numpy (peak
height and width from the data, frequencies from an FFT, rates from log-linear
fits): good enough that ``p0`` is optional for every built-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .models import ExpressionModel, Model, linear, polynomial, quadratic
from .guesses import (
    VOIGT_HWHM,
    VOIGT_PEAK,
    guess_constant,
    guess_damped_sine,
    guess_decay,
    guess_exponential,
    guess_gaussian,
    guess_gaussian2d,
    guess_logistic,
    guess_lognormal,
    guess_lorentzian,
    guess_moffat,
    guess_power_law,
    guess_pseudo_voigt,
    guess_sine,
    guess_skewed_gaussian,
    guess_voigt,
)
from .guesses_many import (
    BOSE_AT_CENTER,
    STEP_QUARTER,
    STUDENT_T_DOF,
    STUDENT_T_PEAK,
    from_peak,
    many_breit_wigner,
    many_constant,
    many_damped_sine,
    many_decay,
    many_expgaussian,
    many_exponential,
    many_gaussian,
    many_gaussian2d,
    many_logistic,
    many_lorentzian,
    many_moffat,
    many_power_law,
    many_pseudo_voigt,
    many_rectangle,
    many_sine,
    many_skewed_gaussian,
    many_step,
    many_thermal,
    many_voigt,
    one_curve,
)


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
    guess = one_curve(many) if guess is None else guess

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


LIBRARY: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("constant", "a flat line", _expression("constant", "c", guess_constant, many=many_constant)),
        Entry("linear", "a straight line", linear),
        Entry("quadratic", "a parabola, the seed article's model", quadratic),
        Entry("polyN", "a polynomial of degree N (poly3, poly5, ...); c<k> multiplies x**k", lambda: polynomial(3)),
        Entry(
            "exponential",
            "exponential growth or decay",
            _expression("exponential", "amplitude*exp(rate*x)", guess_exponential, many=many_exponential),
        ),
        Entry(
            "exp_decay",
            "exponential decay to an offset",
            _expression("exp_decay", "amplitude*exp(-rate*x) + offset", guess_decay, many=many_decay),
        ),
        Entry(
            "power_law",
            "a power law",
            _expression("power_law", "amplitude*x**exponent", guess_power_law, many=many_power_law),
        ),
        Entry(
            "logistic",
            "an S-curve from bottom to top",
            _expression(
                "logistic", "bottom + (top - bottom)*sigmoid(rate*(x - center))", guess_logistic, many=many_logistic
            ),
        ),
        Entry(
            "gaussian",
            "a Gaussian peak",
            _expression(
                "gaussian",
                "amplitude*exp(-(x - center)**2/(2*sigma**2))",
                guess_gaussian,
                even=("sigma",),
                many=many_gaussian,
            ),
        ),
        Entry(
            "lorentzian",
            "a Lorentzian peak",
            _expression(
                "lorentzian",
                "amplitude*gamma**2/((x - center)**2 + gamma**2)",
                guess_lorentzian,
                params=("amplitude", "center", "gamma"),
                even=("gamma",),
                many=many_lorentzian,
            ),
        ),
        Entry(
            "voigt",
            "a Voigt profile (a Gaussian convolved with a Lorentzian; amplitude is its area, as lmfit's)",
            _expression(
                "voigt",
                "amplitude*voigt(x - center, sigma, gamma)",
                guess_voigt,
                params=("amplitude", "center", "sigma", "gamma"),
                even=("sigma", "gamma"),
                many=many_voigt,
            ),
        ),
        Entry(
            "moffat",
            "a Moffat peak (a Lorentzian whose wings fall as the power 2*beta; lmfit's)",
            _expression(
                "moffat",
                "amplitude/(((x - center)/sigma)**2 + 1)**beta",
                guess_moffat,
                params=("amplitude", "center", "sigma", "beta"),
                even=("sigma",),
                many=many_moffat,
            ),
        ),
        Entry(
            "skewed_gaussian",
            "a Gaussian skewed by an error function (amplitude is its area; lmfit's)",
            _expression(
                "skewed_gaussian",
                "amplitude/(sigma*sqrt(2*pi))*exp(-(x - center)**2/(2*sigma**2))"
                "*(1 + erf(gamma*(x - center)/(sigma*sqrt(2))))",
                guess_skewed_gaussian,
                params=("amplitude", "center", "sigma", "gamma"),
                many=many_skewed_gaussian,
            ),
        ),
        Entry(
            "lognormal",
            "a log-normal peak over x > 0 (amplitude is its area; lmfit's)",
            _expression(
                "lognormal",
                "amplitude/(x*sigma*sqrt(2*pi))*exp(-(log(x) - center)**2/(2*sigma**2))",
                guess_lognormal,
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
                guess_pseudo_voigt,
                params=("amplitude", "center", "width", "fraction"),
                even=("width",),
                many=many_pseudo_voigt,
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
                many=from_peak(lambda h, c, w: (math.pi * h * w, c, w, w)),
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
                many=from_peak(lambda h, c, w: (math.pi * h * w, c, w, 1.0)),
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
                many=from_peak(lambda h, c, w: (math.pi * h * w, c, w, 1.0, 0.0)),
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
                many=from_peak(lambda h, c, w: (h / STUDENT_T_PEAK, c, STUDENT_T_DOF)),
            ),
        ),
        Entry(
            "breit_wigner",
            "a Breit-Wigner-Fano resonance: a peak beside a dip, level amplitude far out (lmfit's)",
            _expression(
                "breit_wigner",
                "amplitude*(q*sigma/2 + x - center)**2/((sigma/2)**2 + (x - center)**2)",
                params=("amplitude", "center", "sigma", "q"),
                many=many_breit_wigner,
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
                many=from_peak(lambda h, c, w: (2 * h * w / np.abs(c), np.abs(c), w / np.abs(c))),
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
                many=from_peak(lambda h, c, w: (math.pi * h * w * BOSE_AT_CENTER, np.abs(c), w, np.abs(c) / 2)),
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
                many=many_expgaussian,
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
                many=from_peak(lambda h, c, w: (h * w, c, w, 0.0)),
            ),
        ),
        Entry(
            "skewed_voigt",
            "a Voigt profile skewed by an error function (amplitude is its area; lmfit's)",
            _expression(
                "skewed_voigt",
                "amplitude*voigt(x - center, sigma, gamma)*(1 + erf(skew*(x - center)/(sqrt(2)*sigma)))",
                params=("amplitude", "center", "sigma", "gamma", "skew"),
                many=from_peak(
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
                many=many_step(STEP_QUARTER["linear"]),
            ),
        ),
        Entry(
            "step_erf",
            "a step from 0 up to amplitude, an erf curve of width sigma (lmfit's step, form 'erf')",
            _expression(
                "step_erf",
                "amplitude*(1 + erf((x - center)/sigma))/2",
                params=("amplitude", "center", "sigma"),
                many=many_step(STEP_QUARTER["erf"]),
            ),
        ),
        Entry(
            "step_atan",
            "a step from 0 up to amplitude, an atan curve of width sigma (lmfit's step, form 'atan')",
            _expression(
                "step_atan",
                "amplitude*(0.5 + arctan((x - center)/sigma)/pi)",
                params=("amplitude", "center", "sigma"),
                many=many_step(STEP_QUARTER["atan"]),
            ),
        ),
        Entry(
            "step_logistic",
            "a step from 0 up to amplitude, a logistic curve of width sigma (lmfit's step, form 'logistic')",
            _expression(
                "step_logistic",
                "amplitude*(1 - 1/(1 + exp((x - center)/sigma)))",
                params=("amplitude", "center", "sigma"),
                many=many_step(STEP_QUARTER["logistic"]),
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
                many=many_rectangle(STEP_QUARTER["linear"] * 2),
            ),
        ),
        Entry(
            "rectangle_erf",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'erf')",
            _expression(
                "rectangle_erf",
                "amplitude*(erf((x - center1)/sigma1) + erf((center2 - x)/sigma2))/2",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=many_rectangle(STEP_QUARTER["erf"]),
            ),
        ),
        Entry(
            "rectangle_atan",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'atan')",
            _expression(
                "rectangle_atan",
                "amplitude*(arctan((x - center1)/sigma1) + arctan((center2 - x)/sigma2))/pi",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=many_rectangle(STEP_QUARTER["atan"]),
            ),
        ),
        Entry(
            "rectangle_logistic",
            "a rise to amplitude at center1 and a fall back at center2 (lmfit's rectangle, form 'logistic')",
            _expression(
                "rectangle_logistic",
                "amplitude*(1 - 1/(1 + exp((x - center1)/sigma1)) - 1/(1 + exp((center2 - x)/sigma2)))",
                params=("amplitude", "center1", "sigma1", "center2", "sigma2"),
                many=many_rectangle(STEP_QUARTER["logistic"]),
            ),
        ),
        Entry(
            "thermal_bose",
            "the Bose-Einstein distribution over energy x (lmfit's thermal_distribution, form 'bose')",
            _expression(
                "thermal_bose",
                "1/(amplitude*exp((x - center)/kt) - 1)",
                params=("amplitude", "center", "kt"),
                many=many_thermal(-1.0),
            ),
        ),
        Entry(
            "thermal_maxwell",
            "the Maxwell-Boltzmann distribution over energy x (lmfit's thermal_distribution, form 'maxwell')",
            _expression(
                "thermal_maxwell",
                "1/(amplitude*exp((x - center)/kt))",
                params=("amplitude", "center", "kt"),
                many=many_thermal(0.0),
            ),
        ),
        Entry(
            "thermal_fermi",
            "the Fermi-Dirac distribution over energy x (lmfit's thermal_distribution, form 'fermi')",
            _expression(
                "thermal_fermi",
                "1/(amplitude*exp((x - center)/kt) + 1)",
                params=("amplitude", "center", "kt"),
                many=many_thermal(1.0),
            ),
        ),
        Entry(
            "sine",
            "a sine wave",
            _expression("sine", "amplitude*sin(2*pi*frequency*x + phase)", guess_sine, many=many_sine),
        ),
        Entry(
            "damped_sine",
            "a sine wave dying away",
            _expression(
                "damped_sine",
                "amplitude*exp(-decay*x)*sin(2*pi*frequency*x + phase)",
                guess_damped_sine,
                many=many_damped_sine,
            ),
        ),
        Entry(
            "gaussian2d",
            "a 2-D Gaussian spot on an offset, over (x, y)",
            _expression(
                "gaussian2d",
                "amplitude*exp(-(x - x0)**2/(2*sigma_x**2) - (y - y0)**2/(2*sigma_y**2)) + offset",
                guess_gaussian2d,
                params=("amplitude", "x0", "y0", "sigma_x", "sigma_y", "offset"),
                variables=("x", "y"),
                even=("sigma_x", "sigma_y"),
                many=many_gaussian2d,
            ),
        ),
    ]
}

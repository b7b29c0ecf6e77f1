"""The built-in models, each with parameter names, a formula and a ``guess`` from the data.

Every formula is written in the safe expression language, so what ``gradfit models``
prints is exactly what is fitted. Guesses are robust rules of thumb in numpy (peak
height and width from the data, frequencies from an FFT, rates from log-linear
fits): good enough that ``p0`` is optional for every built-in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import ModelError
from .models import Composite, ExpressionModel, FunctionModel, Model, linear, polynomial, quadratic
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

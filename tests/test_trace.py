"""A Python model function read as the formula it computes (gradfit.trace): the formula's values and derivatives
are the function's own, what cannot be read says why and still fits, and fit_many runs a traced function as the
expression it spells."""

import inspect
import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

import gradfit
from gradfit.expr import parse
from gradfit.library import builtin
from gradfit.models import FunctionModel
from gradfit.trace import Untraceable, trace, traced_model

EXACT = 1e-12  # relative: the traced formula runs the same operations as the function, rounding apart
SAME = 1e-8  # relative, fit_many's answers by the two paths

# Python functions for every operator and function of the expression language, beside the text they spell
# (as tests/test_compiled.py's EXPRESSIONS): torch functions, Tensor methods and torch.special's spellings
FUNCTIONS = [
    (
        lambda x, a, m, s, c: a * torch.exp(-((x - m) ** 2) / (2 * s**2)) + c,
        "a*exp(-(x - m)**2/(2*s**2)) + c",
        [2.0, 0.3, 0.8, 0.1],
    ),
    (
        lambda x, a, w, ph, b: a * torch.sin(w * x + ph) + b * x.cos() - torch.tan(x / (4 * w)),
        "a*sin(w*x + ph) + b*cos(x) - tan(x/(4*w))",
        [1.5, 0.7, 0.2, -0.4],
    ),
    (
        lambda x, a, b, c, d: torch.log(a + x**2) + torch.log10(b * x + 10) + (2 + c).log2() * torch.sqrt(x + d),
        "log(a + x**2) + log10(b*x + 10) + log2(2 + c) * sqrt(x + d)",
        [1.2, 0.5, 0.3, 2.0],
    ),
    (
        lambda x, a, b, c: (
            torch.abs(a * x - 1)
            + torch.arcsin(x / (10 * b))
            + torch.acos(x / (12 * b))
            + torch.arctan(c * x)
            + torch.atan(x)
        ),
        "abs(a*x - 1) + arcsin(x/(10*b)) + acos(x/(12*b)) + arctan(c*x) + atan(x)",
        [0.9, 1.1, 0.6],
    ),
    (
        lambda x, a, b, c: (
            torch.sinh(a * x / 5)
            + torch.cosh(b) * torch.tanh(x - c)
            + torch.special.erf(a * x)
            - torch.erfc(b * x)
            + torch.sigmoid(c * x + a)
        ),
        "sinh(a*x/5) + cosh(b) * tanh(x - c) + erf(a*x) - erfc(b*x) + sigmoid(c*x + a)",
        [0.4, -0.3, 0.2],
    ),
    (
        lambda x, a, b, c, d, k: a * x**3 + b * x**0.5 + c / x + d * x**-1 + x**k + x**math.e + (x + 2) ** (a * b),
        "a*x**3 + b*x**0.5 + c/x + d*x**-1 + x**k + x**e + (x + 2)**(a*b)",
        [0.5, 1.5, -0.7, 0.2, 1.3],
    ),
    (
        lambda x, a, b: -a + -(b * 2) + a * b / (1 + a * a) + torch.neg(x) + torch.square(x) - torch.atan2(x, a),
        "-a + -(b*2) + a*b/(1 + a*a) + -x + x**2 - arctan2(x, a)",
        [0.7, 1.9],
    ),
]


def _values_and_jacobian(expression, x, p):
    value, grads = expression.value_and_gradient([x], list(torch.as_tensor(p, dtype=torch.float64).unbind()))
    value = torch.as_tensor(value, dtype=torch.float64).expand_as(x)
    jac = torch.stack(
        [torch.zeros_like(x) if g is None else torch.as_tensor(g, dtype=torch.float64).expand_as(x) for g in grads], -1
    )
    return value, jac


def _autograd(function, x, p):
    p = torch.as_tensor(p, dtype=torch.float64)
    value = function(x, *p.unbind())
    jac = torch.func.jacfwd(lambda q: function(x, *q.unbind()).expand_as(x))(p)
    return value, jac


@pytest.mark.parametrize("case", range(len(FUNCTIONS)))
def test_a_traced_function_is_the_expression_it_spells(case):
    function, text, p = FUNCTIONS[case]
    names = tuple(inspect.signature(function).parameters)[1:]
    x = torch.linspace(0.5, 3.0, 23, dtype=torch.float64)
    traced = trace(function, "x", names)
    spelled = parse(text, ("x",), names)
    value, jac = _values_and_jacobian(traced, x, p)
    want_value, want_jac = _values_and_jacobian(spelled, x, p)
    torch.testing.assert_close(value, want_value, rtol=EXACT, atol=0)
    torch.testing.assert_close(jac, want_jac, rtol=EXACT, atol=EXACT * float(want_jac.abs().max()))
    own_value, own_jac = _autograd(function, x, p)  # and the function's own, by torch's autograd
    torch.testing.assert_close(value, own_value, rtol=EXACT, atol=0)
    torch.testing.assert_close(jac, own_jac, rtol=EXACT, atol=EXACT * float(own_jac.abs().max()))
    assert traced.program().n_params == len(names)  # and it compiles into a Program


# the library's built-ins, written as a curve_fit user writes them
BUILTINS = {
    "constant": (lambda x, c: c + 0 * x, [1.5]),
    "linear": (lambda x, slope, intercept: slope * x + intercept, [2.0, -1.0]),
    "quadratic": (lambda x, a, b, c: a * x**2 + b * x + c, [0.5, -1.0, 2.0]),
    "polyN": (lambda x, c3, c2, c1, c0: c3 * x**3 + c2 * x**2 + c1 * x + c0, [0.1, 0.5, -1.0, 2.0]),
    "exponential": (lambda x, amplitude, rate: amplitude * torch.exp(rate * x), [2.0, -0.3]),
    "exp_decay": (lambda x, amplitude, rate, offset: amplitude * torch.exp(-rate * x) + offset, [2.0, 0.3, 0.1]),
    "power_law": (lambda x, amplitude, exponent: amplitude * x**exponent, [2.0, 1.5]),
    "logistic": (
        lambda x, bottom, top, rate, center: bottom + (top - bottom) * torch.sigmoid(rate * (x - center)),
        [0.1, 2.0, 1.5, 1.0],
    ),
    "gaussian": (
        lambda x, amplitude, center, sigma: amplitude * torch.exp(-((x - center) ** 2) / (2 * sigma**2)),
        [2, 1, 0.5],
    ),
    "lorentzian": (
        lambda x, amplitude, center, gamma: amplitude * gamma**2 / ((x - center) ** 2 + gamma**2),
        [2.0, 1.0, 0.5],
    ),
    "pseudo_voigt": (
        lambda x, amplitude, center, width, fraction: (
            amplitude
            * (
                fraction / (1 + ((x - center) / width) ** 2)
                + (1 - fraction) * torch.exp(-math.log(2) * ((x - center) / width) ** 2)
            )
        ),
        [2.0, 1.0, 0.5, 0.3],
    ),
    "sine": (
        lambda x, amplitude, frequency, phase: amplitude * torch.sin(2 * math.pi * frequency * x + phase),
        [2.0, 0.7, 0.2],
    ),
    "damped_sine": (
        lambda x, amplitude, decay, frequency, phase: (
            amplitude * torch.exp(-decay * x) * torch.sin(2 * math.pi * frequency * x + phase)
        ),
        [2.0, 0.3, 0.7, 0.2],
    ),
    "gaussian2d": (
        lambda x, amplitude, x0, y0, sigma_x, sigma_y, offset: (
            amplitude * torch.exp(-((x[:, 0] - x0) ** 2) / (2 * sigma_x**2) - (x[:, 1] - y0) ** 2 / (2 * sigma_y**2))
            + offset
        ),
        [2.0, 0.5, -0.3, 1.1, 0.7, 0.1],
    ),
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_the_built_ins_written_as_python_functions_trace_to_their_formulas(name):
    function, p = BUILTINS[name]
    model = builtin("poly3" if name == "polyN" else name)
    rng = np.random.default_rng(1)
    two = name == "gaussian2d"
    x = torch.as_tensor(rng.uniform(0.2, 3.0, (40, 2) if two else 40), dtype=torch.float64)
    start = torch.as_tensor(p, dtype=torch.float64)
    fitted, note = traced_model(FunctionModel(function, name=name), x, start)
    assert fitted.param_names == model.param_names and "read as the formula" in note, note
    with torch.no_grad():
        want = model(x, start)
        got = fitted(x, start)
    torch.testing.assert_close(got, want, rtol=EXACT, atol=EXACT * float(want.abs().max()))
    jac = torch.func.jacfwd(lambda q: fitted(x, q))(start)
    want_jac = torch.func.jacfwd(lambda q: model(x, q))(start)
    torch.testing.assert_close(jac, want_jac, rtol=EXACT, atol=EXACT * float(want_jac.abs().max()))


def _where(x, a, b):
    return torch.where(x > 1.5, a * x, a * 1.5) + b


def _branch(x, a, b):
    return a * torch.exp(-b * x) if a > 0 else -a * x


def _item(x, a, b):
    return a.item() * torch.exp(-b * x) + 0 * a


def _numpy(x, a, b):
    return np.asarray(a) * np.exp(-np.asarray(b) * np.asarray(x))


WEIGHTS = torch.linspace(1.0, 2.0, 30, dtype=torch.float64)


def _closure_over_array(x, a, b):
    return a * torch.exp(-b * x) * WEIGHTS


@pytest.mark.parametrize(
    "function, why",
    [
        (_where, "a comparison of x or a parameter"),
        (_branch, "a comparison of x or a parameter"),
        (_item, ".item"),
        (_numpy, "a numpy function"),
        (_closure_over_array, "a captured array of 30 values"),
        (lambda x, a, b: torch.clamp(a * x, 0, 10) + b, "torch.clamp"),
        (lambda x, a, b: a * x[0] + b, "indexing x other than by column"),
        (lambda x, a, b: 3.0, "a result of type float"),
    ],
)
def test_what_cannot_be_traced_says_why(function, why):
    with pytest.raises(Untraceable, match=re.escape(why)):
        trace(function, "x", ("a", "b"))


@pytest.mark.parametrize("function", [_where, _closure_over_array, _numpy, _branch, _item])
def test_functions_that_do_not_trace_still_fit_many_curves_right(function):
    """Not read as a formula: fitted as Python on the whole batch at once (gradfit.dual), or one curve at a time
    where nothing can batch it (an if on a parameter), or with estimated derivatives (numpy, .item()), each
    with a note that says so, and the answers curve_fit gives."""
    rng = np.random.default_rng(4)
    x = np.linspace(0.0, 3.0, 30)
    truth = np.column_stack([rng.uniform(1, 2, 6), rng.uniform(0.3, 1.0, 6)])
    Y = np.stack([np.asarray(function(torch.as_tensor(x), *map(torch.tensor, p))) for p in truth])
    Y = Y + 0.01 * rng.normal(size=Y.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gradfit.fit_many(function, x, Y, p0=truth * 1.1)
    assert list(result.status) == ["converged"] * 6
    note = " ".join(result.notes)
    assert ("trace stopped at" in note) or ("finite differences" in note), note
    assert (function is _branch) == ("one curve at a time" in note), note
    assert (function in (_where, _closure_over_array)) == ("it runs on the whole batch at once" in note), note

    def numpy_f(x, a, b):
        return np.asarray(function(torch.as_tensor(x), torch.tensor(a), torch.tensor(b)))

    for row, p in zip(Y, result.params):
        want, _ = curve_fit(numpy_f, x, row, p0=p * 1.05)
        np.testing.assert_allclose(p, want, rtol=1e-6)


def test_a_closure_is_traced_anew_for_every_fit():
    """A captured number is baked into the formula at the time of each fit: changing it between fits changes the
    fit (a trace cached on the function object would silently keep the old number)."""
    scale = [2.0]

    def f(x, a):
        return a * torch.exp(-scale[0] * x)

    x = np.linspace(0, 2, 20)
    Y = np.stack([3.0 * np.exp(-2.0 * x), 3.0 * np.exp(-2.0 * x)])
    first = gradfit.fit_many(f, x, Y, p0=[1.0])
    np.testing.assert_allclose(first.params[:, 0], 3.0, rtol=1e-10)
    scale[0] = 1.0
    second = gradfit.fit_many(f, x, Y, p0=[1.0])
    assert "exp(-2.0 * x)" in first.notes[0] and "exp(-1.0 * x)" in second.notes[0]
    want = (np.exp(-1.0 * x) @ Y[0]) / (np.exp(-1.0 * x) @ np.exp(-1.0 * x))  # least squares of a*exp(-x)
    np.testing.assert_allclose(second.params[:, 0], want, rtol=1e-9)


def test_fit_many_runs_a_traced_function_as_its_expression():
    """The Gaussian peak as a Python function and as the expression it spells: the same answers curve by
    curve (both backends), and the note says what the function was read as."""
    rng = np.random.default_rng(0)
    B, N = 300, 50
    x = np.linspace(-5, 5, N)
    truth = np.column_stack(
        [rng.uniform(1, 3, B), rng.uniform(-1, 1, B), rng.uniform(0.5, 1.5, B), rng.uniform(-0.2, 0.2, B)]
    )
    Y = truth[:, :1] * np.exp(-((x - truth[:, 1:2]) ** 2) / (2 * truth[:, 2:3] ** 2)) + truth[:, 3:]
    Y = Y + 0.01 * rng.normal(size=(B, N))
    p0 = truth * rng.uniform(0.8, 1.2, truth.shape)

    def g(x, amp, cen, wid, off):
        return amp * torch.exp(-((x - cen) ** 2) / (2 * wid**2)) + off

    for backend in ("torch", "compiled"):
        spelled = gradfit.fit_many("amp*exp(-(x - cen)**2/(2*wid**2)) + off", x, Y, p0=p0, backend=backend)
        traced = gradfit.fit_many(g, x, Y, p0=p0, backend=backend)
        assert traced.model.function is g and traced.param_names == ("amp", "cen", "wid", "off")
        assert traced.notes == ["g read as the formula amp * exp(-(x - cen) ** 2.0 / (2.0 * wid ** 2.0)) + off"]
        assert list(traced.status) == list(spelled.status)
        np.testing.assert_allclose(traced.params, spelled.params, rtol=SAME)
        np.testing.assert_allclose(traced.stderr, spelled.stderr, rtol=1e-6)


def test_many_curves_of_a_traced_function_equal_single_fits():
    """fit_many of a traced Python function against one gradfit.fit per curve (which runs the function itself)."""
    rng = np.random.default_rng(5)
    B, N = 10_000, 20
    x = np.linspace(0, 4, N)
    truth = np.column_stack([rng.uniform(1, 3, B), rng.uniform(0.3, 1.5, B), rng.uniform(-0.5, 0.5, B)])
    Y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:] + 0.01 * rng.normal(size=(B, N))

    def decay(x, amplitude, rate, offset):
        return amplitude * torch.exp(-rate * x) + offset

    many = gradfit.fit_many(decay, x, Y, p0=truth * 1.1)
    assert "read as the formula" in many.notes[0]
    for i in range(0, B, 10):  # every 10th curve, one fit each (1,000 fits)
        one = gradfit.fit(decay, x, Y[i], p0=truth[i] * 1.1, method="lm")
        np.testing.assert_allclose(many.params[i], list(one.params.values()), rtol=SAME)


def test_a_trace_that_does_not_give_the_functions_values_is_not_used():
    """What the stand-ins cannot see (here a global read at each call, which changes between the trace and the
    check) leaves the function to run as itself."""
    calls = [0]

    def drifting(x, a):
        calls[0] += 1
        return a * x + calls[0]

    x = torch.linspace(0, 1, 5, dtype=torch.float64)
    model, note = traced_model(FunctionModel(drifting), x, torch.tensor([1.0], dtype=torch.float64))
    assert isinstance(model, FunctionModel) and "did not give the function's values" in note


def test_backend_auto_runs_a_traced_function_compiled(monkeypatch):
    """Where auto compiles a formula (a large batch, the solver compiled on this machine), it compiles the
    formula a Python function was read as: the note of a successful trace once kept it on torch (8x slower)."""
    from gradfit import batch
    from gradfit.solvers import compiled

    monkeypatch.setattr(batch, "COMPILED_FROM", 2)
    monkeypatch.setattr(compiled, "cached", lambda: True)
    calls, run = [], batch._fit_compiled  # noqa: SLF001 - spied on
    monkeypatch.setattr(batch, "_fit_compiled", lambda *a: calls.append(a) or run(*a))
    x = np.linspace(0, 2, 20)
    Y = np.stack([2.0 * np.exp(-0.5 * x), 3.0 * np.exp(-1.5 * x)])
    result = gradfit.fit_many(lambda x, a, k: a * torch.exp(-k * x), x, Y, p0=[1.0, 1.0])
    assert calls and list(result.status) == ["converged"] * 2
    np.testing.assert_allclose(result.params, [[2.0, 0.5], [3.0, 1.5]], rtol=1e-10)


def test_one_fit_of_a_traced_function_is_the_expressions_fit():
    """gradfit.fit reads the function as its formula too (and so takes the expression's Jacobian from its tree):
    the same answers as the expression to rounding, and the message says what it was read as."""
    rng = np.random.default_rng(2)
    x = np.linspace(-5, 5, 50)
    y = 2 * np.exp(-((x - 0.3) ** 2) / (2 * 1.1**2)) + 0.1 + 0.01 * rng.normal(size=50)

    def peak(x, amp, cen, wid, off):
        return amp * torch.exp(-((x - cen) ** 2) / (2 * wid**2)) + off

    p0 = [1.8, 0.2, 1.0, 0.0]
    traced = gradfit.fit(peak, x, y, p0=p0)
    spelled = gradfit.fit("amp*exp(-(x - cen)**2/(2*wid**2)) + off", x, y, p0=p0)
    assert traced.converged and "peak read as the formula amp * exp(" in traced.message
    assert traced.model.name == "peak" and traced.n_steps == spelled.n_steps
    np.testing.assert_allclose(list(traced.params.values()), list(spelled.params.values()), rtol=SAME)
    np.testing.assert_allclose(list(traced.stderr.values()), list(spelled.stderr.values()), rtol=1e-6)


def test_tracing_from_several_threads_at_once():
    """fit and fit_many of a traced function and of one that does not trace (torch.func), in four threads at
    once, repeated: the same answers as alone, no error."""
    import threading

    x = np.linspace(0, 3, 40)
    y = 2 * np.exp(-0.7 * x) + 0.3

    def traced(x, a, k, c):
        return a * torch.exp(-k * x) + c

    def untraced(x, a, k, c):
        return torch.where(x > 100, 0.0, a * torch.exp(-k * x)) + c

    answers, errors = [], []

    def run(model):
        try:
            for _ in range(10):
                answers.append(list(gradfit.fit(model, x, y, p0=[1.0, 1.0, 0.0]).params.values()))
            answers.extend(gradfit.fit_many(model, x, np.stack([y] * 20), p0=[1.0, 1.0, 0.0]).params.tolist())
        except Exception as e:  # any failure in a thread is the test's failure
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(m,)) for m in (traced, untraced, traced, untraced)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(answers) == 4 * 30, errors
    np.testing.assert_allclose(answers, [[2.0, 0.7, 0.3]] * len(answers), rtol=1e-8)

"""A Python function run on a whole batch at once with forward-mode derivatives (gradfit.dual): its values and
Jacobian equal the function's own and torch.func's, curve by curve; what it cannot run says why and still fits;
fit_many's answers equal the same model's as an expression."""

import re

import numpy as np
import pytest
import torch

import gradfit
from gradfit.dual import BroadcastFunction, broadcast_model, evaluate
from gradfit.models import FunctionModel

EXACT = 1e-12  # relative: the same operations in another order, rounding apart
SAME = 1e-8  # relative, fit_many's answers by two paths

RESPONSE = torch.linspace(0.5, 1.5, 40, dtype=torch.float64)  # a captured array of one value per point

# functions the trace cannot read (gradfit.trace), each with a start: every rule of gradfit.dual at least once
FUNCTIONS = [
    (
        lambda x, a, m, s, c: torch.where(x > 1e9, 0.0, a * torch.exp(-((x - m) ** 2) / (2 * s**2))) + c,
        [2, 0.3, 0.8, 0.1],
    ),
    (lambda x, a, b: torch.where(x > 0.5, a * x, a * 0.5).where(x < 3, b) + b, [1.5, 0.4]),
    (lambda x, a, b: torch.where(a * x > 1, b * x, 0.0) + torch.where(x < 1, 1.0, a), [0.9, 1.3]),
    (lambda x, a, b: torch.clamp(a * x, 0.2, 2.0) + (b * x).clamp(min=0.5) + torch.clip(x - b, max=1.0), [0.8, 0.7]),
    (lambda x, a, b: torch.maximum(a * x, b) + torch.minimum(b * x, a) + torch.fmax(a, x), [1.1, 0.9]),
    (lambda x, a, b: a * torch.exp(-b * x) * RESPONSE + torch.special.i0(x) * b, [2.0, 0.7]),
    (lambda x, a, b: (a > 1) * a * x + (b <= a).double() * b + torch.sign(a - 1) * x, [1.3, 0.4]),
    (lambda x, a, b: torch.atan2(a * x + 1, b) + torch.arctan2(b, x + 2) + torch.square(a - x) - (-b), [0.6, 1.2]),
    (lambda x, a, b: a ** (b * x / 4) + (x + 1) ** a + 2.0**b + torch.pow(x + 1, b) + a.exp() / b.sqrt(), [1.4, 0.6]),
    (lambda x, a, b: torch.sin(a * x).abs() + torch.special.erf(b * x) + torch.sigmoid(a - x) * torch.log1p(x), [1, 2]),
    (lambda x, a, b: torch.zeros_like(a) + torch.ones_like(x) * a + torch.where(torch.eq(a, b), a, b * x), [0.5, 0.5]),
]


def _batch(start, n=5):
    rng = np.random.default_rng(2)
    return torch.as_tensor(np.asarray(start, dtype=float) * rng.uniform(0.8, 1.2, (n, len(start))))


@pytest.mark.parametrize("function, start", FUNCTIONS)
def test_values_and_derivatives_equal_the_function_and_torch_func_curve_by_curve(function, start):
    x = torch.linspace(0.0, 4.0, 40, dtype=torch.float64)
    params = _batch(start)
    names = tuple(f"p{i}" for i in range(len(start)))
    value, grads = evaluate(function, names, x, params)
    model = FunctionModel(function)
    for b, p in enumerate(params):
        own = model(x, p)
        jac = torch.func.jacfwd(lambda q: model(x, q))(p)
        np.testing.assert_allclose(torch.as_tensor(value).expand(len(params), 40)[b], own, rtol=EXACT, atol=1e-14)
        for j, g in enumerate(grads):
            got = torch.zeros(40, dtype=x.dtype) if g is None else torch.as_tensor(g).expand(len(params), 40)[b]
            np.testing.assert_allclose(got, jac[:, j], rtol=EXACT, atol=1e-13, err_msg=f"d/d{names[j]}")


def test_ties_split_the_derivative_as_autograd_does():
    def f(x, a, b):
        return torch.maximum(a * x, b * x)

    x = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    _, (da, db) = evaluate(f, ("a", "b"), x, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    np.testing.assert_allclose(da[0], x / 2)
    np.testing.assert_allclose(db[0], x / 2)


def test_values_keep_the_dtype_of_the_parameters():
    def f(x, a, b):
        return torch.where(x > 1, a, 0.0) + torch.clamp(b * x, max=1.0)

    x = torch.linspace(0, 2, 5, dtype=torch.float32)
    value, jac = BroadcastFunction(FunctionModel(f), "x").value_and_jacobian(x, torch.ones(3, 2))
    assert value.dtype == jac.dtype == torch.float32
    np.testing.assert_array_equal(jac[0, :, 0], (x > 1).float())


@pytest.mark.parametrize(
    "function, why",
    [
        (lambda x, a, b: torch.sinc(a * x) + b, "gradfit.dual has no rule for torch.sinc on a parameter"),
        (lambda x, a, b: a * x + b * torch.cumsum(torch.ones_like(x), 0)[0] + b[..., 0], "indexing a parameter"),
        (
            lambda x, a, b: a * torch.exp(-b * x) if a > 0 else -a * x,
            "one call on the whole batch failed (Boolean value of Tensor",
        ),
        (
            lambda x, a, b: a * x + b * torch.ones_like(a).numel(),  # uses the batch's size: wrong on a batch
            "one call on the whole batch did not give each curve's own",
        ),
    ],
)
def test_what_cannot_run_on_the_batch_says_why_and_stays_the_function(function, why):
    x = torch.linspace(0.0, 3.0, 20, dtype=torch.float64)
    model = FunctionModel(function)
    kept, how = broadcast_model(model, x, torch.tensor([1.2, 0.5], dtype=torch.float64))
    assert kept is model
    assert re.search(re.escape(why), how), how


def test_a_function_outside_the_rules_still_fits_many_curves_and_says_how():
    def f(x, a, b):
        return torch.sinc(a * x) + b

    x = np.linspace(0.0, 2.0, 25)
    truth = np.array([[0.8, 0.1], [1.1, -0.2], [0.6, 0.3]])
    Y = np.stack([np.sinc(a * x) + b for a, b in truth])
    result = gradfit.fit_many(f, x, Y, p0=truth * 1.05)
    np.testing.assert_allclose(result.params, truth, rtol=1e-9)
    assert "curve by curve by torch.func: gradfit.dual has no rule for torch.sinc on a parameter" in " ".join(
        result.notes
    )


def _peaks(b=300, n=40, seed=5):
    rng = np.random.default_rng(seed)
    x = np.linspace(-4, 4, n)
    truth = np.column_stack(
        [rng.uniform(1, 3, b), rng.uniform(-1, 1, b), rng.uniform(0.5, 1.5, b), rng.uniform(0, 1, b)]
    )
    Y = truth[:, :1] * np.exp(-((x - truth[:, 1:2]) ** 2) / (2 * truth[:, 2:3] ** 2)) + truth[:, 3:]
    return x, Y + 0.01 * rng.normal(size=Y.shape), truth * rng.uniform(0.85, 1.15, truth.shape)


def _clipped_peak(x, amp, cen, wid, off):
    return torch.where(x > 1e9, 0.0, amp * torch.exp(-((x - cen) ** 2) / (2 * wid**2))) + off


@pytest.mark.parametrize("per_curve_x", [False, True])
@pytest.mark.parametrize("method", ["lm", "lbfgs"])
def test_fit_many_on_the_batch_equals_the_same_model_as_an_expression(method, per_curve_x):
    x, Y, p0 = _peaks()
    xs = np.tile(x, (len(Y), 1)) + 1e-9 * np.arange(len(Y))[:, None] if per_curve_x else x
    expression = gradfit.fit_many("amp*exp(-(x - cen)**2/(2*wid**2)) + off", xs, Y, p0=p0, method=method)
    function = gradfit.fit_many(_clipped_peak, xs, Y, p0=p0, method=method)
    assert "on the whole batch at once, derivatives by forward mode" in " ".join(function.notes)
    assert list(function.status) == list(expression.status)
    np.testing.assert_allclose(function.params, expression.params, rtol=SAME if method == "lm" else 1e-6)
    np.testing.assert_allclose(function.stderr, expression.stderr, rtol=1e-6)


def test_fit_many_in_float32():
    x, Y, p0 = _peaks(b=50)
    result = gradfit.fit_many(_clipped_peak, x, Y, p0=p0, dtype=torch.float32)
    want = gradfit.fit_many(_clipped_peak, x, Y, p0=p0)
    np.testing.assert_allclose(result.params, want.params, rtol=1e-3)


def test_one_fit_takes_its_jacobian_from_the_batch_rule():
    """gradfit.fit of an untraceable function: the same answer as curve_fit, by LM on Dual's Jacobian."""
    from scipy.optimize import curve_fit

    x, Y, p0 = _peaks(b=1)
    result = gradfit.fit(_clipped_peak, x, Y[0], p0=p0[0])

    def numpy_f(x, *p):
        return p[0] * np.exp(-((x - p[1]) ** 2) / (2 * p[2] ** 2)) + p[3]

    want, _ = curve_fit(numpy_f, x, Y[0], p0=p0[0])
    np.testing.assert_allclose(list(result.params.values()), want, rtol=1e-7)

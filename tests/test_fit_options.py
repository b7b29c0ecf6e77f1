"""Each bad option of gradfit.fit gets its own clear error."""

import math

import pytest
import torch

import gradfit
from gradfit.errors import ModelError, OptionError

X, Y = [0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.2, 2.9, 4.1, 5.0]


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(
        OptionError,
        match=r"Unknown optimizer 'adamm'\. Choose one of: adam, auto, gd, lbfgs, "
        r"linear, lm, momentum, nesterov, rmsprop\.",
    ):
        gradfit.fit("linear", X, Y, method="adamm")


@pytest.mark.parametrize("lr", [0, -0.1, math.inf, math.nan, "fast"])
def test_bad_learning_rate(lr):
    with pytest.raises(OptionError, match="learning_rate must be a positive finite number"):
        gradfit.fit("linear", X, Y, method="gd", learning_rate=lr)


def test_learning_rate_for_a_method_without_one():
    with pytest.raises(OptionError, match="Method 'lm' takes no learning rate"):
        gradfit.fit("linear", X, Y, method="lm", learning_rate=0.1)


@pytest.mark.parametrize("steps", [0, -5, 1.5])
def test_bad_max_steps(steps):
    with pytest.raises(OptionError, match="max_steps must be a whole number >= 1"):
        gradfit.fit("linear", X, Y, max_steps=steps)


@pytest.mark.parametrize(
    "tol,match",
    [
        (-1, "`tol` must be a finite number >= 0"),
        (math.nan, "`tol` must be"),
        ({"rtol": 1e-3}, "Unknown tolerance 'rtol'"),
    ],
)
def test_bad_tolerance(tol, match):
    with pytest.raises(OptionError, match=match):
        gradfit.fit("linear", X, Y, tol=tol)


@pytest.mark.parametrize(
    "p0,match",
    [
        ({"slope": 1, "offset": 0}, "p0 names unknown parameter 'offset'. The parameters are: slope, intercept"),
        ({"slope": 1}, "p0 gives no value for intercept"),
        ([1, 2, 3], "p0 has 3 values but the model has 2 parameters"),
        ([1, math.nan], "p0 must be finite, but intercept is nan"),
        ([math.inf, 1], "p0 must be finite, but slope is inf"),
        (5, "p0 must be a dict or a sequence"),
    ],
)
def test_bad_p0(p0, match):
    with pytest.raises(ModelError, match=match):
        gradfit.fit("linear", X, Y, p0=p0)


def test_model_function_must_take_parameters():
    with pytest.raises(ModelError, match="must take x and then one argument per parameter"):
        gradfit.fit(lambda x: x, X, Y)
    with pytest.raises(ModelError, match="must take x and then one argument per parameter"):
        gradfit.fit(lambda x, *p: x, X, Y)


def test_model_function_must_return_a_tensor():
    with pytest.raises(ModelError, match="returned one number for 5 points; it must return one value per point"):
        gradfit.fit(lambda x, a: 3.0, X, Y)


def test_model_function_must_return_one_value_per_point():
    with pytest.raises(ModelError, match=r"returned shape \(5, 1\) for 5 points"):
        gradfit.fit(lambda x, a: a * x[:, None], X, Y)


def test_bad_dtype():
    import torch

    with pytest.raises(OptionError, match="`dtype` must be torch.float64 or torch.float32"):
        gradfit.fit("linear", X, Y, dtype=torch.int64)


def test_a_start_where_the_model_is_not_finite_is_refused():
    with pytest.raises(gradfit.FitError, match=r"NaN or inf at the starting point p0 \(a=0, k=-1\) for 1 of 5"):
        gradfit.fit(lambda x, a, k: a * torch.log(x) + k, X, Y, p0=[0, -1])


def test_a_failing_model_function_gets_a_one_line_message():
    with pytest.raises(ModelError, match="failed on torch tensors at p0: RuntimeError") as info:
        gradfit.fit(lambda x, a: a * x.reshape(2, 3), X, Y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", [lambda x, a: a / 0 * (1 / 0), lambda x, a: a * x.not_a_method()])
def test_any_failure_of_a_model_function_gets_a_one_line_message(model):
    with pytest.raises(ModelError, match=r"failed on torch tensors at p0: (ZeroDivisionError|AttributeError)") as info:
        gradfit.fit(model, X, Y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "device,match",
    [
        ("tpu", "device must be a torch device such as 'cpu' or 'cuda', got 'tpu'"),
        ("cuda", r"device='cuda' needs a CUDA GPU, and this machine has none that torch can use.*Use device='cpu'"),
        ("cuda:1", "device='cuda:1' needs a CUDA GPU"),
    ],
)
def test_a_device_this_machine_lacks_is_refused(device, match, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on the CPU machines the tests run on
    with pytest.raises(OptionError, match=match):
        gradfit.fit("linear", X, Y, device=device)


@pytest.mark.parametrize("y", [[1 + 2j, 2, 3, 4, 5], torch.tensor(Y) + 1j, [complex(v) for v in Y]])
def test_complex_data_are_refused_not_cut_to_their_real_parts(y):
    with pytest.raises(gradfit.DataError, match="`y` holds complex numbers, and a fit needs real ones"):
        gradfit.fit("linear", X, y)

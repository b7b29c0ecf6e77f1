import math

import numpy as np
import pytest
import torch

import gradfit
from gradfit.errors import FitError, OptionError
from conftest import GOLDEN_RTOL, rel_diff


def _article_start(golden):
    x, y = gradfit.seed_data()
    return gradfit.quadratic(), x, y, torch.tensor(golden["init_params"], dtype=torch.float32)


def _two_rounds(golden, **kw):
    model, x, y, p0 = _article_start(golden)
    params, history = gradfit.gradient_descent(model, x, y, p0, learning_rate=golden["lr"], steps=10, **kw)
    params, history = gradfit.gradient_descent(
        model, x, y, params, learning_rate=golden["lr"], steps=10, history=history, **kw
    )
    return params, history


def test_every_rmse_and_parameter_vector_equals_the_article(golden):
    params, history = _two_rounds(golden)
    assert len(history) == 20
    for record, rmse, after in zip(history, golden["rmse"], golden["params_after_step"]):
        assert rel_diff(record.rmse, rmse) <= GOLDEN_RTOL, record.step
        for got, want in zip(record.params, after):
            assert rel_diff(got, want) <= GOLDEN_RTOL, record.step
    assert params.tolist() == golden["params_after_step"][-1]


def test_rmse_strictly_decreases_over_the_twenty_steps(golden):
    _, history = _two_rounds(golden)
    assert all(later < earlier for earlier, later in zip(history.rmse, history.rmse[1:]))


def test_history_records_each_step_faithfully(golden):
    _, history = _two_rounds(golden)
    assert [r.step for r in history] == list(range(1, 21))
    assert history.init_params == tuple(golden["init_params"])
    model = gradfit.quadratic()
    x, y = (t.double() for t in gradfit.seed_data())
    a = model.design_matrix(x)
    for i, record in enumerate(history):
        assert record.learning_rate == golden["lr"]
        assert record.loss == pytest.approx(record.rmse**2, rel=1e-12)
        # the gradient norm, recomputed analytically in float64 at the step's starting point
        p = torch.tensor(history.params_before(i), dtype=torch.float64)
        grad = 2 / len(x) * a.T @ (a @ p - y)
        assert record.grad_norm == pytest.approx(grad.norm().item(), rel=1e-5)  # float32 run
        # and the update is the article's: after = before - lr * grad
        np.testing.assert_allclose(record.params, (p - record.learning_rate * grad).numpy(), rtol=1e-5)


def test_callback_sees_every_step_in_order(golden):
    seen = []
    _, history = _two_rounds(golden, callback=seen.append)
    assert seen == history.records


def test_input_parameters_are_not_changed(golden):
    model, x, y, p0 = _article_start(golden)
    before = p0.clone()
    gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-4, steps=3)
    assert torch.equal(p0, before) and not p0.requires_grad


def test_gradient_descent_reaches_the_optimum_on_a_well_scaled_problem():
    # y = 2x - 1 on [-1, 1]: gradient descent must converge to the least-squares line.
    x = torch.linspace(-1, 1, 21, dtype=torch.float64)
    y = 2 * x - 1 + 0.01 * torch.sin(7 * x)
    model = gradfit.linear()
    params, _ = gradfit.gradient_descent(model, x, y, torch.zeros(2, dtype=torch.float64), learning_rate=0.5, steps=500)
    expected, _ = gradfit.least_squares(model, x, y)
    torch.testing.assert_close(params, expected, rtol=1e-10, atol=1e-12)


def test_divergence_raises_with_the_finite_history(golden):
    model, x, y, p0 = _article_start(golden)
    with pytest.raises(
        FitError, match=r"at step \d+ \(learning_rate=1\).*Try a smaller learning rate, e\.g\. 0\.1"
    ) as info:
        gradfit.gradient_descent(model, x, y, p0, learning_rate=1.0, steps=50)
    history = info.value.history
    assert 0 < len(history) < 50
    assert all(math.isfinite(r.loss) and all(map(math.isfinite, r.params)) for r in history)


@pytest.mark.parametrize("lr", [0, -1e-4, math.inf, math.nan, "0.1", None])
def test_bad_learning_rate_is_refused(golden, lr):
    model, x, y, p0 = _article_start(golden)
    with pytest.raises(OptionError, match="learning_rate must be a positive finite number"):
        gradfit.gradient_descent(model, x, y, p0, learning_rate=lr, steps=1)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_count_is_refused(golden, steps):
    model, x, y, p0 = _article_start(golden)
    with pytest.raises(OptionError, match="steps must be a whole number >= 1"):
        gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-4, steps=steps)


def test_history_csv_round_trips(golden):
    _, history = _two_rounds(golden)
    text = history.to_csv()
    lines = text.strip().split("\n")
    assert lines[0] == "step,loss,rmse,grad_norm,learning_rate,a,b,c"
    assert len(lines) == 21
    last = [float(v) for v in lines[-1].split(",")]
    assert last[0] == 20 and last[2] == history[-1].rmse and tuple(last[5:]) == history.final_params


@pytest.mark.parametrize("degree", [0, 1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_polynomial_steps_equal_autograds_bit_for_bit(degree, dtype):
    # gradient_descent writes a polynomial's gradient out (no autograd, no read-back per step);
    # the oracle is the article's loop with autograd, on the same model.
    model = gradfit.polynomial(degree)
    x = torch.linspace(-1, 2, 25, dtype=dtype)
    y = torch.sin(3 * x) + x
    p0 = torch.linspace(0.1, 0.5, degree + 1, dtype=dtype)
    ref = p0.clone().requires_grad_()
    losses = []
    for _ in range(300):
        loss = gradfit.mse(model(x, ref), y)
        loss.backward()
        ref.data = ref.data - 0.02 * ref.grad.data
        ref.grad = None
        losses.append(loss.item())
    params, history = gradfit.gradient_descent(model, x, y, p0, learning_rate=0.02, steps=300)
    assert torch.equal(params, ref.detach())
    assert history.loss == losses


def test_the_fused_steps_report_divergence_like_the_loop(golden):
    model, x, y, p0 = _article_start(golden)
    with pytest.raises(FitError, match="at step 15") as info:  # lr 1e-3 overflows at step 15 (see the demo)
        gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-3, steps=40)
    assert len(info.value.history) == 14
    seen = []
    with pytest.raises(FitError, match="at step 15"):  # with a callback: the step-by-step loop
        gradfit.gradient_descent(model, x, y, p0, learning_rate=1e-3, steps=40, callback=seen.append)
    assert len(seen) == 14


def test_the_fused_steps_stay_bit_identical_on_many_points():
    # large sums run in parallel chunks: the fused step must reduce exactly as autograd does
    model = gradfit.polynomial(3)
    x = torch.linspace(-1, 2, 300_000, dtype=torch.float64)
    y = torch.sin(3 * x) + x
    p0 = torch.linspace(0.1, 0.5, 4, dtype=torch.float64)
    ref = p0.clone().requires_grad_()
    for _ in range(20):
        gradfit.mse(model(x, ref), y).backward()
        ref.data = ref.data - 0.01 * ref.grad.data
        ref.grad = None
    params, _ = gradfit.gradient_descent(model, x, y, p0, learning_rate=0.01, steps=20)
    assert torch.equal(params, ref.detach())


def _logistic_data():
    rng = np.random.default_rng(0)
    x = np.linspace(-5, 5, 60)
    return x, 1 + 5 / (1 + np.exp(-1.5 * (x - 0.5))) + 0.05 * rng.normal(size=x.size)


def test_the_default_rate_of_gd_is_safe_on_a_logistic():
    """gd's default rate (0.5 in standardized coordinates) swung between two RMSEs for 20,000 steps here; it is now
    halved where a step raises the loss, and reaches LM's optimum."""
    x, y = _logistic_data()
    best = gradfit.fit("logistic", x, y, method="lm")
    result = gradfit.fit("logistic", x, y, method="gd")
    assert result.converged and result.n_steps < 5000
    assert result.rmse == pytest.approx(best.rmse, rel=1e-9)
    assert "learning rate halved to" in result.message


def test_a_rate_the_user_gave_that_swings_is_called_too_large():
    x, y = _logistic_data()
    with pytest.warns(gradfit.ConvergenceWarning) as caught:
        result = gradfit.fit("logistic", x, y, method="gd", learning_rate=0.5)
    assert not result.converged and result.n_steps < 500  # stopped, not 20,000 steps of swinging
    assert "the steps swing across the valley, learning_rate=0.5 is too large" in result.message
    advice = str(caught[0].message)
    assert "Use a smaller learning_rate, e.g. 0.05" in advice and "larger" not in advice


def test_the_advice_never_names_the_method_in_use():
    x, y = _logistic_data()
    with pytest.warns(gradfit.ConvergenceWarning) as caught:
        gradfit.fit("logistic", x, y, method="lm", max_steps=2)
    assert "method='lm'" not in str(caught[0].message)
    with pytest.warns(gradfit.ConvergenceWarning) as caught:
        gradfit.fit("logistic", x, y, method="adam", max_steps=2)
    assert "method='lm'" in str(caught[0].message)

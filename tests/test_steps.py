"""fit_steps: the same loop as fit, taken one step at a time (what the playground drives)."""

import math
import warnings

import numpy as np
import pytest
import torch

import gradfit
from gradfit.data import seed_data
from gradfit.engine import fit_steps
from gradfit.errors import FitError, OptionError
from gradfit.solvers.problem import run_steps

SAME = 1e-12  # stepping the generator by hand must give fit's numbers to rounding


@pytest.fixture(scope="module")
def seed():
    x, y = seed_data()
    return x.double().numpy(), y.double().numpy()


@pytest.mark.parametrize("method,rate", [("gd", 1e-4), ("momentum", 1e-5), ("adam", 0.1), ("lbfgs", 1.0), ("lm", None)])
def test_stepping_by_hand_gives_fit_s_numbers(seed, method, rate):
    x, y = seed
    kwargs = dict(p0=[1.0, 1.0, 1.0], method=method, learning_rate=rate, scale=False, max_steps=40)
    _, steps = fit_steps("quadratic", x, y, **kwargs)
    by_hand = []
    try:
        while True:
            by_hand.append(next(steps))
    except StopIteration as done:
        outcome = done.value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        result = gradfit.fit("quadratic", x, y, **kwargs)
    assert len(by_hand) == result.n_steps == len(outcome.history)
    for mine, theirs in zip(by_hand, result.history):
        assert mine.step == theirs.step
        assert math.isclose(mine.loss, theirs.loss, rel_tol=SAME)
        np.testing.assert_allclose(mine.params, theirs.params, rtol=SAME)
    assert outcome.converged == result.converged


def test_a_sent_learning_rate_takes_effect_from_the_next_step(seed):
    x, y = seed
    _, steps = fit_steps("quadratic", x, y, p0=[0.0, 0.0, 0.0], method="gd", learning_rate=1e-4, scale=False)
    first = next(steps)
    second = steps.send(1e-6)  # the slider moved
    third = next(steps)
    assert first.learning_rate == 1e-4
    assert second.learning_rate == 1e-6 and third.learning_rate == 1e-6
    # plain gd: the step is the rate times the gradient, so a rate 100x smaller moves 100x less
    move = np.subtract(third.params, second.params)
    grad = torch.func.grad(
        lambda p: ((p[0] * torch.tensor(x) ** 2 + p[1] * torch.tensor(x) + p[2] - torch.tensor(y)) ** 2).mean()
    )(torch.tensor(second.params, dtype=torch.float64))
    np.testing.assert_allclose(move, -1e-6 * grad.numpy(), rtol=1e-9)


def test_a_diverging_run_raises_fit_error_with_the_finite_steps(seed):
    x, y = seed
    _, steps = fit_steps("quadratic", x, y, p0=[0.0, 0.0, 0.0], method="gd", learning_rate=1.0, scale=False)
    with pytest.raises(FitError, match="diverged") as caught:
        run_steps(steps)
    history = caught.value.history
    assert len(history) > 0 and all(math.isfinite(r.loss) for r in history)


@pytest.mark.parametrize("method", ["auto", "linear"])
def test_one_solve_methods_do_not_step(seed, method):
    with pytest.raises(OptionError, match="not steps"):
        fit_steps("quadratic", *seed, method=method)

import numpy as np
import torch

import gradfit
from conftest import rel_diff

OPTIMUM_RTOL = 1e-9  # two float64 least-squares routes agree to about this


def test_optimum_matches_numpy_and_the_golden_file(golden):
    x, y = gradfit.seed_data()
    params, rmse = gradfit.least_squares(gradfit.quadratic(), x, y)
    assert params.dtype == torch.float64
    oracle = np.polyfit(np.array(golden["X"]), np.array(golden["Y"]), 2)
    np.testing.assert_allclose(params.numpy(), oracle, rtol=OPTIMUM_RTOL)
    for got, want in zip(params.tolist(), golden["least_squares_params"]):
        assert rel_diff(got, want) <= OPTIMUM_RTOL
    assert rel_diff(rmse, golden["least_squares_rmse"]) <= OPTIMUM_RTOL


def test_exact_data_gives_zero_residual():
    x = torch.linspace(0, 5, 11, dtype=torch.float64)
    y = 3 * x**3 - x + 2
    params, rmse = gradfit.least_squares(gradfit.polynomial(3), x, y)
    np.testing.assert_allclose(params.numpy(), [3, 0, -1, 2], atol=1e-10)
    assert rmse < 1e-10


def test_curvatures_give_the_stability_limit_of_gradient_descent():
    # Plain gradient descent on a quadratic loss is stable exactly below 2 / largest curvature.
    model = gradfit.quadratic()
    x, y = (t.double() for t in gradfit.seed_data())
    curvatures = gradfit.mse_curvatures(model, x)
    assert curvatures.shape == (3,) and bool((curvatures[1:] >= curvatures[:-1]).all())
    limit = 2 / curvatures[-1].item()
    p0 = torch.zeros(3, dtype=torch.float64)
    _, below = gradfit.gradient_descent(model, x, y, p0, learning_rate=0.98 * limit, steps=400)
    _, above = gradfit.gradient_descent(model, x, y, p0, learning_rate=1.02 * limit, steps=400)
    assert below[-1].rmse < below[0].rmse and above[-1].rmse > 10 * above[0].rmse
    # and the Hessian is 2/N AᵀA, checked against numpy's eigenvalues
    a = np.vander(x.numpy(), 3)
    np.testing.assert_allclose(curvatures.numpy(), np.linalg.eigvalsh(2 / len(x) * a.T @ a), rtol=1e-10)

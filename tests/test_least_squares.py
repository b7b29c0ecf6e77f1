import numpy as np
import pytest
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


def _exact_polyfit(x, y, degree):
    """The exact least-squares coefficients (highest power first) of the float data, in rational arithmetic:
    the normal equations solved by Gaussian elimination over Fractions."""
    from fractions import Fraction

    xs, ys = [Fraction(v) for v in x], [Fraction(v) for v in y]
    columns = [[xi**k for xi in xs] for k in range(degree, -1, -1)]
    n = degree + 1
    a = [[sum(p * q for p, q in zip(columns[i], columns[j])) for j in range(n)] for i in range(n)]
    b = [sum(p * q for p, q in zip(columns[i], ys)) for i in range(n)]
    for i in range(n):
        for r in range(i + 1, n):
            f = a[r][i] / a[i][i]
            for c in range(i, n):
                a[r][c] -= f * a[i][c]
            b[r] -= f * b[i]
    out = [Fraction(0)] * n
    for i in range(n - 1, -1, -1):
        out[i] = (b[i] - sum(a[i][c] * out[c] for c in range(i + 1, n))) / a[i][i]
    return np.array([float(v) for v in out])


def test_an_ill_conditioned_polynomial_fit_keeps_its_digits():
    """Degree 10 on 82 points with x in [-9, -3]: the powers of x are nearly parallel (condition ~1e15). gradfit
    called it rank-deficient ('Jacobian rank 10 < 11') and gave a minimum-norm answer wrong in every digit. Now
    a polynomial is solved in its centred, scaled variable and the rank decided on scaled columns: against the
    exact rational answer, at least numpy.polyfit's digits (7.7 here) and at least 12 (13.5 measured), for fit
    and fit_many alike."""
    rng = np.random.default_rng(3)
    x = np.linspace(-9, -3, 82)
    y = np.sin(x) + 0.01 * rng.normal(size=x.size)
    exact = _exact_polyfit(x, y, 10)

    def digits(p):
        return -np.log10(np.max(np.abs(np.asarray(p) - exact) / np.abs(exact)))

    floor = max(digits(np.polyfit(x, y, 10)), 12.0)
    result = gradfit.fit("poly10", x, y)
    assert result.converged and result.rank == 11 and not result.undetermined
    assert digits(list(result.params.values())) >= floor
    many = gradfit.fit_many("poly10", x, np.stack([y, y]))
    assert list(many.status) == ["converged", "converged"] and digits(many.params[0]) >= floor
    np.testing.assert_allclose(many.stderr[0], list(result.stderr.values()), rtol=1e-6)
    ragged = np.stack([y, y])
    ragged[1, 0] = np.nan  # the per-curve path (normal equations in the centred variable): 9 digits
    assert gradfit.fit_many("poly10", x, ragged).status[0] == "converged"


def test_levenberg_marquardt_on_an_ill_conditioned_polynomial_keeps_its_digits():
    """The same degree-10 problem by method='lm': stepping in x's own powers (normal equations of condition
    ~1e30) it kept ~6 digits (fewer than numpy.polyfit's 7.7), and fit_many's LM stopped at max_steps. LM now
    walks the coefficients of the centred variable (models.Centred), mapped back: at least polyfit's digits and
    12, for fit and both fit_many backends, with the standard errors of the exact solve, and a history that
    speaks in the user's coefficients."""
    rng = np.random.default_rng(3)
    x = np.linspace(-9, -3, 82)
    y = np.sin(x) + 0.01 * rng.normal(size=x.size)
    exact = _exact_polyfit(x, y, 10)

    def digits(p):
        return -np.log10(np.max(np.abs(np.asarray(p) - exact) / np.abs(exact)))

    floor = max(digits(np.polyfit(x, y, 10)), 12.0)
    solved = gradfit.fit("poly10", x, y)
    result = gradfit.fit("poly10", x, y, method="lm")
    assert result.converged and result.method == "lm" and digits(list(result.params.values())) >= floor
    np.testing.assert_allclose(list(result.stderr.values()), list(solved.stderr.values()), rtol=1e-6)
    assert result.history[-1].params == pytest.approx(list(result.params.values()), rel=1e-12)
    p0 = np.polyfit(x, y, 10) * 1.01  # a start in the user's coefficients, mapped into the centred ones
    for backend in ("torch", "compiled"):
        many = gradfit.fit_many("poly10", x, np.stack([y, 2 * y]), method="lm", backend=backend, p0=p0)
        assert list(many.status) == ["converged", "converged"], backend
        assert digits(many.params[0]) >= floor and digits(many.params[1] / 2) >= floor, backend
        np.testing.assert_allclose(many.stderr[0], list(solved.stderr.values()), rtol=1e-6)
    own = gradfit.fit_many("poly10", np.stack([x, x - 1.0]), np.stack([y, y]), method="lm", backend="torch")
    assert digits(own.params[0]) >= floor  # curves at their own x: each mapped by its own range
    np.testing.assert_allclose(own.params[1], np.polyfit(x - 1.0, y, 10), rtol=1e-5)

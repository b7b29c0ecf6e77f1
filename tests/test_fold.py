"""Folding rows into R and Qᵀr: the Gram fold against numpy's Householder QR of all the rows at once."""

import numpy as np
import pytest
import torch

from gradfit.solvers.fold import MAX_CONDITION, GramFold, HouseholderFold, usable


def _problem(n, condition, seed=0):
    """J (n x 4) with the given condition number, r, and the exact R, Qᵀr, rᵀr from numpy."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, 4)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    jac = (u * np.geomspace(1, 1 / condition, 4)) @ v.T * 1e3
    r = rng.normal(size=n)
    q, r_factor = np.linalg.qr(jac)
    return torch.tensor(jac), torch.tensor(r), r_factor, q.T @ r, float(r @ r)


def _fold(fold, jac, r, block=1000):
    for a in range(0, len(r), block):
        fold.add(jac[a : a + block], r[a : a + block])
    return fold.result()


def _same_triangle(mine, exact, z_mine, z_exact):
    # R is unique up to the signs of its rows (and z's entries with them)
    signs = np.sign(np.diag(mine)) * np.sign(np.diag(exact))
    return mine * signs[:, None], z_mine * signs, exact, z_exact


@pytest.mark.parametrize("condition", [1.0, 1e4, 1e8])
def test_the_gram_fold_equals_householder_qr_of_all_rows(condition):
    jac, r, r_exact, z_exact, cost_exact = _problem(20_000, condition)
    # preconditioned by R of a sample of the rows (its first 500), as a streamed fit's first pass is
    sample = _fold(HouseholderFold(4), jac[:500], r[:500])[1] * np.sqrt(20_000 / 500)
    cost, r_factor, z = _fold(GramFold(sample), jac, r)
    mine, z_mine, exact, z_exact = _same_triangle(r_factor.numpy(), r_exact, z.numpy(), z_exact)
    assert cost == pytest.approx(cost_exact, rel=1e-13)
    # the step a least-squares solver takes, R⁻¹z, is what must agree
    step, step_exact = np.linalg.solve(mine, z_mine), np.linalg.solve(exact, z_exact)
    assert np.allclose(mine, exact, rtol=0, atol=1e-12 * np.abs(exact).max())
    assert np.allclose(step, step_exact, rtol=1e-12 * condition, atol=1e-14 * condition * np.abs(step_exact).max())


@pytest.mark.parametrize("condition", [1.0, 1e8])
def test_the_householder_fold_equals_numpy(condition):
    jac, r, r_exact, z_exact, cost_exact = _problem(5_000, condition, seed=1)
    cost, r_factor, z = _fold(HouseholderFold(4), jac, r, block=777)
    mine, z_mine, exact, z_exact = _same_triangle(r_factor.numpy(), r_exact, z.numpy(), z_exact)
    assert cost == pytest.approx(cost_exact, rel=1e-13)
    assert np.allclose(mine, exact, rtol=0, atol=1e-12 * np.abs(exact).max())
    # z's entries along directions J barely sees are as uncertain as they (numpy's QR is no better): the step
    # R⁻¹z and the part of r that J explains, |z|, are what a solver uses
    step, step_exact = np.linalg.solve(mine, z_mine), np.linalg.solve(exact, z_exact)
    assert np.allclose(step, step_exact, rtol=1e-12 * condition, atol=1e-14 * condition * np.abs(step_exact).max())
    assert np.linalg.norm(z_mine) == pytest.approx(np.linalg.norm(z_exact), rel=1e-13 * condition)


def test_a_poor_preconditioner_is_refused_and_refined_in_a_second_round():
    jac, r, r_exact, z_exact, _ = _problem(20_000, 1e7, seed=2)
    fold = GramFold(torch.eye(4, dtype=torch.float64))  # no preconditioning: the Gram matrix squares 1e7
    assert _fold(fold, jac, r) is None  # refused, not trusted
    assert float(torch.linalg.cond(fold.gram[:4, :4])) > MAX_CONDITION
    better = fold.refined()
    assert better is not None and usable(better)
    cost, r_factor, z = _fold(GramFold(better), jac, r)  # Cholesky QR's second round
    mine, z_mine, exact, z_exact = _same_triangle(r_factor.numpy(), r_exact, z.numpy(), z_exact)
    assert np.allclose(np.linalg.solve(mine, z_mine), np.linalg.solve(exact, z_exact), rtol=1e-6)


def test_linear_rows_fold_like_their_jacobian_and_residuals():
    rng = np.random.default_rng(3)
    x, y, sigma = rng.uniform(-2, 5, 3000), rng.normal(size=3000), rng.uniform(0.5, 2, 3000)
    a = np.stack([x**2, x, np.ones_like(x)], 1)
    p = np.array([0.3, -1.0, 2.0])
    w = 1 / sigma
    rows, params, weights = torch.tensor(np.column_stack([a, y])), torch.tensor(p), torch.tensor(w)
    exact_cost = float((((a @ p) - y) * w) @ (((a @ p) - y) * w))
    pre = torch.tensor(np.linalg.qr(a * w[:, None])[1])
    for fold in (HouseholderFold(3), GramFold(pre)):
        for s in range(0, 3000, 700):
            fold.add_linear(rows[s : s + 700], params, weights[s : s + 700])
        cost, r_factor, z = fold.result()
        assert cost == pytest.approx(exact_cost, rel=1e-13)
        # RᵀR = AᵀWA and Rᵀz = AᵀW r, whatever the signs
        aw = a * w[:, None]
        assert np.allclose(r_factor.numpy().T @ r_factor.numpy(), aw.T @ aw, rtol=1e-12)
        assert np.allclose(r_factor.numpy().T @ z.numpy(), aw.T @ ((a @ p - y) * w), rtol=1e-10)


def test_an_overflow_gives_an_infinite_cost():
    fold = GramFold(torch.eye(2, dtype=torch.float64))
    fold.add(
        torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64), torch.tensor([1e200, 1e200], dtype=torch.float64)
    )
    assert fold.result()[0] == float("inf")


def test_a_singular_r_cannot_precondition():
    assert not usable(torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    assert usable(torch.tensor([[2.0, 1.0], [0.0, 1e-3]], dtype=torch.float64))

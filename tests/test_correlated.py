"""Correlated errors: ``sigma`` as the errors' (N, N) covariance matrix, against curve_fit's 2-D sigma and the
generalized least-squares formula."""

import numpy as np
import pytest
from scipy.optimize import curve_fit, least_squares

import gradfit
from gradfit.cli import main
from gradfit.errors import DataError

AS_CURVE_FIT = 1e-8  # relative: curve_fit run to tight tolerances reaches the same minimum
TIGHT = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)
TRUTH = (2.5, 1.3, 0.5)


def _correlated(n=30, seed=1):
    """A decay with errors correlated along x (an exponential kernel plus white noise), drawn from that law."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, n)
    i, j = np.meshgrid(x, x)
    cov = 0.04 * np.exp(-np.abs(i - j) / 0.5) + 0.01 * np.eye(n)
    y = TRUTH[0] * np.exp(-TRUTH[1] * x) + TRUTH[2] + np.linalg.cholesky(cov) @ rng.standard_normal(n)
    return x, y, cov


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


def _decay_jacobian(x, a, k, c):  # (curve_fit's finite differences stop ~1e-7 short of the minimum)
    return np.c_[np.exp(-k * x), -a * x * np.exp(-k * x), np.ones_like(x)]


def _close(got: dict, expected, rtol):
    np.testing.assert_allclose(list(got.values()), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("absolute_sigma", [False, True])
@pytest.mark.parametrize("method", ["auto", "lm"])
def test_a_covariance_matrix_fits_as_curve_fits_2d_sigma(method, absolute_sigma):
    x, y, cov = _correlated()
    p, pcov = curve_fit(
        _decay, x, y, p0=[1, 1, 0], sigma=cov, absolute_sigma=absolute_sigma, jac=_decay_jacobian, **TIGHT
    )
    r = gradfit.fit(
        "a*exp(-k*x) + c", x, y, sigma=cov, absolute_sigma=absolute_sigma, p0=[1, 1, 0], method=method, tol=1e-15
    )
    assert r.converged
    _close(r.params, p, AS_CURVE_FIT)
    _close(r.stderr, np.sqrt(np.diag(pcov)), 1e-6)
    np.testing.assert_allclose(r.covariance, pcov, rtol=1e-6, atol=1e-6 * np.abs(pcov).max())
    # χ² is rᵀC⁻¹r of the raw residuals; the RMSE is of the raw residuals, as with a 1-D sigma
    raw = y - _decay(x, *p)
    assert r.chi2 == pytest.approx(raw @ np.linalg.solve(cov, raw), rel=1e-9)
    assert r.rmse == pytest.approx(np.sqrt(np.mean(raw**2)), rel=1e-8)
    assert "correlated errors" in r.message


def test_a_linear_model_is_the_generalized_least_squares_answer():
    """(AᵀC⁻¹A)⁻¹AᵀC⁻¹y and its covariance (AᵀC⁻¹A)⁻¹ (absolute sigma): Aitken's formula, not a fitter."""
    x, y, cov = _correlated(n=40, seed=3)
    a = np.c_[x**2, x, np.ones_like(x)]
    inv = np.linalg.inv(cov)
    normal = a.T @ inv @ a
    expected = np.linalg.solve(normal, a.T @ inv @ y)
    for method in ("auto", "lm"):
        r = gradfit.fit("quadratic", x, y, sigma=cov, absolute_sigma=True, method=method)
        _close(r.params, expected, 1e-9)
        _close(r.stderr, np.sqrt(np.diag(np.linalg.inv(normal))), 1e-8)
        assert r.gap_to_optimum == pytest.approx(0.0, abs=1e-9)  # the optimum is the whitened one


def test_a_diagonal_covariance_is_a_sigma_per_point():
    x, y, _ = _correlated()
    sigma = np.linspace(0.05, 0.2, len(x))
    one = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=sigma, p0=[1, 1, 0])
    two = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=np.diag(sigma**2), p0=[1, 1, 0])
    _close(two.params, list(one.params.values()), 1e-8)  # (the same minimum; LM's last step rounds differently)
    _close(two.stderr, list(one.stderr.values()), 1e-7)
    assert two.chi2 == pytest.approx(one.chi2, rel=1e-12)


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_gradient_methods_minimise_the_same_whitened_loss(method):
    x, y, cov = _correlated()
    lm = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 1, 0])
    steps = {"lbfgs": 2000, "adam": 20_000}[method]
    other = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 1, 0], method=method, max_steps=steps, tol=1e-14)
    _close(other.params, list(lm.params.values()), 1e-4)
    assert other.chi2 == pytest.approx(lm.chi2, rel=1e-6)


def test_bounds_and_a_robust_loss_see_the_whitened_residuals():
    x, y, cov = _correlated()
    # bounds: curve_fit (trf) with the same 2-D sigma, the rate held below its free optimum
    p, _ = curve_fit(
        _decay, x, y, p0=[1, 0.5, 0], sigma=cov, bounds=([0, 0, 0], [10, 0.9, 10]), jac=_decay_jacobian, **TIGHT
    )
    r = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 0.5, 0], bounds={"k": (0, 0.9)})
    _close(r.params, p, 1e-6)
    # a robust loss: least_squares on L⁻¹r
    factor = np.linalg.cholesky(cov)
    whitened = lambda q: np.linalg.solve(factor, _decay(x, *q) - y)  # noqa: E731
    expected = least_squares(whitened, [1, 1, 0], loss="soft_l1", f_scale=0.5, ftol=1e-15, xtol=1e-15, gtol=1e-15)
    r = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 1, 0], loss="soft_l1", f_scale=0.5)
    _close(r.params, expected.x, 1e-6)


def test_nan_policy_omit_drops_a_rows_row_and_column_of_the_covariance():
    x, y, cov = _correlated()
    y_nan = y.copy()
    y_nan[[4, 11]] = np.nan
    keep = np.isfinite(y_nan)
    with pytest.raises(DataError, match="rows 4, 11"):
        gradfit.fit("a*exp(-k*x) + c", x, y_nan, sigma=cov, p0=[1, 1, 0])
    r = gradfit.fit("a*exp(-k*x) + c", x, y_nan, sigma=cov, p0=[1, 1, 0], nan_policy="omit")
    expected = gradfit.fit("a*exp(-k*x) + c", x[keep], y[keep], sigma=cov[np.ix_(keep, keep)], p0=[1, 1, 0])
    assert r.n_dropped == 2
    _close(r.params, list(expected.params.values()), 1e-12)


def _refused(sigma, match):
    x, y, _ = _correlated()
    with pytest.raises(DataError, match=match) as e:
        gradfit.fit("a*exp(-k*x) + c", x, y, sigma=sigma, p0=[1, 1, 0])
    assert "\n" not in str(e.value)


def test_a_covariance_that_is_not_one_is_refused_in_one_line():
    _, _, cov = _correlated()
    asymmetric = cov.copy()
    asymmetric[0, 3] += 0.01
    _refused(asymmetric, "must be symmetric, but differs from its transpose by up to 0.01")
    indefinite = cov - 0.05 * np.eye(len(cov))  # the smallest eigenvalue below zero
    _refused(indefinite, "must be positive definite")
    with_nan = cov.copy()
    with_nan[2, 2] = np.nan
    _refused(with_nan, "has NaN or inf")
    _refused(cov[:5, :5], r"one value per point \(30\), or be the errors' covariance matrix \(30 x 30\)")


def test_the_command_line_takes_the_covariance_from_a_file(tmp_path, capsys):
    x, y, cov = _correlated()
    np.savetxt(tmp_path / "d.csv", np.c_[x, y], delimiter=",", header="t,signal", comments="")
    np.save(tmp_path / "c.npy", cov)
    np.savetxt(tmp_path / "c.txt", cov)  # spaces
    expected = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 1, 0])
    for name in ("c.npy", "c.txt"):
        out = tmp_path / f"{name}.json"
        args = ["fit", str(tmp_path / "d.csv"), "--model", "a*exp(-k*x) + c", "--p0", "1,1,0"]
        assert main([*args, "--covariance", str(tmp_path / name), "--json", str(out), "--quiet"]) == 0
        import json

        got = json.loads(out.read_text())
        _close(got["params"], list(expected.params.values()), 1e-12)
        _close(got["stderr"], list(expected.stderr.values()), 1e-10)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--covariance", "small.txt"], "--covariance is 3 x 3, but the data have 30 rows"),
        (["--covariance", "missing.npy"], "--covariance file .*missing.npy' does not exist"),
        (["--covariance", "words.txt"], "--covariance file .*words.txt' is not a matrix of numbers"),
        (["--covariance", "c.npy", "--sigma", "1"], "--covariance is the errors' whole covariance: leave out --sigma"),
    ],
)
def test_a_bad_covariance_file_is_refused_with_status_2(tmp_path, capsys, monkeypatch, extra, match):
    x, y, cov = _correlated()
    monkeypatch.chdir(tmp_path)
    np.savetxt("d.csv", np.c_[x, y], delimiter=",", header="t,signal", comments="")
    np.save("c.npy", cov)
    np.savetxt("small.txt", np.eye(3), delimiter=",")
    (tmp_path / "words.txt").write_text("a,b\nc,d\n")
    assert main(["fit", "d.csv", "--model", "a*exp(-k*x) + c", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not list(tmp_path.glob("*.json"))


def test_figures_draw_each_points_own_error_and_the_whitened_loss():
    from gradfit.plots import losses_at, plot_fit

    x, y, cov = _correlated()
    r = gradfit.fit("a*exp(-k*x) + c", x, y, sigma=cov, p0=[1, 1, 0])
    # the landscape's loss at the optimum is the fit's χ²/N (whitened), not the per-point weighted one
    assert losses_at(r, np.array([list(r.params.values())]))[0] == pytest.approx(r.chi2 / len(y), rel=1e-10)
    fig = plot_fit(r)
    bars = [c for c in fig.axes[0].collections if type(c).__name__ == "LineCollection"]
    heights = [seg[1, 1] - seg[0, 1] for seg in bars[0].get_segments()]
    np.testing.assert_allclose(heights, 2 * np.sqrt(np.diag(cov)), rtol=1e-12)

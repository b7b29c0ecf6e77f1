"""Global fits: parameters shared across data sets, against one dense least-squares fit of the stacked problem
(scipy) and lmfit's documented way (one Minimizer over the concatenated residual)."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import least_squares

import gradfit
from gradfit.cli import main
from gradfit.errors import DataError, ModelError, OptionError

B = 24
RATE = 0.8


def _decays(n_sets=B, ragged=False, sigma=False, seed=5):
    """Exponential decays with one common rate, each with its own amplitude and offset (and x, when ragged); the
    same for the same arguments, whichever tests run."""
    rng = np.random.default_rng([seed, n_sets, ragged, sigma])
    sets = []
    for i in range(n_sets):
        n = int(rng.integers(12, 30)) if ragged else 25
        x = np.sort(rng.uniform(0, 5, n)) if ragged else np.linspace(0, 5, n)
        s = rng.uniform(0.01, 0.05, n) if sigma else np.full(n, 0.02)
        y = rng.uniform(1, 3) * np.exp(-RATE * x) + rng.uniform(-0.2, 0.2) + s * rng.normal(size=n)
        sets.append((x, y, s) if sigma else (x, y))
    return sets


def _dense(sets, shared_c=False):
    """The stacked problem fitted by scipy's least_squares with its exact, dense Jacobian (every set's rows by
    every parameter): k, then the amplitudes, then the offsets (or one offset, when shared); and its covariance."""
    n = len(sets)

    def parts(p):
        k, a = p[0], p[1 : 1 + n]
        c = np.full(n, p[1 + n]) if shared_c else p[1 + n :]
        r, jac, row = [], np.zeros((sum(len(s[1]) for s in sets), len(p))), 0
        for i, s in enumerate(sets):
            x, w = s[0], 1 / (s[2] if len(s) == 3 else np.ones(len(s[0])))
            e = np.exp(-k * x)
            r.append((a[i] * e + c[i] - s[1]) * w)
            rows = slice(row, row + len(x))
            jac[rows, 0], jac[rows, 1 + i] = -a[i] * x * e * w, e * w
            jac[rows, 1 + n if shared_c else 1 + n + i] = w
            row += len(x)
        return np.concatenate(r), jac

    start = np.concatenate([[1.0], np.ones(n), np.zeros(1 if shared_c else n)])
    fit = least_squares(
        lambda p: parts(p)[0], start, jac=lambda p: parts(p)[1], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    p = fit.x
    for _ in range(3):  # Gauss-Newton from there: least_squares stops with a gradient ~1e-8, this at ~1e-12
        r, jac = parts(p)
        p = p + np.linalg.lstsq(jac, -r, rcond=None)[0]
    r, jac = parts(p)
    cov = np.linalg.inv(jac.T @ jac) * (r @ r) / (len(r) - len(p))
    return p, np.sqrt(np.diag(cov))


P0 = {"a": 1.0, "k": 1.0, "c": 0.0}


@pytest.mark.parametrize("ragged, sigma", [(False, False), (True, True)])
def test_shared_parameters_equal_one_dense_fit_of_the_stacked_problem(ragged, sigma):
    sets = _decays(ragged=ragged, sigma=sigma)
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared=["k"], p0=P0)
    assert result.converged
    values, errors = _dense(sets)
    assert result.shared["k"] == pytest.approx(values[0], rel=1e-8)
    np.testing.assert_allclose(result.params[:, 0], values[1 : 1 + B], rtol=1e-8)
    np.testing.assert_allclose(result.params[:, 2], values[1 + B :], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(result.params[:, 1], values[0], rtol=1e-8)  # the shared one, in every row
    # standard errors: the shared one from all the data, each set's from its own block and the shared one's
    assert result.shared_stderr["k"] == pytest.approx(errors[0], rel=1e-6)
    np.testing.assert_allclose(result.stderr[:, 0], errors[1 : 1 + B], rtol=1e-6)
    np.testing.assert_allclose(result.stderr[:, 2], errors[1 + B :], rtol=1e-6)
    assert result.dof == sum(len(s[1]) for s in sets) - 1 - 2 * B


def test_two_shared_parameters():
    sets = _decays(n_sets=10)
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared=["c", "k"], p0=P0)
    values, errors = _dense(sets, shared_c=True)
    assert result.shared_names == ("k", "c")  # in the model's order
    assert result.shared["k"] == pytest.approx(values[0], rel=1e-8)
    # (the offset is near 0: its digits count against its size or its standard error, whichever is larger)
    assert result.shared["c"] == pytest.approx(values[-1], abs=1e-7 * max(abs(values[-1]), errors[-1]))
    assert [result.shared_stderr["k"], result.shared_stderr["c"]] == pytest.approx([errors[0], errors[-1]], rel=1e-6)


def test_equal_to_lmfits_documented_global_fit():
    """lmfit's way (examples/example_fit_multi_datasets.py): one Parameters with a copy of each set's parameters,
    the shared one tied by expr, one Minimizer over the concatenated residual."""
    import lmfit

    sets = _decays(n_sets=8)
    params = lmfit.Parameters()
    for i in range(len(sets)):
        params.add(f"a_{i}", value=1.0)
        params.add(f"k_{i}", value=1.0)
        params.add(f"c_{i}", value=0.0)
        if i:
            params[f"k_{i}"].expr = "k_0"

    def residual(p):
        return np.concatenate(
            [p[f"a_{i}"] * np.exp(-p[f"k_{i}"] * x) + p[f"c_{i}"] - y for i, (x, y) in enumerate(sets)]
        )

    expected = lmfit.minimize(residual, params, method="least_squares", ftol=1e-15, xtol=1e-15, gtol=1e-15)
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    assert result.shared["k"] == pytest.approx(expected.params["k_0"].value, rel=1e-8)
    assert result.shared_stderr["k"] == pytest.approx(expected.params["k_0"].stderr, rel=1e-5)
    amplitudes = [expected.params[f"a_{i}"] for i in range(len(sets))]
    np.testing.assert_allclose(result.params[:, 0], [p.value for p in amplitudes], rtol=1e-8)
    np.testing.assert_allclose(result.stderr[:, 0], [p.stderr for p in amplitudes], rtol=1e-5)
    assert result.total_chi2 == pytest.approx(expected.chisqr, rel=1e-10)


def test_a_long_table_a_file_and_a_list_give_one_answer(tmp_path):
    sets = _decays(n_sets=6, ragged=True)
    frame = pd.DataFrame(
        [{"cell": f"c{i}", "t": xi, "v": yi} for i, (x, y) in enumerate(sets) for xi, yi in zip(x, y)]
    ).sample(frac=1.0, random_state=0)  # rows in any order
    listed = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    framed = gradfit.fit_global("a*exp(-k*x) + c", frame, group="cell", shared="k", p0=P0)
    assert list(framed.keys) == [f"c{i}" for i in range(6)] and list(listed.keys) == list(range(6))
    np.testing.assert_allclose(framed.params, listed.params, rtol=1e-10)
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"long.{suffix}"
        frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
        filed = gradfit.fit_global("a*exp(-k*x) + c", path, group="cell", shared="k", p0=P0)
        np.testing.assert_allclose(filed.params, listed.params, rtol=1e-10)
    table = framed.to_pandas()
    assert list(table.columns) == ["set", "a", "k", "c", "a_stderr", "k_stderr", "c_stderr", "chi2", "n_points"]
    np.testing.assert_allclose(table["chi2"].sum(), framed.total_chi2, rtol=1e-12)


def test_guesses_and_python_functions_reach_the_same_answer():
    sets = _decays(n_sets=12)
    expected = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    guessed = gradfit.fit_global("exp_decay", sets, shared="rate")  # each set's own guess, the rate's median
    assert guessed.converged
    np.testing.assert_allclose(guessed.params[:, [0, 1, 2]], expected.params, rtol=1e-7)

    def decay(x, a, k, c):
        return a * torch.exp(-k * x) + c

    function = gradfit.fit_global(decay, sets, shared="k", p0=P0)
    np.testing.assert_allclose(function.params, expected.params, rtol=1e-10)
    assert "Shared parameters" in expected.report() and "k:" in expected.report()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(shared="q"), ModelError, "`shared` names unknown parameter 'q'. The parameters are: a, k, c"),
        (dict(shared=[]), OptionError, "names no parameter: to fit every set on its own, use gradfit.fit_many"),
        (dict(shared=["a", "k", "c"]), OptionError, "names every parameter: that is one fit of all the data"),
        (dict(shared="k", p0=[1, 1, 0]), ModelError, "a dict of starting values by name"),
        (dict(shared="k", group="cell"), OptionError, "name columns of a long table"),
        (dict(shared="k", fixed={"k": 1}), OptionError, "'k' is in `shared` and fixed: a fixed or tied parameter"),
        (dict(shared="k", tie={"k": "a"}), OptionError, "'k' is in `shared` and tied"),
        (dict(shared="k", fixed={"a": 1}, tie={"c": "a"}), OptionError, "Every parameter is shared, fixed or tied"),
        (dict(shared="k", bounds={"k": (0, 0.5)}, p0=P0), ModelError, r"p0 k=1 is outside its bounds \(0, 0.5\)"),
        (dict(shared="k", bounds={"q": (0, 1)}), ModelError, "q"),
    ],
)
def test_bad_options_are_refused_in_one_line(kwargs, error, match):
    with pytest.raises(error, match=match) as e:
        gradfit.fit_global("a*exp(-k*x) + c", _decays(n_sets=3), **kwargs)
    assert "\n" not in str(e.value)


def test_no_degrees_of_freedom_is_said():
    x = np.linspace(0, 2, 3)
    sets = [(x, 2 * np.exp(-0.8 * x) + 0.1), (x[:2], 3 * np.exp(-0.8 * x[:2]) - 0.1)]  # 5 points, 5 parameters
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    assert result.dof == 0 and np.isinf(result.shared_stderr["k"])
    assert "no degrees of freedom left, standard errors are infinite" in result.message


def test_bad_data_sets_are_refused_in_one_line():
    x = np.linspace(0, 1, 10)
    with pytest.raises(DataError, match="Data set 1 has 1 point, fewer than its 2 own parameters"):
        gradfit.fit_global("a*exp(-k*x) + c", [(x, x), (x[:1], x[:1])], shared="k", p0=P0)
    with pytest.raises(DataError, match=r"Data set 0: x, y \(and sigma\) must have the same length"):
        gradfit.fit_global("a*exp(-k*x) + c", [(x, x[:5])], shared="k")
    with pytest.raises(DataError, match="Give sigma for every data set or for none"):
        gradfit.fit_global("a*exp(-k*x) + c", [(x, x), (x, x, x + 1)], shared="k")
    with pytest.raises(OptionError, match="A long table needs `group`"):
        gradfit.fit_global("a*exp(-k*x) + c", pd.DataFrame({"x": x, "y": x}), shared="k")


def test_the_command_line_shares_parameters(tmp_path, capsys):
    sets = _decays(n_sets=5, ragged=True)
    pd.DataFrame([{"cell": i, "t": xi, "v": yi} for i, (x, y) in enumerate(sets) for xi, yi in zip(x, y)]).to_parquet(
        tmp_path / "long.parquet"
    )
    out = tmp_path / "out.parquet"
    args = ["fit-many", str(tmp_path / "long.parquet"), "--group", "cell", "--model", "a*exp(-k*x) + c"]
    assert main([*args, "--share", "k", "--p0", "a=1,k=1,c=0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    assert f"k:  {expected.shared['k']:.10g}" in printed
    table = pd.read_parquet(out)
    assert table["cell"].tolist() == list(range(5))  # the group's own values, numbers as numbers
    np.testing.assert_allclose(table[["a", "k", "c"]].to_numpy(), expected.params, rtol=1e-10)
    assert main([*args, "--share", "k", "--fix", "c=0.1", "--bound", "k<0.7", "--out", str(out)]) == 0
    held = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", fixed={"c": 0.1}, bounds={"k": (None, 0.7)})
    np.testing.assert_allclose(pd.read_parquet(out)[["a", "k", "c"]].to_numpy(), held.params, rtol=1e-10)
    assert main([*args, "--share", "k", "--loss", "cauchy", "--f-scale", "0.05", "--out", str(out)]) == 0
    robust = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", loss="cauchy", f_scale=0.05)
    np.testing.assert_allclose(pd.read_parquet(out)[["a", "k", "c"]].to_numpy(), robust.params, rtol=1e-10)
    capsys.readouterr()
    for extra, match in (
        (["--share", "k", "--method", "lbfgs"], "--share runs one global Levenberg-Marquardt fit; it does not take"),
        (["--share", "rate"], "--share names unknown parameter 'rate'"),
    ):
        assert main([*args, *extra, "--out", str(tmp_path / "bad.parquet")]) == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / "bad.parquet").exists()


# --- bounds, fixed and tied parameters (params.Constrained, as fit and fit_many have them) -------------------------


def test_fixed_and_tied_parameters_equal_the_model_with_them_written_in():
    """A fixed offset is the model with the number in it; an offset tied to a set's amplitude is the model with
    the expression in it: the same parameters and errors, and the tied one's error propagated (a/10's is a's/10)."""
    sets = _decays(n_sets=6)
    fixed = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", fixed={"c": 0.1})
    written = gradfit.fit_global("a*exp(-k*x) + 0.1", sets, shared="k")
    np.testing.assert_allclose(fixed.params[:, :2], written.params, rtol=1e-10)
    np.testing.assert_allclose(fixed.stderr[:, :2], written.stderr, rtol=1e-8)
    assert (fixed.params[:, 2] == 0.1).all() and (fixed.stderr[:, 2] == 0).all()
    assert fixed.fixed == {"c": 0.1} and fixed.local_names == ("a",) and fixed.dof == written.dof
    assert "c:  0.1 (fixed)" in fixed.report() and "1 shared + 1 x 6 local" in fixed.report()
    tied = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", tie={"c": "a/10"})
    written = gradfit.fit_global("a*exp(-k*x) + a/10", sets, shared="k")
    np.testing.assert_allclose(tied.params[:, :2], written.params, rtol=1e-10)
    np.testing.assert_allclose(tied.params[:, 2], written.params[:, 0] / 10, rtol=1e-12)
    np.testing.assert_allclose(tied.stderr[:, 2], written.stderr[:, 0] / 10, rtol=1e-8)
    assert tied.tied == {"c": "a/10"} and "c tied: c = a/10" in tied.message
    assert "c = a/10 (tied, in every set)" in tied.report()
    shared_tie = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", tie={"c": "k/10"})  # through the shared
    np.testing.assert_allclose(shared_tie.stderr[:, 2], shared_tie.shared_stderr["k"] / 10, rtol=1e-8)


def test_a_bound_the_optimum_presses_against_equals_least_squares_with_bounds():
    """The common rate held below its unconstrained optimum (0.8) by an upper bound of 0.7: the answer is scipy's
    bounded least_squares (trf) on the stacked problem — the rate on its bound, every set's amplitude and offset."""
    sets = _decays(n_sets=8)
    start = {**P0, "k": 0.5}
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", bounds={"k": (0, 0.7)}, p0=start)
    n = len(sets)

    def residuals(p):
        return np.concatenate([p[1 + i] * np.exp(-p[0] * x) + p[1 + n + i] - y for i, (x, y) in enumerate(sets)])

    lower, upper = np.full(2 * n + 1, -np.inf), np.full(2 * n + 1, np.inf)
    lower[0], upper[0] = 0, 0.7
    start = np.concatenate([[0.5], np.ones(n), np.zeros(n)])
    oracle = least_squares(residuals, start, bounds=(lower, upper), method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert result.converged and result.shared["k"] == pytest.approx(0.7, abs=1e-9)
    assert oracle.x[0] == pytest.approx(0.7, abs=1e-9)
    np.testing.assert_allclose(result.params[:, 0], oracle.x[1 : 1 + n], rtol=1e-7)
    np.testing.assert_allclose(result.params[:, 2], oracle.x[1 + n :], rtol=1e-6, atol=1e-9)
    assert "k is at its upper bound 0.7" in result.message
    free = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", bounds={"k": (0, 5)}, p0=P0)  # not pressed
    unbounded = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    np.testing.assert_allclose(free.params, unbounded.params, rtol=1e-8)
    np.testing.assert_allclose(free.stderr, unbounded.stderr, rtol=1e-6)


@pytest.mark.parametrize("loss", ["soft_l1", "cauchy"])
def test_a_robust_loss_equals_least_squares_with_it_on_the_stacked_problem(loss):
    """Decays with outliers, one shared rate, a robust loss: parameters as scipy's least_squares with the same loss
    on the stacked problem, standard errors as curve_fit takes them from it (its Jacobian rescaled with Triggs'
    term, times the robust cost over the degrees of freedom); χ² is the plain residuals'."""
    sets = []
    rng = np.random.default_rng(11)
    for i in range(6):
        x = np.linspace(0, 5, 30)
        y = rng.uniform(1, 3) * np.exp(-RATE * x) + rng.uniform(-0.2, 0.2) + 0.02 * rng.normal(size=x.size)
        y[rng.choice(30, 3, replace=False)] += rng.choice([-1, 1], 3) * 0.8  # outliers
        sets.append((x, y))
    result = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", loss=loss, f_scale=0.05, p0=P0)
    n = len(sets)

    def residuals(p):
        return np.concatenate([p[1 + i] * np.exp(-p[0] * x) + p[1 + n + i] - y for i, (x, y) in enumerate(sets)])

    start = np.concatenate([[1.0], np.ones(n), np.zeros(n)])
    oracle = least_squares(residuals, start, loss=loss, f_scale=0.05, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert result.converged
    assert result.shared["k"] == pytest.approx(oracle.x[0], rel=1e-7)
    np.testing.assert_allclose(result.params[:, 0], oracle.x[1 : 1 + n], rtol=1e-7)
    np.testing.assert_allclose(result.params[:, 2], oracle.x[1 + n :], rtol=1e-6, atol=1e-9)
    dof = 30 * n - (1 + 2 * n)
    cov = np.linalg.inv(oracle.jac.T @ oracle.jac) * 2 * oracle.cost / dof
    errors = np.sqrt(np.diag(cov))
    assert result.shared_stderr["k"] == pytest.approx(errors[0], rel=1e-5)
    np.testing.assert_allclose(result.stderr[:, 0], errors[1 : 1 + n], rtol=1e-5)
    np.testing.assert_allclose(result.chi2.sum(), (residuals(oracle.x) ** 2).sum(), rtol=1e-7)
    assert result.loss == loss and f"robust loss {loss} (f_scale=0.05)" in result.message
    plain = gradfit.fit_global("a*exp(-k*x) + c", sets, shared="k", p0=P0)
    assert abs(result.shared["k"] - RATE) < abs(plain.shared["k"] - RATE)  # the outliers pull least squares off

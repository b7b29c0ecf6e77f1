"""Many starts: fit(..., starts=N) finds the minimum one start misses, against the fit from the true parameters."""

import warnings

import numpy as np
import pytest

import gradfit
from gradfit.cli import main
from gradfit.errors import ConvergenceWarning, OptionError
from gradfit.starts import spread

RNG = np.random.default_rng(11)
X = np.linspace(0, 10, 200)
TWO_PEAKS = dict(g1_amplitude=3.0, g1_center=2.0, g1_sigma=0.4, g2_amplitude=2.0, g2_center=7.0, g2_sigma=0.5)
PEAKS_Y = (
    3 * np.exp(-((X - 2) ** 2) / (2 * 0.4**2)) + 2 * np.exp(-((X - 7) ** 2) / (2 * 0.5**2)) + RNG.normal(0, 0.05, 200)
)
FAR = [1, 5, 1, 1, 5.5, 1]  # both peaks started in the valley between the true ones
SINE_Y = 2 * np.sin(3.7 * X + 0.5) + RNG.normal(0, 0.1, 200)


def _peaks(result) -> np.ndarray:
    """The two peaks' (amplitude, center, sigma), by center: a sum's parts may come out in either order."""
    v = list(result.params.values())
    return np.array(sorted([v[:3], v[3:]], key=lambda peak: peak[1]))


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gradfit.fit(*args, **kwargs)


def test_spread_is_a_latin_hypercube_around_the_start_and_between_bounds():
    start = np.array([2.0, 0.0, 5.0, -3.0])
    names = ("a", "b", "c", "d")
    points = spread(start, names, {"c": (1.0, 9.0)}, {"d"}, 41)
    assert points.shape == (41, 4)
    np.testing.assert_array_equal(points[0], start)  # the given start is the first
    np.testing.assert_array_equal(points[:, 3], -3.0)  # held (fixed or tied): as given
    ratios = np.log10(points[1:, 0] / 2.0)  # a: 2 times 10**u, u in [-1, 1), one per stratum
    assert np.array_equal(np.sort(np.floor((ratios + 1) / 2 * 40)), np.arange(40))
    assert (points[1:, 1] >= -1).all() and (points[1:, 1] < 1).all()  # a zero start: u itself
    assert np.array_equal(np.sort(np.floor((points[1:, 2] - 1) / 8 * 40)), np.arange(40))  # c: between its bounds
    np.testing.assert_array_equal(spread(start, names, {}, set(), 41), spread(start, names, {}, set(), 41))


def test_two_peaks_started_between_them_are_found_from_many_starts():
    one = _quiet("gaussian + gaussian", X, PEAKS_Y, p0=FAR)
    truth = gradfit.fit("gaussian + gaussian", X, PEAKS_Y, p0=list(TWO_PEAKS.values()))
    assert one.chi2 > 50 * truth.chi2  # one start ends in another minimum
    many = gradfit.fit("gaussian + gaussian", X, PEAKS_Y, p0=FAR, starts=50)
    assert many.converged
    np.testing.assert_allclose(_peaks(many), _peaks(truth), rtol=1e-7)
    assert sorted(many.stderr.values()) == pytest.approx(sorted(truth.stderr.values()), rel=1e-5)
    assert many.starts["n"] == 50 and 1 <= many.starts["reached"] <= 50
    assert many.starts["best_chi2"] == pytest.approx(truth.chi2, rel=1e-9)
    assert f"best of 50 starts: {many.starts['reached']} reached this minimum" in many.message
    assert "# starts           = 50" in many.report()


def test_a_sines_frequency_is_found_from_many_starts():
    one = _quiet("a*sin(w*x + phi)", X, SINE_Y, p0=[1, 1, 0])
    truth = gradfit.fit("a*sin(w*x + phi)", X, SINE_Y, p0=[2, 3.7, 0.5])
    assert abs(one.params["w"] - 3.7) > 0.5
    many = gradfit.fit("a*sin(w*x + phi)", X, SINE_Y, p0=[1, 1, 0], starts=100)
    assert many.chi2 == pytest.approx(truth.chi2, rel=1e-10)
    assert [many.params["a"], many.params["w"]] == pytest.approx([truth.params["a"], truth.params["w"]], rel=1e-7)
    assert np.cos(many.params["phi"] - truth.params["phi"]) == pytest.approx(1.0, abs=1e-12)  # the phase mod 2π


def test_starts_keep_bounds_fixed_and_tied_parameters():
    bounds = {"g1_center": (0, 4), "g2_center": (5, 9)}
    many = gradfit.fit(
        "gaussian + gaussian", X, PEAKS_Y, p0=[1, 3, 1, 1, 6, 1], starts=20, bounds=bounds, fixed={"g2_amplitude": 2.0}
    )
    assert many.params["g2_amplitude"] == 2.0
    assert 0 < many.params["g1_center"] < 4 and 5 < many.params["g2_center"] < 9
    expected = gradfit.fit(
        "gaussian + gaussian", X, PEAKS_Y, p0=list(TWO_PEAKS.values()), bounds=bounds, fixed={"g2_amplitude": 2.0}
    )
    np.testing.assert_allclose(list(many.params.values()), list(expected.params.values()), rtol=1e-7)
    tied = gradfit.fit("gaussian + gaussian", X, PEAKS_Y, p0=FAR, starts=50, tie={"g2_sigma": "g1_sigma * 1.25"})
    assert tied.params["g2_sigma"] == pytest.approx(1.25 * tied.params["g1_sigma"], rel=1e-12)
    assert tied.params["g1_center"] == pytest.approx(2.0, abs=0.02)


def test_rows_left_out_are_counted_with_starts():
    y = SINE_Y.copy()
    y[[3, 50]] = np.nan
    many = gradfit.fit("a*sin(w*x + phi)", X, y, p0=[1, 1, 0], starts=20, nan_policy="omit")
    assert many.n_dropped == 2 and many.n_points == 198


def test_a_linear_model_needs_no_starts():
    r = gradfit.fit("quadratic", X, PEAKS_Y, starts=10)
    assert "starts=10 not needed: a model linear in its parameters has one minimum" in r.message
    assert r.params == gradfit.fit("quadratic", X, PEAKS_Y).params


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(starts=0), "`starts` must be a whole number of starting points >= 1, got 0"),
        (dict(starts="5"), "got '5'"),
        (dict(starts=True), "got True"),
        (dict(starts=5, loss="cauchy"), "does not take a robust loss yet"),
        (dict(starts=5, sigma=np.eye(200)), "one sigma per point, not a matrix"),
    ],
)
def test_bad_starts_are_refused_in_one_line(kwargs, match):
    with pytest.raises(OptionError, match=match) as e:
        gradfit.fit("a*sin(w*x + phi)", X, SINE_Y, p0=[1, 1, 0], **kwargs)
    assert "\n" not in str(e.value)


def test_the_command_line_takes_starts(tmp_path, capsys):
    np.savetxt(tmp_path / "d.csv", np.c_[X, SINE_Y], delimiter=",", header="t,v", comments="")
    out = tmp_path / "fit.json"
    args = ["fit", str(tmp_path / "d.csv"), "--model", "a*sin(w*x + phi)", "--p0", "1,1,0", "--quiet"]
    assert main([*args, "--starts", "100", "--save", str(out)]) == 0
    loaded = gradfit.load_result(out)
    expected = gradfit.fit("a*sin(w*x + phi)", X, SINE_Y, p0=[1, 1, 0], starts=100)
    assert loaded.params == pytest.approx(expected.params, rel=1e-12)
    assert loaded.starts == expected.starts
    assert main([*args, "--starts", "0"]) == 2
    assert "--starts" in capsys.readouterr().err


def test_a_fit_without_starts_does_not_load_scipy_stats():
    """scipy.stats (~40 MB, ~0.3 s) is for the Latin hypercube of many starts only: a plain fit, the command line's
    included, never pays for it (it once did, and a streamed fit's memory budget with it)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, gradfit; x = np.linspace(0, 1, 20); "
        "gradfit.fit('a*exp(-k*x) + c', x, 2 * np.exp(-3 * x) + 1, p0=[1, 1, 0]); "
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

"""Streamed fits of Parquet data: the same answers as in memory, under the memory budget, with mini-batches.

Oracles: gradfit.fit of the same data in memory (itself checked against scipy and NIST in
test_fit.py), numpy's least squares, and the process's own peak RSS (measured in a subprocess).
"""

import math
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

import gradfit
from gradfit.errors import DataError, OptionError
from gradfit.solvers.fold import GramFold
from gradfit.stream import MARGIN

SAME_RTOL = 1e-10  # streamed against in-memory: the bar
STDERR_RTOL = 1e-8
ROWS = 60_000
ROW_GROUP = 1_000  # many small row groups


@pytest.fixture(autouse=True)
def measured_memory(monkeypatch):
    """What the process holds, as the budget sees it, pinned at 300 MB: batch sizes then do not depend on what
    the test process happens to hold (the real measure is checked in a subprocess below)."""
    monkeypatch.setattr("gradfit.stream.process_memory", lambda: 300 * 10**6)


def tight_budget(model="quadratic") -> int:
    """A budget that leaves room for batches of a few thousand rows only: the fit must stream."""
    return 300 * 10**6 + MARGIN + 2 * 2**20


def write(path, **columns):
    pq.write_table(pa.table(columns), path, row_group_size=ROW_GROUP)
    return path


@pytest.fixture(scope="module")
def quadratic_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 3, ROWS)
    y = 0.8 * x**2 - 1.5 * x + 2 + rng.normal(0, 0.2, ROWS)
    sigma = rng.uniform(0.1, 0.4, ROWS)
    path = write(tmp_path_factory.mktemp("stream") / "quad.parquet", t=x, v=y, s=sigma)
    return path, x, y, sigma


@pytest.fixture(scope="module")
def decay_file(tmp_path_factory):
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 5, ROWS)
    y = 3.0 * np.exp(-0.7 * x) + 0.5 + rng.normal(0, 0.05, ROWS)
    path = write(tmp_path_factory.mktemp("stream") / "decay.parquet", x=x, y=y)
    return path, x, y


def quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        return f(*args, **kwargs)


def same(streamed, in_memory, rtol=SAME_RTOL):
    assert "streamed in batches" in streamed.message
    for name, value in in_memory.params.items():
        assert streamed.params[name] == pytest.approx(value, rel=rtol, abs=1e-14), name
        assert streamed.stderr[name] == pytest.approx(in_memory.stderr[name], rel=STDERR_RTOL), name
    assert streamed.chi2 == pytest.approx(in_memory.chi2, rel=1e-10)
    assert streamed.rmse == pytest.approx(in_memory.rmse, rel=1e-10)
    assert streamed.r2 == pytest.approx(in_memory.r2, rel=1e-10)
    assert streamed.n_points == in_memory.n_points


@pytest.mark.parametrize("method", ["auto", "lm", "gd"])
def test_a_streamed_fit_equals_the_in_memory_fit(quadratic_file, method):
    path, x, y, _ = quadratic_file
    streamed = quiet(gradfit.fit_file, "quadratic", path, x="t", y="v", method=method, memory_budget=tight_budget())
    in_memory = quiet(gradfit.fit, "quadratic", x, y, method=method)
    same(streamed, in_memory)
    assert streamed.converged
    best = np.linalg.lstsq(np.vander(x, 3), y, rcond=None)[0]  # numpy's least squares, too
    np.testing.assert_allclose(list(streamed.params.values()), best, rtol=1e-9)


def test_weights_from_a_sigma_column(quadratic_file):
    path, x, y, sigma = quadratic_file
    streamed = gradfit.fit_file("quadratic", path, x="t", y="v", sigma="s", method="lm", memory_budget=tight_budget())
    in_memory = gradfit.fit("quadratic", x, y, sigma=sigma, method="lm")
    same(streamed, in_memory)


@pytest.mark.parametrize("method", ["lm", "auto"])
def test_a_nonlinear_model_streams_exactly_too(decay_file, method):
    path, x, y = decay_file
    p0 = {"amplitude": 1.0, "rate": 1.0, "offset": 0.0}
    streamed = gradfit.fit_file("exp_decay", path, method=method, p0=p0, memory_budget=tight_budget("exp_decay"))
    in_memory = gradfit.fit("exp_decay", x, y, method=method, p0=p0)
    same(streamed, in_memory)
    assert streamed.params["rate"] == pytest.approx(0.7, rel=0.01)


def test_tied_parameters_stream_as_in_memory(decay_file):
    """A tie is part of the same change of variables streamed (gradfit.params.Constrained): values, the tied
    one's propagated error, the report's tie line."""
    path, x, y = decay_file
    p0, tie = {"amplitude": 1.0, "rate": 1.0}, {"offset": "amplitude / 6"}
    streamed = gradfit.fit_file("exp_decay", path, p0=p0, tie=tie, memory_budget=tight_budget("exp_decay"))
    in_memory = gradfit.fit("exp_decay", x, y, p0=p0, tie=tie)
    same(streamed, in_memory)
    assert streamed.params["offset"] == pytest.approx(streamed.params["amplitude"] / 6, rel=1e-14)
    assert streamed.stderr["offset"] == pytest.approx(streamed.stderr["amplitude"] / 6, rel=1e-12)
    assert streamed.tied == {"offset": "amplitude / 6"} and "== 'amplitude / 6'" in streamed.report()


@pytest.mark.parametrize("loss, method", [("soft_l1", "lm"), ("cauchy", "auto"), ("huber", "lbfgs")])
def test_a_robust_loss_streams_as_in_memory(tmp_path, loss, method):
    """The robust cost summed over the batches beside the fold, the rows reweighted as Problem reweights them
    in memory; the covariance from the rows least_squares rescales (curve_fit's convention), the plain χ² and
    RMSE: all equal to the in-memory fit on data with outliers."""
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 5, ROWS)
    y = 3.0 * np.exp(-0.7 * x) + 0.5 + rng.normal(0, 0.05, ROWS)
    outliers = rng.choice(ROWS, ROWS // 100, replace=False)
    y[outliers] += rng.uniform(-3, 3, len(outliers))
    path = write(tmp_path / "outliers.parquet", x=x, y=y)
    options = dict(p0=[1.0, 1.0, 0.0], loss=loss, f_scale=0.1, method=method)
    streamed = gradfit.fit_file("exp_decay", path, memory_budget=tight_budget("exp_decay"), **options)
    in_memory = gradfit.fit("exp_decay", x, y, **options)
    same(streamed, in_memory, rtol=1e-8)  # (the same minimum; the sums in another order stop LM a step apart)
    assert streamed.loss == loss and f"robust loss {loss}" in streamed.message
    assert streamed.params["rate"] == pytest.approx(0.7, rel=0.01)  # the outliers pull it no further


def test_ill_conditioned_sorted_data_stream_exactly(tmp_path, monkeypatch):
    """x from 200 to 210 in ascending order: the quadratic's Jacobian is ill-conditioned (~1e9), and the first rows,
    whose R preconditions the first pass, see only x near 200. The fast fold must notice and refine, not mislead."""
    rng = np.random.default_rng(9)
    x = np.sort(rng.uniform(200, 210, ROWS))
    y = 1e-3 * (x - 205) ** 2 + 0.5 * x + rng.normal(0, 0.01, ROWS)
    path = write(tmp_path / "sorted.parquet", x=x, y=y)
    refined = []
    original = GramFold.refined
    monkeypatch.setattr(GramFold, "refined", lambda self: refined.append(1) or original(self))
    streamed = gradfit.fit_file("quadratic", path, method="lm", memory_budget=tight_budget())
    in_memory = gradfit.fit("quadratic", x, y, method="lm")
    same(streamed, in_memory, rtol=1e-9)  # the problem's own condition: two QRs of J differ by about this
    assert refined  # the sample's R was refused as a preconditioner and a better one made
    assert np.allclose(list(streamed.params.values()), np.polyfit(x, y, 2), rtol=1e-8)


def test_rank_deficient_data_fall_back_to_householder(tmp_path, monkeypatch):
    """x takes two values only: a quadratic's three columns span two dimensions. No Cholesky exists; the
    Householder fold gives the same rank-2 answer as in memory."""
    x = np.tile([1.0, 2.0], ROWS // 2)
    y = 3.0 * x + 1.0 + np.random.default_rng(10).normal(0, 0.1, ROWS)
    path = write(tmp_path / "two.parquet", x=x, y=y)
    streamed = quiet(gradfit.fit_file, "quadratic", path, method="lm", memory_budget=tight_budget())
    in_memory = quiet(gradfit.fit, "quadratic", x, y, method="lm")
    assert streamed.rank == in_memory.rank == 2
    # the fitted curve at the two x values is determined, and is each group's mean
    for value in (1.0, 2.0):
        mean = y[x == value].mean()
        assert streamed.predict(np.array([value]))[0] == pytest.approx(mean, rel=1e-10)
        assert in_memory.predict(np.array([value]))[0] == pytest.approx(mean, rel=1e-10)


@pytest.mark.parametrize(
    "options",
    [
        dict(bounds={"c": (None, 1.5)}),  # the unconstrained optimum has c = 2: the bound holds it
        dict(fixed={"a": 0.8}),
        dict(bounds={"b": (-3.0, 0.0)}, fixed={"a": 0.75}),
    ],
)
def test_bounds_and_fixed_parameters_stream_as_in_memory(quadratic_file, options):
    path, x, y, _ = quadratic_file
    streamed = gradfit.fit_file("quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget(), **options)
    in_memory = gradfit.fit("quadratic", x, y, method="lm", **options)
    assert "streamed in batches" in streamed.message and streamed.converged
    # in memory, an optimum on a bound is found as an active set (c held on it: the exact constrained optimum);
    # streamed, through the change of variables alone, to about 1e-9 (its active set is still to come)
    on_bound = "bounds" in options and "c" in options["bounds"]
    if on_bound:
        a_b = np.linalg.lstsq(np.stack([x**2, x], 1), y - 1.5, rcond=None)[0]
        np.testing.assert_allclose([in_memory.params["a"], in_memory.params["b"]], a_b, rtol=1e-12)
    for name, value in in_memory.params.items():
        assert streamed.params[name] == pytest.approx(value, rel=1e-8 if on_bound else 1e-9, abs=1e-12), name
        assert streamed.stderr[name] == pytest.approx(in_memory.stderr[name], rel=1e-6, abs=1e-15), name
    assert streamed.chi2 == pytest.approx(in_memory.chi2, rel=1e-10)
    assert streamed.at_bound == in_memory.at_bound and streamed.fixed == in_memory.fixed
    if "bounds" in options and "c" in options["bounds"]:
        assert streamed.at_bound == {"c": "upper"} and "c is at its upper bound 1.5" in streamed.message
    for name in options.get("fixed", {}):
        assert streamed.params[name] == options["fixed"][name] and streamed.stderr[name] == 0


def test_streamed_bounds_refuse_what_they_cannot_do(quadratic_file):
    path, *_ = quadratic_file
    with pytest.raises(OptionError, match="Mini-batches do not take bounds"):
        gradfit.fit_file(
            "quadratic",
            path,
            x="t",
            y="v",
            method="adam",
            batch_size=500,
            fixed={"a": 1.0},
            memory_budget=tight_budget(),
        )
    with pytest.raises(OptionError, match="Method 'linear' cannot honour bounds"):
        gradfit.fit_file(
            "quadratic", path, x="t", y="v", method="linear", bounds={"a": (0, 1)}, memory_budget=tight_budget()
        )
    with pytest.raises(gradfit.errors.ModelError, match="outside its bounds"):
        gradfit.fit_file(
            "quadratic", path, x="t", y="v", p0=[5.0, 0, 0], bounds={"a": (0, 1)}, memory_budget=tight_budget()
        )


def test_a_folder_a_glob_and_a_dataset_give_the_same_answer(tmp_path, quadratic_file):
    _, x, y, _ = quadratic_file
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 4)):
        write(folder / f"part-{i}.parquet", x=x[part], y=y[part])
    budget = tight_budget()
    results = [
        gradfit.fit_file("quadratic", source, memory_budget=budget)
        for source in (folder, str(folder / "part-*.parquet"), ds.dataset(folder, format="parquet"))
    ]
    in_memory = gradfit.fit("quadratic", x, y)
    for r in results:
        same(r, in_memory)


def test_fit_given_a_path_passes_every_option_on(quadratic_file, decay_file):
    path, x, y, sigma = quadratic_file
    by_name = gradfit.fit("quadratic", str(path), sigma="s", loss="soft_l1", f_scale=0.3)  # in memory: small data
    direct = gradfit.fit("quadratic", x, y, sigma=sigma, loss="soft_l1", f_scale=0.3)
    assert by_name.loss == "soft_l1" and by_name.f_scale == 0.3
    np.testing.assert_allclose(list(by_name.params.values()), list(direct.params.values()), rtol=1e-10)
    path, x, y = decay_file
    tied = gradfit.fit("a*exp(-k*x) + c", str(path), tie={"c": "a/6"}, p0={"a": 2, "k": 1})
    assert tied.tied == {"c": "a/6"}
    assert tied.params["c"] == pytest.approx(tied.params["a"] / 6, rel=1e-12)
    with pytest.raises(OptionError, match="names the file's column of errors"):
        gradfit.fit("quadratic", str(quadratic_file[0]), sigma=quadratic_file[3])


def test_a_model_in_its_own_variable_is_read_so_in_memory_and_streamed(quadratic_file):
    path, x, y, _ = quadratic_file  # columns t, v, s
    in_memory = gradfit.fit_file("a*t**2 + b*t + c", path, variables="t")
    streamed = gradfit.fit_file("a*t**2 + b*t + c", path, variables="t", memory_budget=tight_budget())
    assert "streamed" in streamed.message and "streamed" not in in_memory.message
    np.testing.assert_allclose(list(in_memory.params.values()), np.polyfit(x, y, 2), rtol=1e-9)
    same(streamed, in_memory)
    via_fit = gradfit.fit("a*t**2 + b*t + c", str(path), variables="t")
    np.testing.assert_allclose(list(via_fit.params.values()), list(in_memory.params.values()), rtol=1e-12)


def test_fit_takes_a_path_and_holds_small_data_in_memory(quadratic_file):
    path, x, y, _ = quadratic_file
    result = gradfit.fit("quadratic", str(path))  # the first two columns; 60,000 rows fit the default budget
    assert "streamed" not in result.message
    np.testing.assert_allclose(list(result.params.values()), np.polyfit(x, y, 2), rtol=1e-9)


def test_the_budget_bounds_the_whole_process(tmp_path):
    """In its own process: peak RSS (VmHWM) stays under --memory-budget, which forces streaming."""
    rng = np.random.default_rng(1)
    n = 2_000_000
    x = rng.uniform(-1, 1, n)
    path = write(tmp_path / "big.parquet", x=x, y=2 * x**2 + x + rng.normal(0, 0.1, n))
    budget = 600 * 10**6
    # VmHWM: this process's own peak. (ru_maxrss is not: Linux carries the forking parent's peak across exec,
    # and the parent here is the test process, which may hold far more.)
    code = (
        "import sys; from gradfit.cli import main; rc = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print('PEAK', int(hwm.split()[1]) * 1024); raise SystemExit(rc)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "fit", str(path), "--method", "lm", "--memory-budget", f"{budget}B"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "streamed in batches" in run.stdout  # holding it would not fit: the work arrays alone are ~1 GB
    peak = int(run.stdout.split("PEAK")[1])
    assert peak <= budget, f"peak {peak / 1e6:.0f} MB over the {budget / 1e6:.0f} MB budget"


# ---- mini-batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sgd", "momentum", "adam"])
def test_mini_batches_record_epochs_and_approach_the_optimum(quadratic_file, method):
    path, x, y, _ = quadratic_file
    result = quiet(
        gradfit.fit_file,
        "quadratic",
        path,
        x="t",
        y="v",
        method=method,
        batch_size=500,
        epochs=3,
        seed=1,
        learning_rate={"sgd": 0.1, "momentum": 0.01, "adam": 0.05}[method],
    )
    history = result.history
    assert [r.epoch for r in history][0] == 1 and history[-1].epoch == 3
    assert len(history) == 3 * ROWS // 500  # row groups of 1,000: two batches each, every epoch
    assert [r.step for r in history] == list(range(1, len(history) + 1))
    assert "epoch" in history.to_csv().splitlines()[0]
    assert not result.converged and "epochs asked for" in result.message
    best = np.polyfit(x, y, 2)
    assert result.rmse == pytest.approx(math.sqrt(np.mean((np.polyval(best, x) - y) ** 2)), rel=1e-3)


def test_mini_batches_are_reproducible_by_seed(quadratic_file):
    path = quadratic_file[0]

    def run(seed):
        return quiet(gradfit.fit_file, "quadratic", path, x="t", y="v", method="sgd", batch_size=700, seed=seed)

    a, b, c = run(3), run(3), run(4)
    assert [r.params for r in a.history] == [r.params for r in b.history]
    assert [r.params for r in a.history] != [r.params for r in c.history]


# ---- bad input ------------------------------------------------------------------------------------


def test_nan_rows_are_refused_or_left_out(tmp_path, quadratic_file):
    _, x, y, _ = quadratic_file
    y = y.copy()
    y[12_345] = np.nan
    path = write(tmp_path / "nan.parquet", x=x, y=y)
    with pytest.raises(DataError, match="NaN, inf or a sigma <= 0 at row 12345"):
        gradfit.fit_file("quadratic", path, memory_budget=tight_budget())
    streamed = gradfit.fit_file("quadratic", path, nan_policy="omit", memory_budget=tight_budget())
    keep = np.isfinite(y)
    same(streamed, gradfit.fit("quadratic", x[keep], y[keep]))
    assert streamed.n_dropped == 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x="nope"), DataError, "Unknown x column 'nope'"),
        (dict(memory_budget=10**6), OptionError, "leaves too little room"),
        (dict(memory_budget=0), OptionError, "memory_budget"),
        (dict(batch_size=100, method="lm"), OptionError, "takes no mini-batches"),
        (dict(epochs=3), OptionError, "give batch_size too"),
        (dict(batch_size=0), OptionError, "batch_size"),
        (dict(nan_policy="drop"), OptionError, "nan_policy"),
    ],
)
def test_bad_options_are_refused(quadratic_file, kwargs, error, match):
    with pytest.raises(error, match=match):
        gradfit.fit_file("quadratic", quadratic_file[0], **kwargs)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        gradfit.fit_file("quadratic", tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="No file matches"):
        gradfit.fit_file("quadratic", str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is a folder with no Parquet files"):
        gradfit.fit_file("quadratic", tmp_path / "empty")
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}), path)
    with pytest.raises(DataError, match="Column 'y' of .* holds string, not numbers"):
        gradfit.fit_file("quadratic", path, memory_budget=tight_budget())
    empty = tmp_path / "norows.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], pa.float64())}), empty)
    with pytest.raises(DataError, match="has no rows"):
        gradfit.fit_file("quadratic", empty)


def test_the_command_line_streams_and_refuses_in_one_line(tmp_path, quadratic_file, capsys):
    from gradfit.cli import main

    path = quadratic_file[0]
    assert (
        main(
            [
                "fit",
                str(path),
                "--x",
                "t",
                "--y",
                "v",
                "--memory-budget",
                f"{tight_budget()}B",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert "streamed in batches" in capsys.readouterr().out
    assert (
        main(
            [
                "fit",
                str(path),
                "--x",
                "t",
                "--y",
                "v",
                "--memory-budget",
                f"{tight_budget()}B",
                "--bound",
                "c<1.5",
                "--fix",
                "a=0.8",
                "--json",
                str(tmp_path / "b.json"),
                "--quiet",
            ]
        )
        == 0
    )
    bounded = __import__("json").loads((tmp_path / "b.json").read_text())
    assert bounded["params"]["c"] == pytest.approx(1.5, rel=1e-6) and bounded["params"]["a"] == 0.8
    for args, match in [
        (["--memory-budget", "lots"], "must be a size such as 500MB"),
        (["--batch-size", "100", "--method", "adam", "--fix", "a=1"], "Mini-batches do not take bounds"),
        (["--memory-budget", "1MB"], "leaves too little room"),
        (["--method", "sgd"], "give --batch-size"),
        (["--batch-size", "100", "--method", "lm"], "takes no mini-batches"),
    ]:
        assert main(["fit", str(path), "--x", "t", "--y", "v", *args]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,2\n2,3\n3,5\n4,9\n")
    assert main(["fit", str(csv), "--batch-size", "2"]) == 2
    assert "convert the CSV file to Parquet" in capsys.readouterr().err


def test_ctrl_c_stops_after_the_batch_and_keeps_the_history(tmp_path, quadratic_file):
    path = quadratic_file[0]
    history = tmp_path / "history.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradfit",
            "fit",
            str(path),
            "--x",
            "t",
            "--y",
            "v",
            "--method",
            "sgd",
            "--batch-size",
            "50",
            "--epochs",
            "1000",
            "--history",
            str(history),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(10)  # imports, then well into the epochs (1,000 epochs take minutes)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "stopped after the current batch" in err and str(history) in err
    rows = history.read_text().splitlines()
    assert rows[0].startswith("epoch,step,loss") and len(rows) > 10
    assert "Traceback" not in err and out == ""
    assert os.path.getsize(history) > 0


def test_a_few_rows_fit_in_memory_even_when_the_process_already_holds_the_budget(tmp_path, monkeypatch):
    from gradfit import stream

    x = np.linspace(0, 1, 30)
    path = write(tmp_path / "small.parquet", x=x, y=2 * x + 1 + 0.01 * np.cos(30 * x))
    monkeypatch.setattr(stream, "process_memory", lambda: 5 * 10**9)  # a notebook holding 5 GB
    result = gradfit.fit_file("linear", path)  # the default budget is 1 GB: 30 rows are fitted in memory
    assert result.x is not None
    np.testing.assert_allclose(
        list(result.params.values()), np.polyfit(x, 2 * x + 1 + 0.01 * np.cos(30 * x), 1), rtol=1e-10
    )
    big = write(tmp_path / "big.parquet", x=np.linspace(0, 1, 5000), y=np.linspace(0, 1, 5000))
    with pytest.raises(OptionError, match="leaves too little room"):  # more than a batch: the budget still holds
        gradfit.fit_file("linear", big)


# --- the random sample a streamed result keeps for its figures ------------------------------------


def feed(reservoir, rows: np.ndarray, rng) -> None:
    """Rows to a Reservoir in batches of random sizes (some smaller than k, some larger)."""
    start = 0
    while start < len(rows):
        size = int(rng.integers(1, 14))
        part = rows[start : start + size]
        reservoir.add(part, -part, None)
        start += size


def test_the_reservoir_keeps_every_row_and_pair_equally_often():
    """Algorithm L against the definition of a uniform sample without replacement: each row is kept with
    probability k/N and each pair with k(k-1)/(N(N-1)), whatever the batch boundaries."""
    from gradfit.stream import Reservoir

    n, k, trials = 40, 8, 20_000
    rows = np.arange(n, dtype=np.float64)
    counts, pairs = np.zeros(n), np.zeros((n, n))
    batching = np.random.default_rng(3)
    for seed in range(trials):
        reservoir = Reservoir(k, seed)
        feed(reservoir, rows, batching)
        x, y, sigma = reservoir.arrays()
        assert len(x) == k and len(np.unique(x)) == k and sigma is None
        assert (np.diff(x) > 0).all() and (y == -x).all()  # in file order, the columns kept together
        kept = x.astype(int)
        counts[kept] += 1
        pairs[np.ix_(kept, kept)] += 1
    p = k / n
    assert np.abs(counts / trials - p).max() < 5 * np.sqrt(p * (1 - p) / trials)
    both = k * (k - 1) / (n * (n - 1))
    off = pairs[~np.eye(n, dtype=bool)] / trials
    assert np.abs(off - both).max() < 5.5 * np.sqrt(both * (1 - both) / trials)


def test_the_reservoir_of_many_rows_is_uniform_and_holds_fewer_rows_whole():
    from scipy.stats import kstest

    from gradfit.stream import Reservoir

    n, k = 1_000_000, 10_000
    reservoir = Reservoir(k, seed=5)
    rows = np.arange(n, dtype=np.float64)
    for start in range(0, n, 4096):
        reservoir.add(rows[start : start + 4096], rows[start : start + 4096], None)
    x, _, _ = reservoir.arrays()
    assert len(np.unique(x)) == k
    assert kstest(x / n, "uniform").pvalue > 1e-3  # a fixed seed: not flaky
    small = Reservoir(k, seed=5)
    small.add(rows[:300], rows[:300], rows[:300])
    assert [a.tolist() for a in small.arrays()] == [rows[:300].tolist()] * 3


def test_a_streamed_result_keeps_a_random_sample_of_its_rows(quadratic_file):
    path, x, y, sigma = quadratic_file
    result = gradfit.fit_file(
        "quadratic", path, x="t", y="v", sigma="s", method="lm", memory_budget=tight_budget(), sample_rows=500, seed=4
    )
    assert "streamed in batches" in result.message
    assert result.sample_of == ROWS and len(result.x) == len(result.y) == len(result.sigma) == 500
    where = {value: i for i, value in enumerate(x)}  # the file's x are distinct: a row by its x
    rows = np.array([where[value] for value in result.x])
    assert (np.diff(rows) > 0).all()  # rows of the file, in its order, x with its own y and sigma
    assert (result.y == y[rows]).all() and (result.sigma == sigma[rows]).all()
    assert rows.min() < ROWS // 10 and rows.max() > ROWS - ROWS // 10  # from all over the file
    again = gradfit.fit_file(
        "quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget(), sample_rows=500, seed=4
    )
    other = gradfit.fit_file(
        "quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget(), sample_rows=500, seed=5
    )
    assert (again.x == result.x).all() and not (other.x == result.x).all()
    none = gradfit.fit_file("quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget(), sample_rows=0)
    assert none.x is None and none.sample_of is None
    with pytest.raises(OptionError, match="sample_rows must be a whole number"):
        gradfit.fit_file("quadratic", path, memory_budget=tight_budget(), sample_rows=-3)


def test_a_streamed_fit_draws_its_figures_and_report_from_the_sample(tmp_path, quadratic_file, capsys):
    from gradfit.cli import main

    path = quadratic_file[0]
    plots, report, movie = tmp_path / "plots", tmp_path / "r.html", tmp_path / "a.gif"
    assert (
        main(
            [
                "fit",
                str(path),
                "--x",
                "t",
                "--y",
                "v",
                "--memory-budget",
                f"{tight_budget()}B",
                "--method",
                "gd",
                "--max-steps",
                "12",
                "--plot",
                str(plots),
                "--report",
                str(report),
                "--animate",
                str(movie),
            ]
        )
        == 3
    )
    out, err = capsys.readouterr()
    assert "streamed in batches" in out and "note" not in err
    assert sorted(p.name for p in plots.iterdir()) == [
        "fit.png",
        "landscape.png",
        "loss.png",
        "params.png",
        "steps.png",
    ]
    assert movie.stat().st_size > 0
    text = report.read_text()
    assert f"a random sample of 10,000 of {ROWS:,} points" in text and "(sample)" in text
    result = gradfit.fit_file("quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget())
    from gradfit import plots

    fig = plots.plot_fit(result)
    assert f"data (a random sample of 10,000 of {ROWS:,} points)" in fig.axes[0].get_legend_handles_labels()[1]
    assert "random sample" in plots.plot_landscape(result).axes[0].get_title()


def test_a_dtype_or_device_asked_of_a_streamed_fit_is_said_not_dropped(quadratic_file):
    # a streamed fit folds its sums in float64 on the CPU: float32 asked gives float64's answer, and says so
    path = quadratic_file[0]
    plain = gradfit.fit_file("quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget())
    asked = gradfit.fit_file(
        "quadratic", path, x="t", y="v", method="lm", memory_budget=tight_budget(), dtype=torch.float32, device="cpu"
    )
    assert "streamed in float64 on the CPU" in asked.message and "dtype=float32" in asked.message
    assert "float64 on the CPU" not in plain.message
    np.testing.assert_array_equal(list(asked.params.values()), list(plain.params.values()))
    with pytest.raises(OptionError, match="torch floating dtype"):
        gradfit.fit_file("quadratic", path, x="t", y="v", memory_budget=tight_budget(), dtype="float32")
    with pytest.raises(OptionError, match="device"):
        gradfit.fit_file("quadratic", path, x="t", y="v", memory_budget=tight_budget(), device="tpu")

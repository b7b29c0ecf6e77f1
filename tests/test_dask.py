"""fit-many on a real Dask cluster (dask.distributed LocalCluster, 2 worker processes on 127.0.0.1).

Oracle: the single-process fit-many of the same data (itself checked curve by curve against
gradfit.fit and numpy in test_batch.py), compared curve by curve.
"""

import os
import signal
import time

import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pytest

import gradfit.dask
from gradfit.batch import fit_long
from gradfit.cli import main

COLUMNS = ["amplitude", "center", "sigma", "amplitude_stderr", "center_stderr", "sigma_stderr", "rmse", "chi2"]


def peaks(n_curves: int, n_points: int = 30, seed: int = 0) -> pd.DataFrame:
    """Long format, shuffled: one row per point of noisy Gaussian peaks."""
    rng = np.random.default_rng(seed)
    names = np.repeat([f"c{i:05d}" for i in range(n_curves)], n_points)
    x = np.tile(np.linspace(-1, 1, n_points), n_curves)
    a, c = rng.uniform(1, 3, n_curves).repeat(n_points), rng.uniform(-0.3, 0.3, n_curves).repeat(n_points)
    y = a * np.exp(-((x - c) ** 2) / 0.2) + rng.normal(0, 0.05, n_curves * n_points)
    return pd.DataFrame({"cell": names, "t": x, "v": y}).sample(frac=1, random_state=seed).reset_index(drop=True)


def write_parts(folder, frame: pd.DataFrame, parts: int):
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[rows].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return folder


def same_curves(a: pd.DataFrame, b: pd.DataFrame):
    a = a.sort_values("cell").reset_index(drop=True)
    b = b.sort_values("cell").reset_index(drop=True)
    assert list(a["cell"]) == list(b["cell"])
    for column in COLUMNS:
        np.testing.assert_allclose(a[column], b[column], rtol=1e-10, err_msg=column)
    assert list(a["status"]) == list(b["status"]) and list(a["n_steps"]) == list(b["n_steps"])


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield local, client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    frame = peaks(1500)
    folder = write_parts(tmp_path_factory.mktemp("dask") / "peaks", frame, 4)
    single = tmp_path_factory.mktemp("dask") / "single.parquet"
    assert (
        main(
            [
                "fit-many",
                str(folder / "*.parquet"),
                "--group",
                "cell",
                "--x",
                "t",
                "--y",
                "v",
                "--model",
                "gaussian",
                "--out",
                str(single),
                "--quiet",
            ]
        )
        == 0
    )
    return frame, folder, pd.read_parquet(single)


def test_workers_equal_a_single_process_curve_by_curve(data, tmp_path, capsys):
    _, folder, single = data
    out = tmp_path / "cluster.parquet"
    assert (
        main(
            [
                "fit-many",
                str(folder),
                "--group",
                "cell",
                "--x",
                "t",
                "--y",
                "v",
                "--model",
                "gaussian",
                "--out",
                str(out),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert "on 2 local workers: 1500 converged" in capsys.readouterr().out
    same_curves(pd.read_parquet(out), single)


def test_an_existing_scheduler_gives_the_same_result(data, cluster, tmp_path):
    _, folder, single = data
    local, _ = cluster
    out = tmp_path / "scheduler.parquet"
    assert (
        main(
            [
                "fit-many",
                str(folder / "part-*.parquet"),
                "--group",
                "cell",
                "--x",
                "t",
                "--y",
                "v",
                "--model",
                "gaussian",
                "--out",
                str(out),
                "--scheduler",
                local.scheduler_address,
                "--quiet",
            ]
        )
        == 0
    )
    same_curves(pd.read_parquet(out), single)


def test_the_python_api_is_lazy_and_marks_short_curves(cluster):
    frame = peaks(300, seed=3)
    frame = pd.concat([frame, pd.DataFrame({"cell": ["short", "short"], "t": [0.0, 0.5], "v": [1.0, 2.0]})])
    lazy = gradfit.dask.fit_many(dd.from_pandas(frame, npartitions=5), "gaussian", group="cell", x="t", y="v")
    assert hasattr(lazy, "compute")  # nothing ran yet
    result = lazy.compute().sort_values("cell").reset_index(drop=True)
    assert len(result) == 301
    short = result[result["cell"] == "short"].iloc[0]
    assert short["status"] == "too_few_points" and not short["converged"]
    names, oracle = fit_long("gaussian", frame["cell"].to_numpy(), frame["t"].to_numpy(), frame["v"].to_numpy())
    expected = oracle.to_pandas()
    expected.insert(0, "cell", names)
    same_curves(result, expected)


def test_a_worker_killed_mid_run_loses_nothing(cluster):
    local, client = cluster
    frame = peaks(6000, seed=5)
    # compiled LM in the worker processes (their blocks are small, where auto would take torch)
    lazy = gradfit.dask.fit_many(
        dd.from_pandas(frame, npartitions=24), "gaussian", group="cell", x="t", y="v", backend="compiled"
    )
    pids = client.run(os.getpid)  # worker address -> process id
    future = client.compute(lazy)
    deadline = time.monotonic() + 60
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the workers are busy with its tasks
    assert not future.done()
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # one worker process dies; its nanny starts another
    result = future.result(timeout=300).sort_values("cell").reset_index(drop=True)
    names, oracle = fit_long(
        "gaussian", frame["cell"].to_numpy(), frame["t"].to_numpy(), frame["v"].to_numpy(), backend="compiled"
    )
    expected = oracle.to_pandas()
    expected.insert(0, "cell", names)
    assert len(result) == 6000
    same_curves(result, expected)
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--group", "well"], "Unknown group column 'well'"),
        (["--group", "cell", "--scheduler", "tcp://127.0.0.1:9"], "Cannot reach the Dask scheduler"),
        (["--group", "cell", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(data, tmp_path, capsys, args, match):
    _, folder, _ = data
    extra = [] if "--workers" in args or "--scheduler" in args else ["--workers", "2"]
    _refused(
        [
            "fit-many",
            str(folder),
            "--x",
            "t",
            "--y",
            "v",
            "--model",
            "gaussian",
            "--out",
            str(tmp_path / "o.parquet"),
            *args,
            *extra,
        ],
        tmp_path / "o.parquet",
        capsys,
        match,
    )


def _refused(argv, output, capsys, match):
    """The command exits 2 with one line naming the problem, and writes nothing."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not output.exists()


def test_a_csv_file_is_not_sent_to_a_cluster(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("cell,t,v\na,0,1\na,1,2\na,2,5\n")
    assert main(["fit-many", str(csv), "--group", "cell", "--out", str(tmp_path / "o.parquet"), "--workers", "2"]) == 2
    assert "is not Parquet data" in capsys.readouterr().err


@pytest.mark.parametrize("method,weighted", [("auto", False), ("lm", True), ("gd", False)])
def test_one_huge_fit_on_the_cluster_equals_one_process(cluster, method, weighted):
    """The rows spread over the workers' memory; each iteration's sums computed per partition and folded."""
    import gradfit

    rng = np.random.default_rng(11)
    n = 120_000
    x = rng.uniform(-2, 2, n)
    sigma = rng.uniform(0.1, 0.3, n)
    y = 1.5 * x**2 - 0.5 * x + 0.25 + rng.normal(0, 1, n) * sigma
    frame = dd.from_pandas(pd.DataFrame({"x": x, "y": y, "s": sigma}), npartitions=6)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", gradfit.ConvergenceWarning)
        on_cluster = gradfit.dask.fit(frame, "quadratic", x="x", y="y", sigma="s" if weighted else None, method=method)
        alone = gradfit.fit("quadratic", x, y, sigma=sigma if weighted else None, method=method)
    assert "summed by the cluster's workers" in on_cluster.message and on_cluster.converged
    for name in alone.params:
        assert on_cluster.params[name] == pytest.approx(alone.params[name], rel=1e-10)
        assert on_cluster.stderr[name] == pytest.approx(alone.stderr[name], rel=1e-8)
    assert on_cluster.chi2 == pytest.approx(alone.chi2, rel=1e-10)
    assert on_cluster.rmse == pytest.approx(alone.rmse, rel=1e-10)
    assert on_cluster.r2 == pytest.approx(alone.r2, rel=1e-10)
    # the figures' data: a uniform random sample of the rows, gathered from every partition, in their order
    assert on_cluster.sample_of == n and len(on_cluster.x) == len(on_cluster.y) == gradfit.stream.SAMPLE_ROWS
    where = {value: i for i, value in enumerate(x)}  # x are distinct: a row by its x
    rows = np.array([where[value] for value in on_cluster.x])
    assert (np.diff(rows) > 0).all() and (on_cluster.y == y[rows]).all()
    assert (np.bincount(rows * 6 // n, minlength=6) > 0.8 * len(rows) / 6).all()


def test_a_dask_array_of_curves_equals_fit_many_in_one_process(cluster):
    import dask.array as da

    from gradfit.batch import fit_many as fit_rows

    rng = np.random.default_rng(4)
    x = np.linspace(-1, 1, 20)
    coef = rng.normal(0, 1, (700, 3))
    Y = coef[:, :1] * x**2 + coef[:, 1:2] * x + coef[:, 2:] + rng.normal(0, 0.05, (700, 20))
    Y[5, 2:] = np.nan  # a curve with too few points (2 for 3 parameters)
    lazy = gradfit.dask.fit_many(da.from_array(Y, chunks=(150, 10)), "quadratic", x=x)
    result = lazy.compute().sort_values("curve").reset_index(drop=True)
    expected = fit_rows("quadratic", x, Y).to_pandas()
    assert list(result["curve"]) == list(range(700))
    for column in ["a", "b", "c", "a_stderr", "rmse", "chi2"]:
        np.testing.assert_allclose(result[column], expected[column], rtol=1e-10, equal_nan=True, err_msg=column)
    assert list(result["status"]) == list(expected["status"]) and result["status"][5] == "too_few_points"
    with pytest.raises(gradfit.DataError, match="1-D array of length 20"):
        gradfit.dask.fit_many(da.from_array(Y), "quadratic", x=x[:5])


def test_an_xarray_cube_on_the_cluster_equals_fit_many_in_one_process(cluster):
    """A Dask-backed xarray DataArray (pixels x wavelengths): a lazy Dataset over the pixels, fitted by the workers."""
    import xarray as xr

    rng = np.random.default_rng(5)
    wavelength = np.linspace(-1, 1, 20)
    values = rng.uniform(1, 3, (12, 10, 1)) * np.exp(-((wavelength - rng.uniform(-0.3, 0.3, (12, 10, 1))) ** 2) / 0.2)
    values = values + rng.normal(0, 0.05, values.shape)
    data = xr.DataArray(values, dims=("y", "x", "wavelength"), coords={"wavelength": wavelength}).chunk({"y": 5})
    out = gradfit.dask.fit_many(data, "gaussian")
    assert out["center"].chunks == ((5, 5, 2), (10,))  # lazy, one task per block of pixels
    computed = out.compute()  # on the cluster: the fixture's client is the default
    flat = gradfit.fit_many("gaussian", wavelength, values.reshape(-1, 20))
    np.testing.assert_allclose(computed["center"].values.ravel(), flat.params[:, 1], rtol=1e-10)
    assert list(computed["status"].values.ravel()) == list(flat.status)


@pytest.fixture(scope="module")
def one_big_file(tmp_path_factory):
    rng = np.random.default_rng(12)
    n = 90_000
    x = rng.uniform(-2, 3, n)
    y = 0.8 * x**2 - 1.5 * x + 2 + rng.normal(0, 0.2, n)
    folder = write_parts(tmp_path_factory.mktemp("dask") / "big", pd.DataFrame({"t": x, "v": y}), 3)
    return folder, x, y


@pytest.mark.parametrize("where", ["workers", "scheduler"])
def test_gradfit_fit_runs_one_huge_fit_on_a_cluster(one_big_file, cluster, tmp_path, capsys, where):
    """`gradfit fit DATA --workers N` / `--scheduler ADDRESS`: the one-process answer, computed where the data are."""
    import json

    import gradfit

    folder, x, y = one_big_file
    out = tmp_path / "fit.json"
    how = ["--workers", "2"] if where == "workers" else ["--scheduler", cluster[0].scheduler_address]
    assert (
        main(
            [
                "fit",
                str(folder),
                "--x",
                "t",
                "--y",
                "v",
                "--method",
                "lm",
                "--json",
                str(out),
                "--quiet",
                "--plot",
                str(tmp_path / "plots"),
                *how,
            ]
        )
        == 0
    )
    assert (tmp_path / "plots" / "fit.png").exists() and (tmp_path / "plots" / "landscape.png").exists()
    got = json.loads(out.read_text())
    alone = gradfit.fit("quadratic", x, y, method="lm")
    assert "summed by the cluster's workers" in got["message"]
    for name, value in alone.params.items():
        assert got["params"][name] == pytest.approx(value, rel=1e-10)
        assert got["stderr"][name] == pytest.approx(alone.stderr[name], rel=1e-8)
    assert "UserWarning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "not both"),
        (["--scheduler", "tcp://127.0.0.1:9"], "Cannot reach the Dask scheduler"),
        (["--workers", "2", "--batch-size", "100"], "--batch-size and --epochs stream one file"),
        (["--workers", "2", "--x", "nope"], "Unknown x column 'nope'"),
    ],
)
def test_a_cluster_fit_refuses_in_one_line(one_big_file, tmp_path, capsys, extra, match):
    folder, _, _ = one_big_file
    _refused(["fit", str(folder), "--json", str(tmp_path / "o.json"), *extra], tmp_path / "o.json", capsys, match)


def test_a_csv_file_is_not_fitted_on_a_cluster(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("t,v\n0,1\n1,2\n2,5\n3,10\n")
    assert main(["fit", str(csv), "--workers", "2"]) == 2
    assert "is not Parquet data" in capsys.readouterr().err


def test_a_cluster_fit_leaves_out_bad_rows_and_honours_bounds(cluster, tmp_path, capsys):
    """nan_policy='omit' drops NaN rows on the workers; bounds and fixed values as in memory; the CLI passes both."""
    import json

    import gradfit

    rng = np.random.default_rng(13)
    n = 60_000
    x = rng.uniform(-2, 3, n)
    y = 0.8 * x**2 - 1.5 * x + 2 + rng.normal(0, 0.2, n)
    y[[10, 20_000, 59_999]] = np.nan
    frame = pd.DataFrame({"t": x, "v": y})
    lazy = dd.from_pandas(frame, npartitions=4)
    with pytest.raises(gradfit.errors.DataError, match="nan_policy='omit'"):
        gradfit.dask.fit(lazy, "quadratic", x="t", y="v")
    keep = np.isfinite(y)
    options = dict(bounds={"c": (None, 1.9)}, fixed={"a": 0.8})
    on_cluster = gradfit.dask.fit(lazy, "quadratic", x="t", y="v", nan_policy="omit", method="lm", **options)
    alone = gradfit.fit("quadratic", x[keep], y[keep], method="lm", **options)
    assert on_cluster.n_dropped == 3 and on_cluster.n_points == n - 3
    assert on_cluster.at_bound == alone.at_bound == {"c": "upper"}
    for name, value in alone.params.items():
        assert on_cluster.params[name] == pytest.approx(value, rel=1e-9), name
        assert on_cluster.stderr[name] == pytest.approx(alone.stderr[name], rel=1e-6, abs=1e-15), name
    folder = write_parts(tmp_path / "nan", frame, 2)
    out = tmp_path / "fit.json"
    assert (
        main(
            [
                "fit",
                str(folder),
                "--x",
                "t",
                "--y",
                "v",
                "--method",
                "lm",
                "--nan-policy",
                "omit",
                "--bound",
                "c<1.9",
                "--fix",
                "a=0.8",
                "--scheduler",
                cluster[0].scheduler_address,
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert got["params"]["c"] == pytest.approx(alone.params["c"], rel=1e-9)


def test_integer_curve_keys_stay_integers_in_one_order_on_every_path(tmp_path, capfd):
    """fit-many keeps the user's key type and values (was: strings in one process, int64 on a cluster), sorted
    as the keys sort (2 before 10), with the same rows in the same order on both paths; and a cluster run
    prints no library warning, even with Dask's dashboard port taken."""
    import socket

    frame = peaks(12, seed=5)
    frame["cell"] = frame["cell"].str[1:].astype("int64") * 5  # 0, 5, 10, ..., 55: "10" < "5" as text
    data = tmp_path / "ints.parquet"
    frame.to_parquet(data, index=False)
    outs = {}
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        except OSError:
            pass  # taken already (another cluster): the same situation
        for name, extra in (("one", []), ("cluster", ["--workers", "2"])):
            outs[name] = tmp_path / f"{name}.parquet"
            capfd.readouterr()
            assert (
                main(
                    [
                        "fit-many",
                        str(data),
                        "--group",
                        "cell",
                        "--x",
                        "t",
                        "--y",
                        "v",
                        "--model",
                        "gaussian",
                        "--out",
                        str(outs[name]),
                        "--quiet",
                        *extra,
                    ]
                )
                == 0
            )
            assert capfd.readouterr().err == ""
    one, on_cluster = pd.read_parquet(outs["one"]), pd.read_parquet(outs["cluster"])
    assert one["cell"].dtype == np.int64 and on_cluster["cell"].dtype == np.int64
    assert list(one["cell"]) == sorted(set(frame["cell"])) == list(on_cluster["cell"])
    pd.testing.assert_frame_equal(one, on_cluster, rtol=1e-10)


def test_a_dashboard_is_served_only_when_asked(tmp_path, capsys):
    import importlib.util

    data = tmp_path / "p.parquet"
    peaks(3).to_parquet(data, index=False)
    code = main(
        [
            "fit-many",
            str(data),
            "--group",
            "cell",
            "--x",
            "t",
            "--y",
            "v",
            "--model",
            "gaussian",
            "--out",
            str(tmp_path / "o.parquet"),
            "--workers",
            "1",
            "--dashboard",
        ]
    )
    err = capsys.readouterr().err
    if importlib.util.find_spec("bokeh") is None:  # (bokeh, which draws it, is not among gradfit's dependencies)
        assert code == 2 and "--dashboard needs bokeh" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o.parquet").exists()
    else:
        assert code == 0 and "Dask dashboard: http://127.0.0.1:" in err


def test_bounds_and_fixed_parameters_on_the_cluster_equal_fit_many_in_one_process(cluster):
    import dask.array as da

    from gradfit.batch import fit_many as fit_rows

    rng = np.random.default_rng(6)
    x = np.linspace(0, 4, 30)
    Y = rng.uniform(1, 3, (300, 1)) * np.exp(-rng.uniform(0.5, 1.5, (300, 1)) * x) + rng.normal(0, 0.02, (300, 30))
    options = dict(p0=[2.0, 1.0, 0.0], bounds={"rate": (0.8, 1.2)}, fixed={"offset": 0.0})
    result = gradfit.dask.fit_many(da.from_array(Y, chunks=(100, 30)), "exp_decay", x=x, **options).compute()
    expected = fit_rows("exp_decay", x, Y, **options).to_pandas()
    for column in ["amplitude", "rate", "offset", "rate_stderr", "offset_stderr", "chi2"]:
        np.testing.assert_allclose(result[column], expected[column], rtol=1e-10, err_msg=column)
    assert result["rate"].between(0.8, 1.2).all() and (result["offset"] == 0).all()
    with pytest.raises(gradfit.ModelError, match="`fixed` names unknown parameter 'c'"):  # before any block runs
        gradfit.dask.fit_many(da.from_array(Y), "exp_decay", x=x, fixed={"c": 0.0})
    tied = dict(p0=[2.0, 1.0, 0.0], tie={"offset": "0.01*rate"})
    on_cluster = gradfit.dask.fit_many(da.from_array(Y, chunks=(100, 30)), "exp_decay", x=x, **tied).compute()
    in_process = fit_rows("exp_decay", x, Y, **tied).to_pandas()
    for column in ["amplitude", "rate", "offset", "offset_stderr"]:
        np.testing.assert_allclose(on_cluster[column], in_process[column], rtol=1e-10, err_msg=column)
    with pytest.raises(gradfit.ModelError, match="refers to 'k'"):
        gradfit.dask.fit_many(da.from_array(Y), "exp_decay", x=x, tie={"offset": "k"})


@pytest.mark.parametrize("loss", ["linear", "cauchy"])
def test_ties_and_a_robust_loss_on_the_cluster_equal_one_process(cluster, loss):
    """A tie and a robust loss in one huge fit on the cluster: each partition's rows reweighted and folded as
    StreamProblem folds them, the covariance from the rows least_squares rescales; equal to gradfit.fit."""
    import gradfit

    rng = np.random.default_rng(12)
    n = 60_000
    x = rng.uniform(0, 5, n)
    y = 3.0 * np.exp(-0.7 * x) + 0.5 + rng.normal(0, 0.05, n)
    outliers = rng.choice(n, n // 100, replace=False)
    y[outliers] += rng.uniform(-3, 3, len(outliers))
    frame = dd.from_pandas(pd.DataFrame({"x": x, "y": y}), npartitions=4)
    options = dict(p0={"amplitude": 1.0, "rate": 1.0}, tie={"offset": "amplitude / 6"}, loss=loss, f_scale=0.1)
    on_cluster = gradfit.dask.fit(frame, "exp_decay", x="x", y="y", **options)
    alone = gradfit.fit("exp_decay", x, y, **options)
    assert "summed by the cluster's workers" in on_cluster.message and on_cluster.converged
    for name in alone.params:
        assert on_cluster.params[name] == pytest.approx(alone.params[name], rel=1e-8)
        assert on_cluster.stderr[name] == pytest.approx(alone.stderr[name], rel=1e-6)
    assert on_cluster.chi2 == pytest.approx(alone.chi2, rel=1e-8)
    assert on_cluster.rmse == pytest.approx(alone.rmse, rel=1e-8)
    assert on_cluster.tied == {"offset": "amplitude / 6"} and on_cluster.loss == loss

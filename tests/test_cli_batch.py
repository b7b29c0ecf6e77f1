"""`gradfit fit-many`: long format in, one row per curve out."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradfit.cli import main


@pytest.fixture
def long_parquet(tmp_path):
    rng = np.random.default_rng(0)
    groups, xs, ys, truths = [], [], [], {}
    for k in range(30):
        n = 15 if k % 4 else 8  # ragged: some curves are shorter
        x = np.arange(n, dtype=float)
        a, b, c = rng.uniform(0.5, 1.5), rng.uniform(-6, -4), rng.uniform(8, 12)
        order = rng.permutation(n)  # rows need not be sorted
        groups += [f"cell{k:02d}"] * n
        xs += list(x[order])
        ys += list((a * x**2 + b * x + c + 0.1 * rng.normal(size=n))[order])
        truths[f"cell{k:02d}"] = (x, a * x**2 + b * x + c)
    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"cell": groups, "t": xs, "v": ys}), path)
    return path, pa.table({"cell": groups, "t": xs, "v": ys})


def test_fit_many_writes_one_row_per_curve(capsys, tmp_path, long_parquet):
    path, table = long_parquet
    out = tmp_path / "res.parquet"
    code = main(
        ["fit-many", str(path), "--group", "cell", "--x", "t", "--y", "v", "--model", "quadratic", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "Fitted 30 curves of quadratic by linear: 30 converged" in printed
    result = pq.read_table(out).to_pandas().set_index("cell")
    assert len(result) == 30 and result["converged"].all()
    frame = table.to_pandas()
    for cell in ("cell00", "cell01", "cell05"):
        rows = frame[frame.cell == cell]
        expected = np.polyfit(rows.t, rows.v, 2)
        np.testing.assert_allclose(result.loc[cell, ["a", "b", "c"]].to_numpy(float), expected, rtol=1e-8)
        assert result.loc[cell, "n_points"] == len(rows)


def test_fit_many_errors(capsys, tmp_path, long_parquet):
    path, _ = long_parquet
    code = main(["fit-many", str(path), "--group", "nope", "--out", str(tmp_path / "r.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown group column 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.parquet").exists()
    code = main(["fit-many", str(path), "--group", "cell", "--method", "bfgs", "--out", str(tmp_path / "r.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown method 'bfgs' for fit_many" in err
    code = main(["fit-many", str(path), "--group", "cell", "--backend", "numba", "--out", str(tmp_path / "r.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown backend 'numba' for fit_many. Choose one of: auto, compiled, torch." in err
    code = main(
        ["fit-many", str(path), "--group", "cell", "--backend", "compiled", "--out", str(tmp_path / "r.parquet")]
    )
    err = capsys.readouterr().err  # a polynomial's 'auto' is the exact linear solve, which is not LM
    assert code == 2 and "backend='compiled' cannot run this fit: it runs only method 'lm'" in err
    assert not (tmp_path / "r.parquet").exists()


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_fit_many_by_lm_on_either_backend(capsys, tmp_path, long_parquet, backend):
    path, table = long_parquet
    out = tmp_path / "res.parquet"
    code = main(
        [
            "fit-many",
            str(path),
            "--group",
            "cell",
            "--x",
            "t",
            "--y",
            "v",
            "--model",
            "a*t**2 + b*t + c",
            "--method",
            "lm",
            "--backend",
            backend,
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "30 converged" in capsys.readouterr().out
    result = pq.read_table(out).to_pandas().set_index("cell")
    frame = table.to_pandas()
    for cell in ("cell00", "cell03", "cell07"):
        rows = frame[frame.cell == cell]
        np.testing.assert_allclose(
            result.loc[cell, ["a", "b", "c"]].to_numpy(float), np.polyfit(rows.t, rows.v, 2), rtol=1e-8
        )


def test_fit_many_holds_bounds_and_fixed_parameters_as_the_library_does(capsys, tmp_path, long_parquet):
    from gradfit.batch import fit_long

    path, table = long_parquet
    out = tmp_path / "res.parquet"
    common = ["fit-many", str(path), "--group", "cell", "--x", "t", "--y", "v", "--model", "a*t**2 + b*t + c"]
    code = main([*common, "--fix", "c=10", "--bound=-5.5<b<-4.5", "--out", str(out)])
    assert code == 0 and "30 converged" in capsys.readouterr().out
    result = pq.read_table(out).to_pandas().set_index("cell")
    frame = table.to_pandas()
    names, want = fit_long(
        "a*t**2 + b*t + c",
        frame.cell.to_numpy(),
        frame.t.to_numpy(),
        frame.v.to_numpy(),
        variables="t",
        fixed={"c": 10.0},
        bounds={"b": (-5.5, -4.5)},
    )
    np.testing.assert_allclose(result.loc[list(names), ["a", "b", "c"]].to_numpy(float), want.params, rtol=1e-12)
    assert (result["c"] == 10).all() and (result["c_stderr"] == 0).all() and result["b"].between(-5.5, -4.5).all()
    tied_out = tmp_path / "tied.parquet"
    code = main([*common, "--tie", "c=-2*b", "--out", str(tied_out)])
    assert code == 0, capsys.readouterr().err
    tied = pq.read_table(tied_out).to_pandas().set_index("cell")
    np.testing.assert_allclose(tied["c"], -2 * tied["b"], rtol=1e-14)
    assert (tied["c_stderr"] > 0).all()
    code = main([*common, "--fix", "d=1", "--out", str(tmp_path / "bad.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "`fixed` names unknown parameter 'd'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.parquet").exists()

"""`gradfit fit` in-process: reports, files, exit statuses, and one-line errors that write nothing."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_file
from conftest import run_cli as run

import gradfit


def test_fit_prints_the_report_and_writes_json_and_history(capsys, tmp_path, seed_csv, golden):
    code, out, err = run(capsys, "fit", seed_csv, "--json", tmp_path / "r.json", "--history", tmp_path / "h.csv")
    assert code == 0 and err == ""
    assert "[[Variables]]" in out and "a:  0.9014408245" in out
    result = json.loads((tmp_path / "r.json").read_text())
    for key in ("params", "stderr", "covariance", "rmse", "r2", "n_steps", "converged", "message", "method"):
        assert key in result
    np.testing.assert_allclose(list(result["params"].values()), golden["least_squares_params"], rtol=1e-9)
    assert result["method"] == "linear" and result["converged"] is True  # auto's choice for a polynomial
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0] == "step,loss,rmse,grad_norm,learning_rate,a,b,c" and len(lines) == result["n_steps"] + 1


def test_fit_options_reach_the_solver(capsys, tmp_path, seed_csv):
    code, out, _ = run(
        capsys,
        "fit",
        seed_csv,
        "--model",
        "poly2",
        "--method",
        "gd",
        "--lr",
        "0.5",
        "--max-steps",
        "3000",
        "--tol",
        "1e-14",
        "--p0",
        "1,2,3",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["method"] == "gd" and list(result["params"]) == ["c2", "c1", "c0"]


def test_p0_by_name_and_columns_by_name(capsys, tmp_path):
    path = tmp_path / "d.csv"
    x = np.linspace(0, 4, 20)
    path.write_text("noise,t,v\n" + "".join(f"0,{a},{3 * a - 1}\n" for a in x))
    code, out, _ = run(
        capsys,
        "fit",
        path,
        "--x",
        "t",
        "--y",
        "v",
        "--model",
        "linear",
        "--p0",
        "slope=1,intercept=0",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0
    params = json.loads((tmp_path / "r.json").read_text())["params"]
    assert params == pytest.approx({"slope": 3.0, "intercept": -1.0}, abs=1e-10)


def test_sigma_column_and_parquet(capsys, tmp_path):
    x = np.linspace(0, 1, 30)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": x, "y": 2 * x + 1 + 0.01 * np.cos(30 * x), "s": np.full(30, 0.01)}), path)
    code, out, err = run(
        capsys, "fit", path, "--model", "linear", "--sigma", "s", "--absolute-sigma", "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    reference = gradfit.fit(
        "linear", x, 2 * x + 1 + 0.01 * np.cos(30 * x), sigma=np.full(30, 0.01), absolute_sigma=True
    )
    assert result["stderr"] == pytest.approx(reference.stderr, rel=1e-12)


def test_quiet_prints_nothing(capsys, seed_csv):
    code, out, err = run(capsys, "fit", seed_csv, "--quiet")
    assert code == 0 and out == "" and err == ""


def test_not_converging_warns_and_exits_3_with_results_written(capsys, tmp_path, seed_csv):
    code, out, err = run(capsys, "fit", seed_csv, "--method", "gd", "--max-steps", "3", "--json", tmp_path / "r.json")
    assert code == 3
    assert err.startswith("gradfit fit: warning: The fit did not converge in 3 steps")
    assert json.loads((tmp_path / "r.json").read_text())["converged"] is False


def test_nan_policy_omit(capsys, tmp_path, seed_csv):
    text = seed_csv.read_text().splitlines()
    text[3] = "2.0,nan"
    seed_csv.write_text("\n".join(text) + "\n")
    code, _, err = run(capsys, "fit", seed_csv)
    assert code == 2 and "`y` has NaN or inf at line 4" in err
    code, out, _ = run(capsys, "fit", seed_csv, "--nan-policy", "omit")
    assert code == 0 and "1 dropped" in out


def test_fit_help(capsys):
    code, out, _ = run(capsys, "fit", "--help")
    assert code == 0 and "--learning-rate" in out
    for name in gradfit.METHODS:  # the registry feeds the help
        assert f"{name}:" in out


def _one_line_error(code, out, err, *fragments):
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda p: p / "missing.csv", "does not exist"),
        (lambda p: p, "is a folder"),
        (lambda p: make_file(p, "bin.csv", b"\x00\x01\x02"), "binary file"),
        (lambda p: make_file(p, "empty.csv", b""), "is empty"),
        (lambda p: make_file(p, "header.csv", b"x,y\n"), "header but no rows"),
        (lambda p: make_file(p, "cell.csv", b"x,y\n1,2\n2,two\n3,4\n"), "not a number at line 3: 'two'"),
        (lambda p: make_file(p, "inf.csv", b"x,y\n1,2\n2,inf\n3,4\n"), "NaN or inf at line 3"),
        (lambda p: make_file(p, "short.csv", b"x,y\n1,2\n2,3\n"), "2 points are too few to fit 3 parameters"),
    ],
)
def test_bad_data_files(capsys, tmp_path, make, fragment):
    json_out = tmp_path / "r.json"
    code, out, err = run(capsys, "fit", make(tmp_path), "--json", json_out)
    _one_line_error(code, out, err, "gradfit fit: error:", fragment)
    assert not json_out.exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--x", "nope"], "Unknown x column 'nope'"),
        (["--method", "adamm"], "Unknown optimizer 'adamm'. Choose one of: adam, auto, gd"),
        (["--method", "gd", "--learning-rate", "0"], "argument --learning-rate/--lr: must be a positive finite"),
        (["--method", "gd", "--lr=-1"], "argument --learning-rate/--lr: must be a positive finite"),
        (["--method", "gd", "--lr", "inf"], "argument --learning-rate/--lr: must be a positive finite"),
        (["--lr", "0.1"], "Method 'auto' takes no learning rate"),
        (["--method", "lm", "--lr", "0.1"], "Method 'lm' takes no learning rate"),
        (["--max-steps", "0"], "argument --max-steps: must be a whole number >= 1"),
        (["--max-steps=-2"], "argument --max-steps: must be a whole number >= 1"),
        (["--tol=-1"], "argument --tol: must be a finite number >= 0"),
        (["--p0", "a=1,d=2,c=3"], "p0 names unknown parameter 'd'"),
        (["--p0", "1,2"], "p0 has 2 values but the model has 3 parameters"),
        (["--p0", "1,nan,3"], "p0 must be finite, but b is nan"),
        (["--p0", "a=1,2,3"], "give all values by name"),
        (["--p0", "1,x,3"], "values must be numbers"),
        (["--model", "cubic"], "Unknown model 'cubic'"),
        (["--nan-policy", "drop"], "argument --nan-policy: invalid choice"),
    ],
)
def test_bad_options(capsys, tmp_path, seed_csv, args, fragment):
    json_out = tmp_path / "r.json"
    code, out, err = run(capsys, "fit", seed_csv, "--json", json_out, *args)
    _one_line_error(code, out, err, fragment)
    assert not json_out.exists()


def test_output_paths_are_checked_before_fitting(capsys, tmp_path, seed_csv):
    code, out, err = run(capsys, "fit", seed_csv, "--json", tmp_path)
    _one_line_error(code, out, err, "--json", "is a folder")
    code, out, err = run(capsys, "fit", seed_csv, "--history", tmp_path / "no" / "h.csv")
    _one_line_error(code, out, err, "--history", "does not exist")


def test_divergence_is_one_line_and_writes_nothing(capsys, tmp_path, seed_csv):
    json_out = tmp_path / "r.json"
    code, out, err = run(capsys, "fit", seed_csv, "--method", "gd", "--no-scale", "--lr", "1", "--json", json_out)
    _one_line_error(code, out, err, "diverged", "Try a smaller learning rate")
    assert not json_out.exists()


def test_existing_output_is_replaced_whole(capsys, tmp_path, seed_csv):
    json_out = tmp_path / "r.json"
    json_out.write_text("old")
    code, _, _ = run(capsys, "fit", seed_csv, "--json", json_out, "--quiet")
    assert code == 0 and json.loads(json_out.read_text())["converged"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "seed.csv"]  # no temporary files left


@pytest.mark.parametrize("tty,quiet,shown", [(True, False, True), (True, True, False), (False, False, False)])
def test_progress_bar_only_at_a_terminal_and_not_when_quiet(capsys, monkeypatch, seed_csv, tty, quiet, shown):
    import sys

    from gradfit.cli import fit as cli

    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0)  # show it at once, however short the fit
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    code, _, err = run(capsys, "fit", seed_csv, "--method", "gd", *(["--quiet"] if quiet else []))
    assert code == 0
    assert ("fitting" in err) == shown


# --- models: expressions, the library, bounds and fixed values on the command line ------------


@pytest.fixture
def sine_csv(tmp_path):
    t = np.linspace(0, 10, 80)
    path = tmp_path / "s.csv"
    path.write_text("t,v\n" + "".join(f"{a},{2 * np.sin(1.5 * a + 0.3) + 0.01 * np.cos(9 * a)}\n" for a in t))
    return path


def test_an_expression_in_a_named_variable(capsys, tmp_path, sine_csv):
    code, out, err = run(
        capsys,
        "fit",
        sine_csv,
        "--x",
        "t",
        "--y",
        "v",
        "--model",
        "A*sin(w*t+p)",
        "--p0",
        "A=1.8,w=1.45,p=0.2",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    params = json.loads((tmp_path / "r.json").read_text())["params"]
    assert params == pytest.approx({"A": 2.0, "w": 1.5, "p": 0.3}, rel=1e-2)


def test_params_orders_an_expressions_parameters(capsys, tmp_path, sine_csv):
    code, _, err = run(
        capsys,
        "fit",
        sine_csv,
        "--x",
        "t",
        "--y",
        "v",
        "--model",
        "A*sin(w*t+p)",
        "--params",
        "p,w,A",
        "--p0",
        "0.2,1.45,1.8",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    assert list(json.loads((tmp_path / "r.json").read_text())["params"]) == ["p", "w", "A"]


def test_builtin_without_p0_with_bound_and_fix(capsys, tmp_path, sine_csv):
    code, out, err = run(
        capsys,
        "fit",
        sine_csv,
        "--model",
        "sine",
        "--bound",
        "amplitude>0",
        "--bound",
        "0<frequency<1",
        "--fix",
        "phase=0.3",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["fixed"] == {"phase": 0.3} and result["stderr"]["phase"] == 0.0
    assert result["params"]["frequency"] == pytest.approx(1.5 / (2 * np.pi), rel=1e-3)
    assert "(fixed)" in out and "(bounds 0, 1)" in out


def test_two_variables(capsys, tmp_path):
    xx, yy = np.meshgrid(np.linspace(-3, 3, 15), np.linspace(-2, 4, 15))
    z = 5 * np.exp(-((xx - 0.3) ** 2) / (2 * 0.8**2) - ((yy - 1) ** 2) / (2 * 1.2**2)) + 0.5
    path = tmp_path / "surface.csv"
    path.write_text("x,y,z\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(xx.ravel(), yy.ravel(), z.ravel())))
    code, _, err = run(
        capsys, "fit", path, "--x", "x,y", "--y", "z", "--model", "gaussian2d", "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    params = json.loads((tmp_path / "r.json").read_text())["params"]
    assert params == pytest.approx(
        {"amplitude": 5, "x0": 0.3, "y0": 1, "sigma_x": 0.8, "sigma_y": 1.2, "offset": 0.5}, rel=1e-6
    )


def test_composite_from_the_command_line(capsys, tmp_path):
    x = np.linspace(-5, 5, 100)
    y = 3 * np.exp(-((x - 0.5) ** 2) / (2 * 0.8**2)) + 0.2 * x + 1
    path = tmp_path / "peak.csv"
    path.write_text("".join(f"{a},{b}\n" for a, b in zip(x, y)))
    code, out, err = run(capsys, "fit", path, "--model", "gaussian + linear", "--json", tmp_path / "r.json")
    assert code == 0, err
    params = json.loads((tmp_path / "r.json").read_text())["params"]
    assert params == pytest.approx(
        {"g_amplitude": 3, "g_center": 0.5, "g_sigma": 0.8, "l_slope": 0.2, "l_intercept": 1}, rel=1e-6
    )


def test_models_lists_the_library(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name in gradfit.LIBRARY:
        assert name in out
    assert "amplitude*exp(-(x - center)**2/(2*sigma**2))" in out and "(variables: x, y)" in out


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "a*exp(x"], "not valid syntax at column 6"),
        (["--model", "__import__('os').system('id')"], "cannot contain a call of anything but a known function"),
        (["--model", "a^2*x"], "write a**2 instead of a^2"),
        (["--model", "gausian"], "Unknown model 'gausian'"),
        (["--bound", "b=>0"], "argument --bound: write a bound as b>0"),
        (["--bound", "d>0"], "`bounds` names unknown parameter 'd'"),
        (["--bound", "1<b<0"], "lower bound 1 must be below the upper bound 0"),
        (["--fix", "c"], "argument --fix: write NAME=VALUE"),
        (["--fix", "c=inf"], "argument --fix: write NAME=VALUE with a finite number"),
        (["--fix", "a=1,b=1,c=1"], "Every parameter is fixed"),
        (["--params", "a,b"], "`params` orders the parameters of an expression"),
        (["--x", "x,y"], "Model quadratic takes 1 variable (x), but x has 2 columns"),
    ],
)
def test_model_option_errors(capsys, tmp_path, seed_csv, args, fragment):
    json_out = tmp_path / "r.json"
    code, out, err = run(capsys, "fit", seed_csv, "--json", json_out, *args)
    _one_line_error(code, out, err, fragment)
    assert not json_out.exists()


# --- pictures from the command line -------------------------------------------------------------


def test_plot_animate_and_report(capsys, tmp_path, seed_csv):
    from PIL import Image

    code, out, err = run(
        capsys,
        "fit",
        seed_csv,
        "--method",
        "gd",
        "--plot",
        tmp_path / "plots",
        "--animate",
        tmp_path / "fit.gif",
        "--report",
        tmp_path / "report.html",
        "--quiet",
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "fit.png",
        "landscape.png",
        "loss.png",
        "params.png",
        "steps.png",
    ]
    with Image.open(tmp_path / "fit.gif") as img:
        assert img.n_frames > 10
    text = (tmp_path / "report.html").read_text()
    assert "Watch it learn" in text and str(seed_csv) in text


def test_a_model_of_one_parameter_skips_the_landscape_with_a_note(capsys, tmp_path, seed_csv):
    code, _, err = run(capsys, "fit", seed_csv, "--model", "constant", "--plot", tmp_path / "plots")
    assert code == 0
    assert "note: --plot: skipped landscape.png" in err
    assert "landscape.png" not in {p.name for p in (tmp_path / "plots").iterdir()}


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--animate", "fit.avi"], "an animation is written as .gif or .mp4"),
        (["--plot", "seed.csv"], "--plot 'seed.csv' is an existing file"),
        (["--report", "."], "--report '.' is a folder"),
    ],
)
def test_picture_option_errors(capsys, tmp_path, seed_csv, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, "fit", seed_csv, *args)
    _one_line_error(code, out, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_mp4_without_ffmpeg_is_refused(capsys, tmp_path, seed_csv, monkeypatch):
    from matplotlib.animation import FFMpegWriter

    monkeypatch.setattr(FFMpegWriter, "isAvailable", classmethod(lambda cls: False))
    code, out, err = run(capsys, "fit", seed_csv, "--animate", tmp_path / "fit.mp4")
    _one_line_error(code, out, err, "writing MP4 needs ffmpeg")


def test_an_expression_in_a_column_not_named_as_x_names_the_option(capsys, tmp_path):
    data = make_file(tmp_path, "decay.csv", "t,counts\n0,10\n1,6\n2,4\n3,3\n4,2.5\n5,2.2\n")
    code, out, err = run(capsys, "fit", str(data), "--model", "A*exp(-t/tau)+c")
    _one_line_error(code, out, err, "never uses the variable x", "A, t, tau, c", "give --x t")
    code, out, err = run(capsys, "fit", str(data), "--model", "A*exp(-t/tau)+c", "--x", "t", "--p0", "A=8,tau=1,c=2")
    assert code == 0 and "tau" in out


def test_tied_parameters_on_the_command_line(capsys, tmp_path):
    x = np.linspace(-5, 5, 201)
    y = 3 * np.exp(-((x + 0.8) ** 2) / 0.72) + 2 * np.exp(-((x - 0.7) ** 2) / 0.72)
    y = y + 0.05 * np.random.default_rng(1).normal(size=x.size)
    path = tmp_path / "peaks.csv"
    path.write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y)))
    common = ["fit", path, "--model", "gaussian + gaussian", "--p0", "3,-1,0.5,2,0.5,0.5"]
    code, out, err = run(
        capsys,
        *common,
        "--tie",
        "g2_sigma=g1_sigma",
        "--tie",
        "g2_center = g1_center + 1.5",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    want = gradfit.fit(
        "gaussian + gaussian",
        x,
        y,
        p0=[3, -1, 0.5, 2, 0.5, 0.5],
        tie={"g2_sigma": "g1_sigma", "g2_center": "g1_center + 1.5"},
    )
    assert result["params"] == pytest.approx(want.params, rel=1e-12)
    assert result["tied"] == {"g2_sigma": "g1_sigma", "g2_center": "g1_center + 1.5"}
    assert "== 'g1_center + 1.5'" in out
    for bad, match in [
        ("g2_sigma", "write NAME=EXPRESSION"),
        ("g2_sigma=g9_sigma", "refers to 'g9_sigma', which is not a parameter"),
        ("g2_sigma=__import__('os').system('x')", "The tie of g2_sigma:"),
    ]:
        code, _, err = run(capsys, *common, "--tie", bad)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err


def test_a_robust_loss_on_the_command_line(capsys, tmp_path):
    x = np.linspace(0, 4, 60)
    y = 2.5 * np.exp(-1.3 * x) + 0.3 + 0.02 * np.random.default_rng(0).normal(size=60)
    y[[5, 17, 40]] += [1.5, -1.0, 2.0]
    path = tmp_path / "decay.csv"
    path.write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y)))
    common = ["fit", path, "--model", "exp_decay", "--p0", "2,1,0"]
    code, out, err = run(capsys, *common, "--loss", "soft_l1", "--f-scale", "0.1", "--json", tmp_path / "r.json")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    want = gradfit.fit("exp_decay", x, y, p0=[2, 1, 0], loss="soft_l1", f_scale=0.1)
    assert result["params"] == pytest.approx(want.params, rel=1e-12) and result["loss"] == "soft_l1"
    assert "loss               = soft_l1 (f_scale 0.1)" in out
    for extra, match in [
        (["--loss", "l2"], "Unknown loss 'l2'"),
        (["--loss", "huber", "--f-scale", "-1"], "argument --f-scale: must be a positive finite number"),
    ]:
        code, _, err = run(capsys, *common, *extra)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err


def test_fit_explain_shows_every_gradient_descent_step_as_the_fit_took_it(capsys, seed_csv, golden):
    import re

    code, out, _ = run(
        capsys,
        "fit",
        seed_csv,
        "--model",
        "quadratic",
        "--method",
        "gd",
        "--no-scale",
        "--lr",
        "1e-4",
        "--max-steps",
        "5",
        "--p0=" + ",".join(map(str, golden["init_params"])),  # (= : the first value is negative)
        "--explain",
    )
    assert code in (0, 3)  # (five steps do not converge: the report says so)
    blocks = out.split("step ")[1:6]
    assert [int(b.split()[0]) for b in blocks] == [1, 2, 3, 4, 5]

    def numbers(block, label):
        line = next(line for line in block.splitlines() if line.strip().startswith(label))
        return [float(v) for v in re.findall(r"[abc]=(\S+)", line)]

    for block, following in zip(blocks, blocks[1:]):
        np.testing.assert_allclose(numbers(block, "new"), numbers(following, "parameters"), rtol=1e-5)
    # the article's own steps: after step k, its parameters
    for k, block in enumerate(blocks):
        np.testing.assert_allclose(numbers(block, "new"), golden["params_after_step"][k], rtol=1e-4)
    code, _, err = run(capsys, "fit", seed_csv, "--model", "quadratic", "--method", "lm", "--explain")
    assert code == 2 and "--explain shows plain gradient descent's steps" in err

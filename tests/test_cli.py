import subprocess
import sys

import pytest

from gradfit.cli import main
from conftest import GOLDEN_RTOL, rel_diff


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_prints_the_articles_lines_and_writes_files(capsys, tmp_path, golden):
    out_dir = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--out", str(out_dir))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "tensor([-0.8802,  1.1185, -0.5173], requires_grad=True)"  # print(params)
    rmse_lines = lines[1:21]
    # printed exactly as the article's print("RMSE:", loss.item() ** 0.5)
    assert rmse_lines == [f"RMSE: {v}" for v in golden["rmse"]]
    assert all(rel_diff(float(line.split()[1]), v) <= GOLDEN_RTOL for line, v in zip(rmse_lines, golden["rmse"]))
    assert "Least-squares optimum: a=0.901441  b=-5.45968  c=10.6405  RMSE 0.5774" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["data.png", "history.csv", "run1.png", "run2.png"]


def test_demo_options(capsys, tmp_path):
    code, out, _ = run(
        capsys, "demo", "--out", str(tmp_path), "--rounds", "1", "--steps-per-round", "4", "--lr", "2e-5", "--seed", "3"
    )
    assert code == 0
    assert sum(line.startswith("RMSE: ") for line in out.splitlines()) == 4
    assert (tmp_path / "run1.png").exists() and not (tmp_path / "run2.png").exists()
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("argv", [[], ["demo"], ["fit"], ["fit-many"], ["models"]])
def test_help_works_for_every_command(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0 and out.startswith("usage: gradfit")


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("gradfit 0.")


def test_no_command_shows_help_and_fails(capsys):
    code, out, _ = run(
        capsys,
    )
    assert code == 2 and "demo" in out


def _assert_one_line_error(code, out, err, *fragments):
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    "option,value,fragment",
    [
        ("--steps-per-round", "0", "argument --steps-per-round: must be a whole number >= 1, got '0'"),
        ("--steps-per-round", "-3", "argument --steps-per-round: must be a whole number >= 1, got '-3'"),
        ("--steps-per-round", "ten", "argument --steps-per-round: must be a whole number >= 1"),
        ("--rounds", "0", "argument --rounds: must be a whole number >= 1"),
        ("--learning-rate", "0", "argument --learning-rate/--lr: must be a positive finite number"),
        ("--learning-rate=-1e-4", None, "argument --learning-rate/--lr: must be a positive finite number"),
        ("--learning-rate", "nan", "argument --learning-rate/--lr: must be a positive finite number"),
        ("--learning-rate", "inf", "argument --learning-rate/--lr: must be a positive finite number"),
        ("--lr", "fast", "argument --learning-rate/--lr: must be a positive finite number"),
        ("--seed", "-1", "argument --seed: must be a whole number"),
    ],
)
def test_bad_numbers_are_one_line_errors(capsys, tmp_path, option, value, fragment):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "demo", "--out", str(out_dir), option, *([value] if value else []))
    _assert_one_line_error(code, out, err, fragment)
    assert not out_dir.exists()


def test_out_naming_a_file_is_refused(capsys, tmp_path):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"keep")
    code, out, err = run(capsys, "demo", "--out", str(taken))
    _assert_one_line_error(code, out, err, "--out", "is an existing file")
    assert taken.read_bytes() == b"keep" and list(tmp_path.iterdir()) == [taken]


def test_out_under_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "file" / "sub"))
    _assert_one_line_error(code, out, err, "--out", "is a file, not a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_unwritable_out_is_refused(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--out", "/proc/gradfit-demo")
    _assert_one_line_error(code, out, err, "/proc/gradfit-demo")


def test_divergence_is_a_one_line_error_and_draws_the_steps_before_it(capsys, tmp_path):
    from PIL import Image

    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "demo", "--out", str(out_dir), "--learning-rate", "1e-3")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "diverged" in err and "Try a smaller learning rate" in err and f"drawn in {out_dir}/" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["data.png", "history.csv", "run1.png", "run2.png"]
    rows = (out_dir / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 14  # the steps up to the last finite one (it diverged at step 15)
    with Image.open(out_dir / "run2.png") as img:
        assert img.size[0] < 1500  # four panels, steps 11 to 14
    code, _, err = run(capsys, "demo", "--out", str(tmp_path / "one"), "--learning-rate", "1e3")
    assert code == 2 and sorted(p.name for p in (tmp_path / "one").iterdir())[0] == "data.png"


def test_traceback_flag_shows_the_stack(tmp_path):
    from gradfit.errors import OptionError

    with pytest.raises(OptionError):
        main(["--traceback", "demo", "--out", "/proc/gradfit-demo"])


def test_python_dash_m_runs_the_demo(tmp_path, golden):
    done = subprocess.run(
        [sys.executable, "-m", "gradfit", "demo", "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"RMSE: {golden['rmse'][-1]}" in done.stdout.splitlines()


def test_console_script_is_installed():
    gradfit_exe = subprocess.run(
        [sys.executable, "-c", "import shutil,sys,os;print(os.path.join(os.path.dirname(sys.executable),'gradfit'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    done = subprocess.run([gradfit_exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "demo" in done.stdout


def test_demo_animate_and_compare_learning_rates(capsys, tmp_path):
    from PIL import Image

    code, out, err = run(
        capsys,
        "demo",
        "--out",
        str(tmp_path),
        "--animate",
        str(tmp_path / "demo.gif"),
        "--compare-lr",
        "1e-5,1e-4,1e-3",
    )
    assert code == 0, err
    assert "learning rate 0.001: diverged at step 15" in out
    assert "learning rate 1e-05: RMSE" in out
    with Image.open(tmp_path / "compare-lr.png") as img:
        assert img.size == (1200, 450)
    with Image.open(tmp_path / "demo.gif") as img:
        assert img.n_frames == 20  # every step of the article's two rounds


def test_compare_lr_refuses_bad_rates(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "d"), "--compare-lr", "1e-4,-1")
    _assert_one_line_error(code, out, err, "argument --compare-lr: must be a positive finite number")
    assert not (tmp_path / "d").exists()


HEAVY = ("torch", "matplotlib", "pyarrow", "numba", "dask", "pandas", "scipy")


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        (["--version"], 0),
        (["fit", "--help"], 0),
        (["fit-many", "--help"], 0),
        (["demo", "--help"], 0),
        (["fit", "data.csv", "--lr", "-1"], 2),
        (["fit", "data.csv", "--method", "adamm"], 2),
        (["fit", "data.csv", "--json", "/nonexistent/out.json"], 2),
        (["demo", "--steps-per-round", "0"], 2),
    ],
)
def test_help_version_and_refused_options_import_nothing_heavy(argv, code):
    """They answer in a blink: torch, matplotlib, pyarrow, numba, dask are imported only where used."""
    script = (
        f"import sys; from gradfit.cli import main; code = main({argv!r}); "
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); print(code, heavy, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == f"{code} []"


def test_import_gradfit_is_light_and_every_public_name_resolves():
    script = (
        "import sys, gradfit; assert 'torch' not in sys.modules, 'torch'; "
        "missing = [n for n in gradfit.__all__ if getattr(gradfit, n, None) is None]; "
        "assert not missing, missing; assert callable(gradfit.demo) and callable(gradfit.fit); "
        "assert gradfit.demo is sys.modules['gradfit.demo'].demo"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


@pytest.mark.parametrize("argv", [["models"], ["--help"], ["fit", "seed.csv"], ["demo", "--out", "demo"]])
def test_a_closed_pipe_ends_quietly(argv, tmp_path, golden):
    """`gradfit models | head`: the reader goes away; no traceback, the status of a process stopped by SIGPIPE
    (or 0 when everything was written before it went)."""
    (tmp_path / "seed.csv").write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(golden["X"], golden["Y"])))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradfit", *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert err == ""

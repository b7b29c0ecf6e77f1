"""What `gradfit fit` writes never destroys what is there: a symbolic link stays a link, a device or a FIFO is
written as the stream it is (or refused when it is no stream), a killed run's temporary files go; and inputs that
are not regular files, or that hide their data, are refused in one line (exit 2)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli as run


def one_line(code, err, *fragments):
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_symbolic_link_is_written_through_and_stays_a_link(capsys, tmp_path, seed_csv):
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    code, _, _ = run(capsys, "fit", seed_csv, "--quiet", "--json", tmp_path / "link.json")
    assert code == 0 and (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["model"] == "quadratic"


def test_a_full_device_is_an_error_and_stays_a_device(capsys, seed_csv):
    code, _, err = run(capsys, "fit", seed_csv, "--quiet", "--json", "/dev/full")
    one_line(code, err, "Cannot write '/dev/full'", "No space left on device")
    assert not os.path.isfile("/dev/full")  # (as root, it was replaced by a regular file)


def test_a_fifo_is_written_as_a_stream(capsys, tmp_path, seed_csv):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    reader = subprocess.Popen(
        [sys.executable, "-c", f"print(open({str(fifo)!r}).read().splitlines()[0])"], stdout=subprocess.PIPE, text=True
    )
    code, _, _ = run(capsys, "fit", seed_csv, "--quiet", "--history", fifo)
    assert code == 0 and reader.communicate(timeout=30)[0].strip().startswith("step,loss,rmse")
    assert fifo.is_fifo()


def test_history_to_stdout(tmp_path, seed_csv):
    done = subprocess.run(
        [sys.executable, "-m", "gradfit", "fit", str(seed_csv), "--quiet", "--history", "/dev/stdout"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("step,loss,rmse"), done.stderr


def test_a_socket_or_a_link_loop_is_refused(capsys, tmp_path, seed_csv):
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock.json"))
        code, _, err = run(capsys, "fit", seed_csv, "--json", tmp_path / "sock.json")
        one_line(code, err, "is a socket, not a file")
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    code, _, err = run(capsys, "fit", seed_csv, "--json", tmp_path / "a.json")
    one_line(code, err, "is a loop of symbolic links")


def test_a_killed_runs_temporary_file_is_removed_by_the_next(capsys, tmp_path, seed_csv):
    stale = tmp_path / ".r.json.gradfit-tmp-999999999-abc.json"  # a pid no process has
    stale.write_text("{")
    live = tmp_path / f".r.json.gradfit-tmp-{os.getpid()}-abc.json"  # a running writer's: left alone
    live.write_text("{")
    code, _, _ = run(capsys, "fit", seed_csv, "--quiet", "--json", tmp_path / "r.json")
    assert code == 0 and not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "r.json", "seed.csv"])


def test_data_that_are_not_regular_files_or_hide_behind_blank_lines(capsys, tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "fit", fifo)  # used to wait for ever for a writer
    one_line(code, err, "is not a regular file (a pipe or a device)")
    (tmp_path / "l1.csv").symlink_to(tmp_path / "l2.csv")
    (tmp_path / "l2.csv").symlink_to(tmp_path / "l1.csv")
    code, _, err = run(capsys, "fit", tmp_path / "l1.csv")  # was 'does not exist'
    one_line(code, err, "is a loop of symbolic links")
    blank = tmp_path / "blank.csv"  # more than the 64 KB sniffed: was 'is empty'
    blank.write_text("\n" * 70_000 + "x,y\n1,2\n2,3\n3,five\n4,7\n")
    code, _, err = run(capsys, "fit", blank)
    one_line(code, err, "not a number at line 70004: 'five'")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model", "a*x + b + c", "--params", "a,a,b"], "a is named twice"),
        (["--p0", "a=1,a=2,b=1,c=0"], "a is given twice"),
        (["--model", "а*x + a"], "not plain ASCII"),  # Cyrillic а beside Latin a: two parameters printed alike
        (["--model", "a*x + " + "1" * 400], "beyond float64's range"),
    ],
)
def test_ambiguous_or_impossible_models_are_refused(capsys, seed_csv, argv, fragment):
    code, _, err = run(capsys, "fit", seed_csv, *argv)
    one_line(code, err, fragment)


def test_duplicate_column_names_are_refused(capsys, tmp_path):
    data = tmp_path / "dup.csv"
    data.write_text("x,x\n1,2\n2,3\n3,5\n4,6\n")
    code, _, err = run(capsys, "fit", data)
    one_line(code, err, "has 2 columns named 'x'")

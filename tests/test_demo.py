import csv

import pytest
from PIL import Image

import gradfit
from gradfit.demo import summarize
from gradfit.errors import OptionError
from conftest import GOLDEN_RTOL, rel_diff


def test_demo_returns_the_articles_history_and_writes_its_files(tmp_path, golden):
    history = gradfit.demo(out_dir=tmp_path)
    assert [rel_diff(a, b) <= GOLDEN_RTOL for a, b in zip(history.rmse, golden["rmse"])] == [True] * 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.png", "history.csv", "run1.png", "run2.png"]
    for name in ("run1.png", "run2.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size == (1500, 300)  # 15x3 inches at 100 dpi
    with Image.open(tmp_path / "data.png") as img:
        assert img.format == "PNG"
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    assert [float(r["rmse"]) for r in rows] == history.rmse
    assert [float(rows[-1][k]) for k in "abc"] == golden["params_after_step"][-1]


def test_demo_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    history = gradfit.demo(out_dir=None)
    assert len(history) == 20 and list(tmp_path.iterdir()) == []


def test_demo_options_change_the_run(tmp_path):
    history = gradfit.demo(out_dir=tmp_path, rounds=3, steps_per_round=25, learning_rate=5e-5, seed=7)
    assert len(history) == 75 and history[0].learning_rate == 5e-5
    assert {p.name for p in tmp_path.iterdir()} == {"data.png", "run1.png", "run2.png", "run3.png", "history.csv"}
    with Image.open(tmp_path / "run3.png") as img:
        assert img.size == (1500, 300)  # long rounds are thinned to 10 panels


def test_demo_reports_progress(tmp_path):
    starts, steps = [], []
    gradfit.demo(out_dir=None, on_start=starts.append, callback=steps.append)
    assert len(starts) == 1 and starts[0].requires_grad and len(steps) == 20


def test_summary_compares_with_the_exact_optimum(golden):
    summary = summarize(gradfit.demo(out_dir=None))
    assert rel_diff(summary.optimum_rmse, golden["least_squares_rmse"]) <= 1e-9
    assert summary.final_params == tuple(golden["params_after_step"][-1])
    assert summary.steps == 20
    assert 8 < summary.final_rmse < golden["rmse"][-1]  # one more step's progress past the last printed RMSE
    assert not summary.diverging
    assert summary.max_stable_learning_rate == pytest.approx(1.166e-4, rel=1e-3)  # the article's 1e-4 is close
    text = "\n".join(summary.lines())
    assert "RMSE 0.5774" in text and "14.6x the optimum's" in text and "0.0027%" in text


def test_summary_says_when_the_learning_rate_is_too_large():
    summary = summarize(gradfit.demo(out_dir=None, learning_rate=1.5e-4))
    assert summary.diverging
    assert "is above 0.000117" in "\n".join(summary.lines())


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    with pytest.raises(OptionError, match="is an existing file"):
        gradfit.demo(out_dir=target)
    assert target.read_text() == "keep me"


def test_failure_while_drawing_leaves_nothing_behind(tmp_path, monkeypatch):
    from gradfit import plots

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_steps", broken)
    out = tmp_path / "new"
    with pytest.raises(OptionError, match="Nothing was written"):
        gradfit.demo(out_dir=out)
    assert not out.exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run1.png").write_bytes(b"previous")
    with pytest.raises(OptionError):
        gradfit.demo(out_dir=tmp_path / "old")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["run1.png"]
    assert (tmp_path / "old" / "run1.png").read_bytes() == b"previous"


def test_the_demos_run_figures_are_the_articles(tmp_path, monkeypatch, golden):
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        saved[path.name] = fig
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    gradfit.demo(out_dir=tmp_path)
    for name in ("run1.png", "run2.png"):
        fig = saved[name]
        assert len(fig.axes) == 10 and tuple(fig.get_size_inches()) == (15, 3)
        for ax in fig.axes:
            data, preds = ax.collections
            assert tuple(data.get_facecolor()[0]) == to_rgba("C0")  # blue data
            assert tuple(preds.get_facecolor()[0]) == to_rgba("red")  # red predictions
            assert ax.get_ylim() == (-75, 120)
            assert data.get_offsets()[:, 1].tolist() == golden["Y"]
    assert [ax.get_title() for ax in saved["run2.png"].axes] == [f"step {s}" for s in range(11, 21)]


def test_explain_shows_each_step_in_numbers_and_keeps_the_articles_lines(capsys, tmp_path, golden):
    """`gradfit demo --explain`: every RMSE line the article printed, each followed by its step in numbers; the
    first two steps' numbers against the closed-form gradient of the quadratic's mean squared error."""
    import re

    import numpy as np
    from conftest import run_cli

    code, out, _ = run_cli(capsys, "demo", "--out", tmp_path / "d", "--explain")
    assert code == 0
    lines = out.splitlines()
    assert [float(line.split()[1]) for line in lines if line.startswith("RMSE:")] == golden["rmse"]  # exactly

    x, y = np.array(golden["X"], dtype=np.float64), np.array(golden["Y"], dtype=np.float64)
    starts = [golden["init_params"], golden["params_after_step"][0]]  # where steps 1 and 2 began (the run's)
    for step, start in zip((1, 2), starts):
        at = lines.index(f"step {step}")
        block = {line.split()[0]: line for line in lines[at + 1 : at + 7]}

        def numbers(label):
            return [float(v) for v in re.findall(r"[abc]=(\S+)", block[label])]

        a, b, c = start
        r = a * x**2 + b * x + c - y
        gradient = 2 * np.array([np.mean(r * x**2), np.mean(r * x), np.mean(r)])  # d mean(r²) / d(a, b, c)
        np.testing.assert_allclose(numbers("parameters"), start, rtol=1e-5)
        np.testing.assert_allclose(float(block["predict,"].split()[-1]), np.sqrt(np.mean(r**2)), rtol=1e-5)
        np.testing.assert_allclose(numbers("gradient"), gradient, rtol=1e-5)
        np.testing.assert_allclose(numbers("lr×gradient"), 1e-4 * gradient, rtol=1e-5)
        np.testing.assert_allclose(numbers("new"), np.array(start) - 1e-4 * gradient, rtol=1e-5)
        # the step's share along each curvature direction of the Hessian 2AᵀA/N
        design = np.column_stack([x**2, x, np.ones_like(x)])
        curv, vectors = np.linalg.eigh(2 / len(x) * design.T @ design)
        parts = np.abs(vectors.T @ (1e-4 * gradient)) / np.linalg.norm(1e-4 * gradient)
        across, along = re.findall(r"([0-9.e-]+)%", block["went"])
        assert float(across) == pytest.approx(100 * parts[-1], rel=1e-5)
        assert float(along) == pytest.approx(100 * parts[0], rel=1e-5)

"""The HTML report: self-contained, and working in a real browser (headless Chromium via Playwright)."""

import re
import shutil
import warnings

import pytest

import gradfit
from gradfit.report import write_report


@pytest.fixture(scope="module")
def report(tmp_path_factory, golden):
    x, y = gradfit.seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        result = gradfit.fit(
            "quadratic", x, y, method="gd", scale=False, learning_rate=1e-4, max_steps=300, p0=golden["init_params"]
        )
    path = write_report(result, tmp_path_factory.mktemp("report") / "report.html", settings={"data": "seed"})
    return result, path


def test_report_is_one_self_contained_file(report):
    result, path = report
    text = path.read_text()
    assert "<script src" not in text and "<link" not in text  # nothing loaded from elsewhere
    assert "Plotly.newPlot" in text or "Plotly.react" in text or "newPlot" in text
    for part in (
        "Settings",
        "Data",
        "Parameters",
        "Goodness of fit",
        "Watch it learn",
        "loss landscape",
        result.message.split(":")[0],
        "0.0001",
    ):
        assert part in text, part
    assert f"{result.params['a']:.10g}" in text and f"{result.stderr['a']:.4g}" in text


def test_report_in_a_real_browser(browser, report, tmp_path):
    result, path = report
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("#loss-plot .main-svg")
    page.wait_for_selector("#landscape .main-svg")
    # move the slider to the first and then the last step
    page.eval_on_selector("#step", "el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#step-label").startswith("after 0 steps")
    page.eval_on_selector("#step", "el => { el.value = el.max; el.dispatchEvent(new Event('input')); }")
    label = page.inner_text("#step-label")
    match = re.fullmatch(rf"after {result.n_steps} steps: RMSE ([0-9.e+-]+)", label)
    assert match, label
    assert float(match.group(1)) == pytest.approx(result.rmse, rel=1e-5)  # the final RMSE, at the end
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    shutil.copy(tmp_path / "report.png", path.parent / "report.png")  # kept beside the report to look at
    assert errors == []
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests  # nothing left the machine
    page.close()


def _trace_x(text: str, div_id: str) -> list:
    """The first trace's x values of the plotly chart ``div_id`` in a report."""
    import json

    start = text.index(f'"{div_id}"', text.index(f'id="{div_id}"') + 1)
    data = text[text.index("[", start) :]
    trace, _ = json.JSONDecoder().raw_decode(data)
    return trace[0]["x"]


def test_a_long_history_is_drawn_thinned_and_says_so():
    from gradfit.report import THIN_FROM, THIN_POINTS, plotly_js, report_html

    x, y = gradfit.seed_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradfit.ConvergenceWarning)
        result = gradfit.fit("quadratic", x, y, method="gd", learning_rate=1e-4, max_steps=20_000)
    text = report_html(result)
    steps = _trace_x(text, "loss-plot")
    assert steps[: THIN_FROM + 1] == list(range(THIN_FROM + 1)) and steps[-1] == 20_000
    assert len(steps) <= THIN_FROM + 1 + THIN_POINTS and steps == sorted(set(steps))
    assert "The 20,000 steps are drawn at" in text
    assert len(text.encode()) < 2_000_000  # plotly.js's cartesian bundle (1.5 MB) and what the report adds
    assert len(text) - len(plotly_js()) < 450_000
    short = report_html(gradfit.fit("quadratic", x, y, method="lm"))
    assert "steps are drawn at" not in short


def test_the_report_draws_each_part_of_a_sum_and_names_the_axes_after_the_data():
    import numpy as np
    import pandas as pd

    from gradfit.report import report_html

    rng = np.random.default_rng(0)
    t = np.linspace(10, 60, 200)
    counts = 3 * np.exp(-((t - 30) ** 2) / 8) + 0.02 * t + rng.normal(0, 0.05, 200)
    data = pd.DataFrame({"two_theta": t, "counts": counts})
    result = gradfit.fit("gaussian + linear", data["two_theta"], data["counts"], p0=[3, 30, 2, 0.02, 0])
    text = report_html(result)
    assert '"dash":"dash"' in text.replace(" ", "") and '"name":"g"' in text.replace(" ", "")
    assert '"name":"l"' in text.replace(" ", "")
    assert '"text":"two_theta"' in text.replace(" ", "") and '"text":"counts"' in text.replace(" ", "")


def test_the_command_lines_report_names_the_columns_fitted(capsys, tmp_path):
    import numpy as np
    from conftest import run_cli

    t = np.linspace(10, 60, 80)
    data = tmp_path / "scan.csv"
    data.write_text("two_theta,counts\n" + "".join(f"{a},{3 * np.exp(-((a - 30) ** 2) / 8) + 1}\n" for a in t))
    out = tmp_path / "r.html"
    code, _, _ = run_cli(capsys, "fit", data, "--model", "gaussian + constant", "--report", out, "--quiet")
    text = out.read_text()
    assert code == 0 and "<th>x column</th><td>two_theta</td>" in text and "<th>y column</th><td>counts</td>" in text
    assert "first" not in text.split("x column")[1][:40]


def test_the_reports_loss_axis_reads_as_plain_numbers():
    from gradfit.report import log_ticks

    ticks = log_ticks([0.577, 3.2, 120.45])
    assert ticks["ticktext"] == ["0.1", "1", "10", "100", "1e+03"] and ticks["tickvals"][0] == pytest.approx(0.1)
    close = log_ticks([0.6, 4.0])  # two decades or fewer: 1, 2, 5 in each
    assert close["ticktext"] == ["0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50"]
    huge = log_ticks([1.0, 1e150])
    values = [float(t) for t in huge["ticktext"]]
    assert len(values) <= 9 and values == sorted(values) and values[0] == 1 and values[-1] > 1e130

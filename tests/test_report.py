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

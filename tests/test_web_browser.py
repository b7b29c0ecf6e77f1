"""The playground end to end: `gradfit serve` in its own process, driven in headless Chromium by Playwright.

In CI these run, never skip: a missing browser fails (see conftest.browser).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

SHOTS = Path(os.environ.get("GRADFIT_SHOTS", "")) if os.environ.get("GRADFIT_SHOTS") else None
DISPLAY_RTOL = 1e-5  # the page shows six significant digits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradfit", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "api/options", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gradfit serve did not start: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def page(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.problems, page.requests, page.refusals = [], [], []
    refused = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")
    page.on(
        "console",
        lambda m: (
            (page.refusals if refused.match(m.text) else page.problems).append(m.text) if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.shot = lambda name: _shot(page, tmp_path, name)
    yield page
    assert page.problems == []  # no script errors, no failed loads, no CSP refusals
    assert len(page.refusals) == getattr(page, "expected_refusals", 0)  # a 4xx only where the test asked for one
    assert all(u.startswith(server) for u in page.requests), page.requests  # nothing leaves this machine
    page.close()


def _shot(page, folder, name):
    page.screenshot(path=str(folder / name), full_page=True)
    if SHOTS is not None:  # GRADFIT_SHOTS=docs keeps them
        page.screenshot(path=str(SHOTS / name), full_page=True)


def ready(page, url):
    page.goto(url)
    page.wait_for_selector("#landscape-chart .contour")  # drawn when the session has arrived
    settle(page)


def settle(page):
    """Wait until the page has no request queued or running (it marks <body data-busy="0">)."""
    page.wait_for_selector("body[data-busy='0']", state="attached")


def wait_for_text(page, selector, text, timeout=45000):
    # (45 s: on a loaded two-core CI machine a new nonlinear session and its first step once took over 15 s;
    # the wait ends as soon as the text is there)
    page.locator(selector).filter(has_text=re.compile(f"^{re.escape(text)}$")).wait_for(timeout=timeout)


def rmse_on_page(page) -> float:
    return float(page.text_content("#rmse"))


def test_ten_steps_lower_the_rmse_on_the_page_as_the_article_printed(page, server, golden):
    ready(page, server)
    assert rmse_on_page(page) == pytest.approx(golden["rmse"][0], rel=DISPLAY_RTOL)
    shown = [rmse_on_page(page)]
    for k in range(1, 11):
        page.click("#step")
        wait_for_text(page, "#step-count", str(k))
        shown.append(rmse_on_page(page))
    assert all(b < a for a, b in zip(shown, shown[1:])), shown
    # after k steps the page shows the RMSE the article printed before step k+1
    assert shown == pytest.approx(golden["rmse"][:11], rel=DISPLAY_RTOL)
    rows = page.locator("#params-table tbody tr")
    assert rows.count() == 3
    assert float(rows.nth(0).locator("td").nth(1).text_content()) == pytest.approx(
        golden["params_after_step"][9][0], rel=DISPLAY_RTOL
    )
    page.shot("playground-ten-steps.png")


def test_learning_rate_one_diverges_with_a_plain_message(page, server):
    ready(page, server)
    page.fill("#lr", "0")  # log10 of the rate: 1
    page.dispatch_event("#lr", "input")
    assert page.text_content("#lr-value") == "1"
    page.click("#run")
    page.wait_for_selector("#message.diverged", timeout=30000)
    message = page.text_content("#message")
    assert "diverged" in message and "smaller learning rate" in message
    wait_for_text(page, "#run", "Run")  # the run stopped by itself
    assert "left the picture" in page.text_content("#fit-chart")  # the curve is frozen where it blew up
    assert parse_qs(urlparse(page.url).query)["lr"] == ["1"]
    page.shot("playground-diverged.png")


def test_the_url_holds_the_setup_and_a_new_page_gets_the_same(page, browser, server, tmp_path):
    ready(page, server)
    page.select_option("#model-kind", "poly")
    page.fill("#degree", "3")
    page.dispatch_event("#degree", "change")
    page.wait_for_selector("text=c3")
    page.select_option("#method", "momentum")
    page.fill("#lr", "-5")
    page.dispatch_event("#lr", "input")
    page.fill("#seed", "7")
    page.dispatch_event("#seed", "change")
    page.select_option("#speed", "100")
    page.select_option("#pair-y", "c2")
    settle(page)
    link = page.url
    query = parse_qs(urlparse(link).query)
    assert query["model"] == ["poly3"] and query["method"] == ["momentum"] and query["lr"] == ["1e-5"]
    assert query["seed"] == ["7"] and query["speed"] == ["100"] and query["pair"] == ["c3,c2"]

    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        ready(other, link)
        assert other.input_value("#model-kind") == "poly" and other.input_value("#degree") == "3"
        assert other.input_value("#method") == "momentum" and other.text_content("#lr-value") == "1e-5"
        assert other.input_value("#seed") == "7" and other.input_value("#speed") == "100"
        assert other.input_value("#pair-x") == "c3" and other.input_value("#pair-y") == "c2"
        names = [r.locator("td").first.text_content() for r in other.locator("#params-table tbody tr").all()]
        assert names == ["c3", "c2", "c1", "c0"]
        # the same data and start: both pages show the same numbers
        assert other.text_content("#rmse") == page.text_content("#rmse")
        assert other.text_content("#params-table") == page.text_content("#params-table")
        other.screenshot(path=str(tmp_path / "shared-link.png"), full_page=True)
    finally:
        other.close()


def test_a_bad_expression_is_explained_and_the_page_keeps_working(page, server):
    ready(page, server)
    page.select_option("#model-kind", "expression")
    page.fill("#expression", "a*x + __import__('os')")
    page.press("#expression", "Enter")
    page.expected_refusals = 1
    page.wait_for_selector("#message.error")
    assert "cannot contain" in page.text_content("#message")
    page.fill("#expression", "a*exp(-b*x) + c")
    page.press("#expression", "Enter")
    wait_for_text(page, "#params-table tbody tr:first-child td:first-child", "a")
    settle(page)  # the new session has arrived (the quadratic's table also begins with a)
    page.click("#step")
    wait_for_text(page, "#step-count", "1")


def test_an_uploaded_csv_becomes_the_data(page, server, tmp_path):
    ready(page, server)
    csv = tmp_path / "line.csv"
    csv.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(25)))
    page.set_input_files("#csv-file", str(csv))
    page.wait_for_selector("#upload-note:has-text('25 points')")
    assert "not part of the link" in page.text_content("#upload-note")
    assert parse_qs(urlparse(page.url).query)["data"] == ["upload"]
    page.select_option("#method", "lm")
    settle(page)
    page.click("#run")
    page.wait_for_selector("#message.converged", timeout=30000)
    assert float(page.text_content("#rmse")) < 1e-6


def test_a_link_s_rate_is_kept_exactly_and_odd_values_fall_back(page, server):
    ready(page, server + "?lr=0.5&scale=1&method=nonsense")
    assert page.text_content("#lr-value") == "0.5" and page.input_value("#method") == "gd"
    page.click("#step")
    wait_for_text(page, "#step-count", "1")
    assert parse_qs(urlparse(page.url).query)["lr"] == ["0.5"]
    ready(page, server + "?lr=50")  # beyond the slider: its end
    assert page.text_content("#lr-value") == "1"


def test_the_rmse_axis_reads_as_plain_numbers_and_a_diverged_path_never_crosses_the_landscape(page, server):
    ready(page, server)
    page.select_option("#method", "lm")
    page.click("#run")
    page.locator("#message").filter(has_text=re.compile("^Converged")).wait_for(timeout=45000)
    settle(page)
    labels = page.eval_on_selector_all("#rmse-chart .ytick text", "els => els.map(e => e.textContent)")
    values = [float(t) for t in labels]  # plain numbers: 0.5, 1, 10, 1e+22 (never plotly's lone digits)
    assert len(values) >= 2 and values == sorted(values) and len(set(values)) == len(values), labels
    # a diverging run: the path leaves the picture in the direction it went, then breaks (no segment between two
    # points both outside the picture, which would cross it as a stray straight line)
    ready(page, server)
    page.fill("#lr", "0")  # a rate of 1
    page.dispatch_event("#lr", "input")
    page.click("#run")
    page.wait_for_selector("#message.diverged", timeout=30000)
    settle(page)
    xs, ys, box = page.evaluate(
        """() => { const c = document.getElementById('landscape-chart'), l = c._fullLayout;
                   return [c.data[1].x, c.data[1].y, [...l.xaxis.range, ...l.yaxis.range]]; }"""
    )

    def outside(k):
        return xs[k] is None or ys[k] is None or not (box[0] <= xs[k] <= box[1] and box[2] <= ys[k] <= box[3])

    assert any(outside(k) for k in range(len(xs)))  # it did leave the picture
    for k in range(1, len(xs)):
        both = outside(k) and outside(k - 1)
        assert not (both and xs[k] is not None and xs[k - 1] is not None), (k, xs[k - 1 : k + 1], ys[k - 1 : k + 1])
    labels = page.eval_on_selector_all("#rmse-chart .ytick text", "els => els.map(e => e.textContent)")
    assert all(float(t) > 0 for t in labels) and [float(t) for t in labels] == sorted(float(t) for t in labels)


def landscape_marks(page):
    """The landscape's gradient arrow (tail, head), gd's next step (from, to) and the axes' pair, as drawn."""
    return page.evaluate(
        """() => { const c = document.getElementById('landscape-chart');
                   const arrow = (c.layout.annotations || []).find(a => a.name === 'gradient');
                   const step = c.data.find(t => t.name === 'next step');
                   return { arrow: arrow ? [[arrow.ax, arrow.ay], [arrow.x, arrow.y]] : null,
                            step: step ? [[step.x[0], step.y[0]], [step.x[1], step.y[1]]] : null,
                            pair: [c.layout.xaxis.title.text, c.layout.yaxis.title.text] }; }"""
    )


def table_params(page) -> list[float]:
    rows = page.locator("#params-table tbody tr")
    return [float(rows.nth(k).locator("td").nth(1).text_content()) for k in range(rows.count())]


def mse_gradient(params, golden):
    """d/d(a, b, c) of the article's loss, mean((a x² + b x + c - y)²), in closed form."""
    x, y = np.array(golden["X"], dtype=np.float64), np.array(golden["Y"], dtype=np.float64)
    a, b, c = params
    r = a * x**2 + b * x + c - y
    return np.array([2 * np.mean(r * x**2), 2 * np.mean(r * x), 2 * np.mean(r)])


def test_the_arrow_points_down_the_gradient_and_the_dotted_step_is_where_gd_lands(page, server, golden):
    ready(page, server)
    for k in range(1, 4):
        page.click("#step")
        wait_for_text(page, "#step-count", str(k))
    settle(page)
    marks = landscape_marks(page)
    assert marks["pair"] == ["a", "b"]
    (ta, tb), (ha, hb) = marks["arrow"]
    now = golden["params_after_step"][2]  # where the article was after three steps (float32 digits)
    assert [ta, tb] == pytest.approx(now[:2], rel=1e-5)
    # its direction is -gradient at the current point (closed form, not the server's number)
    g = mse_gradient(page.evaluate("() => session.params"), golden)
    drawn = np.array([ha - ta, hb - tb])
    assert np.dot(drawn, -g[:2]) / (np.linalg.norm(drawn) * np.linalg.norm(g[:2])) == pytest.approx(1, abs=1e-9)
    # the dotted step is -lr x gradient, and the next step lands on its end
    (fa, fb), (sa, sb) = marks["step"]
    assert [sa - fa, sb - fb] == pytest.approx(list(-1e-4 * g[:2]), rel=1e-9)
    gradient_cells = page.locator("#params-table tbody tr td:nth-child(3)").all_text_contents()
    assert [float(v) for v in gradient_cells] == pytest.approx(list(g), rel=DISPLAY_RTOL)
    page.click("#step")
    wait_for_text(page, "#step-count", "4")
    settle(page)
    assert table_params(page)[:2] == pytest.approx([sa, sb], rel=DISPLAY_RTOL)
    # a larger rate: the same arrow, a step ten times as long, drawn before any step is taken
    page.fill("#lr", "-3")
    page.dispatch_event("#lr", "input")
    (fa, fb), (sa2, sb2) = landscape_marks(page)["step"]
    g = mse_gradient(page.evaluate("() => session.params"), golden)
    assert [sa2 - fa, sb2 - fb] == pytest.approx(list(-1e-3 * g[:2]), rel=1e-9)
    page.shot("playground-gradient.png")


def test_compare_runs_momentum_beside_gd_from_the_same_start(page, server, golden):
    import torch

    ready(page, server + "?compare=momentum")
    assert page.input_value("#compare") == "momentum"
    for k in range(1, 11):
        page.click("#step")
        wait_for_text(page, "#step-count", str(k))
    wait_for_text(page, "#twin-step-count", "10")
    settle(page)
    # the oracle: torch's own SGD with momentum 0.9 on the article's loss, from its start, at its rate
    x = torch.tensor(golden["X"], dtype=torch.float64)
    y = torch.tensor(golden["Y"], dtype=torch.float64)
    p = torch.tensor(golden["init_params"], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1e-4, momentum=0.9)
    for _ in range(10):
        opt.zero_grad()
        loss = ((p[0] * x**2 + p[1] * x + p[2] - y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        rmse = float(((p[0] * x**2 + p[1] * x + p[2] - y) ** 2).mean().sqrt())
    assert float(page.text_content("#twin-rmse")) == pytest.approx(rmse, rel=DISPLAY_RTOL)
    purple = page.locator("#params-table tbody tr td:nth-child(7)").all_text_contents()
    assert [float(v) for v in purple] == pytest.approx(p.tolist(), rel=DISPLAY_RTOL)
    assert rmse_on_page(page) == pytest.approx(golden["rmse"][10], rel=DISPLAY_RTOL)  # the red run is the article's
    names = page.evaluate("() => document.getElementById('landscape-chart').data.map(t => t.name)")
    assert "compared path" in names and "path" in names
    path = page.evaluate(
        "() => document.getElementById('landscape-chart').data.find(t => t.name === 'compared path').x.length"
    )
    assert path == 11  # the start and ten steps
    assert "momentum on raw parameters" in page.text_content("#twin-legend")
    assert parse_qs(urlparse(page.url).query)["compare"] == ["momentum"]
    page.shot("playground-compare.png")
    # standardized against raw: the same method, the other frame
    page.select_option("#compare", "scale")
    page.locator("#twin-legend").filter(has_text="gd on standardized parameters").wait_for()
    settle(page)
    page.click("#reset")
    settle(page)
    assert page.text_content("#twin-step-count") == "0"

"""The playground's API, in-process (Starlette's test client): every endpoint, every error.

Oracles: the seed article's printed values (seed_golden.json), numpy's least squares,
and the loss computed directly in numpy.
"""

import json
import math

import numpy as np
import pytest
from starlette.testclient import TestClient

from gradfit.web import create_app
from gradfit.web.sessions import Limits, SessionStore, Setup

FLOAT32_RTOL = 1e-5  # the playground runs in float64; the article printed float32
EXACT_RTOL = 1e-9  # against numpy's least squares


def client(limits=None) -> TestClient:
    return TestClient(create_app(limits), base_url="http://127.0.0.1")


@pytest.fixture
def api():
    return client()


def new(api, **body):
    r = api.post("/api/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def step(api, sid, **body):
    r = api.post(f"/api/sessions/{sid}/step", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def refused(response, status: int, match: str):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert match in error, error
    assert "\n" not in error  # one line
    return error


def sessions(api) -> int:
    return len(api.app.state.store)


# ---- the page and its assets -----------------------------------------------------------


def test_the_page_and_every_asset_come_from_the_server(api):
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for src in ("/assets/plotly.min.js", "/assets/playground.js", "/assets/playground.css"):
        assert src in page.text
        asset = api.get(src)
        assert asset.status_code == 200 and len(asset.content) > 1000
    assert "javascript" in api.get("/assets/playground.js").headers["content-type"]
    assert "text/css" in api.get("/assets/playground.css").headers["content-type"]
    plotly = api.get("/assets/plotly.min.js")
    assert "Plotly" in plotly.text[:5000] and len(plotly.content) < 2_000_000  # the cartesian bundle, not all 4.8 MB
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert api.get("/favicon.ico").headers["content-type"].startswith("image/svg")


@pytest.mark.parametrize(
    "name", ["app.py", "..%2Fapp.py", "..%2F..%2Fpyproject.toml", "index.html%00.js", "sessions.py"]
)
def test_an_asset_is_looked_up_by_name_never_as_a_path(api, name):
    error = refused(api.get(f"/assets/{name}"), 404, "")
    assert error.startswith(("No asset", "Not found"))


def test_options_list_the_methods_and_one_variable_models(api):
    options = api.get("/api/options").json()
    assert options["methods"] == ["gd", "momentum", "nesterov", "adam", "lbfgs", "lm"]
    names = [m["name"] for m in options["models"]]
    assert "quadratic" in names and "gaussian" in names and "gaussian2d" not in names
    assert options["defaults"] == Setup().__dict__
    assert options["limits"]["max_upload_bytes"] == 5 * 1024 * 1024


# ---- the article, reproduced ------------------------------------------------------------


def test_the_default_session_is_the_seed_article(api, golden):
    state = new(api)
    assert state["setup"] == {
        "data": "generated",
        "seed": 1989,
        "noise": 3.0,
        "model": "quadratic",
        "method": "gd",
        "learning_rate": 1e-4,
        "scale": False,
    }
    np.testing.assert_array_equal(state["data"]["x"], golden["X"])
    np.testing.assert_array_equal(state["data"]["y"], golden["Y"])
    np.testing.assert_array_equal(state["start"], golden["init_params"])  # the article's random start
    assert state["status"] == "ready" and state["step"] == 0 and state["records"] == []
    # the optimum against numpy's least squares
    a = np.vander(np.array(golden["X"]), 3)
    best, *_ = np.linalg.lstsq(a, np.array(golden["Y"]), rcond=None)
    np.testing.assert_allclose(state["optimum"]["params"], best, rtol=EXACT_RTOL)
    assert state["optimum"]["rmse"] == pytest.approx(golden["least_squares_rmse"], rel=EXACT_RTOL)
    # gd's stability limit, 2 / the largest eigenvalue of the loss's Hessian 2/N AᵀA
    limit = 2 / np.linalg.eigvalsh(2 / len(a) * a.T @ a)[-1]
    assert f"{limit:.3g}" in state["stability"]


def test_twenty_steps_print_the_article_s_numbers(api, golden):
    sid = new(api)["id"]
    records = step(api, sid, steps=10)["records"] + step(api, sid, steps=10)["records"]  # two rounds of 10
    assert [r["step"] for r in records] == list(range(1, 21))
    np.testing.assert_allclose([r["rmse"] for r in records], golden["rmse"], rtol=FLOAT32_RTOL)
    np.testing.assert_allclose([r["params"] for r in records], golden["params_after_step"], rtol=FLOAT32_RTOL)
    assert all(r["learning_rate"] == 1e-4 for r in records)


def test_the_rmse_falls_step_by_step_and_the_curve_follows_the_parameters(api, golden):
    sid = new(api)["id"]
    seen = []
    for _ in range(10):
        out = step(api, sid, steps=1)
        seen.append(out["rmse"])
        assert out["status"] == "running" and len(out["records"]) == 1
    assert all(b < a for a, b in zip(seen, seen[1:]))
    a, b, c = out["params"]
    x = np.array(api.get(f"/api/sessions/{sid}").json()["curve_x"])
    assert x[0] == min(golden["X"]) and x[-1] == max(golden["X"])
    np.testing.assert_allclose(out["curve_y"], a * x**2 + b * x + c, rtol=1e-12)
    y = np.array(golden["Y"], dtype=np.float64)
    xs = np.array(golden["X"], dtype=np.float64)
    assert out["rmse"] == pytest.approx(math.sqrt(np.mean((a * xs**2 + b * xs + c - y) ** 2)), rel=1e-12)


def test_a_learning_rate_of_one_diverges_plainly_and_the_curve_stays_at_the_last_finite_step(api):
    sid = new(api)["id"]
    step(api, sid, steps=5)
    out = step(api, sid, steps=200, learning_rate=1.0)
    assert out["status"] == "diverged"
    assert "diverged" in out["message"] and "smaller learning rate" in out["message"]
    assert 0 < len(out["records"]) < 200
    last = out["records"][-1]
    assert out["params"] == last["params"] and all(math.isfinite(v) for v in last["params"])
    assert out["records"][0]["learning_rate"] == 1.0
    json.loads(json.dumps(out), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))  # strict JSON: no NaN/inf
    again = step(api, sid, steps=10)  # a diverged run stays where it stopped
    assert again["records"] == [] and again["status"] == "diverged" and again["step"] == out["step"]
    landscape = step(api, sid, steps=1, landscape=True)["landscape"]  # still drawable, over finite values
    assert any(v is not None for row in landscape["log10_loss"] for v in row)


def test_reset_goes_back_to_the_start_with_the_slider_s_rate(api, golden):
    sid = new(api)["id"]
    step(api, sid, steps=30, learning_rate=1.0)
    r = api.post(f"/api/sessions/{sid}/reset", json={"learning_rate": 5e-5})
    assert r.status_code == 200
    state = r.json()
    assert state["status"] == "ready" and state["step"] == 0 and state["params"] == golden["init_params"]
    assert state["setup"]["learning_rate"] == 5e-5
    assert step(api, sid, steps=1)["records"][0]["learning_rate"] == 5e-5


def test_a_new_rate_before_the_first_step_is_the_first_step_s_rate(api):
    sid = new(api)["id"]
    first = step(api, sid, steps=1, learning_rate=1e-6)["records"][0]
    assert first["learning_rate"] == 1e-6


def quadratic_mse_gradient(params, golden) -> np.ndarray:
    """d/d(a, b, c) of mean((a x² + b x + c - y)²), in closed form."""
    x, y = np.array(golden["X"], dtype=np.float64), np.array(golden["Y"], dtype=np.float64)
    a, b, c = params
    r = a * x**2 + b * x + c - y
    return np.array([2 * np.mean(r * x**2), 2 * np.mean(r * x), 2 * np.mean(r)])


@pytest.mark.parametrize("scale, rate", [(False, 1e-4), (True, 0.3)])
def test_the_gradient_is_the_mse_s_and_gd_s_next_step_is_minus_rate_times_its_direction(api, golden, scale, rate):
    state = new(api, setup={"scale": scale, "learning_rate": rate})
    np.testing.assert_allclose(state["gradient"], quadratic_mse_gradient(state["params"], golden), rtol=1e-12)
    now = step(api, state["id"], steps=3)
    for _ in range(3):
        np.testing.assert_allclose(now["gradient"], quadratic_mse_gradient(now["params"], golden), rtol=1e-12)
        if not scale:  # on raw parameters gd walks straight down the gradient
            assert now["gd_direction"] == now["gradient"]
        after = step(api, state["id"], steps=1)
        np.testing.assert_allclose(
            np.subtract(after["params"], now["params"]), -rate * np.array(now["gd_direction"]), rtol=1e-9, atol=1e-15
        )
        now = after


def test_only_gd_s_next_step_is_known_in_advance(api):
    for method in ("momentum", "adam", "lm"):
        out = new(api, setup={"method": method})
        assert out["gd_direction"] is None and len(out["gradient"]) == 3


def test_a_diverged_run_s_gradient_is_strict_json(api):
    sid = new(api)["id"]
    out = step(api, sid, steps=200, learning_rate=1.0)
    assert out["status"] == "diverged"
    json.loads(json.dumps(out), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


@pytest.mark.parametrize("method", ["lm", "lbfgs"])
def test_second_order_methods_land_on_the_least_squares_answer(api, method):
    state = new(api, setup={"method": method, "learning_rate": 1.0})
    out = step(api, state["id"], steps=200)
    assert out["status"] == "converged", out["message"]
    np.testing.assert_allclose(out["params"], state["optimum"]["params"], rtol=1e-6)
    assert out["learning_rate"] is None if method == "lm" else out["learning_rate"] == 1.0


def test_standardized_gd_converges_where_raw_gd_crawls(api):
    state = new(api, setup={"scale": True, "learning_rate": 0.5})
    out = step(api, state["id"], steps=500)
    assert out["status"] == "converged", out["message"]
    np.testing.assert_allclose(out["params"], state["optimum"]["params"], rtol=1e-6)
    assert "rate 1 lands" in state["stability"]


@pytest.mark.parametrize("method", ["momentum", "nesterov", "adam"])
def test_every_gradient_method_steps_downhill(api, method):
    state = new(api, setup={"method": method, "learning_rate": 1e-5 if method != "adam" else 0.05})
    out = step(api, state["id"], steps=50)
    assert out["rmse"] < state["rmse"] / 2


def test_seed_and_noise_regenerate_the_data(api):
    quiet = new(api, setup={"seed": 7, "noise": 0})["data"]
    x = np.array(quiet["x"])
    np.testing.assert_allclose(quiet["y"], 0.9 * (x - 3) ** 2 + 1, rtol=1e-6)  # no noise: the curve itself
    noisy = new(api, setup={"seed": 7, "noise": 50})["data"]["y"]
    assert max(abs(a - b) for a, b in zip(noisy, quiet["y"])) > 10


def test_an_expression_is_the_same_fit_as_the_built_in(api):
    built_in = new(api)
    typed = new(api, setup={"model": "a*x**2 + b*x + c"})
    assert typed["param_names"] == ["a", "b", "c"] and typed["start"] == built_in["start"]
    r1 = step(api, built_in["id"], steps=5)["records"]
    r2 = step(api, typed["id"], steps=5)["records"]
    np.testing.assert_allclose([r["params"] for r in r1], [r["params"] for r in r2], rtol=1e-12)


def test_the_landscape_is_the_loss_computed_directly(api, golden):
    state = new(api, pair=["b", "c"])
    land = state["landscape"]
    assert land["pair"] == ["b", "c"] and len(land["a"]) == len(land["b"]) == 48
    x, y = np.array(golden["X"], float), np.array(golden["Y"], float)
    a = state["params"][0]
    for i, j in [(0, 0), (10, 30), (47, 47)]:
        b, c = land["a"][j], land["b"][i]
        direct = np.mean((a * x**2 + b * x + c - y) ** 2)
        assert land["log10_loss"][i][j] == pytest.approx(math.log10(direct), rel=1e-12)
    for p in (state["start"], state["optimum"]["params"]):  # the frame shows the start and the best fit
        assert land["a"][0] <= p[1] <= land["a"][-1] and land["b"][0] <= p[2] <= land["b"][-1]
    shown = api.get(f"/api/sessions/{state['id']}?pair=c,a").json()["landscape"]
    assert shown["pair"] == ["c", "a"]


def test_a_one_parameter_model_has_no_landscape(api):
    state = new(api, setup={"model": "poly0"})
    assert state["landscape"] is None and state["param_names"] == ["c0"]


def test_a_session_shows_its_whole_state_again(api):
    sid = new(api)["id"]
    step(api, sid, steps=7)
    state = api.get(f"/api/sessions/{sid}").json()
    assert state["step"] == 7 and len(state["records"]) == 7


# ---- uploads ----------------------------------------------------------------------------


def test_an_uploaded_csv_is_fitted(api):
    x = np.linspace(0, 1, 40)
    text = "time,signal\n" + "\n".join(f"{a},{3 * a - 1}" for a in x)
    state = new(api, setup={"data": "upload", "model": "linear", "method": "lm"}, csv=text, filename="run.csv")
    np.testing.assert_allclose(state["data"]["x"], x)
    out = step(api, state["id"], steps=50)
    assert out["status"] == "converged"
    np.testing.assert_allclose(out["params"], [3, -1], atol=1e-9)


@pytest.mark.parametrize(
    "text,match",
    [
        ("x,y\n1,2\n3,banana\n", "not a number"),
        ("only,a,header\n", "no rows"),
        ("x\n1\n2\n", "only 1 column"),
        ("   ", "must hold the uploaded file"),
    ],
)
def test_a_bad_upload_is_refused_in_one_line(api, text, match):
    refused(
        api.post("/api/sessions", json={"setup": {"data": "upload"}, "csv": text, "filename": "bad.csv"}), 400, match
    )
    assert sessions(api) == 0


def test_upload_limits():
    small = client(Limits(max_upload_bytes=1000, max_points=20))
    big = "x,y\n" + "".join(f"{i},{i}\n" for i in range(200))
    refused(small.post("/api/sessions", json={"setup": {"data": "upload"}, "csv": big}), 413, "at most")
    rows = "x,y\n" + "".join(f"{i},{i}\n" for i in range(30))
    refused(small.post("/api/sessions", json={"setup": {"data": "upload"}, "csv": rows}), 413, "30 rows")
    refused(small.post("/api/sessions", json={"csv": rows}), 400, "set data to 'upload'")


# ---- every error: a 4xx with a JSON error, and nothing changed ----------------------------


@pytest.mark.parametrize(
    "setup,match",
    [
        ({"colour": "red"}, "Unknown setting 'colour'"),
        ({"seed": "1989"}, "`seed` must be a whole number"),
        ({"seed": -1}, "`seed` must be a whole number"),
        ({"seed": True}, "`seed` must be a whole number"),
        ({"noise": -1}, "`noise` must be a number"),
        ({"learning_rate": 0}, "`learning_rate` must be a number from 1e-06 to 1"),
        ({"learning_rate": 2}, "`learning_rate` must be a number from 1e-06 to 1"),
        ({"learning_rate": "fast"}, "`learning_rate` must be a number"),
        ({"method": "sgd"}, "Unknown method 'sgd'"),
        ({"method": "auto"}, "Unknown method 'auto'"),
        ({"scale": "yes"}, "`scale` must be true or false"),
        ({"data": "disk"}, "`data` must be 'generated' or 'upload'"),
        ({"model": ""}, "`model` must be a model name"),
        ({"model": "a*x + " * 50}, "at most 200"),
        ({"model": "__import__('os').system('true')"}, "cannot contain"),
        ({"model": "open('/etc/passwd')"}, "cannot contain"),
        ({"model": "a*x +"}, "expression"),
        ({"model": "quadratik"}, "Unknown model 'quadratik'"),
        ({"model": "gaussian2d"}, "the one variable x"),
        ({"model": "a*exp(b*x)*1e308"}, "NaN or inf at the starting point"),
    ],
)
def test_a_bad_setup_is_refused_and_creates_nothing(api, setup, match):
    refused(api.post("/api/sessions", json={"setup": setup}), 400, match)
    assert sessions(api) == 0


def test_a_bad_pair_is_refused_everywhere_and_changes_nothing(api):
    refused(api.post("/api/sessions", json={"pair": ["a", "q"]}), 400, "`pair` must name")
    assert sessions(api) == 0
    sid = new(api)["id"]
    step(api, sid, steps=2)
    refused(api.post(f"/api/sessions/{sid}/reset", json={"pair": ["a"]}), 400, "`pair` must name")
    refused(api.get(f"/api/sessions/{sid}?pair=a,a"), 400, "`pair` must name")
    assert api.get(f"/api/sessions/{sid}").json()["step"] == 2


def test_a_setup_must_be_an_object(api):
    refused(api.post("/api/sessions", json={"setup": [1, 2]}), 400, "JSON object of settings")
    refused(api.post("/api/sessions", json=[1, 2]), 400, "must be a JSON object")


@pytest.mark.parametrize(
    "body,match",
    [
        ({"steps": 0}, "`steps` must be a whole number from 1 to 500"),
        ({"steps": 501}, "`steps` must be a whole number from 1 to 500"),
        ({"steps": "10"}, "`steps` must be a whole number"),
        ({"steps": 1.5}, "`steps` must be a whole number"),
        ({"steps": 1, "learning_rate": 10}, "`learning_rate` must be a number"),
        ({"steps": 1, "landscape": "yes"}, "`landscape` must be true or false"),
        ({"steps": 1, "pair": ["a", "a"]}, "`pair` must name two different parameters"),
        ({"steps": 1, "pair": ["a", "z"]}, "`pair` must name two different parameters"),
        ({"steps": 1, "pair": "ab", "landscape": True}, "`pair` must be a list"),
        ({"steps": 1, "fast": True}, "Unknown field 'fast'"),
    ],
)
def test_a_bad_step_request_is_refused(api, body, match):
    sid = new(api)["id"]
    step(api, sid, steps=3)
    refused(api.post(f"/api/sessions/{sid}/step", json=body), 400, match)
    assert api.get(f"/api/sessions/{sid}").json()["step"] == 3  # nothing changed


def test_bodies_must_be_bounded_json(api):
    sid = new(api)["id"]
    url = f"/api/sessions/{sid}/step"
    refused(api.post(url, content=b'{"steps": 1}', headers={"content-type": "text/plain"}), 415, "as JSON")
    refused(api.post(url, content=b"{steps: 1", headers={"content-type": "application/json"}), 400, "not valid JSON")
    refused(api.post(url, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, "not valid JSON")
    refused(
        api.post(url, content=b"{}" + b" " * 5000, headers={"content-type": "application/json"}), 413, "larger than"
    )

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b" " * 100

    refused(api.post(url, content=chunks(), headers={"content-type": "application/json"}), 413, "larger than")
    limits = Limits()
    refused(
        api.post(
            "/api/sessions", content=b" " * (limits.max_body_bytes + 1), headers={"content-type": "application/json"}
        ),
        413,
        "larger than",
    )
    assert api.get(f"/api/sessions/{sid}").json()["step"] == 0


def test_unknown_sessions_routes_and_methods(api):
    refused(api.get("/api/sessions/nope"), 404, "No such session")
    refused(api.post("/api/sessions/nope/step", json={"steps": 1}), 404, "No such session")
    refused(api.post("/api/sessions/nope/reset", json={}), 404, "No such session")
    refused(api.delete("/api/sessions/nope"), 404, "No such session")
    refused(api.get("/api/nothing"), 404, "Not found")
    refused(api.get("/api/sessions"), 405, "Method not allowed")


def test_a_session_can_be_closed(api):
    sid = new(api)["id"]
    assert api.delete(f"/api/sessions/{sid}").status_code == 204
    refused(api.get(f"/api/sessions/{sid}"), 404, "No such session")


def test_the_number_of_sessions_is_bounded():
    api = client(Limits(max_sessions=2))
    new(api), new(api)
    refused(api.post("/api/sessions", json={}), 503, "already holds 2 sessions")


def test_idle_sessions_expire():
    now = [0.0]
    store = SessionStore(Limits(session_ttl_s=60), clock=lambda: now[0])
    x, y = np.arange(5.0), np.arange(5.0) ** 2
    kept, dropped = store.create(Setup(), x, y), store.create(Setup(), x, y)
    now[0] = 50
    store.get(kept.id)  # touched: its clock restarts
    now[0] = 100
    assert store.get(kept.id) is kept
    with pytest.raises(Exception, match="No such session"):
        store.get(dropped.id)
    assert len(store) == 1


def test_a_request_for_another_host_is_refused(api):
    # a page on another site that resolves its name to 127.0.0.1 (DNS rebinding) cannot drive the server
    refused = api.get("/", headers={"host": "attacker.example"})
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
    assert refused.json()["error"].startswith("Host 'attacker.example' does not name this machine")
    assert api.post("/api/sessions", json={}, headers={"host": "attacker.example:8000"}).status_code == 400
    assert sessions(api) == 0
    for ours in ("127.0.0.1:8000", "localhost", "[::1]:8000"):  # this machine's names, with or without a port
        assert api.get("/api/options", headers={"host": ours}).status_code == 200, ours


# ---- gradfit serve -------------------------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch):
    """uvicorn.run replaced by a recorder: these tests check what serve does before it listens."""
    import uvicorn

    import torch

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the server's setting, not this process's
    return calls


def test_serve_binds_this_machine_by_default(no_server, capsys):
    from gradfit.cli import main

    assert main(["serve", "--port", "0"]) == 2  # port 0 is not a port a page can be opened on
    assert main(["serve", "--port", str(_free_port())]) == 0
    app, options = no_server[-1]
    assert options["host"] == "127.0.0.1"
    out, err = capsys.readouterr()
    assert "http://127.0.0.1:" in out and "WARNING" not in err


def test_serve_warns_loudly_when_opened_to_the_network(no_server, capsys):
    from gradfit.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", str(_free_port())]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "other machines on your network can reach it" in err
    app, options = no_server[-1]
    assert options["host"] == "0.0.0.0"


@pytest.mark.parametrize(
    "args,match",
    [
        (["--port", "70000"], "--port: must be a port number from 1 to 65535"),
        (["--port", "http"], "--port: must be a port number"),
        (["--host", "no-such-host.invalid"], "is not an address of this machine"),
    ],
)
def test_serve_refuses_bad_addresses_in_one_line(no_server, capsys, args, match):
    from gradfit.cli import main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and no_server == []


def test_serve_refuses_a_port_in_use(no_server, capsys):
    import socket

    from gradfit.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is already in use. Choose another with --port." in err
    assert no_server == []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""The compiled many-curve LM (gradfit.solvers.compiled): its model interpreter and the model's machine code
(gradfit.solvers.native) against torch autograd and each other, and its fits against the torch batch solver,
single gradfit.fit and numpy."""

import threading

import numpy as np
import pytest
import torch

import gradfit
from gradfit import batch
from gradfit.errors import OptionError
from gradfit.expr import parse
from gradfit.solvers import compiled, compiled_lm, native

RNG = np.random.default_rng(7)
SAME = 1e-8  # relative: the compiled and the torch solver run the same algorithm, rounding apart

# every operator and function of the expression language, numbers folded, a parameter in an exponent,
# sub-expressions of the parameters alone (one number per curve) mixed with ones that vary by point
EXPRESSIONS = [
    ("a*exp(-(x - m)**2/(2*s**2)) + c", ("x",), [2.0, 0.3, 0.8, 0.1]),
    ("a*sin(w*x + ph) + b*cos(x) - tan(x/(4*w))", ("x",), [1.5, 0.7, 0.2, -0.4]),
    ("log(a + x**2) + log10(b*x + 10) + log2(2 + c) * sqrt(x + d)", ("x",), [1.2, 0.5, 0.3, 2.0]),
    ("abs(a*x - 1) + arcsin(x/(10*b)) + acos(x/(12*b)) + arctan(c*x) + atan(x)", ("x",), [0.9, 1.1, 0.6]),
    ("sinh(a*x/5) + cosh(b) * tanh(x - c) + erf(a*x) - erfc(b*x) + sigmoid(c*x + a)", ("x",), [0.4, -0.3, 0.2]),
    ("a*x**3 + b*x**0.5 + c/x + d*x**-1 + x**k + x**e + (x + 2)**(a*b) + 2**3*a", ("x",), [0.5, 1.5, -0.7, 0.2, 1.3]),
    (
        "amp*exp(-((x - x0)**2 + (y - y0)**2)/(2*w**2)) + arctan2(y - y0, x - x0) * k + off",
        ("x", "y"),
        [5.0, 0.3, -0.2, 1.1, 0.1, 2.0],
    ),
    ("a*heaviside(x - b) + exprel(c*(x - 1.5)) + exprel(a*x - a*x) + c*exprel(-x/b)", ("x",), [0.8, 1.7, 1.3]),
    ("-a + -(b*2) + a*b/(1 + a*a)", ("x",), [0.7, 1.9]),  # one number per curve only
    ("a", ("x",), [3.0]),  # a parameter alone
]


def _values_and_jacobian(program, x, p, engine):
    if engine == "interpreter":
        return compiled.values_and_jacobian(program, x, p)
    out = native.evaluate(program, x, p)
    return out["value"], out["jac"]


@pytest.mark.parametrize("engine", ["interpreter", "machine code"])
@pytest.mark.parametrize("text,variables,p", EXPRESSIONS)
def test_interpreter_and_machine_code_equal_torch_value_and_autograd(text, variables, p, engine):
    expression = parse(text, variables)
    n = 40
    x = np.stack([np.linspace(0.2, 3.1, n), np.linspace(-1.3, 2.2, n)], 1)[:, : len(variables)]
    value, jac = _values_and_jacobian(expression.program(), x, np.array(p), engine)
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    columns = [torch.tensor(x[:, k]) for k in range(len(variables))]

    def f(q):
        out = expression(columns, list(q.unbind()))
        return out if isinstance(out, torch.Tensor) and out.shape == (n,) else torch.as_tensor(out).expand(n)

    expected = f(pt).detach().numpy()
    expected_jac = torch.autograd.functional.jacobian(f, pt).numpy()
    assert np.isfinite(expected).all() and np.isfinite(expected_jac).all()
    np.testing.assert_allclose(value, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(jac, expected_jac, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("engine", ["interpreter", "machine code"])
def test_composite_and_polynomial_programs_equal_their_models(engine):
    x = np.linspace(-2, 3, 30)
    for name, p in [
        ("gaussian + linear", [2.0, 0.5, 0.7, 0.3, -1.0]),
        ("poly3", [0.5, -1.0, 2.0, 3.0]),
        ("exp_decay + constant", [2.0, 0.8, 0.1, 0.4]),
        ("gaussian + gaussian + linear", [2.0, -0.5, 0.7, 1.0, 1.5, 0.4, 0.3, -1.0]),
        ("poly9", [0.01, -0.02, 0.05, 0.1, -0.3, 0.2, 0.5, -1.0, 2.0, 3.0]),
    ]:
        model = gradfit.get_model(name)
        value, jac = _values_and_jacobian(model.program(), x, np.array(p), engine)
        pt = torch.tensor(p, dtype=torch.float64)
        np.testing.assert_allclose(value, model(torch.tensor(x), pt).numpy(), rtol=1e-13, atol=1e-13)
        expected = torch.autograd.functional.jacobian(lambda q: model(torch.tensor(x), q), pt).numpy()
        np.testing.assert_allclose(jac, expected, rtol=1e-12, atol=1e-12)
    assert gradfit.get_model(lambda x, a: a * x).program() is None  # a Python function stays opaque


@pytest.mark.parametrize("text,variables,p", EXPRESSIONS)
def test_machine_code_computes_what_the_interpreter_computes(text, variables, p):
    program = parse(text, variables).program()
    x = np.stack([np.linspace(0.2, 3.1, 41), np.linspace(-1.3, 2.2, 41)], 1)[:, : len(variables)]
    value, jac = compiled.values_and_jacobian(program, x, np.array(p))
    # with the C library's functions, lane by lane: the same operations in the same order, the same bits
    out = native.evaluate(program, x, np.array(p), vector_library=False)
    np.testing.assert_array_equal(out["value"], value)
    np.testing.assert_array_equal(out["jac"], jac)
    # with glibc's vector functions (four points at once; within 4 units in the last place of the C library's)
    fast = native.evaluate(program, x, np.array(p))
    np.testing.assert_allclose(fast["value"], value, rtol=1e-14, atol=1e-14 * np.abs(value).max())
    np.testing.assert_allclose(fast["jac"], jac, rtol=1e-13, atol=1e-13 * np.abs(jac).max())


def test_the_machine_code_is_built_from_instructions_not_from_the_users_text():
    # the IR LLVM reads is what llvmlite's builder printed from operation codes and numbers: none of the
    # user's names (nor their text) reaches it
    expression = parse("zz_amplitude*exp(-x/zz_scale) + zz_offset*2.5", ("x",))
    text = str(native.build(expression.program()))
    assert "zz_" not in text and "gradfit_model" in text
    assert "2.5" not in text and "0x4004000000000000" in text  # the number, as LLVM's exact hexadecimal double


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 9, 37])
def test_machine_code_sums_equal_numpy_wherever_the_arrays_lie(n):
    # four points at a time in vector lanes, then the rest one by one; a parameter the model does not use
    program = parse("a*exp(-(x - m)**2/(2*s**2)) + c", ("x",)).program().shifted(1, 5)
    p = np.array([9.0, 2.0, 0.3, 0.8, 0.1])
    x, y, w = np.linspace(-2, 2, n), RNG.normal(size=n), RNG.uniform(0.5, 2.0, size=n)
    w[::3] = 0.0
    out = native.evaluate(program, x, p, y, w)
    if n == 0:
        assert out["cost"] == out["raw"] == 0 and not out["jtj"].any() and not out["jtr"].any()
        return
    f, J = compiled.values_and_jacobian(program, x, p)
    r, Jw = (f - y) * w, J * w[:, None]
    np.testing.assert_allclose(out["value"], r, rtol=1e-14, atol=1e-14 * np.abs(r).max())
    np.testing.assert_allclose(out["cost"], r @ r, rtol=1e-13)
    np.testing.assert_allclose(out["raw"], ((f - y) ** 2)[w > 0].sum(), rtol=1e-13)
    np.testing.assert_allclose(out["jtr"], Jw.T @ r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["jtj"], Jw.T @ Jw, rtol=1e-12, atol=1e-14)
    assert not out["jtj"][0].any() and not out["jtj"][:, 0].any() and out["jtr"][0] == 0
    # the same arrays one number further into memory: the same bits (the lanes are added in a fixed order)
    moved = [np.concatenate([[7.0], a])[1:] for a in (x, y, w)]
    assert moved[0].ctypes.data % 32 != x.ctypes.data % 32 or n < 4
    again = native.evaluate(program, *moved[:1], p, *moved[1:])
    for key in ("cost", "raw", "jtr", "jtj"):
        np.testing.assert_array_equal(again[key], out[key])


def test_machine_code_and_interpreter_fit_alike_and_the_interpreter_stands_in(monkeypatch):
    model = gradfit.get_model("gaussian2d")
    xy = RNG.uniform(0, 6, size=(60, 30, 2))  # each spot at its own points, with weights
    true = np.array([50.0, 3.0, 3.2, 1.1, 0.9, 5.0]) * RNG.uniform(0.9, 1.1, size=(60, 6))
    Z = np.stack([model(torch.tensor(xy[i]), torch.tensor(true[i])).numpy() for i in range(60)])
    Z += RNG.normal(size=Z.shape)
    W = RNG.uniform(0.5, 1.5, size=Z.shape)
    settings = (batch.INITIAL_DAMPING, batch.MAX_DAMPING, batch.POLISH_STEPS, batch.SINGULAR)
    p0 = true * RNG.uniform(0.9, 1.1, size=true.shape)
    run = [
        compiled.fit(model.program(), xy, Z, W, p0, 100, 1e-10, False, settings, native=machine)
        for machine in (True, False)
    ]
    assert (run[0]["status"] == 0).all()
    for key in ("status", "n_points"):
        np.testing.assert_array_equal(run[0][key], run[1][key])
    for key, rtol in (("params", 1e-10), ("stderr", 1e-8), ("chi2", 1e-12), ("rmse", 1e-12)):
        np.testing.assert_allclose(run[0][key], run[1][key], rtol=rtol)
    assert np.mean(run[0]["n_steps"] == run[1]["n_steps"]) > 0.9
    # where LLVM cannot build the machine code, the interpreter runs the model, and a warning says so
    monkeypatch.setattr(native, "machine_code", lambda program: (_ for _ in ()).throw(RuntimeError("no target\nmore")))
    with pytest.warns(RuntimeWarning, match=r"could not be built \(no target\); .* interprets it instead"):
        stand_in = compiled.fit(model.program(), xy, Z, W, p0, 100, 1e-10, False, settings)
    for key in run[1]:
        np.testing.assert_array_equal(stand_in[key], run[1][key])


def test_spots_from_their_guess_recover_the_truth():
    model, xy, Y, kw, true = _spots()
    fast = batch.fit_many(model, xy, Y, backend="compiled", **kw)  # (the torch LM's twin: TWINS below)
    assert fast.counts() == {"converged": len(Y)}
    within = np.abs(fast.params - true) <= 5 * fast.stderr
    assert within.mean() > 0.98


def test_weights_ragged_curves_and_x_per_curve_equal_single_fits():
    model, x, y, kw, _ = _decays()
    fast = batch.fit_many(model, x, y, backend="compiled", **kw)  # (the torch LM's twin: TWINS below)
    assert fast.n_points[3] == 20 and fast.n_points[7] == 15
    sigma = kw["sigma"]
    for absolute in (True, False):  # and a single fit of a ragged curve
        one = gradfit.fit(
            "exp_decay", x[3, :20], y[3, :20], sigma=sigma[3, :20], p0=[2.0, 1.0, 0.0], absolute_sigma=absolute
        )
        many = batch.fit_many(model, x, y, absolute_sigma=absolute, backend="compiled", **kw)
        np.testing.assert_allclose(many.params[3], list(one.params.values()), rtol=SAME)
        np.testing.assert_allclose(many.stderr[3], list(one.stderr.values()), rtol=1e-6)


def test_polynomial_by_lm_equals_polyfit_and_a_constant_is_the_mean():
    model, x, Y, kw, _ = _polynomials()
    fast = batch.fit_many(model, x, Y, backend="compiled", **kw)  # (the torch LM's twin: TWINS below)
    for i in range(0, 30, 7):
        np.testing.assert_allclose(fast.params[i], np.polyfit(x, Y[i], 3), rtol=1e-8, atol=1e-10)
    const = batch.fit_many("constant", x, Y, method="lm", backend="compiled")
    np.testing.assert_allclose(const.params[:, 0], Y.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(const.stderr[:, 0], Y.std(axis=1, ddof=1) / np.sqrt(25), rtol=1e-8)


def test_mixed_failures_are_marked():
    model, x, Y, kw, _ = _failures()
    fast = batch.fit_many(model, x, Y, backend="compiled", **kw)  # (the torch LM marks them alike: TWINS below)
    assert list(fast.status[[0, 1, 2, 4, 5]]) == ["converged", "too_few_points", "singular", "diverged", "diverged"]
    model, x, Y, kw, _ = _capped()
    capped = batch.fit_many(model, x, Y, backend="compiled", **kw)
    assert capped.status[0] == "max_steps" and capped.n_steps[0] == 2


@pytest.mark.parametrize("starts", ["per curve", "shared", "guessed"])
def test_chunks_give_the_same_answers(starts):
    x = np.linspace(-5, 5, 40)
    true = np.stack([RNG.uniform(2, 4, 50), RNG.uniform(-1, 1, 50), RNG.uniform(0.5, 1.5, 50)], 1)
    Y = true[:, :1] * np.exp(-((x - true[:, 1:2]) ** 2) / (2 * true[:, 2:] ** 2)) + 0.05 * RNG.normal(size=(50, 40))
    p0 = {"per curve": true * 1.1, "shared": [3.0, 0.0, 1.0], "guessed": None}[starts]
    whole = batch.fit_many("gaussian", x, Y, p0=p0, backend="compiled")
    chunked = batch.fit_many("gaussian", x, Y, p0=p0, backend="compiled", chunk_size=7)
    assert whole.counts() == {"converged": 50}
    for key in ("params", "stderr", "n_steps", "status"):
        np.testing.assert_array_equal(getattr(whole, key), getattr(chunked, key))
    if starts == "per curve":  # and each curve from its own start, not its neighbour's
        np.testing.assert_allclose(
            whole.params, batch.fit_many("gaussian", x, Y, p0=p0, backend="torch").params, rtol=SAME
        )


def test_threads_do_not_change_the_answers():
    x = np.linspace(-5, 5, 50)
    model = gradfit.get_model("gaussian")
    true = np.stack([RNG.uniform(2, 4, 37), RNG.uniform(-1, 1, 37), RNG.uniform(0.5, 1.5, 37)], 1)
    Y = model(torch.tensor(x), torch.tensor(true)).numpy() + 0.05 * RNG.normal(size=(37, 50))
    program, W = model.program(), np.ones_like(Y)
    settings = (batch.INITIAL_DAMPING, batch.MAX_DAMPING, batch.POLISH_STEPS, batch.SINGULAR)
    runs = [
        compiled.fit(program, x.reshape(1, -1, 1), Y, W, true, 100, 1e-12, False, settings, threads=t)
        for t in (1, 3, 37)
    ]
    for other in runs[1:]:
        for key in runs[0]:
            np.testing.assert_array_equal(runs[0][key], other[key])
    # and fit_many called from several Python threads at once (as Dask's threaded scheduler does)
    results = {}

    def work(i):
        results[i] = batch.fit_many("gaussian", x, Y, p0=true, backend="compiled").params

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], runs[0]["params"])


def test_one_row_of_weights_for_every_curve_equals_a_row_each():
    # every point used: fit_many hands the kernel one row of ones for all curves; a missing point anywhere
    # makes a row of weights per curve: the other curves' fits are the same to the bit
    x = np.linspace(-5, 5, 30)
    true = np.stack([RNG.uniform(2, 4, 40), RNG.uniform(-1, 1, 40), RNG.uniform(0.5, 1.5, 40)], 1)
    Y = true[:, :1] * np.exp(-((x - true[:, 1:2]) ** 2) / (2 * true[:, 2:] ** 2)) + 0.05 * RNG.normal(size=(40, 30))
    shared = batch.fit_many("gaussian", x, Y, p0=true, backend="compiled")
    holed = Y.copy()
    holed[0, 3] = np.nan
    each = batch.fit_many("gaussian", x, holed, p0=true, backend="compiled")
    assert each.n_points[0] == 29 and shared.counts() == each.counts() == {"converged": 40}
    for key in ("params", "stderr", "rmse", "chi2", "n_steps"):
        np.testing.assert_array_equal(getattr(shared, key)[1:], getattr(each, key)[1:])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"model": lambda x, a, b: torch.where(x > 0, a, b)},
            r"Python function not read as a formula \(its trace stopped at a comparison",
        ),
        ({"method": "adam"}, "only method 'lm'"),
        ({"dtype": torch.float32}, "float64 only"),
        ({"device": "cuda"}, "CPU only"),
    ],
)
def test_backend_compiled_says_why_it_cannot_run(kwargs, match, monkeypatch):
    # as on a machine with a GPU, where 'cuda' passes the device check
    monkeypatch.setattr(batch, "check_device", lambda device: torch.device(device))
    options = {"model": "exponential", **kwargs}
    model = options.pop("model")
    with pytest.raises(OptionError, match=match):
        batch.fit_many(model, np.arange(5.0), np.ones((2, 5)), p0=[1.0, 0.1], backend="compiled", **options)


def test_auto_runs_compiled_where_it_can_and_torch_elsewhere(monkeypatch):
    monkeypatch.setattr(compiled, "cached", lambda: True)  # as once the solver is compiled on this machine
    calls = []
    monkeypatch.setattr(batch, "_fit_compiled", lambda *a: calls.append(a) or pytest.fail("compiled"))
    x, Y = np.arange(6.0), np.ones((batch.COMPILED_FROM, 6))
    batch.fit_many(lambda x, a: torch.where(x > 9, a, a + 0 * x), x, Y, p0=[1.0])  # not read as a formula: torch
    batch.fit_many("exponential", x, Y, p0=[1.0, 0.0], dtype=torch.float32)  # float32: torch
    batch.fit_many("exponential", x, Y, p0=[1.0, 0.0], backend="torch")
    batch.fit_many("exponential", x, Y[:-1], p0=[1.0, 0.0])  # fewer curves than COMPILED_FROM: torch
    batch.fit_many("exponential", x, Y, p0=[1.0, 0.0], method="adam")
    assert not calls
    with pytest.raises(pytest.fail.Exception):
        batch.fit_many("exponential", x, Y, p0=[1.0, 0.0])  # a formula, float64, CPU, enough curves: compiled
    with pytest.raises(OptionError, match="Unknown backend 'numba'"):
        batch.fit_many("exponential", x, Y, backend="numba")


def test_answers_do_not_depend_on_the_process(tmp_path):
    """The same data give the same bits in another process (whose arrays lie elsewhere in memory): no sum
    in the kernel is reordered by where its arrays are aligned."""
    import subprocess
    import sys

    x = np.linspace(-5, 5, 37)
    model = gradfit.get_model("gaussian + linear")
    true = np.stack(
        [
            RNG.uniform(2, 4, 300),
            RNG.uniform(-1, 1, 300),
            RNG.uniform(0.5, 1.5, 300),
            RNG.uniform(-0.1, 0.1, 300),
            RNG.uniform(0, 1, 300),
        ],
        1,
    )
    peak = true[:, :1] * np.exp(-((x - true[:, 1:2]) ** 2) / (2 * true[:, 2:3] ** 2))
    Y = peak + true[:, 3:4] * x + true[:, 4:] + 0.05 * RNG.normal(size=(300, 37))
    np.savez(tmp_path / "data.npz", x=x, Y=Y, p0=true)
    script = (
        "import numpy as np, gradfit; d = np.load('data.npz'); "
        "r = gradfit.fit_many('gaussian + linear', d['x'], d['Y'], p0=d['p0'], backend='compiled'); "
        "np.savez('out.npz', params=r.params, stderr=r.stderr, steps=r.n_steps)"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300)
    there = np.load(tmp_path / "out.npz")
    here = batch.fit_many(model, x, Y, p0=true, backend="compiled")
    np.testing.assert_array_equal(here.params, there["params"])
    np.testing.assert_array_equal(here.stderr, there["stderr"])
    np.testing.assert_array_equal(here.n_steps, there["steps"])


def test_small_batches_on_auto_do_not_import_numba():
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, gradfit; x = np.linspace(0, 1, 9); "
        "r = gradfit.fit_many('exponential', x, np.exp(np.outer([1.0, 2.0], x)), p0=[1.0, 1.0]); "
        "assert r.converged.all() and 'numba' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_surfaces_at_their_own_points_and_curves_too_long_for_the_workspace(monkeypatch):
    model = gradfit.get_model("gaussian2d")
    xy = RNG.uniform(0, 6, size=(30, 40, 2))  # every spot sampled at its own 40 points
    true = np.array([50.0, 3.0, 3.2, 1.1, 0.9, 5.0]) * RNG.uniform(0.9, 1.1, size=(30, 6))
    Z = np.stack([model(torch.tensor(xy[i]), torch.tensor(true[i])).numpy() for i in range(30)])
    Z += 0.5 * RNG.normal(size=Z.shape)
    fast, slow = _both("gaussian2d", xy, Z, p0=true)
    _assert_twins(fast, slow)
    monkeypatch.setattr(compiled, "WORK_BYTES", 1000)
    with pytest.raises(OptionError, match="curves of 40 points are too long for it"):
        batch.fit_many("gaussian2d", xy, Z, p0=true, backend="compiled")
    monkeypatch.setattr(batch, "COMPILED_FROM", 1)  # auto would take compiled, but the curves do not fit: torch
    monkeypatch.setattr(batch, "_fit_compiled", lambda *a: pytest.fail("compiled"))
    np.testing.assert_array_equal(batch.fit_many("gaussian2d", xy, Z, p0=true).params, slow.params)


def test_a_first_fit_on_a_machine_says_it_compiles_the_solver(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    # numba's cache empty (a fresh machine): not compiled yet; nothing is compiled by asking
    fresh = subprocess.run(
        [sys.executable, "-c", "from gradfit.solvers import compiled; print(compiled.cached())"],
        env={**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == "False"
    x = np.linspace(-3, 3, 25)
    Y = np.exp(-((x - np.linspace(-1, 1, 20)[:, None]) ** 2) / 2)
    batch.fit_many("gaussian", x, Y, backend="compiled")
    assert compiled.cached()  # compiled in this process (or loaded from the cache)
    monkeypatch.setattr(compiled, "cached", lambda: False)
    batch.fit_many("gaussian", x, Y, backend="compiled", progress=True)
    assert "compiling the solver first: once per machine" in capsys.readouterr().err
    batch.fit_many("gaussian", x, Y, backend="torch", progress=True)  # torch compiles nothing
    assert "compiling" not in capsys.readouterr().err


def test_a_first_fit_on_a_fresh_machine_runs_torch_and_compiles_for_later_in_the_background(tmp_path):
    """numba's cache empty: auto does not make the user wait ~20 s for the compile; it fits with torch (the
    same answers as backend='torch'), compiles in a process of its own, and the next process runs compiled."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    data = """
import numpy as np, gradfit
from gradfit import batch
from gradfit.solvers import compiled, compiled_lm
x = np.linspace(-5, 5, 30)
Y = 3 * np.exp(-(x - np.linspace(-1, 1, batch.COMPILED_FROM)[:, None]) ** 2 / 2) + 0.01 * np.cos(7 * x)
"""
    first = (
        data
        + """
result = gradfit.fit_many("gaussian", x, Y)
assert not compiled_lm.lm_curves.signatures, "compiled in the fit's own process"
assert compiled._background is not None, "no compile started for later fits"
again = gradfit.fit_many("gaussian", x, Y)  # while it compiles: torch again, and no second compile
assert compiled.compile_in_background() is compiled._background
torch_fit = gradfit.fit_many("gaussian", x, Y, backend="torch")
for r in (result, again):
    np.testing.assert_array_equal(r.params, torch_fit.params)
assert compiled._background.wait(timeout=600) == 0
print(compiled.cached())
"""
    )
    later = (
        data
        + """
result = gradfit.fit_many("gaussian", x, Y)
assert compiled_lm.lm_curves.signatures and compiled._background is None  # compiled, loaded from the cache
assert result.converged.all()
"""
    )
    run = subprocess.run([sys.executable, "-c", first], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "True"
    run = subprocess.run([sys.executable, "-c", later], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]


def test_the_rules_compiled_are_the_rules_in_python():
    """Levenberg–Marquardt's rules for one curve (solvers.lm_rules) run in Python for a few curves and compiled
    for many (and inlined in the compiled LM): the same verdicts and states on every kind of trial — kept,
    rejected, not factored, non-finite, tiny, Gauss–Newton streaks, polishing, λ past use, max_steps. A
    difference means numba read them otherwise, or its cache holds rules older than lm_rules.py (numba does
    not see a change in another file: see the test below)."""
    from gradfit.solvers import lm_rules

    rng = np.random.default_rng(0)
    n = 5000
    cost = rng.choice([0.0, 1e-30, 0.3, 1.0, 7.0], n)
    with np.errstate(invalid="ignore"):  # (0 × inf)
        c_new = cost * rng.choice([0.5, 1 - 1e-9, 1 - 1e-14, 1.0, 1 + 1e-14, 1.5, np.nan, np.inf], n)
    predicted = cost * rng.choice([0.5, 1e-7, 1e-9, 1e-12, 0.0, -1e-3, np.nan], n)
    info = rng.choice([0.0, 0.0, 0.0, 2.0], n)
    step, size = rng.choice([0.0, 1e-12, 1e-3, 1.0], n), rng.choice([0.0, 1.0, 1e6], n)
    cosine = rng.choice([0.0, 1e-12, 0.5], n) * np.sqrt(cost)

    def state():
        pick = np.random.default_rng(1).choice
        counts = [0, 0, 1, 2, 3], [0, 0, 1, 4, 5], [0, 3, 99]
        damping = pick([1e-3, 0.0, 1e31, 1e-12], n), pick([2.0, 4.0, 64.0], n)
        return (*damping, *(pick(c, n).astype(np.int64) for c in counts))

    def verdicts():
        return np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, bool)

    for tolerances in [(1e-8, 1e-8, 0.0, 100), (1e-10, 1e-12, 1e-10, 4)]:
        a, b = (state(), verdicts()), (state(), verdicts())
        lm_rules.judge_curves(cost, c_new, predicted, info, step, size, cosine, a[0], tolerances, a[1])
        compiled_lm.judge_curves(cost, c_new, predicted, info, step, size, cosine, b[0], tolerances, b[1])
        for x, y in zip(a[0] + a[1], b[0] + b[1]):
            np.testing.assert_array_equal(x, y)
        why = a[1][2]
        assert {lm_rules.ITERATING, lm_rules.ZERO, lm_rules.FTOL, lm_rules.XTOL, lm_rules.FLOOR} <= set(why)
        assert a[1][0].any() and not a[1][0].all() and a[1][3].any() and not a[1][3].all()


def test_a_cache_older_than_the_code_the_kernels_inline_is_dropped(tmp_path):
    """numba checks a cached function against its own file only (numba/numba#1833), and the compiled LM inlines
    lm_rules.py and compiled_interp.py: a cache older than any of them is dropped on import and compiled again,
    a newer one is used. Here the cache is made old by its date, as an edit of lm_rules.py would leave it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    script = """
from gradfit.solvers import compiled, compiled_lm
compiled.warm_up()
stats = compiled_lm.lm_curves.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""

    def warm_up():
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        hits, misses = (int(n) for n in run.stdout.split())
        return hits, misses, sorted(tmp_path.rglob("compiled_lm.*.nbi"))

    hits, misses, first = warm_up()
    assert first and (hits, misses) == (0, 1), "compiled the first time, into the cache"
    hits, misses, again = warm_up()
    assert again == first and (hits, misses) == (1, 0), "a cache newer than the code: loaded"
    for path in tmp_path.rglob("compiled_lm.*"):
        os.utime(path, (1e9, 1e9))  # 2001: older than lm_rules.py and compiled_interp.py
    hits, misses, last = warm_up()
    assert last == first and (hits, misses) == (0, 1), "an older cache: dropped, compiled again"
    assert last[0].stat().st_mtime > 1e9


# --- the twins: one table of cases through the compiled LM and the torch LM ---------------------------------


def _peaks():
    x = np.linspace(-5, 5, 50)
    true = np.column_stack([RNG.uniform(1, 3, 60), RNG.uniform(-1, 1, 60), RNG.uniform(0.5, 1.5, 60)])
    Y = true[:, :1] * np.exp(-((x - true[:, 1:2]) ** 2) / (2 * true[:, 2:] ** 2)) + 0.02 * RNG.normal(size=(60, 50))
    return "gaussian", x, Y, {"p0": true * RNG.uniform(0.8, 1.2, true.shape)}, true


def _decays():
    b, n = 40, 30
    x = np.sort(RNG.uniform(0, 5, size=(b, n)), axis=1)  # each curve at its own points
    true = np.stack([RNG.uniform(1, 3, b), RNG.uniform(0.5, 1.5, b), RNG.uniform(-0.2, 0.2, b)], 1)
    y = true[:, :1] * np.exp(-true[:, 1:2] * x) + true[:, 2:] + 0.02 * RNG.normal(size=(b, n))
    y[3, 20:] = np.nan  # a shorter curve
    mask = np.ones_like(y, dtype=bool)
    mask[7, ::2] = False
    sigma = RNG.uniform(0.01, 0.03, size=(b, n))
    return "exp_decay", x, y, {"sigma": sigma, "mask": mask, "p0": [2.0, 1.0, 0.0]}, true


def _polynomials():
    x = np.linspace(-1, 2, 25)
    true = [0.3, -1.0, 0.5, 2.0]
    return "poly3", x, np.polyval(true, x) + 0.1 * RNG.normal(size=(30, 25)), {"method": "lm"}, true


def _spots():
    xx, yy = np.meshgrid(np.arange(7.0), np.arange(7.0))
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    true = np.array([50.0, 3.0, 3.2, 1.1, 0.9, 5.0]) * RNG.uniform(0.9, 1.1, size=(80, 6))
    clean = gradfit.get_model("gaussian2d")(torch.tensor(xy), torch.tensor(true)).numpy()
    return "gaussian2d", xy, clean + RNG.normal(size=clean.shape), {}, true  # from the model's guesses


def _sum():
    x = np.linspace(0, 10, 80)
    true = np.column_stack([RNG.uniform(2, 4, 30), RNG.uniform(4, 6, 30), RNG.uniform(0.5, 1, 30)])
    Y = true[:, :1] * true[:, 2:] ** 2 / ((x - true[:, 1:2]) ** 2 + true[:, 2:] ** 2) + 0.1 * x + 0.5
    p0 = np.column_stack([true * RNG.uniform(0.9, 1.1, true.shape), np.full((30, 2), [0.0, 0.0])])
    return "lorentzian + linear", x, Y + 0.02 * RNG.normal(size=Y.shape), {"p0": p0}, true


def _failures():
    x = np.linspace(-5, 5, 50)
    text = "a*exp(-(x - m)**2/(2*s**2)) + c"
    p0 = np.array([[3.0, 0.2, 1.0, 0.2]] * 6)
    Y = gradfit.get_model(text)(torch.tensor(x), torch.tensor(p0)).numpy() + 0.05 * RNG.normal(size=(6, 50))
    Y[1, :] = np.nan
    Y[1, :3] = [1.0, 2.0, 3.0]  # too few points
    Y[2] = 0.5  # flat data from a start with no peak: singular
    p0[2] = [0.0, 0.0, 1.0, 0.5]
    Y[4] = 1e300  # overflow: diverged
    p0[5] = [1e200, 0.2, 1.0, 0.2]  # a start whose squares overflow
    return text, x, Y, {"p0": p0, "max_steps": 50}, None


def _capped():
    text, x, Y, kw, _ = _failures()
    return text, x, Y[:1], {"p0": kw["p0"][:1] * 3, "max_steps": 2}, None


def _oscillations():
    x = np.linspace(0, 6, 60)
    true = np.column_stack([RNG.uniform(1, 2, 25), RNG.uniform(1.5, 2.5, 25), RNG.uniform(1, 3, 25)])
    Y = true[:, :1] * np.sin(true[:, 1:2] * x) * np.exp(-x / true[:, 2:]) + 0.01 * RNG.normal(size=(25, 60))
    return "a*sin(w*x)*exp(-x/t)", x, Y, {"p0": true * RNG.uniform(0.95, 1.05, true.shape)}, true


TWINS = {
    "peaks from p0": _peaks,
    "weighted ragged decays, x per curve": _decays,
    "polynomials by LM": _polynomials,
    "2-D spots from their guess": _spots,
    "a sum of built-ins": _sum,
    "too few points, singular, diverged": _failures,
    "max_steps": _capped,
    "damped oscillations": _oscillations,
}
STEPS_SHARE = 0.9  # curves whose step counts agree exactly: the rest, a last test that rounding tips over


@pytest.mark.parametrize("case", TWINS)
def test_the_compiled_lm_and_the_torch_lm_are_twins(case):
    """The compiled LM (numba, one curve at a time) and the torch LM (batch.py, all curves at once) run the same
    algorithm: the same status for every curve, the same parameters, standard errors and statistics, and the
    same number of steps but for a curve whose last stopping test falls the other way by rounding."""
    model, x, Y, kw, _ = TWINS[case]()
    _assert_twins(*_both(model, x, Y, **kw))


def _both(model, x, Y, **kw):
    return tuple(batch.fit_many(model, x, Y, backend=backend, **kw) for backend in ("compiled", "torch"))


def _assert_twins(fast, slow):
    assert list(fast.status) == list(slow.status)
    ok = fast.converged
    np.testing.assert_allclose(fast.params[ok], slow.params[ok], rtol=SAME, atol=1e-12)
    np.testing.assert_allclose(fast.stderr[ok], slow.stderr[ok], rtol=1e-6)
    np.testing.assert_allclose(fast.chi2[ok], slow.chi2[ok], rtol=1e-10)
    np.testing.assert_allclose(fast.rmse, slow.rmse, rtol=1e-10)
    np.testing.assert_array_equal(fast.n_points, slow.n_points)
    assert np.mean(fast.n_steps == slow.n_steps) >= STEPS_SHARE
    assert np.abs(fast.n_steps - slow.n_steps).max() <= 2

"""The safe expression language: right answers, clear refusals, and nothing ever executed."""

import math
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradfit.errors import ExpressionError, FitError
from gradfit.expr import MAX_DEPTH, MAX_LENGTH, parse
from gradfit.expr_ops import FUNCTIONS
from gradfit.special import loggamma_abs, voigt_profile

TWIN_RTOL = 1e-12  # an expression against the same formula written as a Python function
FUZZ_EXAMPLES = int(os.environ.get("GRADFIT_FUZZ_EXAMPLES", "2500"))  # per fuzz test; `make fuzz` raises it

X64 = torch.linspace(0.1, 3.0, 50, dtype=torch.float64)


# (expression, its Python-function twin, parameter values)
TWINS = [
    ("a*exp(-b*x) + c", lambda x, a, b, c: a * torch.exp(-b * x) + c, [5.0, 1.3, 0.5]),
    (
        "amplitude*exp(-(x - center)**2/(2*sigma**2))",
        lambda x, amplitude, center, sigma: amplitude * torch.exp(-((x - center) ** 2) / (2 * sigma**2)),
        [3, 1, 0.4],
    ),
    (
        "A*sin(w*x + p) + B*cos(w*x)",
        lambda x, A, w, p, B: A * torch.sin(w * x + p) + B * torch.cos(w * x),
        [2, 1.5, 0.3, -0.7],
    ),
    (
        "log(a*x) + log10(x)/b - log2(x) + sqrt(c*x)",
        lambda x, a, b, c: torch.log(a * x) + torch.log10(x) / b - torch.log2(x) + torch.sqrt(c * x),
        [2, 3, 4],
    ),
    (
        "abs(a - x) + tan(x/b) + arcsin(x/4)*arccos(x/5) + arctan(a*x) + asin(x/6) + acos(x/7) + atan(x)",
        lambda x, a, b: (
            torch.abs(a - x)
            + torch.tan(x / b)
            + torch.asin(x / 4) * torch.acos(x / 5)
            + torch.atan(a * x)
            + torch.asin(x / 6)
            + torch.acos(x / 7)
            + torch.atan(x)
        ),
        [1.5, 4.0],
    ),
    (
        "arctan2(a, x) + sinh(x/b) + cosh(x/b) + tanh(a*x)",
        lambda x, a, b: torch.atan2(a, x) + torch.sinh(x / b) + torch.cosh(x / b) + torch.tanh(a * x),
        [0.5, 2.0],
    ),
    (
        "erf(a*x) + erfc(b*x) + sigmoid(x - a)",
        lambda x, a, b: torch.special.erf(a * x) + torch.special.erfc(b * x) + torch.sigmoid(x - a),
        [0.7, 0.4],
    ),
    (
        # the twin through torch's autograd of gradfit.special (the values against scipy: tests/test_special.py)
        "a*voigt(x - b, c, 0.5)",
        lambda x, a, b, c: a * voigt_profile(x - b, c, 0.5),
        [2.0, 0.3, 0.8],
    ),
    (  # (loggamma_abs's twin is gradfit.special's, through autograd: its values against scipy in test_special.py)
        "a*heaviside(x - b) + exprel(x/c) + gammaln(a*x) + loggamma_abs(a*x, b - x)",
        lambda x, a, b, c: (
            a * (x >= b) + torch.expm1(x / c) / (x / c) + torch.lgamma(a * x) + loggamma_abs(a * x, b - x)
        ),
        [1.5, 2.0, 3.0],
    ),
    (
        "-a*x**-2 + +b*pi - e**(x/c) + 1.5e-3*x",
        lambda x, a, b, c: -a * x**-2 + +b * math.pi - math.e ** (x / c) + 1.5e-3 * x,
        [1, 2, 3],
    ),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("text,twin,values", TWINS, ids=[t[0][:30] for t in TWINS])
def test_expression_equals_its_python_twin(text, twin, values, dtype):
    from gradfit import ExpressionModel

    model = ExpressionModel(text)
    x = X64.to(dtype)
    p = torch.tensor(values, dtype=dtype)
    expected = twin(x, *p)
    got = model(x, p)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=TWIN_RTOL if dtype == torch.float64 else 1e-6, atol=0)
    # batched: a (B, P) stack of parameter vectors gives (B, N), each row its own curve
    batch = torch.stack([p, p * 1.1, p * 0.9])
    rows = model(x, batch)
    assert rows.shape == (3, len(x))
    for row, params in zip(rows, batch):
        torch.testing.assert_close(row, twin(x, *params), rtol=TWIN_RTOL if dtype == torch.float64 else 1e-6, atol=0)


def test_every_function_is_covered_by_the_twins():
    used = " ".join(t[0] for t in TWINS)
    assert all(f"{name}(" in used for name in FUNCTIONS)


def test_parameters_in_order_of_first_appearance_or_as_given():
    assert parse("b*x + a*x**2 + c").param_names == ("b", "a", "c")
    assert parse("b*x + a*x**2 + c", params=["a", "b", "c"]).param_names == ("a", "b", "c")
    with pytest.raises(ExpressionError, match="uses 'c', which is not among the parameters"):
        parse("a*x + c", params=["a", "b"])
    with pytest.raises(ExpressionError, match="Parameter 'b' does not appear"):
        parse("a*x", params=["a", "b"])


def test_variables_other_than_x():
    e = parse("A*sin(w*t + p)", variables=["t"])
    assert e.param_names == ("A", "w", "p") and e.variables == ("t",)
    surface = parse("a*x + b*y", variables=["x", "y"])
    assert surface.param_names == ("a", "b")
    assert float(surface([torch.tensor(2.0), torch.tensor(3.0)], [torch.tensor(1.0), torch.tensor(10.0)])) == 32.0


def test_caret_gets_a_hint():
    with pytest.raises(ExpressionError, match=r"'\^' at column 2 .* write a\*\*2 instead of a\^2"):
        parse("a^2")


def test_huge_powers_give_inf_and_the_fitter_reports_it():
    assert parse("10**10**10 + a")([torch.tensor(1.0)], [torch.tensor(0.0)]) == math.inf
    import gradfit

    with pytest.raises(FitError, match="NaN or inf at the starting point"):
        gradfit.fit("a*x + 10**10**10", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


# --- refusals, with a canary: an audit hook that records anything the interpreter is asked to do ---

_EVENTS = []
_LISTENING = [False]


def _audit(event, args):
    # ast.parse raises "compile" (it compiles to a tree only); id() is harmless bookkeeping
    if _LISTENING[0] and event not in ("compile", "builtins.id", "object.__getattr__", "sys._getframe"):
        _EVENTS.append(event)


sys.addaudithook(_audit)

INJECTIONS = [
    ("__import__('os').system('id')", "a call of anything but a known function"),
    ("().__class__.__bases__[0].__subclasses__()", "a call of anything but a known function"),
    ("x.__class__", "attribute access"),
    ("lambda: 1", "a lambda"),
    ("[a for a in x]", "a comprehension"),
    ('f"{a}"', "an f-string"),
    ("(a := 1)", "an assignment"),
    ("x[0]", "indexing"),
    ("exp(x, out=a)", "keyword arguments"),
    ("*a", "not valid syntax"),
    ("a if x else b", "a conditional"),
    ("'a'*10**9", "text"),
    ("open('f')", "the function 'open'"),
    ("globals()", "the function 'globals'"),
    ("eval('1')", "the function 'eval'"),
    ("a" * 100_000, "the limit is 2,000"),
    ("(" * 1000 + "x" + ")" * 1000, "the limit is 2,000"),  # too long before it is too deep
    ("(" * 500 + "x" + ")" * 500, "nests deeper than 100"),
    ("-" * 1500 + "a", "nests deeper than 100"),
    ("__builtins__", "the name '__builtins__'"),
    ("a < b", "a comparison"),
    ("a and b", "a boolean operator"),
    ("b'x'", "bytes"),
    ("a @ b", "the operator @"),
    ("a % b", "the operator %"),
    ("exp", "'exp' without (...)"),
    ("sin(x, x)", "sin() with 2 arguments"),
    ("a*x\0", "null bytes"),
    ("a*x;import os", "not valid syntax"),
    ("a*x\nimport os", "not valid syntax"),
    ("", "is empty"),
]


@pytest.mark.parametrize("text,fragment", INJECTIONS, ids=[t[0][:25] for t in INJECTIONS])
def test_injections_are_refused_and_nothing_runs(text, fragment):
    _EVENTS.clear()
    _LISTENING[0] = True
    try:
        with pytest.raises(ExpressionError) as info:
            parse(text)
    finally:
        _LISTENING[0] = False
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert _EVENTS == []  # no exec, import, open, os.system, subprocess: the canary heard nothing


def test_the_canary_would_hear_something():
    _EVENTS.clear()
    _LISTENING[0] = True
    try:
        __import__("os").getcwd
        open(os.devnull).close()
    finally:
        _LISTENING[0] = False
    assert "open" in _EVENTS


def test_limits_are_what_the_docs_say():
    assert MAX_LENGTH == 2000 and MAX_DEPTH == 100
    parse("(" * 99 + "a*x" + ")" * 99)  # just inside the limit
    long_sum = parse("a*x" + " + a*x" * 330)  # long but flat: one level, evaluated in a loop
    assert float(long_sum([torch.tensor(2.0)], [torch.tensor(1.5)])) == 331 * 3.0


# --- fuzzing ----------------------------------------------------------------------------------

_SAFE_EVAL = {"x": X64[:5]}


def _must_compile_or_refuse(text: str) -> None:
    try:
        expression = parse(text)
    except ExpressionError:
        return
    values = [torch.full((), 0.7, dtype=torch.float64) for _ in expression.param_names]
    with torch.no_grad():
        expression([X64[:5]], values)  # and evaluating it raises nothing either


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
    | st.text(alphabet="ax()+-*/.,e1209_ ^[]{}'\"=:<>!%@&|~`\\lambdimpotsrexc", max_size=60)
)
def test_fuzz_random_strings(text):
    _must_compile_or_refuse(text)


_LEAVES = st.sampled_from(
    [
        "x",
        "a",
        "b",
        "1",
        "2.5",
        "1e-3",
        "pi",
        "e",
        "__x",
        "x.real",
        "'s'",
        "True",
        "None",
        "[1]",
        "{}",
        "...",
        "10**10**10",
        "0",
    ]
)
_FUNCS = st.sampled_from(sorted(FUNCTIONS) + ["open", "eval", "getattr", "__import__"])
_OPS = st.sampled_from(["+", "-", "*", "/", "**", "%", "//", "@", "<", "and", "if 1 else", "^", "|"])


def _trees(children):
    return (
        st.tuples(children, _OPS, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        | st.tuples(st.sampled_from(["-", "+", "~", "not "]), children).map(lambda t: f"{t[0]}{t[1]}")
        | st.tuples(_FUNCS, st.lists(children, min_size=0, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})")
        | st.tuples(children, st.sampled_from([".__class__", "[0]", "(1)", ".x"])).map("".join)
    )


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(_LEAVES, _trees, max_leaves=40))
def test_fuzz_random_syntax_trees(text):
    _must_compile_or_refuse(text)


@pytest.mark.parametrize("text,twin,values", TWINS, ids=[t[0][:30] for t in TWINS])
def test_tree_derivatives_equal_autograds(text, twin, values):
    # fit_many differentiates an expression on its tree; torch.func.jacfwd of the twin is the oracle
    from gradfit import ExpressionModel

    model = ExpressionModel(text)
    p = torch.tensor(values, dtype=torch.float64)
    expected = torch.func.jacfwd(lambda q: twin(X64, *q))(p)  # (N, P)
    value, grads = model.expression.value_and_gradient([X64], list(p.unbind()))
    got = torch.stack(
        [torch.zeros_like(X64) if g is None else torch.as_tensor(g, dtype=torch.float64).expand_as(X64) for g in grads],
        dim=-1,
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.as_tensor(value).expand_as(X64), twin(X64, *p), rtol=TWIN_RTOL, atol=0)


def test_tree_derivatives_over_a_batch_of_parameters():
    from gradfit import ExpressionModel

    model = ExpressionModel("a*exp(-(x - m)**2/(2*s**2)) + c")
    batch = torch.tensor([[3.0, 0.5, 1.0, 0.2], [2.0, -0.5, 0.7, 0.0]], dtype=torch.float64)
    _, grads = model.expression.value_and_gradient([X64], [v.unsqueeze(-1) for v in batch.unbind(-1)])
    for i, params in enumerate(batch):
        expected = torch.func.jacfwd(lambda q: model(X64, q))(params)
        got = torch.stack([torch.as_tensor(g, dtype=torch.float64).expand(2, len(X64))[i] for g in grads], dim=-1)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)

"""The safe expression language: the ONLY place where text a user typed becomes a function.

``"a*exp(-b*x) + c"`` is parsed once with Python's ``ast`` (eval mode), every node is
checked against a short whitelist, and the tree is compiled, by walking it, into
nested closures over torch operations. Nothing is ever passed to eval, exec,
compile-and-run, sympify or parse_expr: the only things an expression can do are
arithmetic and the functions in FUNCTIONS, on numbers, variables and parameters.

Grammar: numbers (1, 2.5, 1e-3), names, ``+ - * / **``, unary ``-``/``+``,
parentheses, and calls ``f(arg)`` (``arctan2(y, x)``) of the whitelisted functions.
Names are the independent variables (``x`` unless told otherwise), the constants
``pi`` and ``e``, or parameters: every other name, in order of first appearance.
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .special import digamma_complex, exprel, exprel_slope, heaviside, loggamma_abs, voigt_and_partials, voigt_profile

from .errors import ExpressionError

MAX_LENGTH = 2000  # characters
MAX_DEPTH = 100  # nesting of the syntax tree (parentheses, operators, calls)

FUNCTIONS: dict[str, tuple[Callable, int]] = {  # name -> (torch function, number of arguments)
    "exp": (torch.exp, 1),
    "log": (torch.log, 1),
    "log10": (torch.log10, 1),
    "log2": (torch.log2, 1),
    "sqrt": (torch.sqrt, 1),
    "abs": (torch.abs, 1),
    "sin": (torch.sin, 1),
    "cos": (torch.cos, 1),
    "tan": (torch.tan, 1),
    "arcsin": (torch.asin, 1),
    "arccos": (torch.acos, 1),
    "arctan": (torch.atan, 1),
    "asin": (torch.asin, 1),
    "acos": (torch.acos, 1),
    "atan": (torch.atan, 1),
    "arctan2": (torch.atan2, 2),
    "sinh": (torch.sinh, 1),
    "cosh": (torch.cosh, 1),
    "tanh": (torch.tanh, 1),
    "erf": (torch.special.erf, 1),
    "erfc": (torch.special.erfc, 1),
    "sigmoid": (torch.sigmoid, 1),
    "heaviside": (heaviside, 1),  # 1 where the argument is >= 0, else 0 (its derivative: 0)
    "exprel": (exprel, 1),  # (exp(u) - 1)/u, 1 at 0 (gradfit.special)
    "gammaln": (torch.special.gammaln, 1),  # log |Gamma(u)|
    "loggamma_abs": (loggamma_abs, 2),  # loggamma_abs(a, b): log |Gamma(a + ib)|, a > 0 (Pearson IV's)
    "voigt": (voigt_profile, 3),  # voigt(x, sigma, gamma): the Voigt profile of area 1 (gradfit.special)
}
TORCH_ONLY = {
    "voigt",
    "gammaln",
    "loggamma_abs",
}  # functions the compiled many-curve solver lacks: a model using one runs on torch
CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY = {  # Python's operators: they mix numbers and tensors either way round, as a formula does
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_OPERATOR = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
# What each forbidden kind of syntax is called in a message.
_FORBIDDEN = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.NamedExpr: "an assignment (:=)",
    ast.Starred: "unpacking (*)",
    ast.IfExp: "a conditional (if/else)",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "a slice",
}


@dataclass(frozen=True)
class Expression:
    """A checked, compiled expression: call it with the variables and the parameters."""

    text: str
    variables: tuple[str, ...]
    param_names: tuple[str, ...]
    _evaluate: Callable[[dict], torch.Tensor]
    _tree: ast.AST = None

    def __call__(self, variables: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Evaluate with tensors (or numbers) in the order of ``variables`` and ``param_names``."""
        env = dict(zip(self.variables, variables))
        env.update(zip(self.param_names, params))
        return self._evaluate(env)

    def value_and_gradient(self, variables, params) -> tuple[object, list]:
        """The value and its derivative with respect to each parameter (None where it is zero).

        Forward-mode differentiation on the tree itself: each node carries its value and the
        derivatives of the parameters below it only — no dual numbers, no graph — which is what
        makes many-curve Jacobians cheap.
        """
        if self._dual is None:
            object.__setattr__(self, "_dual", _compile_dual(self._tree.body, self.param_names))
        env = dict(zip(self.variables, variables))
        env.update(zip(self.param_names, params))
        value, grads = self._dual(env)
        return value, [grads.get(name) for name in self.param_names]

    def program(self) -> "Program | None":
        """The expression as a flat list of instructions, for the compiled many-curve solver; None when it calls a
        function that solver lacks (TORCH_ONLY: see ``torch_only``)."""
        builder = _ProgramBuilder(self.variables, self.param_names)
        try:
            builder.build(self._tree.body)
        except _TorchOnly:
            return None
        return builder.finish()

    def torch_only(self) -> str | None:
        """The first function the expression calls that only torch computes (see TORCH_ONLY), or None."""
        for node in ast.walk(self._tree):
            if isinstance(node, ast.Call) and node.func.id in TORCH_ONLY:
                return node.func.id
        return None

    _dual: Callable = None

    def names(self) -> set[str]:
        """Every name the expression uses: variables, parameters and constants."""
        return {node.id for node in ast.walk(self._tree) if isinstance(node, ast.Name)}

    def terms(self) -> list[tuple[str, str]]:
        """The top-level terms of the sum, as (sign, source text): 'gaussian + m*x - c' gives
        [('+', 'gaussian'), ('+', 'm*x'), ('-', 'c')]."""
        out, node, sign = [], self._tree.body, "+"
        while isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            out.append(("+" if isinstance(node.op, ast.Add) else "-", node.right))
            node = node.left
        out.append((sign, node))
        return [(s, ast.get_source_segment(self.text, n)) for s, n in reversed(out)]


def parse(text: str, variables: Sequence[str] = ("x",), params: Sequence[str] | None = None) -> Expression:
    """Check ``text`` against the whitelist and compile it; raises ExpressionError, never anything else."""
    if not isinstance(text, str):
        raise ExpressionError(f"A model expression must be text, got {type(text).__name__}.")
    variables = tuple(variables)
    for name in variables:
        _check_name(name, "variable")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"The expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}.")
    if not text.strip():
        raise ExpressionError("The model expression is empty. Write a formula such as a*x + b.")
    if "^" in text:
        raise ExpressionError(
            f"'^' at column {text.index('^') + 1} is not a power in Python syntax: write a**2 instead of a^2."
        )
    _check_parentheses(text)
    try:
        with warnings.catch_warnings():  # Python's own warnings about odd literals: the errors below say it
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else ""
        raise ExpressionError(
            f"The expression is not valid syntax{where}: {e.msg}. Write a formula such as a*exp(-b*x) + c."
        ) from None
    except (ValueError, RecursionError, MemoryError, OverflowError):
        raise ExpressionError("The expression cannot be parsed (too deeply nested or with a null character).") from None
    source = text.strip()
    check_depth(tree)
    try:
        found = _check_nodes(tree, source, set(variables))
    except _Refused as refused:
        lead = len(text) - len(text.lstrip())  # columns count from the text as typed
        raise ExpressionError(refused.message(lead)) from None
    if params is None:
        param_names = tuple(found)
    else:
        param_names = tuple(params)
        for name in param_names:
            _check_name(name, "parameter")
        missing = [n for n in found if n not in param_names]
        if missing:
            raise ExpressionError(
                f"The expression uses {missing[0]!r}, which is not among the parameters "
                f"given ({', '.join(param_names)}) or the variables ({', '.join(variables)})."
            )
        unused = [n for n in param_names if n not in found]
        if unused:
            raise ExpressionError(f"Parameter {unused[0]!r} does not appear in the expression.")
    clash = set(param_names) & set(variables)
    if clash:
        raise ExpressionError(f"{sorted(clash)[0]!r} cannot be both a variable and a parameter.")
    return Expression(source, variables, param_names, compile_tree(tree.body), tree)


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _check_name(name, role: str) -> None:
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or name.startswith("_")
        or not name.isascii()
    ):
        raise ExpressionError(
            f"{name!r} cannot be a {role} name: use ASCII letters, digits and _, starting with a letter."
        )
    if name in FUNCTIONS or name in CONSTANTS:
        raise ExpressionError(f"{name!r} cannot be a {role} name: it is a function or constant of the language.")


def _check_parentheses(text: str) -> None:
    """Refuse deep nesting before the parser sees it (Python's own parser has limits of its own)."""
    depth = 0
    for column, char in enumerate(text, 1):
        if char in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(f"The expression nests deeper than {MAX_DEPTH} levels at column {column}.")
        elif char in ")]}":
            depth -= 1


def check_depth(tree: ast.AST) -> None:
    """Refuse nesting deeper than MAX_DEPTH; a chain like a + b + c + ... counts as one level."""
    stack = [(tree, 0)]
    while stack:  # iteratively: a recursive walk could itself overflow on a hostile tree
        node, depth = stack.pop()
        if depth > MAX_DEPTH + 2:  # Expression and its body add two levels
            raise ExpressionError(f"The expression nests deeper than {MAX_DEPTH} levels.")
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth if _continues_chain(node, child) else depth + 1))


_CHAINS = ({ast.Add, ast.Sub}, {ast.Mult, ast.Div})


def _continues_chain(parent: ast.AST, child: ast.AST) -> bool:
    """Is child the left operand of parent with the same precedence (a + b + c parses as (a + b) + c)?"""
    return (
        isinstance(parent, ast.BinOp)
        and isinstance(child, ast.BinOp)
        and child is parent.left
        and any(type(parent.op) in group and type(child.op) in group for group in _CHAINS)
    )


def _check_nodes(tree: ast.Expression, source: str, variables: set[str]) -> list[str]:
    """Walk the tree, refuse anything outside the whitelist, and return the parameters in order."""
    params: list[str] = []
    call_names = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in _preorder(tree.body):  # parents before children, left before right: source order
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load, ast.expr_context)):
            if isinstance(node, ast.BinOp) and type(node.op) not in _BINARY:
                _refuse(node, source, f"the operator {_op_text(node.op)}")
            if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.USub, ast.UAdd)):
                _refuse(node, source, f"the operator {_op_text(node.op)}")
            continue
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                kind = {str: "text", bytes: "bytes", bool: "True/False", complex: "a complex number"}.get(
                    type(node.value), "this constant"
                )
                _refuse(node, source, kind)
            if not math.isfinite(_as_float(node.value)):  # 1e400, or an integer of 400 digits: no float64 holds it
                _refuse(node, source, "a number beyond float64's range (about 1.8e308)")
            continue
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS:
                what = f"the function {name!r}" if name else "a call of anything but a known function"
                _refuse(node, source, what, hint=f"Known functions: {', '.join(sorted(FUNCTIONS))}.")
            if node.keywords:
                _refuse(node.keywords[0].value if node.keywords[0].arg is None else node, source, "keyword arguments")
            if any(isinstance(a, ast.Starred) for a in node.args):
                _refuse(node, source, "unpacking (*)")
            arity = FUNCTIONS[name][1]
            if len(node.args) != arity:
                _refuse(node, source, f"{name}() with {len(node.args)} arguments", hint=f"{name} takes {arity}.")
            continue
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__") or name.startswith("_"):
                _refuse(node, source, f"the name {name!r}", hint="Names must start with a letter.")
            if not name.isascii():  # Cyrillic а and Latin a would be two parameters that print the same
                _refuse(
                    node,
                    source,
                    f"the name {name!r}, which is not plain ASCII",
                    hint="Name parameters with ASCII letters, digits and _ (sigma, not σ).",
                )
            if id(node) in call_names:
                continue
            if name in FUNCTIONS:
                _refuse(node, source, f"{name!r} without (...)", hint=f"{name} is a function: write {name}(x).")
            if name in variables or name in CONSTANTS or name in params:
                continue
            params.append(name)
            continue
        _refuse(node, source, _FORBIDDEN.get(type(node), f"{type(node).__name__} syntax"))
    return params


def _preorder(root: ast.AST):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _op_text(op) -> str:
    return {
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.MatMult: "@",
        ast.BitXor: "^",
        ast.BitAnd: "&",
        ast.BitOr: "|",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.Invert: "~",
        ast.Not: "not",
    }.get(type(op), type(op).__name__)


class _Refused(Exception):
    """Raised inside the check; turned into an ExpressionError with the column as typed."""

    def __init__(self, what: str, piece: str | None, column: int | None, hint: str):
        super().__init__(what)
        self.what, self.piece, self.column, self.hint = what, piece, column, hint

    def message(self, lead: int) -> str:
        at = (
            f" ('{self.piece}' at column {self.column + lead + 1})"
            if self.piece is not None and self.column is not None
            else ""
        )
        allowed = "numbers, names, + - * / **, parentheses and the known functions"
        return f"A model expression cannot contain {self.what}{at}: it may use only {allowed}." + (
            f" {self.hint}" if self.hint else ""
        )


def _refuse(node: ast.AST, source: str, what: str, hint: str = "") -> None:
    piece = ast.get_source_segment(source, node) if hasattr(node, "lineno") else None
    if piece and len(piece) > 40:
        piece = piece[:37] + "..."
    raise _Refused(what, piece, getattr(node, "col_offset", None), hint)


def compile_tree(node: ast.AST) -> Callable[[dict], torch.Tensor]:
    """Turn a checked tree into nested closures over torch operations (recursion depth <= MAX_DEPTH)."""
    if isinstance(node, ast.Constant):
        value = float(node.value)
        return lambda env: value
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            constant = CONSTANTS[node.id]
            return lambda env: constant
        name = node.id
        return lambda env: env[name]
    if isinstance(node, ast.UnaryOp):
        operand = compile_tree(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        return operand
    if isinstance(node, ast.BinOp):
        # a chain a + b - c + ... is evaluated in a loop, left to right, not by recursion
        steps = []
        while _continues_chain(node, node.left):
            steps.append((_BINARY[type(node.op)], compile_tree(node.right)))
            node = node.left
        steps.append((_BINARY[type(node.op)], compile_tree(node.right)))
        steps.reverse()
        first = compile_tree(node.left)

        def chain(env):
            value = first(env)
            for op, right in steps:
                value = _apply(op, value, right(env))
            return value

        return chain
    if isinstance(node, ast.Call):
        function = FUNCTIONS[node.func.id][0]
        args = [compile_tree(a) for a in node.args]
        return lambda env: function(*(_tensor(a(env), env) for a in args))
    raise ExpressionError(f"Unexpected {type(node).__name__} in a checked expression.")  # pragma: no cover


def _apply(op, left, right):
    if isinstance(left, float) and isinstance(right, float):
        # both numbers (constants are floats, so never a huge integer, never a hang):
        # overflow, division by zero and complex powers become inf or nan, as in torch
        try:
            result = op(left, right)
        except OverflowError:
            return math.inf
        except ZeroDivisionError:
            return _divide(left, right) if op is operator.truediv else math.inf
        return result if isinstance(result, float) else math.nan
    return op(left, right)


def _divide(a: float, b: float) -> float:
    return a / b if b != 0 else (math.copysign(math.inf, a) * math.copysign(1, b) if a != 0 else math.nan)


def _tensor(value, env: dict) -> torch.Tensor:
    """Functions need tensors: a bare number takes the dtype and device of the inputs."""
    if isinstance(value, torch.Tensor):
        return value
    like = next((v for v in env.values() if isinstance(v, torch.Tensor)), None)
    if like is None:
        return torch.tensor(value, dtype=torch.float64)
    return torch.tensor(value, dtype=like.dtype, device=like.device)


# --- derivatives: forward mode on the tree ----------------------------------------------------


def _derivative_rules():
    """d f(a)/da as a function of a and of the value v = f(a), for each one-argument function."""
    ln10, ln2, two_over_sqrt_pi = math.log(10), math.log(2), 2 / math.sqrt(math.pi)
    rules = {
        "exp": lambda a, v: v,
        "log": lambda a, v: 1 / a,
        "log10": lambda a, v: 1 / (a * ln10),
        "log2": lambda a, v: 1 / (a * ln2),
        "sqrt": lambda a, v: 0.5 / v,
        "abs": lambda a, v: torch.sign(a),
        "sin": lambda a, v: torch.cos(a),
        "cos": lambda a, v: -torch.sin(a),
        "tan": lambda a, v: 1 + v * v,
        "arcsin": lambda a, v: 1 / torch.sqrt(1 - a * a),
        "arccos": lambda a, v: -1 / torch.sqrt(1 - a * a),
        "arctan": lambda a, v: 1 / (1 + a * a),
        "sinh": lambda a, v: torch.cosh(a),
        "cosh": lambda a, v: torch.sinh(a),
        "tanh": lambda a, v: 1 - v * v,
        "erf": lambda a, v: two_over_sqrt_pi * torch.exp(-a * a),
        "erfc": lambda a, v: -two_over_sqrt_pi * torch.exp(-a * a),
        "sigmoid": lambda a, v: v * (1 - v),
        "heaviside": lambda a, v: torch.zeros_like(v),
        "exprel": exprel_slope,
        "gammaln": lambda a, v: torch.special.digamma(a),
    }
    rules.update(asin=rules["arcsin"], acos=rules["arccos"], atan=rules["arctan"])
    return rules


DERIVATIVE_RULES = _derivative_rules()


def _compile_dual(node: ast.AST, params: tuple[str, ...]):
    """Like compile_tree, but each closure returns (value, {parameter: derivative}) — derivatives only where nonzero."""
    if isinstance(node, ast.Constant):
        value = float(node.value)
        return lambda env: (value, {})
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            constant = CONSTANTS[node.id]
            return lambda env: (constant, {})
        name = node.id
        if name in params:
            return lambda env: (env[name], {name: 1.0})
        return lambda env: (env[name], {})
    if isinstance(node, ast.UnaryOp):
        operand = _compile_dual(node.operand, params)
        if isinstance(node.op, ast.USub):

            def negate(env):
                v, d = operand(env)
                return -v, {k: -g for k, g in d.items()}

            return negate
        return operand
    if isinstance(node, ast.BinOp):
        # a chain a + b - c + ... in a loop, left to right, as compile_tree does: a long sum nests no closures
        steps = []
        while _continues_chain(node, node.left):
            steps.append((type(node.op), _compile_dual(node.right, params)))
            node = node.left
        steps.append((type(node.op), _compile_dual(node.right, params)))
        steps.reverse()
        first = _compile_dual(node.left, params)

        def chain(env):
            a, da = first(env)
            for op, right in steps:
                b, db = right(env)
                a, da = dual_binary(op, a, da, b, db)
            return a, da

        return chain
    if isinstance(node, ast.Call):
        name = node.func.id
        function = FUNCTIONS[name][0]
        args = [_compile_dual(a, params) for a in node.args]
        if name == "arctan2":

            def atan2(env):
                (y, dy), (x, dx) = args[0](env), args[1](env)
                y_t, x_t = _tensor(y, env), _tensor(x, env)
                r2 = x_t * x_t + y_t * y_t
                return function(y_t, x_t), _combine(
                    {k: g * x_t / r2 for k, g in dy.items()}, {k: -g * y_t / r2 for k, g in dx.items()}
                )

            return atan2
        if name == "voigt":

            def voigt(env):
                (u, du), (s, ds), (g, dg) = (arg(env) for arg in args)
                v, dv_u, dv_s, dv_g = voigt_and_partials(_tensor(u, env), _tensor(s, env), _tensor(g, env))
                d = _combine({k: scaled(t, dv_u) for k, t in du.items()}, {k: scaled(t, dv_s) for k, t in ds.items()})
                return v, _combine(d, {k: scaled(t, dv_g) for k, t in dg.items()})

            return voigt
        if name == "loggamma_abs":

            def loggamma(env):
                (a, da), (b, db) = args[0](env), args[1](env)
                a_t, b_t = _tensor(a, env), _tensor(b, env)
                psi = digamma_complex(a_t, b_t)  # d/da: Re ψ, d/db: −Im ψ
                return function(a_t, b_t), _combine(
                    {k: scaled(g, psi.real) for k, g in da.items()}, {k: scaled(g, -psi.imag) for k, g in db.items()}
                )

            return loggamma
        rule = DERIVATIVE_RULES[name]

        def call(env):
            a, da = args[0](env)
            a = _tensor(a, env)
            v = function(a)
            if not da:
                return v, {}
            slope = rule(a, v)
            return v, {k: scaled(g, slope) for k, g in da.items()}

        return call
    raise ExpressionError(f"Unexpected {type(node).__name__} in a checked expression.")  # pragma: no cover


def scaled(g, t):
    """g * t, where g is often the number 1 (a parameter's derivative of itself): then t, one operation fewer."""
    return t if isinstance(g, float) and g == 1.0 else g * t


def dual_binary(op, a, da: dict, b, db: dict):
    """a op b, and its derivatives from a's (da) and b's (db)."""
    v = _apply(_BINARY[op], a, b)
    if op is ast.Add:
        return v, _merge(da, db, 1.0)
    if op is ast.Sub:
        return v, _merge(da, db, -1.0)
    if op is ast.Mult:
        return v, _combine({k: scaled(g, b) for k, g in da.items()}, {k: scaled(g, a) for k, g in db.items()})
    if op is ast.Div:  # (da - v db) / b
        return v, {k: g / b for k, g in _merge(da, {k: scaled(g, v) for k, g in db.items()}, -1.0).items()}
    # a ** b
    out = {}
    if da:
        if isinstance(b, float):  # a number: a square's derivative without a power (the commonest)
            factor = 0.0 if b == 0 else 2.0 * a if b == 2 else b * a ** (b - 1)
        else:
            factor = b * a ** (b - 1)
        out = {k: scaled(g, factor) for k, g in da.items()}
    if db:
        log_a = torch.log(a) if isinstance(a, torch.Tensor) else math.log(a) if a > 0 else math.nan
        out = _combine(out, {k: g * v * log_a for k, g in db.items()})
    return v, out


def _merge(da: dict, db: dict, sign: float) -> dict:
    out = dict(da)
    for k, g in db.items():
        out[k] = out[k] + sign * g if k in out else (g if sign == 1.0 else -g)
    return out


def _combine(da: dict, db: dict) -> dict:
    return _merge(da, db, 1.0)


# --- programs: the tree as a flat list of instructions -----------------------------------------

# Operation codes of a Program. A slot holds one instruction's result: a number (CONST, folded
# at build time), a parameter, a variable, or an operation on earlier slots.
CONST, PARAM, VAR, ADD, SUB, MUL, DIV, POW, NEG, ATAN2 = range(10)
UNARY_CODES = {
    name: 10 + i
    for i, name in enumerate(
        (
            "exp",
            "log",
            "log10",
            "log2",
            "sqrt",
            "abs",
            "sin",
            "cos",
            "tan",
            "arcsin",
            "arccos",
            "arctan",
            "sinh",
            "cosh",
            "tanh",
            "erf",
            "erfc",
            "sigmoid",
            "heaviside",
            "exprel",
        )
    )
}
UNARY_CODES.update(asin=UNARY_CODES["arcsin"], acos=UNARY_CODES["arccos"], atan=UNARY_CODES["arctan"])
_BINARY_CODES = {ast.Add: ADD, ast.Sub: SUB, ast.Mult: MUL, ast.Div: DIV, ast.Pow: POW}


class _TorchOnly(Exception):
    """An expression calls a function the compiled solver lacks (TORCH_ONLY)."""


@dataclass(frozen=True)
class Program:
    """A model as instructions over slots, the last slot its value (see gradfit.solvers.compiled).

    ``op``, ``a``, ``b``: each slot's operation and the slots it reads; ``value``: a CONST's number, or
    the index of a PARAM or VAR; ``point``: the slot varies from point to point (it depends on a
    variable), else it is one number per curve; ``dep``: (slots, parameters), which parameters the
    slot depends on, so that derivatives are carried only where they are not zero.
    """

    op: "np.ndarray"
    a: "np.ndarray"
    b: "np.ndarray"
    value: "np.ndarray"
    point: "np.ndarray"
    dep: "np.ndarray"
    n_variables: int

    @property
    def n_params(self) -> int:
        return self.dep.shape[1]

    def shifted(self, offset: int, n_params: int) -> "Program":
        """The same program reading parameters offset..offset+P of a longer vector of n_params."""
        value = self.value.copy()
        value[self.op == PARAM] += offset
        dep = np.zeros((len(self.op), n_params), dtype=bool)
        dep[:, offset : offset + self.n_params] = self.dep
        return Program(self.op, self.a, self.b, value, self.point, dep, self.n_variables)


def sum_programs(programs: Sequence[Program], sizes: Sequence[int]) -> Program:
    """One program for a sum of models, the parameters of each following the last's."""
    total, offset, parts = sum(sizes), 0, []
    for program, size in zip(programs, sizes):
        parts.append(program.shifted(offset, total))
        offset += size
    ops, a_s, b_s, values, points, deps, ends, base = [], [], [], [], [], [], [], 0
    for p in parts:
        ops.append(p.op), a_s.append(p.a + base), b_s.append(p.b + base), values.append(p.value)
        points.append(p.point), deps.append(p.dep)
        base += len(p.op)
        ends.append(base - 1)
    result, point, dep = ends[0], points[0][-1], deps[0][-1]
    extra_a, extra_b, extra_point, extra_dep = [], [], [], []
    for end, p in zip(ends[1:], parts[1:]):  # ((first + second) + third) + ...
        extra_a.append(result), extra_b.append(end)
        point, dep = point or p.point[-1], dep | p.dep[-1]
        extra_point.append(point), extra_dep.append(dep)
        result = base + len(extra_a) - 1
    n = len(extra_a)
    return Program(
        np.concatenate(ops + [np.full(n, ADD)]),
        np.concatenate(a_s + [np.array(extra_a, dtype=np.int64)]),
        np.concatenate(b_s + [np.array(extra_b, dtype=np.int64)]),
        np.concatenate(values + [np.zeros(n)]),
        np.concatenate(points + [np.array(extra_point, dtype=bool)]),
        np.concatenate(deps + [np.array(extra_dep, dtype=bool).reshape(n, total)]),
        max(p.n_variables for p in parts),
    )


class _ProgramBuilder:
    """Walks a checked tree into a Program: numbers folded as the torch closures fold them, leaves shared."""

    def __init__(self, variables, params):
        self.variables, self.params = tuple(variables), tuple(params)
        self.rows: list[tuple] = []  # (op, a, b, value, point, dep)
        self.leaves: dict = {}

    def _add(self, op, a=0, b=0, value=0.0, point=False, dep=frozenset()) -> int:
        self.rows.append((op, a, b, float(value), point, frozenset(dep)))
        return len(self.rows) - 1

    def _constant(self, value: float) -> int:
        return self._add(CONST, value=value)

    def _is_constant(self, slot: int) -> bool:
        return self.rows[slot][0] == CONST

    def _operation(self, op: int, a: int, b: int = 0, binary: bool = True) -> int:
        ra, rb = self.rows[a], self.rows[b]
        point = ra[4] or (binary and rb[4])
        dep = ra[5] | (rb[5] if binary else frozenset())
        return self._add(op, a, b if binary else 0, point=point, dep=dep)

    def build(self, node: ast.AST) -> int:
        if isinstance(node, ast.Constant):
            return self._constant(float(node.value))
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return self._constant(CONSTANTS[node.id])
            if node.id not in self.leaves:
                if node.id in self.params:
                    j = self.params.index(node.id)
                    self.leaves[node.id] = self._add(PARAM, value=j, dep={j})
                else:
                    self.leaves[node.id] = self._add(VAR, value=self.variables.index(node.id), point=True)
            return self.leaves[node.id]
        if isinstance(node, ast.UnaryOp):
            slot = self.build(node.operand)
            if not isinstance(node.op, ast.USub):
                return slot
            if self._is_constant(slot):
                return self._constant(-self.rows[slot][3])
            return self._operation(NEG, slot, binary=False)
        if isinstance(node, ast.BinOp):
            spine = []  # a chain a + b - c + ... walked left to right, not by recursion
            while _continues_chain(node, node.left):
                spine.append(node)
                node = node.left
            spine.append(node)
            left = self.build(node.left)
            for link in reversed(spine):
                left = self._binary(type(link.op), left, self.build(link.right))
            return left
        if isinstance(node, ast.Call):
            name = node.func.id
            if name in TORCH_ONLY:
                raise _TorchOnly(name)
            args = [self.build(a) for a in node.args]
            if all(self._is_constant(s) for s in args):
                function = FUNCTIONS[name][0]
                value = function(*(torch.tensor(self.rows[s][3], dtype=torch.float64) for s in args))
                return self._constant(float(value))
            if name == "arctan2":
                return self._operation(ATAN2, args[0], args[1])
            return self._operation(UNARY_CODES[name], args[0], binary=False)
        raise ExpressionError(f"Unexpected {type(node).__name__} in a checked expression.")  # pragma: no cover

    def _binary(self, op_type, a: int, b: int) -> int:
        if self._is_constant(a) and self._is_constant(b):
            return self._constant(_apply(_BINARY[op_type], self.rows[a][3], self.rows[b][3]))
        return self._operation(_BINARY_CODES[op_type], a, b)

    def finish(self) -> Program:
        rows, k = self.rows, len(self.params)
        dep = np.zeros((len(rows), k), dtype=bool)
        for i, row in enumerate(rows):
            dep[i, list(row[5])] = True
        return Program(
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows], dtype=bool),
            dep,
            len(self.variables),
        )

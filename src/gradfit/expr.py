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
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


from .errors import ExpressionError
from .expr_dual import compile_dual
from .expr_ops import BINARY, CONSTANTS, FUNCTIONS, TORCH_ONLY, apply, continues_chain, tensor
from .expr_program import Program, ProgramBuilder, TorchOnly


MAX_LENGTH = 2000  # characters
MAX_DEPTH = 100  # nesting of the syntax tree (parentheses, operators, calls)
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
            object.__setattr__(self, "_dual", compile_dual(self._tree.body, self.param_names))
        env = dict(zip(self.variables, variables))
        env.update(zip(self.param_names, params))
        value, grads = self._dual(env)
        return value, [grads.get(name) for name in self.param_names]

    def program(self) -> "Program | None":
        """The expression as a flat list of instructions, for the compiled many-curve solver; None when it calls a
        function that solver lacks (TORCH_ONLY: see ``torch_only``)."""
        builder = ProgramBuilder(self.variables, self.param_names)
        try:
            builder.build(self._tree.body)
        except TorchOnly:
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
            stack.append((child, depth if continues_chain(node, child) else depth + 1))


def _check_nodes(tree: ast.Expression, source: str, variables: set[str]) -> list[str]:
    """Walk the tree, refuse anything outside the whitelist, and return the parameters in order."""
    params: list[str] = []
    call_names = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in _preorder(tree.body):  # parents before children, left before right: source order
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load, ast.expr_context)):
            if isinstance(node, ast.BinOp) and type(node.op) not in BINARY:
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
        while continues_chain(node, node.left):
            steps.append((BINARY[type(node.op)], compile_tree(node.right)))
            node = node.left
        steps.append((BINARY[type(node.op)], compile_tree(node.right)))
        steps.reverse()
        first = compile_tree(node.left)

        def chain(env):
            value = first(env)
            for op, right in steps:
                value = apply(op, value, right(env))
            return value

        return chain
    if isinstance(node, ast.Call):
        function = FUNCTIONS[node.func.id][0]
        args = [compile_tree(a) for a in node.args]
        return lambda env: function(*(tensor(a(env), env) for a in args))
    raise ExpressionError(f"Unexpected {type(node).__name__} in a checked expression.")  # pragma: no cover

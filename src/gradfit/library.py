"""The built-in models by name (``builtin``, ``gradfit.get_model``): a catalogue entry (shapes.LIBRARY), a
polynomial of any degree, or a sum of them written as text; and a model as a saved spec and back.
"""

from __future__ import annotations

import re

from .errors import ModelError
from .composite import Composite
from .models import ExpressionModel, FunctionModel, Model, polynomial
from .shapes import LIBRARY

__all__ = ["LIBRARY", "builtin", "get_model", "model_from_spec", "model_spec"]


_POLY = re.compile(r"poly(\d{1,2})")


def builtin(name: str) -> Model | None:
    """A fresh built-in model by name ('gaussian', 'poly5', ...), or None."""
    if name in LIBRARY and name != "polyN":
        return LIBRARY[name].make()
    match = _POLY.fullmatch(name)
    return polynomial(int(match.group(1))) if match else None


def get_model(model, *, variables=("x",), params=None) -> Model:
    """A ``Model`` from any way of naming one.

    Text that is a built-in name, or built-in names joined by '+', is the library's; any other text is an
    expression in the ``variables``, read by the safe expression language (never ``eval``).

    Args:
        model: a ``Model`` (returned as is), a Python function ``f(x, a, b, ...)``, a built-in name ("gaussian",
            "poly3"), a sum of built-in names ("gaussian + linear"), or an expression ("a*exp(-b*x) + c").
        variables: the names of the independent variables in an expression.
        params: an expression's parameter names in the order wanted (default: order of first appearance).

    Returns:
        Model: the model.

    Raises:
        ModelError: an unknown name or a function gradfit cannot fit.
        ExpressionError: an expression that does not parse, saying where.
    """
    if params is not None and not (isinstance(model, str) and not all(builtin(p.strip()) for p in model.split("+"))):
        raise ModelError(
            "`params` orders the parameters of an expression; a built-in model, a Model or a "
            "function has its own order."
        )
    if isinstance(model, Model):
        return model
    if callable(model) and not isinstance(model, str):
        return FunctionModel(model)
    if not isinstance(model, str):
        raise ModelError(f"A model is a name, an expression, a Python function or a Model, got {type(model).__name__}.")
    parts = [p.strip() for p in model.split("+")]
    found = [builtin(p) for p in parts]
    if all(found):
        return found[0] if len(found) == 1 else Composite(found)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model.strip()) and model.strip() not in (variables or ()):
        # a bare name that is not a model: most likely a typo of one
        choices = ", ".join(n for n in LIBRARY)
        raise ModelError(
            f"Unknown model {model.strip()!r}. Choose one of: {choices}; or write an expression such as a*x + b."
        )
    expression = ExpressionModel(model, variables=variables, params=params)
    return _with_builtin_terms(expression, variables) or _uses_a_variable(expression)


def _with_builtin_terms(model: ExpressionModel, variables) -> Composite | None:
    """'gaussian + m*x + c': built-ins added to an expression are parts of their own (prefixed parameters,
    their own guesses) beside the expression's own terms; never parameters named after a model. None when
    the expression names no built-in."""
    text = model.expression.text
    models = sorted(n for n in model.param_names if builtin(n) is not None)
    if not models:
        return None
    terms = model.expression.terms()
    added = [t for sign, t in terms if sign == "+" and builtin(t) is not None]
    misused = [n for n in models if n not in added or n in _names_outside(terms, n)]
    if misused:
        raise ModelError(
            f"{misused[0]!r} in {text!r} is a built-in model, which can only be added as a term of its "
            f"own ('{misused[0]} + a*x + b'). Add it once, or rename that parameter."
        )
    rest = [(sign, t) for sign, t in terms if t not in added]
    rest_text = " ".join(f"{'' if i == 0 and sign == '+' else sign} {t}".strip() for i, (sign, t) in enumerate(rest))
    parts = [builtin(t) for _, t in terms if t in added]
    if rest_text:
        parts.append(ExpressionModel(rest_text, variables=variables))
    return Composite(parts, own_names=(len(parts) - 1,) if rest_text else ())


def _names_outside(terms, name: str) -> set[str]:
    """The names used by terms other than the bare ``name`` itself."""
    from .expr import parse

    found = set()
    for _, t in terms:
        if t != name:
            found |= parse(t, ()).names()
    return found


def _uses_a_variable(model: ExpressionModel) -> ExpressionModel:
    """An expression in none of its variables fits a constant: most likely the data's x has another name."""
    names = model.expression.names()
    if names & set(model.variables):
        return model
    given = ", ".join(model.variables)
    error = ModelError(
        f"The expression {model.expression.text!r} never uses the variable {given}: it found only "
        f"{', '.join(model.param_names)}, all taken as parameters. Write the formula in {given}, or "
        "name the variable (variables=('t',) in Python, --x COLUMN on the command line)."
    )
    error.found = model.param_names  # the command line looks for them among the data's columns
    raise error


def model_spec(model: Model) -> dict:
    """What makes ``model`` again, as JSON-ready data: a built-in by name, an expression by its text, variables
    and parameter order, a sum by its parts; a Python function (or a Model of one's own) by its name only, to be
    given again when the spec is read (``model_from_spec(spec, model=f)``)."""
    if isinstance(model, Composite):
        parts = [model_spec(part) for part in model.parts]
        return {"sum": parts, "own_names": [i for i, p in enumerate(model.prefixes) if not p]}
    made = builtin(model.name)
    if made is not None and made.formula == model.formula and made.param_names == model.param_names:
        return {"builtin": model.name}
    if type(model) is ExpressionModel:
        spec = {"expression": model.formula, "variables": list(model.variables), "params": list(model.param_names)}
        return spec if model.name == model.formula else {**spec, "name": model.name}
    return {"function": model.name, "params": list(model.param_names)}


def model_from_spec(spec: dict, model=None) -> Model:
    """The model ``model_spec`` describes; ``model``: the function (or Model) a spec of kind 'function' names."""
    if "sum" in spec:
        parts = [model_from_spec(part, model) for part in spec["sum"]]
        return Composite(parts, own_names=tuple(spec.get("own_names", ())))
    if "builtin" in spec:
        made = builtin(spec["builtin"])
        if made is None:
            raise ModelError(f"The saved model {spec['builtin']!r} is not a built-in of this gradfit.")
        return made
    if "expression" in spec:
        return ExpressionModel(
            spec["expression"], variables=tuple(spec["variables"]), params=spec["params"], name=spec.get("name")
        )
    if "function" not in spec:
        raise ModelError("The saved model is none of: builtin, expression, sum, function.")
    if model is None:
        raise ModelError(
            f"The result was fitted with the Python function {spec['function']!r}, which a file cannot hold: "
            "give it again, load_result(path, model=f)."
        )
    made = get_model(model)
    if list(made.param_names) != list(spec["params"]):
        raise ModelError(
            f"The model given has parameters ({', '.join(made.param_names)}), the saved one "
            f"({', '.join(spec['params'])}): give the function the result was fitted with."
        )
    return made

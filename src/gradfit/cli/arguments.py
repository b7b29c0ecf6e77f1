"""The command line's argument types: each turns a flag's text into a value, or refuses it in the
words of the flag (the rules themselves are gradfit.options', shared with the library)."""

from __future__ import annotations

import argparse
import math

from ..errors import ExitStatus, OptionError
from ..options import nonnegative_finite, positive_finite, positive_int


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message):
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message}. See '{self.prog} --help'.\n")


def whole_number(low: int, high: int | None = None, expected: str = ""):
    """An argparse type: a whole number from ``low`` (to ``high``, exclusive)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"must be {expected}, got '{text}'")
        return value

    return parse


def _checked(convert, rule, expected: str):
    """An argparse type: the text made a number by ``convert``, then checked by the library's own ``rule``
    (gradfit.options), so that the command line and Python refuse the same values; the message in the command
    line's words."""

    def parse(text: str):
        try:
            return rule(convert(text), "value")
        except (ValueError, OptionError):
            raise argparse.ArgumentTypeError(f"must be {expected}, got '{text}'") from None

    return parse


arg_positive_int = _checked(int, positive_int, "a whole number >= 1")


arg_learning_rate = _checked(float, positive_finite, "a positive finite number such as 1e-4")


_f_scale = _checked(float, positive_finite, "a positive finite number such as 0.1")


arg_dpi = _checked(float, positive_finite, "a positive number such as 200")


arg_tolerance = _checked(float, nonnegative_finite, "a finite number >= 0 such as 1e-10")


arg_seed = whole_number(0, 2**63, expected="a whole number from 0 to 2**63-1")


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "K": 2**10,
    "M": 2**20,
    "G": 2**30,
    "T": 2**40,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def arg_size(text: str) -> int:
    """A memory size: 1GB, 500MB, 2GiB, 1.5G, or bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"must be a size such as 500MB or 2GB, got '{text}'")
    return int(float(match.group(1)) * _UNITS[unit])


def arg_learning_rate_or_auto(text: str):
    return "auto" if text == "auto" else arg_learning_rate(text)


def arg_p0(text: str):
    """'a=1,b=2' -> {'a': 1.0, 'b': 2.0}; '1,2' -> [1.0, 2.0]."""
    items = [item.strip() for item in text.split(",")]
    named = ["=" in item for item in items]
    if any(named) and not all(named):
        raise argparse.ArgumentTypeError(f"give all values by name (a=1,b=2) or none (1,2), got '{text}'")
    try:
        if all(named):
            pairs = [(name.strip(), value) for name, value in (item.split("=", 1) for item in items)]
            twice = sorted({n for n, _ in pairs if sum(m == n for m, _ in pairs) > 1})
            if twice:
                raise argparse.ArgumentTypeError(f"{twice[0]} is given twice; give each parameter once, got '{text}'")
            return {name: float(value) for name, value in pairs}
        return [float(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"values must be numbers, as in a=1,b=2 or 1,2; got '{text}'") from None


def arg_sigmas(text: str) -> list[float]:
    """'1,2,3' -> [1.0, 2.0, 3.0]: confidence levels in standard deviations (under 1: probabilities)."""
    try:
        levels = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give levels such as 1,2,3 (or probabilities such as 0.9), got '{text}'"
        ) from None
    if not all(math.isfinite(v) and v > 0 for v in levels):
        raise argparse.ArgumentTypeError(f"levels are positive numbers such as 1,2,3, got '{text}'")
    return levels


def arg_figure_formats(text: str) -> tuple[str, ...]:
    from ..plots import check_formats

    try:
        return check_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def arg_columns(text: str):
    """'t' -> 't'; 'x,y' -> ['x', 'y'] (several variables)."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"give column names or indexes separated by commas, got '{text}'")
    return parts[0] if len(parts) == 1 else parts


def arg_names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",")]
    if not all(n.isidentifier() and n.isascii() for n in names):
        raise argparse.ArgumentTypeError(f"give parameter names (ASCII) separated by commas, got '{text}'")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{twice[0]} is named twice; name each parameter once, got '{text}'")
    return names


def _bound(text: str):
    from ..params import parse_bound

    try:
        return parse_bound(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fixed(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not name.strip().isidentifier() or number is None or not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"write NAME=VALUE with a finite number, as c=1; got '{item}'")
        out[name.strip()] = number
    return out


def _tie(text: str) -> tuple[str, str]:
    """NAME=EXPRESSION: the expression is checked by the library (gradfit.expr), never evaluated here."""
    name, equals, expression = text.partition("=")
    if not equals or not name.strip().isidentifier() or not expression.strip():
        raise argparse.ArgumentTypeError(f"write NAME=EXPRESSION, as g2_sigma=g1_sigma; got '{text}'")
    return name.strip(), expression.strip()


def add_loss_options(parser) -> None:
    """--loss and --f-scale, for fit and fit-many alike."""
    parser.add_argument(
        "--loss",
        default="linear",
        metavar="LOSS",
        help="least squares (linear, the default) or a robust loss that outliers pull less: soft_l1, huber, "
        "cauchy, arctan (as scipy's least_squares)",
    )
    parser.add_argument(
        "--f-scale",
        type=_f_scale,
        default=1.0,
        metavar="S",
        help="the residual at which a robust loss starts to bend (default: %(default)s)",
    )


def add_parameter_options(parser, whose: str) -> None:
    """--bound, --fix and --tie, for fit and fit-many alike (``whose``: whose parameters, in the help)."""
    parser.add_argument(
        "--bound",
        action="append",
        type=_bound,
        metavar="BOUND",
        default=[],
        help=f"a bound on a parameter{whose}: 'b>0', 'c<10', '0<c<10' (repeat for more)",
    )
    parser.add_argument(
        "--fix",
        action="append",
        type=_fixed,
        metavar="NAME=VALUE",
        default=[],
        help=f"hold a parameter{whose} at a value: c=1 (repeat or comma-separate for more)",
    )
    parser.add_argument(
        "--tie",
        action="append",
        type=_tie,
        metavar="NAME=EXPR",
        default=[],
        help=f"tie a parameter{whose} to an expression of others: 'g2_sigma=g1_sigma', "
        "'g2_center=g1_center + 1.5' (repeat for more)",
    )


def arg_rates(text: str) -> list[float]:
    rates = []
    for item in text.split(","):
        rates.append(arg_learning_rate(item.strip()))
    return rates


def method_help() -> str:
    from ..solvers import METHODS  # the one registry: help, choices and errors all come from it

    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())

"""The ``gradfit`` command: parse the arguments, call the library, print, exit.

Library errors become one line on stderr and exit status 2 (``--traceback``
shows the stack). Each command imports what it needs when it runs, so
``--help`` does not load matplotlib.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .errors import DataError, ExitStatus, GradfitError, OptionError
from .options import nonnegative_finite, positive_finite, positive_int
from .solvers.methods import BACKENDS as BATCH_BACKENDS
from .solvers.methods import BATCH_METHODS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message):
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message}. See '{self.prog} --help'.\n")


def _whole_number(low: int, high: int | None = None, expected: str = ""):
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


_positive_int = _checked(int, positive_int, "a whole number >= 1")
_learning_rate = _checked(float, positive_finite, "a positive finite number such as 1e-4")
_f_scale = _checked(float, positive_finite, "a positive finite number such as 0.1")
_dpi = _checked(float, positive_finite, "a positive number such as 200")
_tolerance = _checked(float, nonnegative_finite, "a finite number >= 0 such as 1e-10")
_seed = _whole_number(0, 2**63, expected="a whole number from 0 to 2**63-1")


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


def _size(text: str) -> int:
    """A memory size: 1GB, 500MB, 2GiB, 1.5G, or bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"must be a size such as 500MB or 2GB, got '{text}'")
    return int(float(match.group(1)) * _UNITS[unit])


def _learning_rate_or_auto(text: str):
    return "auto" if text == "auto" else _learning_rate(text)


def _p0(text: str):
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


def _sigmas(text: str) -> list[float]:
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


def _figure_formats(text: str) -> tuple[str, ...]:
    from .plots import check_formats

    try:
        return check_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _columns(text: str):
    """'t' -> 't'; 'x,y' -> ['x', 'y'] (several variables)."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"give column names or indexes separated by commas, got '{text}'")
    return parts[0] if len(parts) == 1 else parts


def _names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",")]
    if not all(n.isidentifier() and n.isascii() for n in names):
        raise argparse.ArgumentTypeError(f"give parameter names (ASCII) separated by commas, got '{text}'")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{twice[0]} is named twice; name each parameter once, got '{text}'")
    return names


def _bound(text: str):
    from .params import parse_bound

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


def _add_loss_options(parser) -> None:
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


def _add_parameter_options(parser, whose: str) -> None:
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


def _rates(text: str) -> list[float]:
    rates = []
    for item in text.split(","):
        rates.append(_learning_rate(item.strip()))
    return rates


def _method_help() -> str:
    from .solvers import METHODS  # the one registry: help, choices and errors all come from it

    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradfit",
        description="Fit curves by gradient descent, and watch it happen.",
    )
    parser.add_argument("--version", action="version", version=f"gradfit {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full stack on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="reproduce the seed article: gradient descent on a quadratic, step by step",
        description=(
            "Reproduce the seed article: fit a*x**2+b*x+c to 15 noisy points (seed 1989) by plain "
            "gradient descent in float32, print the RMSE before each step, and draw each step's "
            "predictions (red) against the data (blue). The defaults are the article's."
        ),
    )
    demo.add_argument(
        "--out",
        default="gradfit-demo",
        metavar="DIR",
        help="folder for data.png, run1.png, run2.png, history.csv (default: %(default)s)",
    )
    demo.add_argument(
        "--rounds",
        type=_positive_int,
        default=2,
        metavar="N",
        help="rounds of steps, one figure each (default: %(default)s)",
    )
    demo.add_argument(
        "--steps-per-round",
        type=_positive_int,
        default=10,
        metavar="N",
        help="gradient steps per round (default: %(default)s)",
    )
    demo.add_argument(
        "--learning-rate",
        "--lr",
        type=_learning_rate,
        default=1e-4,
        metavar="LR",
        help="step size (default: %(default)g)",
    )
    demo.add_argument("--seed", type=_seed, default=1989, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--animate", metavar="FILE", help="also write an animation of the run (.gif, or .mp4 with ffmpeg)"
    )
    demo.add_argument(
        "--compare-lr",
        type=_rates,
        metavar="LR,LR,...",
        help="also run the descent at each learning rate and draw them side by side in "
        "DIR/compare-lr.png (e.g. 1e-5,1e-4,1e-3: too small, about right, too big)",
    )
    demo.add_argument(
        "--explain",
        action="store_true",
        help="after each RMSE line, the step in numbers: its parameters, their RMSE, the gradient, learning rate "
        "x gradient, the new parameters, and how much of the step went across the valley and along it",
    )
    demo.set_defaults(run=_run_demo)

    fit = commands.add_parser(
        "fit",
        help="fit a model to the x and y columns of a CSV or Parquet file",
        description=(
            "Fit a model to data by least squares and print a report: parameters with standard errors, "
            "goodness of fit, and why the fit stopped. Assumes y = f(x, params) + noise."
        ),
    )
    fit.add_argument("data", metavar="DATA", help="a CSV (delimiter sniffed, header optional) or Parquet file")
    fit.add_argument(
        "--x",
        metavar="COL",
        type=_columns,
        help="x column, by name or 0-based index (default: the first); several, comma-separated "
        "(--x x,y), for a model of several variables. Names are the expression's variables",
    )
    fit.add_argument("--y", metavar="COL", help="y column, by name or 0-based index (default: the second)")
    fit.add_argument("--sigma", metavar="COL", help="column of the uncertainty of each y (weights 1/sigma**2)")
    fit.add_argument(
        "--covariance",
        metavar="FILE",
        help="the errors' covariance matrix, N x N for N data rows (.npy, or text rows of numbers): correlated "
        "errors, as curve_fit's 2-D sigma",
    )
    fit.add_argument(
        "--model",
        default="quadratic",
        help="a built-in model (see 'gradfit models'), a sum of them ('gaussian + linear'), or an "
        "expression such as 'a*exp(-b*x) + c' (default: %(default)s)",
    )
    fit.add_argument(
        "--params",
        type=_names,
        metavar="A,B,...",
        help="the order of an expression's parameters (default: first appearance)",
    )
    _add_parameter_options(fit, "")
    _add_loss_options(fit)
    fit.add_argument("--p0", type=_p0, metavar="VALUES", help="starting values: a=1,b=2 or 1,2")
    fit.add_argument(
        "--starts",
        type=_positive_int,
        metavar="N",
        help="fit from N starting points at once (p0 or the guess, the others spread around it or between the "
        "bounds) and keep the best: for models with several minima",
    )
    fit.add_argument(
        "--conf-interval",
        nargs="?",
        const=[1.0, 2.0, 3.0],
        type=_sigmas,
        metavar="SIGMAS",
        help="after the fit, profile-likelihood confidence intervals at these levels (default 1,2,3 standard "
        "deviations; under 1, probabilities), as lmfit's conf_interval: in the report, --json and --save",
    )
    fit.add_argument(
        "--explain",
        action="store_true",
        help="with --method gd --no-scale: print every step in numbers before the report (its parameters, their "
        "RMSE, the gradient, learning rate x gradient, the new parameters); --max-steps keeps it short",
    )
    fit.add_argument("--method", default="auto", metavar="M", help=f"{_method_help()}. Default: %(default)s")
    fit.add_argument(
        "--learning-rate",
        "--lr",
        type=_learning_rate_or_auto,
        metavar="LR",
        help="step size of gradient methods, or 'auto' (default: the method's own)",
    )
    fit.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop after N steps")
    fit.add_argument("--tol", type=_tolerance, metavar="T", help="tolerance of every stopping rule")
    fit.add_argument(
        "--nan-policy",
        choices=("raise", "omit"),
        default="raise",
        help="rows with NaN or inf: refuse them (default) or leave them out",
    )
    fit.add_argument(
        "--absolute-sigma",
        action="store_true",
        help="sigma is absolute: do not rescale the covariance by the reduced chi-square",
    )
    fit.add_argument(
        "--no-scale",
        dest="scale",
        action="store_false",
        help="gradient methods walk the raw parameters, not standardized coordinates",
    )
    fit.add_argument(
        "--memory-budget",
        type=_size,
        default="1GB",
        metavar="SIZE",
        help="the most memory the whole process may hold (e.g. 500MB, 2GB; default %(default)s): "
        "Parquet data that do not fit with the solver's work arrays are streamed in batches, "
        "with exact sums over them in every iteration",
    )
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="ROWS",
        help="fit by mini-batches of ROWS rows (Parquet data; methods sgd, momentum, nesterov, adam, "
        "rmsprop): one step per batch, --epochs passes over row groups in a shuffled order",
    )
    fit.add_argument("--epochs", type=_positive_int, metavar="N", help="passes of a mini-batch fit (default 1)")
    fit.add_argument("--seed", type=_seed, default=0, help="seed of the mini-batch order (default: %(default)s)")
    fit.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="fit Parquet data too large for one machine on a local Dask cluster of N worker processes "
        "(127.0.0.1): each iteration's sums computed where the data are",
    )
    fit.add_argument(
        "--scheduler", metavar="ADDRESS", help="the same on an existing Dask cluster (e.g. tcp://10.0.0.5:8786)"
    )
    fit.add_argument(
        "--dashboard",
        action="store_true",
        help="with --workers: serve Dask's dashboard on 127.0.0.1:8787 (needs bokeh)",
    )
    fit.add_argument("--json", metavar="OUT", help="write the result as JSON to OUT")
    fit.add_argument(
        "--save",
        metavar="OUT.json",
        help="save the whole result (model, parameters, covariance, history, data) for gradfit.load_result",
    )
    fit.add_argument("--history", metavar="OUT.csv", help="write one row per step to OUT.csv")
    fit.add_argument(
        "--plot",
        metavar="DIR",
        help="write fit.png, loss.png, steps.png, params.png and landscape.png into DIR (see --format, --dpi)",
    )
    fit.add_argument(
        "--format",
        type=_figure_formats,
        metavar="F,...",
        help="--plot's file formats: png, svg, pdf, or several (png,pdf); svg and pdf stay vector. Default: png",
    )
    fit.add_argument("--dpi", type=_dpi, metavar="N", help="--plot's resolution (default 100)")
    fit.add_argument("--animate", metavar="FILE", help="write an animation of the fit (.gif, or .mp4 with ffmpeg)")
    fit.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report (works offline)")
    fit.add_argument("--quiet", action="store_true", help="print no report and no progress bar")
    fit.set_defaults(run=_run_fit)

    many = commands.add_parser(
        "fit-many",
        help="fit one model to many curves at once (long format: one row per point)",
        description=(
            "Fit the same model to every curve of a long-format table (one row per point, a column "
            "naming the curve) and write one row per curve: parameters, standard errors, RMSE, "
            "steps and status."
        ),
    )
    many.add_argument("data", metavar="DATA", help="a Parquet or CSV file, one row per point")
    many.add_argument("--group", required=True, metavar="COL", help="the column that names each curve")
    many.add_argument("--x", metavar="COL", type=_columns, help="x column (default: the first)")
    many.add_argument("--y", metavar="COL", help="y column (default: the second)")
    many.add_argument("--sigma", metavar="COL", help="column of the uncertainty of each y")
    many.add_argument("--model", default="quadratic", help="as for fit (default: %(default)s)")
    many.add_argument("--p0", type=_p0, metavar="VALUES", help="starting values for every curve")
    many.add_argument(
        "--share",
        type=_names,
        metavar="A,B,...",
        help="a global fit: these parameters are shared by every curve, fitted to all the data (the others "
        "each curve's own)",
    )
    _add_parameter_options(many, " of every curve")
    _add_loss_options(many)
    many.add_argument(
        "--method",
        default="auto",
        metavar="M",
        help=f"{', '.join(BATCH_METHODS[:-1])} or {BATCH_METHODS[-1]} (default: auto)",
    )
    many.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop each curve after N steps")
    many.add_argument(
        "--backend",
        default="auto",
        metavar="B",
        help=f"where LM runs: {', '.join(BATCH_BACKENDS)} (default: auto, compiled machine code for "
        "a model written as a formula)",
    )
    many.add_argument("--out", required=True, metavar="OUT.parquet", help="where to write one row per curve")
    many.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="fit on a local Dask cluster of N worker processes (127.0.0.1); DATA may then be a "
        "Parquet file, a folder or a glob of them",
    )
    many.add_argument(
        "--scheduler", metavar="ADDRESS", help="fit on an existing dask.distributed cluster (tcp://host:port)"
    )
    many.add_argument(
        "--dashboard",
        action="store_true",
        help="with --workers: serve Dask's dashboard on 127.0.0.1:8787 (needs bokeh)",
    )
    many.add_argument("--quiet", action="store_true", help="print no summary")
    many.set_defaults(run=_run_fit_many)

    serve = commands.add_parser(
        "serve",
        help="start the playground: a local web page to steer gradient descent and watch it learn",
        description=(
            "Serve the playground on this machine: change the learning rate, the method, the model and "
            "the data, and watch the fit converge or diverge. Works offline; Ctrl-C stops it."
        ),
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens it to "
        "your network, with a warning)",
    )
    serve.add_argument(
        "--port",
        type=_whole_number(1, 65536, "a port number from 1 to 65535"),
        default=8000,
        help="port (default: %(default)s)",
    )
    serve.add_argument("--open", action="store_true", help="open the page in your web browser")
    serve.set_defaults(run=_run_serve)

    models = commands.add_parser(
        "models",
        help="list the built-in models with their formulas",
        description="List the built-in models, their parameters and formulas.",
    )
    models.set_defaults(run=_run_models)
    return parser


def _run_demo(args) -> int:
    from ._files import check_out_dir, check_animation
    from .demo import compare_learning_rates, demo, output_files, summarize

    out = check_out_dir(args.out, "--out")  # refuse a bad --out before any work
    animation = check_animation(args.animate, "--animate")
    on_start, callback = print, lambda record: print("RMSE:", record.rmse)  # what the article prints
    if args.explain:
        on_start, callback = _explaining(args)
    history = demo(
        args.out,
        rounds=args.rounds,
        steps_per_round=args.steps_per_round,
        learning_rate=args.learning_rate,
        seed=args.seed,
        on_start=on_start,  # the article prints its initial parameter tensor
        callback=callback,
    )
    summary = summarize(history, args.seed)
    for line in summary.lines():
        print(line)
    written = output_files(args.rounds)
    if args.compare_lr:
        from .plots import plot_learning_rates

        runs = compare_learning_rates(args.compare_lr, steps=args.rounds * args.steps_per_round, seed=args.seed)
        for rate, run, diverged_at in runs:
            end = (
                f"diverged at step {diverged_at}"
                if diverged_at
                else f"RMSE {run.history.rmse[-1]:.6g} before its last step"
            )
            print(f"learning rate {rate:g}: {end}")
        figure = plot_learning_rates(
            [(f"lr {rate:g}", run, d) for rate, run, d in runs],
            ylim=(-75, 120),
            rates=[rate for rate, _, _ in runs],
            limit=summary.max_stable_learning_rate,
            optimum=summary.optimum_rmse,
        )
        _save_figure(figure, out / "compare-lr.png")
        written.append("compare-lr.png")
    print(f"Wrote {', '.join(written)} to {args.out}/")
    if animation is not None:
        from .data import seed_data
        from .models import quadratic
        from .plots import Trace

        x, y = seed_data(args.seed)
        _save_animation(Trace(quadratic(), x, y, history, optimum_rmse=summary.optimum_rmse), animation)
        print(f"Wrote {animation}")
    return ExitStatus.OK


def _explaining(args):
    """The demo's on_start and callback with --explain: the article's lines, each RMSE line followed by its
    step in numbers (gradfit.explain)."""
    from .data import seed_data
    from .explain import Explainer
    from .models import quadratic

    x, y = seed_data(args.seed)
    explainer = Explainer(quadratic(), x, y, args.learning_rate)
    before: list = []

    def on_start(params) -> None:
        print(params)
        before[:] = [float(v) for v in params.detach()]

    def callback(record) -> None:
        print("RMSE:", record.rmse)
        for line in explainer.block(record.step, before):
            print(line)
        before[:] = record.params

    return on_start, callback


def _explain_fit(result) -> None:
    """Every step of a plain gradient descent fit in numbers (gradfit.explain), from its history."""
    from .explain import Explainer

    explainer = Explainer(result.model, result.x, result.y, result.learning_rate)
    before = result.history.init_params
    for record in result.history:
        for line in explainer.block(record.step, before):
            print(line)
        before = record.params


def _save_figure(figure, path) -> None:
    from ._files import save_atomic

    save_atomic(path, figure.savefig)


def _save_animation(run, path) -> None:
    from ._files import save_atomic
    from .plots import animate

    save_atomic(path, lambda tmp: animate(run, tmp))


def _run_fit(args) -> int:
    import warnings

    from ._files import check_animation, check_out_dir, check_out_file, staged, write_atomic
    from .errors import ConvergenceWarning, Interrupted, OptionError
    from .solvers.methods import get_method

    # options first, with nothing heavy imported: a refusal comes at once
    if args.method == "sgd":  # gd on mini-batches: a method of streamed fits only
        if not args.batch_size:
            raise OptionError("Method 'sgd' is gradient descent on mini-batches: give --batch-size (Parquet data).")
    else:
        get_method(args.method)  # an unknown method is refused before the data are read
    outputs = [
        check_out_file(path, flag)
        for path, flag in ((args.json, "--json"), (args.history, "--history"), (args.save, "--save"))
    ]
    if (args.format or args.dpi) and not args.plot:
        raise OptionError(
            f"{'--format' if args.format else '--dpi'} is for the figures of --plot DIR; give --plot too."
        )
    plot_dir = check_out_dir(args.plot, "--plot") if args.plot else None
    animation = check_animation(args.animate, "--animate")
    report_out = check_out_file(args.report, "--report")

    from .data import load, prepare
    from .engine import fit
    from .engine import fit_file

    model = _get_model(args, params=args.params)
    parquet = _parquet_data(args.data)
    if not parquet and (args.batch_size or args.epochs):
        raise OptionError("--batch-size and --epochs stream Parquet data; convert the CSV file to Parquet first.")
    if args.covariance and (args.sigma or parquet or args.workers or args.scheduler):
        raise OptionError(
            "--covariance is the errors' whole covariance: leave out --sigma, and give the data as a CSV file in "
            "one process (not Parquet, --workers or --scheduler)."
        )
    if not parquet:
        columns = load(args.data, x=args.x, y=args.y, sigma=args.sigma)
        if args.covariance:
            from .io import load_matrix

            columns["sigma"] = load_matrix(args.covariance, "--covariance")
            if len(columns["sigma"]) != len(columns["y"]):
                raise DataError(
                    f"--covariance is {len(columns['sigma'])} x {len(columns['sigma'])}, but the data have "
                    f"{len(columns['y'])} rows: give one row and column per data row."
                )
        first = columns["first_row"]
        data = prepare(
            columns["x"],
            columns["y"],
            columns.get("sigma"),
            nan_policy=args.nan_policy,
            first_row=first,
            row_label="line" if first else "row",
        )
    bounds, fixed = _bounds_and_fixed(args)
    progress = None if args.quiet else _progress_bar(args)
    batches = None if args.quiet or not parquet else _progress_bar(args, unit="batch")
    options = dict(
        p0=args.p0,
        method=args.method,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        tol=args.tol,
        absolute_sigma=args.absolute_sigma,
        scale=args.scale,
        bounds=bounds or None,
        fixed=fixed or None,
        callback=None if progress is None else lambda record: progress.update(1),
    )
    if args.tie:
        options["tie"] = dict(args.tie)
    if args.starts is not None:
        if args.workers or args.scheduler:
            raise OptionError("--starts needs the data in one process; leave out --workers/--scheduler.")
        options["starts"] = args.starts
    if args.loss != "linear" or args.f_scale != 1.0:
        options.update(loss=args.loss, f_scale=args.f_scale)
    if args.explain and (args.method != "gd" or args.scale or args.sigma or args.covariance or args.loss != "linear"):
        raise OptionError(
            "--explain shows plain gradient descent's steps on the raw parameters of a least-squares fit: use it "
            "with --method gd --no-scale (and no --sigma or --loss)."
        )
    if args.conf_interval is not None and (args.workers or args.scheduler):
        raise OptionError("--conf-interval needs the data in one process; leave out --workers/--scheduler.")
    json_out, history_out, save_out = outputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            if args.workers or args.scheduler:
                result = _fit_on_dask(args, model, options)
            elif parquet:
                result = fit_file(
                    model,
                    args.data,
                    x=args.x,
                    y=args.y,
                    sigma=args.sigma,
                    nan_policy=args.nan_policy,
                    memory_budget=args.memory_budget,
                    batch_size=args.batch_size,
                    epochs=args.epochs,
                    seed=args.seed,
                    on_batch=None if batches is None else lambda rows: batches.update(1),
                    **options,
                )
            else:
                result = fit(model, data.x, data.y, sigma=data.sigma, **options)
                result.n_dropped = data.n_dropped
                result.columns = columns["names"]
        except Interrupted as stopped:
            return _interrupted(stopped, history_out)
        finally:
            for bar in (progress, batches):
                if bar is not None:
                    bar.close()
    if args.conf_interval is not None:  # (before anything is written: a refusal leaves nothing half done)
        if result.sample_of is not None:
            raise OptionError(
                f"--conf-interval re-fits the data, and {result.sample_of:,} rows were streamed, not held: fit a "
                "file that fits in memory (--memory-budget), or leave out --conf-interval."
            )
        result.conf_interval(args.conf_interval)
    notes = []  # (a streamed fit's figures draw the random sample of rows its result keeps)
    with staged(plot_dir) as scratch:  # figures first: if drawing fails, nothing is written
        if scratch is not None:
            from .plots import write_plots

            _, skipped = write_plots(result, scratch, args.format or ("png",), args.dpi)
            notes += [f"--plot: skipped {s}" for s in skipped]
        report_text = None
        if report_out is not None:
            from .report import report_html

            report_text = report_html(result, _report_settings(args, result.columns))
        if animation is not None:
            _save_animation(result, animation)
        if json_out is not None:
            import json

            write_atomic(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        if history_out is not None:
            write_atomic(history_out, result.history.to_csv())
        if save_out is not None:
            result.save(save_out)
        if report_text is not None:
            write_atomic(report_out, report_text)
    if args.explain:
        _explain_fit(result)
    if not args.quiet:
        print(result.report())
    for note in notes:
        print(f"gradfit fit: note: {note}", file=sys.stderr)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"gradfit fit: warning: {w.message}", file=sys.stderr)
    return ExitStatus.OK if result.converged else ExitStatus.NOT_CONVERGED


def _get_model(args, **options):
    """The --model, in the variables named by --x; an expression in none of them that names one of the data's
    columns is refused with the option that fixes it."""
    from .errors import GradfitError, ModelError
    from .library import get_model

    try:
        return get_model(args.model, variables=_variable_names(args.x), **options)
    except ModelError as e:
        found = getattr(e, "found", ())
        try:
            from .io import read_table

            columns = read_table(args.data)[0].column_names if found and args.x is None else []
        except GradfitError:
            columns = []
        hits = [name for name in found if name in columns and name != getattr(args, "group", None)]
        if hits:
            raise ModelError(f"{e} The data have a column {hits[0]!r}: give --x {hits[0]}.") from None
        raise


def _parquet_data(path: str) -> bool:
    from .stream import is_parquet_data

    return is_parquet_data(path)


def _interrupted(stopped, history_out) -> int:
    """Ctrl-C during a streamed fit: keep the steps so far where --history asked, and say so."""
    from ._files import write_atomic

    history = stopped.history
    steps = 0 if history is None else len(history)
    if history_out is not None and history is not None:
        write_atomic(history_out, history.to_csv())
        where = f"the history so far is in {history_out}"
    else:
        where = "give --history OUT.csv to keep the steps of an interrupted fit"
    print(f"gradfit fit: interrupted after {steps} steps (stopped after the current batch); {where}.", file=sys.stderr)
    return ExitStatus.INTERRUPTED


def _variable_names(x) -> tuple[str, ...]:
    """An expression's variables are named after the --x columns (x, or x1, x2, ... for indexes)."""
    columns = [x] if x is None or isinstance(x, str) else list(x)
    if len(columns) == 1:
        return (columns[0],) if columns[0] and columns[0].isidentifier() else ("x",)
    if all(c.isidentifier() for c in columns):
        return tuple(columns)
    return tuple(f"x{i + 1}" for i in range(len(columns)))


def _run_serve(args) -> int:
    from .web import serve

    serve(args.host, args.port, open_browser=args.open)
    return ExitStatus.OK


def _run_models(args) -> int:
    from .library import LIBRARY

    width = max(len(n) for n in LIBRARY)
    for name, entry in LIBRARY.items():
        model = entry.make()
        formula = model.formula if name != "polyN" else "c3*x**3 + c2*x**2 + c1*x + c0  (poly3)"
        variables = getattr(model, "variables", ("x",))
        print(f"{name:<{width}}  {entry.description}")
        print(
            f"{'':<{width}}  y = {formula}"
            if variables == ("x",)
            else f"{'':<{width}}  z = {formula}   (variables: {', '.join(variables)})"
        )
    print(
        "\nModels add: 'gaussian + linear' has parameters g_amplitude, g_center, g_sigma, l_slope, "
        "l_intercept.\nAny other text is an expression: 'a*exp(-b*x) + c'."
    )
    return ExitStatus.OK


PROGRESS_DELAY = 0.5  # seconds a fit runs before its progress bar appears: short fits show none


def _bounds_and_fixed(args) -> tuple[dict, dict]:
    """--bound and --fix as fit's bounds and fixed: b>0 and b<10 given apart make one bound."""
    bounds: dict = {}
    for name, lower, upper in args.bound:
        old = bounds.get(name, (None, None))
        bounds[name] = (lower if lower is not None else old[0], upper if upper is not None else old[1])
    return bounds, {k: v for item in args.fix for k, v in item.items()}


def _run_fit_many(args) -> int:
    from ._files import check_out_file, save_atomic
    from .batch import fit_long

    out = check_out_file(args.out, "--out")
    model = _get_model(args)
    if args.workers or args.scheduler:
        return _fit_many_on_dask(args, model, out)
    if args.share:
        if args.workers or args.scheduler:
            raise OptionError("--share fits in one process; leave out --workers/--scheduler.")
        return _fit_global(args, model, out)
    groups, x, y, sigma = _long_table(args)
    bounds, fixed = _bounds_and_fixed(args)
    names, result = fit_long(
        model,
        groups.to_numpy(),
        x,
        y,
        sigma,
        p0=args.p0,
        method=args.method,
        max_steps=args.max_steps,
        backend=args.backend,
        progress=not args.quiet and sys.stderr.isatty(),
        bounds=bounds,
        fixed=fixed,
        tie=dict(args.tie) or None,
        loss=args.loss,
        f_scale=args.f_scale,
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = result.to_arrow()
    table = table.add_column(0, args.group, pa.array(names.tolist(), type=groups.type))
    save_atomic(out, lambda tmp: pq.write_table(table, tmp))
    if not args.quiet:
        counts_text = ", ".join(f"{v} {k}" for k, v in result.counts().items())
        print(f"Fitted {len(names)} curves of {model.name} by {result.method}: {counts_text}. Wrote {out}.")
    return ExitStatus.OK if result.converged.all() else ExitStatus.NOT_CONVERGED


def _fit_global(args, model, out) -> int:
    """fit-many --share: one global fit (gradfit.fit_global) of the long table, one row per curve written (its
    parameters, the shared ones repeated, and their errors), the shared parameters reported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._files import save_atomic
    from .errors import OptionError
    from .global_fit import fit_global

    other = [flag for flag, given in (("--bound", args.bound), ("--fix", args.fix), ("--tie", args.tie)) if given]
    other += ["--loss"] if args.loss != "linear" else []
    other += [
        flag for flag, given in (("--method", args.method != "auto"), ("--backend", args.backend != "auto")) if given
    ]
    if other:
        raise OptionError(f"--share runs one global Levenberg-Marquardt fit; it does not take {other[0]} yet.")
    unknown = [name for name in args.share if name not in model.param_names]
    if unknown:
        raise OptionError(
            f"--share names unknown parameter {unknown[0]!r}. The parameters are: {', '.join(model.param_names)}."
        )
    p0 = args.p0
    if p0 is not None and not isinstance(p0, dict):
        p0 = dict(zip(model.param_names, p0))
    result = fit_global(
        model,
        args.data,
        group=args.group,
        x=args.x,
        y=args.y,
        sigma=args.sigma,
        shared=args.share,
        p0=p0,
        **({"max_steps": args.max_steps} if args.max_steps else {}),
    )
    table = result.to_arrow().drop(["set"])
    table = table.add_column(0, args.group, pa.array(result.keys.tolist()))
    save_atomic(out, lambda tmp: pq.write_table(table, tmp))
    if not args.quiet:
        print(result.report())
        print(f"Wrote one row per curve ({len(result)}) to {out}.")
    return ExitStatus.OK if result.converged else ExitStatus.NOT_CONVERGED


def _fit_on_dask(args, model, options):
    """One fit of all the rows of Parquet data on a Dask cluster (gradfit.dask.fit): the columns stay on the workers."""
    from .errors import OptionError

    if args.workers and args.scheduler:
        raise OptionError("Give --workers N or --scheduler ADDRESS, not both.")
    if args.batch_size or args.epochs:
        raise OptionError("--batch-size and --epochs stream one file in this process; leave out --workers/--scheduler.")
    if not _parquet_data(args.data):
        raise DataError(
            f"'{args.data}' is not Parquet data. A cluster reads Parquet files (a file, a folder or a "
            "glob); convert it, or leave out --workers."
        )
    try:
        import dask.dataframe as dd
        import distributed  # noqa: F401
    except ImportError:
        raise OptionError("--workers and --scheduler need Dask: pip install 'gradfit[dask]'.") from None
    from pathlib import Path

    from .dask import cluster, fit
    from .io import column_name

    frame = dd.read_parquet(args.data)
    names = list(frame.columns)
    columns = {
        role: column_name(default if given is None else given, names, role, Path(args.data))
        for role, given, default in (("x", args.x, 0), ("y", args.y, 1), ("sigma", args.sigma, None))
        if given is not None or default is not None
    }
    with cluster(args.workers, args.scheduler, dashboard=args.dashboard):
        return fit(
            frame,
            model,
            x=columns["x"],
            y=columns["y"],
            sigma=columns.get("sigma"),
            nan_policy=args.nan_policy,
            **options,
        )


def _fit_many_on_dask(args, model, out) -> int:
    """fit-many on a Dask cluster: the table read lazily, each partition's curves fitted by a worker."""
    from .errors import OptionError

    try:
        import dask.dataframe as dd
        import distributed  # noqa: F401
    except ImportError:
        raise OptionError("--workers and --scheduler need Dask: pip install 'gradfit[dask]'.") from None

    from ._files import save_atomic
    from .dask import cluster, fit_many

    if args.workers and args.scheduler:
        raise OptionError("Give --workers N or --scheduler ADDRESS, not both.")
    if not _parquet_data(args.data):
        raise DataError(
            f"'{args.data}' is not Parquet data. A cluster reads Parquet files (a file, a folder or a "
            "glob); convert it, or leave out --workers."
        )
    frame = dd.read_parquet(args.data)
    others = [c for c in frame.columns if c != args.group]
    if args.group not in frame.columns:
        shown = ", ".join(repr(n) for n in list(frame.columns)[:20])
        raise DataError(f"Unknown group column {args.group!r} in '{args.data}'. Columns are: {shown}.")
    x = args.x if args.x is not None else (others[0] if others else None)
    y = args.y if args.y is not None else (others[1] if len(others) > 1 else None)
    bounds, fixed = _bounds_and_fixed(args)
    with cluster(args.workers, args.scheduler, dashboard=args.dashboard):
        table = fit_many(
            frame,
            model,
            group=args.group,
            x=x,
            y=y,
            sigma=args.sigma,
            p0=args.p0,
            method=args.method,
            max_steps=args.max_steps,
            backend=args.backend,
            bounds=bounds,
            fixed=fixed,
            tie=dict(args.tie) or None,
            loss=args.loss,
            f_scale=args.f_scale,
        ).compute()
    table = table.sort_values(args.group, kind="stable").reset_index(drop=True)
    save_atomic(out, lambda tmp: table.to_parquet(tmp, index=False))
    if not args.quiet:
        counts = table["status"].value_counts()
        where = f"{args.workers} local workers" if args.workers else args.scheduler
        print(
            f"Fitted {len(table)} curves of {model.name} on {where}: "
            f"{', '.join(f'{v} {k}' for k, v in counts.items())}. Wrote {out}."
        )
    return ExitStatus.OK if table["converged"].all() else ExitStatus.NOT_CONVERGED


def _long_table(args):
    """group, x, y (and sigma) columns of a long-format file; x and y default to the first two others."""
    from .stream import read_long

    groups, columns = read_long(args.data, args.group, x=args.x, y=args.y, sigma=args.sigma)
    # the user's own keys, of their own type (numbers stay numbers, sorted as numbers): as on a Dask cluster
    return groups, columns["x"], columns["y"], columns.get("sigma")


def _column_text(name, given, default: str) -> str:
    """A column as the report names it: its name in the data, else as given (an index), else which one it was."""
    if name is not None:
        return ", ".join(name) if isinstance(name, (list, tuple)) else str(name)
    if given is not None:
        return ", ".join(given) if isinstance(given, (list, tuple)) else str(given)
    return f"{default} (no name)"


def _report_settings(args, columns: dict | None = None) -> dict:
    """The settings the report lists; ``columns``: the data's own names for the columns fitted (a result's
    ``columns``), where the data had names."""
    columns = columns or {}
    settings = {
        "data": args.data,
        "x column": _column_text(columns.get("x"), args.x, "the first"),
        "y column": _column_text(columns.get("y"), args.y, "the second"),
        "model (as given)": args.model,
    }
    if args.sigma:
        settings["sigma column"] = args.sigma
    if getattr(args, "covariance", None):
        settings["errors' covariance"] = args.covariance
    for name, value in (("max steps", args.max_steps), ("tolerance", args.tol), ("p0", args.p0)):
        if value is not None:
            settings[name] = value
    if args.bound:
        settings["bounds"] = ", ".join(
            f"{n}: {lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}" for n, lo, hi in args.bound
        )
    if args.fix:
        settings["fixed"] = ", ".join(f"{k}={v:g}" for item in args.fix for k, v in item.items())
    if getattr(args, "tie", None):
        settings["tied"] = ", ".join(f"{k} = {v}" for k, v in args.tie)
    return settings


def _progress_bar(args, unit: str = "step"):
    """A tqdm bar on stderr for runs long enough to need one, only at a terminal (steps, or batches read)."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    from .solvers import METHODS

    if unit == "batch":
        return tqdm(desc="reading", unit="batch", delay=PROGRESS_DELAY, leave=False, file=sys.stderr, position=1)
    total = args.max_steps or (METHODS[args.method].max_steps if args.method in METHODS else None)
    return tqdm(total=total, desc="fitting", unit="step", delay=PROGRESS_DELAY, leave=False, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be answered quietly
        return code
    except BrokenPipeError:
        # the reader went away (`gradfit models | head`): end quietly, as Unix tools do, with the status of a
        # process stopped by SIGPIPE; what is still buffered goes nowhere rather than fail again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS


SIGPIPE_STATUS = 128 + 13  # what a shell reports for a process stopped by SIGPIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return ExitStatus.BAD_INPUT
    try:
        return int(args.run(args))
    except GradfitError as e:
        if args.traceback:
            raise
        print(f"gradfit {args.command}: error: {e}", file=sys.stderr)
        return ExitStatus.BAD_INPUT
    except KeyboardInterrupt:
        print("gradfit: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED

"""The ``gradfit`` command's parser: every subcommand, its flags and help, and the function it runs
(``serve`` and ``models`` are small enough to live here)."""

from __future__ import annotations

import argparse

from .. import __version__
from ..errors import ExitStatus
from ..solvers.methods import BACKENDS as BATCH_BACKENDS
from ..solvers.methods import BATCH_METHODS
from .arguments import (
    Parser,
    add_loss_options,
    add_parameter_options,
    arg_columns,
    arg_dpi,
    arg_figure_formats,
    arg_learning_rate,
    arg_learning_rate_or_auto,
    arg_names,
    arg_p0,
    arg_positive_int,
    arg_rates,
    arg_seed,
    arg_sigmas,
    arg_size,
    arg_tolerance,
    method_help,
    whole_number,
)
from .demo import run_demo
from .fit import run_fit
from .fit_many import run_fit_many


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gradfit",
        description="Fit curves by gradient descent, and watch it happen.",
    )
    parser.add_argument("--version", action="version", version=f"gradfit {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full stack on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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
        type=arg_positive_int,
        default=2,
        metavar="N",
        help="rounds of steps, one figure each (default: %(default)s)",
    )
    demo.add_argument(
        "--steps-per-round",
        type=arg_positive_int,
        default=10,
        metavar="N",
        help="gradient steps per round (default: %(default)s)",
    )
    demo.add_argument(
        "--learning-rate",
        "--lr",
        type=arg_learning_rate,
        default=1e-4,
        metavar="LR",
        help="step size (default: %(default)g)",
    )
    demo.add_argument("--seed", type=arg_seed, default=1989, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--animate", metavar="FILE", help="also write an animation of the run (.gif, or .mp4 with ffmpeg)"
    )
    demo.add_argument(
        "--compare-lr",
        type=arg_rates,
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
    demo.set_defaults(run=run_demo)

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
        type=arg_columns,
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
        type=arg_names,
        metavar="A,B,...",
        help="the order of an expression's parameters (default: first appearance)",
    )
    add_parameter_options(fit, "")
    add_loss_options(fit)
    fit.add_argument("--p0", type=arg_p0, metavar="VALUES", help="starting values: a=1,b=2 or 1,2")
    fit.add_argument(
        "--starts",
        type=arg_positive_int,
        metavar="N",
        help="fit from N starting points at once (p0 or the guess, the others spread around it or between the "
        "bounds) and keep the best: for models with several minima",
    )
    fit.add_argument(
        "--conf-interval",
        nargs="?",
        const=[1.0, 2.0, 3.0],
        type=arg_sigmas,
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
    fit.add_argument("--method", default="auto", metavar="M", help=f"{method_help()}. Default: %(default)s")
    fit.add_argument(
        "--learning-rate",
        "--lr",
        type=arg_learning_rate_or_auto,
        metavar="LR",
        help="step size of gradient methods, or 'auto' (default: the method's own)",
    )
    fit.add_argument("--max-steps", type=arg_positive_int, metavar="N", help="stop after N steps")
    fit.add_argument("--tol", type=arg_tolerance, metavar="T", help="tolerance of every stopping rule")
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
        type=arg_size,
        default="1GB",
        metavar="SIZE",
        help="the most memory the whole process may hold (e.g. 500MB, 2GB; default %(default)s): "
        "Parquet data that do not fit with the solver's work arrays are streamed in batches, "
        "with exact sums over them in every iteration",
    )
    fit.add_argument(
        "--batch-size",
        type=arg_positive_int,
        metavar="ROWS",
        help="fit by mini-batches of ROWS rows (Parquet data; methods sgd, momentum, nesterov, adam, "
        "rmsprop): one step per batch, --epochs passes over row groups in a shuffled order",
    )
    fit.add_argument("--epochs", type=arg_positive_int, metavar="N", help="passes of a mini-batch fit (default 1)")
    fit.add_argument("--seed", type=arg_seed, default=0, help="seed of the mini-batch order (default: %(default)s)")
    fit.add_argument(
        "--workers",
        type=arg_positive_int,
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
        type=arg_figure_formats,
        metavar="F,...",
        help="--plot's file formats: png, svg, pdf, or several (png,pdf); svg and pdf stay vector. Default: png",
    )
    fit.add_argument("--dpi", type=arg_dpi, metavar="N", help="--plot's resolution (default 100)")
    fit.add_argument("--animate", metavar="FILE", help="write an animation of the fit (.gif, or .mp4 with ffmpeg)")
    fit.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report (works offline)")
    fit.add_argument("--quiet", action="store_true", help="print no report and no progress bar")
    fit.set_defaults(run=run_fit)

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
    many.add_argument("--x", metavar="COL", type=arg_columns, help="x column (default: the first)")
    many.add_argument("--y", metavar="COL", help="y column (default: the second)")
    many.add_argument("--sigma", metavar="COL", help="column of the uncertainty of each y")
    many.add_argument("--model", default="quadratic", help="as for fit (default: %(default)s)")
    many.add_argument("--p0", type=arg_p0, metavar="VALUES", help="starting values for every curve")
    many.add_argument(
        "--share",
        type=arg_names,
        metavar="A,B,...",
        help="a global fit: these parameters are shared by every curve, fitted to all the data (the others "
        "each curve's own)",
    )
    add_parameter_options(many, " of every curve")
    add_loss_options(many)
    many.add_argument(
        "--method",
        default="auto",
        metavar="M",
        help=f"{', '.join(BATCH_METHODS[:-1])} or {BATCH_METHODS[-1]} (default: auto)",
    )
    many.add_argument("--max-steps", type=arg_positive_int, metavar="N", help="stop each curve after N steps")
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
        type=arg_positive_int,
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
    many.set_defaults(run=run_fit_many)

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
        type=whole_number(1, 65536, "a port number from 1 to 65535"),
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


def _run_serve(args) -> int:
    from ..web import serve

    serve(args.host, args.port, open_browser=args.open)
    return ExitStatus.OK


def _run_models(args) -> int:
    from ..library import LIBRARY

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

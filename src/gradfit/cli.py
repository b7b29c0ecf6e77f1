"""The ``gradfit`` command: parse the arguments, call the library, print, exit.

Library errors become one line on stderr and exit status 2 (``--traceback``
shows the stack). Each command imports what it needs when it runs, so
``--help`` does not load matplotlib.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__
from .errors import ExitStatus, GradfitError


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


_positive_int = _whole_number(1, expected="a whole number >= 1")
_seed = _whole_number(0, 2**63, expected="a whole number from 0 to 2**63-1")


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number such as 1e-4, got '{text}'")
    return value


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
    demo.add_argument("--out", default="gradfit-demo", metavar="DIR",
                      help="folder for data.png, run1.png, run2.png, history.csv (default: %(default)s)")
    demo.add_argument("--rounds", type=_positive_int, default=2, metavar="N",
                      help="rounds of steps, one figure each (default: %(default)s)")
    demo.add_argument("--steps-per-round", type=_positive_int, default=10, metavar="N",
                      help="gradient steps per round (default: %(default)s)")
    demo.add_argument("--learning-rate", "--lr", type=_learning_rate, default=1e-4, metavar="LR",
                      help="step size (default: %(default)g)")
    demo.add_argument("--seed", type=_seed, default=1989, help="random seed (default: %(default)s)")
    demo.set_defaults(run=_run_demo)
    return parser


def _run_demo(args) -> int:
    from .demo import check_out_dir, demo, output_files, summarize

    check_out_dir(args.out, "--out")  # refuse a bad --out before any work
    history = demo(
        args.out,
        rounds=args.rounds,
        steps_per_round=args.steps_per_round,
        learning_rate=args.learning_rate,
        seed=args.seed,
        on_start=print,  # the article prints its initial parameter tensor
        callback=lambda record: print("RMSE:", record.rmse),
    )
    for line in summarize(history, args.seed).lines():
        print(line)
    print(f"Wrote {', '.join(output_files(args.rounds))} to {args.out}/")
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
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

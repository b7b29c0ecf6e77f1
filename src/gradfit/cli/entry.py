"""The ``gradfit`` command's entry point: parse, run the subcommand, turn errors into one line and an exit
status."""

from __future__ import annotations

import os
import sys

from ..errors import ExitStatus, GradfitError
from .parser import build_parser


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

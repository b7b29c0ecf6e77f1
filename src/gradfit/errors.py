"""What can go wrong, as named exceptions and exit statuses.

Every user-facing error is one line that names the argument, what it got, what it
expected and what to do. The command line prints it and exits with
``ExitStatus.BAD_INPUT``; Python callers catch the class they care about.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit statuses of the ``gradfit`` command."""

    OK = 0
    ERROR = 1  # an unexpected failure: a bug, please report it
    BAD_INPUT = 2  # the user's input or options were rejected; nothing was written
    NOT_CONVERGED = 3  # the fit ran and its results were written, but it did not converge
    INTERRUPTED = 130  # Ctrl-C


class GradfitError(Exception):
    """Base class of every error gradfit raises on purpose."""


class DataError(GradfitError, ValueError):
    """The data (x, y, files, columns) cannot be used as given."""


class ModelError(GradfitError, ValueError):
    """The model or its parameters are not usable as given."""


class ExpressionError(ModelError):
    """A model typed as text is outside the safe expression language."""


class FitError(GradfitError, RuntimeError):
    """A fit could not continue (for example it diverged).

    Args:
        message: what happened and what to do, in one line.
        history: the steps up to the last finite one, so that the run can still be plotted and inspected.
    """

    def __init__(self, message: str, history=None):
        super().__init__(message)
        self.history = history


class Interrupted(FitError):
    """A streamed fit stopped on Ctrl-C after its current batch; ``history`` holds the steps so far."""


class OptionError(GradfitError, ValueError):
    """A setting (learning rate, step count, output place, ...) is out of range."""


class ConvergenceWarning(UserWarning):
    """A fit stopped before it converged; the message says what to change."""

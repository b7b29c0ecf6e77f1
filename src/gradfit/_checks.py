"""Argument checks shared by the library and the command line.

Each check takes the name to show in its message, so the same rule reads
``learning_rate`` from Python and ``--learning-rate`` from the command line.
"""

from __future__ import annotations

import math
import numbers

from .errors import OptionError


def positive_int(value, name: str) -> int:
    """A whole number >= 1 (a step count, a number of rounds)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{name} must be a whole number >= 1, got {value!r}.")
    return int(value)


def positive_finite(value, name: str, *, hint: str = "") -> float:
    """A number > 0 that is not inf or nan (a learning rate, a tolerance)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and value > 0
    )
    if not ok:
        raise OptionError(f"{name} must be a positive finite number, got {value!r}.{hint}")
    return float(value)

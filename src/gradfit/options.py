"""Argument checks shared by the library and the command line.

Each check takes the name to show in its message, so the same rule reads
``learning_rate`` from Python and ``--learning-rate`` from the command line.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import OptionError


def positive_int(value, name: str) -> int:
    """A whole number >= 1 (a step count, a number of rounds)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{name} must be a whole number >= 1, got {value!r}.")
    return int(value)


def positive_finite(value, name: str, *, hint: str = "") -> float:
    """A number > 0 that is not inf or nan (a learning rate, a tolerance)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    if not ok:
        raise OptionError(f"{name} must be a positive finite number, got {value!r}.{hint}")
    return float(value)


def check_device(device, name: str = "device"):
    """A torch device this machine has: 'cpu', or 'cuda' / 'cuda:N' where torch sees that GPU."""
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from None
    if where.type == "cpu":
        return where
    if where.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise OptionError(
            f"{name}={device!r} needs a CUDA GPU, and this machine has none that torch can use "
            f"({build}). Use {name}='cpu'."
        )
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise OptionError(
            f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
        )
    if where.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(
            f"{name}={device!r} needs Apple's Metal (MPS), which this machine does not have. Use {name}='cpu'."
        )
    try:
        torch.empty(0, device=where)
    except (RuntimeError, AssertionError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OptionError(f"{name}={device!r} is not usable here ({reason}). Use {name}='cpu'.") from None
    return where


def all_finite(a) -> bool:
    """No inf or NaN in a torch tensor or numpy array. A CPU tensor is read through numpy: on the small arrays
    of one fit, numpy's check takes a few microseconds and torch's ~15 per call (several per fit)."""
    if not isinstance(a, np.ndarray):
        if a.device.type != "cpu" or a.requires_grad or a.dtype.is_complex or a.dtype.itemsize < 4:
            return bool(a.isfinite().all())
        a = a.numpy()
    return bool(np.isfinite(a).all())


def learning_rate(value, method, scale: bool, asked: str):
    """A gradient method's learning rate: ``value`` checked, or the method's default (``method``: its entry in
    gradfit.solvers' registry); "auto" kept; None for a method that takes none (an error where one is given)."""
    if method.learning_rate is None:
        if value is not None:
            raise OptionError(
                f"Method '{asked}' takes no learning rate; leave learning_rate out "
                "or choose a gradient method (gd, momentum, nesterov, adam, rmsprop, lbfgs)."
            )
        return None
    if value is None:
        return method.learning_rate if scale else "auto"  # no one rate suits raw parameters
    if value == "auto":
        return value
    return positive_finite(value, "learning_rate", hint=" Or use learning_rate='auto'.")


def tolerances(tol):
    """``tol``: None, a number for every stopping rule, or a dict of ftol, xtol, gtol; each finite and >= 0."""
    if tol is None:
        return None
    if isinstance(tol, dict):
        unknown = set(tol) - {"ftol", "xtol", "gtol"}
        if unknown:
            raise OptionError(f"Unknown tolerance {sorted(unknown)[0]!r}. Use ftol, xtol or gtol.")
        return {k: nonnegative_finite(v, f"tol['{k}']") for k, v in tol.items()}
    return nonnegative_finite(tol, "tol")


def nonnegative_finite(value, name: str) -> float:
    """A number >= 0 that is not inf or nan (a tolerance)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise OptionError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def variable_names(variables) -> tuple[str, ...]:
    """``variables``: None (the one variable x), a name, or a sequence of names, as a tuple of names."""
    if variables is None:
        return ("x",)
    return (variables,) if isinstance(variables, str) else tuple(variables)

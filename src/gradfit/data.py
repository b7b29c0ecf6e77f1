"""Data in: the seed article's synthetic points, arrays of any kind, CSV and Parquet files.

torch is imported where a tensor is made or met, so that the demo's module (and the command
line's help) can read SEED without it.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError, OptionError

if TYPE_CHECKING:
    import torch

SEED = 1989  # the article's torch.manual_seed
N_POINTS = 15  # X = arange(0, 15)


def seed_generator(seed: int = SEED) -> torch.Generator:
    """A private random stream seeded like the article's ``torch.manual_seed(seed)``.

    A generator of our own leaves torch's global random state untouched, and draws
    the same numbers: the global CPU generator and a fresh ``torch.Generator`` are
    the same Mersenne Twister.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise OptionError(f"`seed` must be a whole number from 0 to 2**63-1, got {seed!r}.")
    import torch

    return torch.Generator().manual_seed(seed)


NOISE = 3.0  # the article's noise: rand(15) * 3, uniform on [0, 3)


def seed_data(seed: int = SEED, *, noise: float = NOISE, generator: torch.Generator | None = None):
    """The seed article's 15 noisy points: ``X = arange(0, 15)``, ``Y = rand(15)*3 + 0.9*(X-3)**2 + 1``.

    Args:
        seed: the seed of torch's generator (the article's 1989).
        noise: replaces the 3 (the playground's noise level).
        generator: a ``torch.Generator`` to draw from, so that drawing goes on from the same stream afterwards
            (the article draws its initial parameters right after ``Y``); ``seed`` is then not used.

    Returns:
        tuple: ``(x, y)`` as float32 tensors, bit-identical to the article's for the default seed and noise.
    """
    import torch

    g = seed_generator(seed) if generator is None else generator
    x = torch.arange(0, N_POINTS).float()
    y = torch.rand(N_POINTS, generator=g) * noise + 0.9 * (x - 3) ** 2 + 1
    return x, y


# --- Arrays and files -------------------------------------------------------------

NAN_POLICIES = ("raise", "omit")
SIGMA_RANGE = 1e150  # sigma between 1/SIGMA_RANGE and SIGMA_RANGE: the weighted residuals' squares stay finite
_SHOW_ROWS = 5  # how many offending rows an error message lists


def as_array(values, name: str) -> np.ndarray:
    """Lists, numpy arrays, torch tensors, pandas or polars Series -> a float64 numpy array.

    Float64 because float32 fits fail silently: with 7 significant digits, the
    sums of squares of a fit lose the differences the optimizer needs to see.
    """
    complex_numbers = DataError(
        f"`{name}` holds complex numbers, and a fit needs real ones: fit the real and the "
        "imaginary parts (or the magnitude) as curves of their own."
    )
    torch = sys.modules.get("torch")  # a tensor can only come from a process that imported torch
    if torch is not None and isinstance(values, torch.Tensor):
        if values.is_complex():
            raise complex_numbers
        values = values.detach().cpu().double().numpy()
    if isinstance(values, (str, bytes)) or values is None:
        raise DataError(f"`{name}` must be numbers (a list, array, tensor or Series), got {type(values).__name__}.")
    try:
        with warnings.catch_warnings():  # numpy would drop the imaginary parts with only a warning
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            array = np.asarray(values, dtype=np.float64)
    except np.exceptions.ComplexWarning:
        raise complex_numbers from None
    except (TypeError, ValueError) as e:
        if "complex" in str(e):  # complex numbers among others, in a list
            raise complex_numbers from None
        raise DataError(f"`{name}` must be numbers, but it holds values that are not ({e}).") from None
    if array.ndim == 0:
        raise DataError(f"`{name}` must be a sequence of numbers, got a single number.")
    if not array.flags.writeable:  # a read-only view (pandas hands these out): torch wants its own
        array = array.copy()
    return array


def _rows(mask: np.ndarray, offset: int = 0, label: str = "row") -> str:
    """'rows 3, 7' for the True places of ``mask``, numbered from ``offset``."""
    rows = np.flatnonzero(mask) + offset
    shown = ", ".join(str(r) for r in rows[:_SHOW_ROWS])
    more = f" (first {_SHOW_ROWS} of {len(rows)})" if len(rows) > _SHOW_ROWS else ""
    return f"{label}{'' if len(rows) == 1 else 's'} {shown}{more}"


@dataclass
class Dataset:
    """x, y and optional sigma as float64 arrays, plus how many rows were dropped."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None = None
    n_dropped: int = 0


def prepare(x, y, sigma=None, *, nan_policy: str = "raise", first_row: int = 0, row_label: str = "row") -> Dataset:
    """Check and clean data for a fit: equal lengths, finite values, positive sigma.

    Messages number rows from ``first_row`` (0 for arrays, as numpy indexes them;
    a file's first data line for files, with ``row_label="line"``).
    """
    if nan_policy not in NAN_POLICIES:
        raise DataError(f"Unknown nan_policy {nan_policy!r}. Choose one of: {', '.join(NAN_POLICIES)}.")
    x, y = as_array(x, "x"), as_array(y, "y")
    if y.ndim != 1:
        raise DataError(f"`y` must be one-dimensional, got shape {y.shape}.")
    if x.ndim not in (1, 2):
        raise DataError(f"`x` must be one value per point (or one row of values per point), got shape {x.shape}.")
    if len(x) != len(y):
        raise DataError(f"`x` and `y` must have the same length, got {len(x)} and {len(y)}.")
    arrays = {"x": x, "y": y}
    if sigma is not None:
        sigma = as_array(sigma, "sigma")
        if sigma.ndim == 2 and sigma.shape == (len(y), len(y)):
            return _correlated(x, y, covariance(sigma), nan_policy, first_row, row_label)
        if sigma.shape != y.shape:
            raise DataError(
                f"`sigma` must have one value per point ({len(y)}), or be the errors' covariance matrix "
                f"({len(y)} x {len(y)}), got shape {sigma.shape}."
            )
        arrays["sigma"] = sigma
    bad = _not_finite(arrays, nan_policy, first_row, row_label)
    keep = ~bad
    if sigma is not None and (sigma[keep] <= 0).any():
        where = _rows(keep & (sigma <= 0), first_row, row_label)
        raise DataError(f"`sigma` must be > 0, but it is not at {where}.")
    if sigma is not None and ((sigma[keep] > SIGMA_RANGE) | (sigma[keep] < 1 / SIGMA_RANGE)).any():
        # the squares of the weighted residuals would overflow or underflow float64: a "fit" of zeros or infs
        where = _rows(keep & ((sigma > SIGMA_RANGE) | (sigma < 1 / SIGMA_RANGE)), first_row, row_label)
        raise DataError(
            f"`sigma` must lie between 1e-150 and 1e150 (its square must be a float64 number), but "
            f"it does not at {where}. Rescale y and sigma together (a unit 1e100 times larger, say)."
        )
    if not bad.any():  # nothing to drop: no copies of what may be large arrays
        return Dataset(x, y, sigma, 0)
    return Dataset(x[keep], y[keep], None if sigma is None else sigma[keep], int(bad.sum()))


def _not_finite(arrays: dict, nan_policy: str, first_row: int, row_label: str) -> np.ndarray:
    """The rows with NaN or inf in any of ``arrays``; refused, naming the first, unless nan_policy is 'omit'."""
    bad = np.zeros(len(arrays["y"]), dtype=bool)
    for name, a in arrays.items():
        a_bad = ~np.isfinite(a) if a.ndim == 1 else ~np.isfinite(a).all(axis=1)
        if a_bad.any() and nan_policy == "raise":
            raise DataError(
                f"`{name}` has NaN or inf at {_rows(a_bad, first_row, row_label)}. "
                "Remove those rows or use nan_policy='omit'."
            )
        bad |= a_bad
    return bad


def covariance(matrix: np.ndarray) -> np.ndarray:
    """Check an errors' covariance matrix (curve_fit's 2-D sigma): finite, symmetric, positive definite."""
    if not np.isfinite(matrix).all():
        raise DataError("`sigma` (a covariance matrix) has NaN or inf: every entry must be a finite number.")
    asymmetry = np.abs(matrix - matrix.T).max()
    if asymmetry > 1e-10 * np.abs(matrix).max():
        raise DataError(
            "`sigma` (a covariance matrix) must be symmetric, but differs from its transpose by up to "
            f"{asymmetry:.3g}: give (C + C.T) / 2 if it is one up to rounding."
        )
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise DataError(
            "`sigma` (a covariance matrix) must be positive definite, and it is not (some combination of the errors "
            "would have zero or negative variance): check it, or add a small variance to its diagonal."
        ) from None
    return matrix


def _correlated(x, y, sigma, nan_policy, first_row, row_label) -> Dataset:
    """x and y checked as ``prepare`` does, with an (N, N) covariance of their errors: a dropped row drops its
    row and column of the covariance (what remains is the covariance of the points kept)."""
    bad = _not_finite({"x": x, "y": y}, nan_policy, first_row, row_label)
    if not bad.any():
        return Dataset(x, y, sigma, 0)
    keep = ~bad
    return Dataset(x[keep], y[keep], sigma[np.ix_(keep, keep)], int(bad.sum()))


def load(path, *, x=None, y=None, sigma=None) -> dict:
    """Read columns of a CSV or Parquet file as float64 arrays: ``{"x": ..., "y": ..., "sigma": ...}``.

    CSV: the delimiter is sniffed and a first line that is not all numbers is taken as the header. Missing cells
    become NaN (see ``nan_policy`` in ``fit``). The result also holds ``"first_row"``: the file line (CSV) or row
    (Parquet, 0-based) of the first value, so that messages can point into the file.

    Args:
        path: the file.
        x: the x column, by name or 0-based index (an int or a string of digits); default the first.
        y: the y column, likewise; default the second.
        sigma: a column of the errors of y, likewise; default none.

    Returns:
        dict: the columns' arrays under "x", "y" (and "sigma"), with "first_row".
    """
    from . import io  # pyarrow only when reading files

    return io.load_columns(path, x=x, y=y, sigma=sigma)

"""Fitting data larger than memory: record batches streamed from Parquet with ``pyarrow.dataset``.

``fit_file`` reads a Parquet file, a folder or a glob of them, or a pyarrow Dataset.
When holding the data and the solver's work arrays would pass the memory budget
(which bounds the whole process, measured from what it already holds), the data
are never held: every evaluation is one pass over record batches.

- Full-batch methods (auto, lm, linear, gd and the other gradient methods) add up
  exact sums over the batches in every iteration: the loss, the gradient, and for
  Levenberg–Marquardt the R factor of J = QR and Qᵀr (a tall-skinny QR folded batch
  by batch, which has all that JᵀJ and Jᵀr have without squaring J's condition
  number). So the answer is the in-memory fit's, to rounding.
- Mini-batch methods (``batch_size=``: sgd, momentum, nesterov, adam, rmsprop) take
  one step per batch, ``epochs`` times over the data, visiting the row groups in a
  shuffled order (seeded) and the rows of each in a shuffled order.

A Ctrl-C stops a streamed fit after the current batch, as ``Interrupted`` with the
history so far.
"""

from __future__ import annotations

import glob
import math
import os
import resource
import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import options
from .options import positive_int
from .errors import ConvergenceWarning, DataError, Interrupted, OptionError
from .history import History, StepRecord
from .losses import check_loss
from .models import Model, Polynomial
from .params import (
    Constrained,
    at_bounds,
    check_bounds,
    check_fixed,
    check_ties,
    every_covariance,
    start_values,
    widths_positive,
)
from .solvers import Problem, get_method
from .solvers.fold import BLOCK_ROWS, GramFold, HouseholderFold, usable
from .solvers.gradient import Frame, torch_optimizer, descent_steps, rate_guard
from .solvers.lm import lm_steps
from .solvers.problem import Outcome, run_steps
from .uncertainty import covariance as covariance_of
from .uncertainty import undetermined_note, undetermined_warning

DEFAULT_BUDGET = 10**9  # bytes: 1 GB for the whole process
MARGIN = 192 << 20  # bytes kept free under the budget: allocator slack, pyarrow's buffers, the result
MIN_BATCH = 1024  # rows: below this a budget is too tight to stream usefully
MAX_BATCH = 1 << 18  # rows: more per batch buys nothing and costs memory
MINIBATCH = {
    "sgd": "gd",
    "gd": "gd",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "adam": "adam",
    "rmsprop": "rmsprop",
}  # mini-batch method -> the update it takes on each batch
MINIBATCH_RATES = {"gd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adam": 0.003, "rmsprop": 0.003}
SAMPLE_ROWS = 10_000  # rows a streamed fit keeps, drawn at random, for its figures and report


# --- where the data are, and how much of them fits -----------------------------------------


def is_source(value) -> bool:
    """True for what ``fit_file`` reads: a path (str or Path) or a pyarrow Dataset."""
    if isinstance(value, (str, os.PathLike)):
        return True
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "to_batches")


def open_dataset(source):
    """A pyarrow Dataset of Parquet files from a file, a folder, a glob, or a Dataset as is."""
    import pyarrow.dataset as ds

    if not isinstance(source, (str, os.PathLike)):
        return source
    text = os.fspath(source)
    if any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
        if not files:
            raise DataError(f"No file matches '{text}'. Check the pattern.")
    elif not Path(text).exists():
        raise DataError(f"Data file '{text}' does not exist. Check the path.")
    else:
        files = text
    try:
        dataset = ds.dataset(files, format="parquet")
        if not dataset.files:
            raise DataError(
                f"'{text}' is a folder with no Parquet files in it. Give a CSV or Parquet file, or a "
                "folder of Parquet files."
            )
        return dataset
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several kinds for files that are not Parquet
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"'{text}' is not readable as Parquet ({first}). Give Parquet files, or a CSV file "
            "small enough to read whole."
        ) from None


def process_memory() -> int:
    """Bytes this process holds now (resident set)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far is an upper bound
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def row_bytes(n_columns: int, n_params: int, *, streamed: bool) -> int:
    """Bytes per row a fit holds at its peak: the data and its copies, the Jacobian, temporaries.

    Measured rather than derived: the columns as Arrow, numpy and torch arrays; the
    Jacobian and forward-mode autograd's tangents; residuals, predictions and their
    temporaries. Deliberately generous: the budget is a promise.
    """
    data = 8 * n_columns * 3
    work = 8 * (6 * n_params + 12)
    # x4 when streamed: Parquet pages decoded beside the batch, and the allocator's slack between passes
    # (peak RSS measured against batch size: about 1 KB per row of a quadratic on two columns)
    return 4 * (data + work) if streamed else 2 * (data + work) + 8 * n_columns * 2


@dataclass(frozen=True)
class Plan:
    """How a file will be fitted: whole in memory, or streamed in batches of ``batch_rows``."""

    streamed: bool
    batch_rows: int
    reason: str


def warm_up(model: Model) -> None:
    """Take one Jacobian and one QR on a few made-up rows, so that what the process holds counts torch's code.

    The first use of forward-mode autograd and of LAPACK maps about 100 MB of torch's
    libraries into memory (measured); a budget measured before that would be overrun.
    """
    k = len(model.variables) if getattr(model, "variables", None) else 1
    x = torch.linspace(0.1, 1.0, 64, dtype=torch.float64)
    x = x if k == 1 else x[:, None].repeat(1, k)
    try:
        jac = Problem(model, x, torch.ones(64, dtype=torch.float64)).jacobian(
            torch.ones(model.n_params, dtype=torch.float64)
        )
        torch.linalg.qr(torch.cat([jac, jac]))
    except Exception:  # a model that cannot run on made-up rows: the real fit will say what is wrong
        pass


def plan(n_rows: int, n_columns: int, n_params: int, budget: int, batch_rows: int | None = None) -> Plan:
    """In memory when the data and the work arrays fit under ``budget`` (with what the process holds), else batches."""
    held = process_memory()
    available = budget - held - MARGIN
    whole = n_rows * row_bytes(n_columns, n_params, streamed=False)
    # data no larger than the smallest batch are never streamed, nor refused: a long-lived process (a notebook,
    # a test run) may already hold more than the default budget, and a few rows change nothing
    if batch_rows is None and (whole <= available or n_rows <= MIN_BATCH):
        return Plan(False, n_rows, f"{n_rows:,} rows fit in memory ({whole / 1e6:.0f} MB of work arrays)")
    per_row = row_bytes(n_columns, n_params, streamed=True)
    rows = batch_rows or min(MAX_BATCH, available // per_row if available > 0 else 0)
    if batch_rows is None and rows < MIN_BATCH:
        raise OptionError(
            f"The memory budget of {budget / 1e6:.0f} MB leaves too little room: this process "
            f"already holds {held / 1e6:.0f} MB. Give a larger --memory-budget."
        )
    return Plan(True, int(rows), f"streamed in batches of {int(rows):,} rows (memory budget {budget / 1e6:.0f} MB)")


class Source:
    """Columns of a dataset, read in record batches as float64 arrays, every value checked."""

    def __init__(self, dataset, *, x=None, y=None, sigma=None, nan_policy: str = "raise", label: str = "the data"):
        from .io import column_name

        self.dataset, self.nan_policy = dataset, nan_policy
        self.label = f"'{label}'"  # quoted in messages, as gradfit.load quotes a path
        names = dataset.schema.names
        self.x = column_name(0 if x is None else x, names, "x", label)
        self.y = column_name(1 if y is None else y, names, "y", label)
        self.sigma = None if sigma is None else column_name(sigma, names, "sigma", label)
        self.columns = [c for c in (self.x, self.y, self.sigma) if c is not None]
        self.n_rows = dataset.count_rows()
        self.known_clean = False  # set once a pass has found no NaN, inf or sigma <= 0 in any row
        if self.n_rows == 0:
            raise DataError(f"{self.label} has no rows of data.")

    def read_all(self) -> dict:
        table = self.dataset.to_table(columns=self.columns)
        return {
            role: _floats(table.column(name), name, self.label, 0)
            for role, name in (("x", self.x), ("y", self.y), ("sigma", self.sigma))
            if name is not None
        }

    def batches(self, rows: int, shuffle: np.random.Generator | None = None) -> Iterator[tuple]:
        """(x, y, sigma or None) of up to ``rows`` rows each; with ``shuffle``, row groups and rows in a random
        order."""
        import pyarrow.dataset as ds

        # read one row group's columns at a time: no read-ahead, no buffering of whole files
        lean = dict(
            batch_readahead=0,
            fragment_readahead=0,
            fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False),
        )
        if shuffle is None:
            offset = 0
            for batch in self.dataset.to_batches(columns=self.columns, batch_size=rows, **lean):
                if batch.num_rows:
                    yield self._arrays(batch, offset)
                offset += batch.num_rows
            return
        groups = [g for fragment in self.dataset.get_fragments() for g in fragment.split_by_row_group()]
        for i in shuffle.permutation(len(groups)):
            # one row group at a time (a row group's to_table with batch_readahead=0 hangs in pyarrow 26)
            table = groups[i].to_table(columns=self.columns, fragment_scan_options=lean["fragment_scan_options"])
            order = shuffle.permutation(table.num_rows)
            for start in range(0, table.num_rows, rows):
                part = table.take(order[start : start + rows])
                yield self._arrays(part, None)

    def _arrays(self, batch, offset):
        out = {
            role: _floats(batch.column(name), name, self.label, offset)
            for role, name in (("x", self.x), ("y", self.y), ("sigma", self.sigma))
            if name is not None
        }
        x, y, sigma = out["x"], out["y"], out.get("sigma")
        if self.known_clean:  # an earlier pass checked every row
            return x, y, sigma
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if sigma is not None:
            bad |= ~np.isfinite(sigma) | (sigma <= 0)
        if bad.any():
            if self.nan_policy == "raise":
                where = f"row {offset + int(np.flatnonzero(bad)[0])}" if offset is not None else "a row"
                raise DataError(
                    f"{self.label} has NaN, inf or a sigma <= 0 at {where}. Fix those rows or use "
                    "nan_policy='omit' (--nan-policy omit) to leave them out."
                )
            keep = ~bad
            x, y, sigma = x[keep], y[keep], None if sigma is None else sigma[keep]
        return x, y, sigma


class Reservoir:
    """A uniform random sample of ``k`` rows (without replacement) of data read once, batch by batch.

    Li's algorithm L: the first k rows fill it; from then on the gap to the next row that replaces
    a random slot is drawn from its distribution, so a pass over 10⁸ rows draws about k·ln(10⁸/k)
    numbers, not one per row. The positions of the rows to keep are drawn ahead, a few hundred at a
    time, with numpy. ``arrays()`` gives the rows in the order they were read.
    """

    AHEAD = 256  # positions drawn at a time

    def __init__(self, k: int, seed: int = 0):
        self.k, self.rng, self.seen = k, np.random.default_rng(seed), 0
        self.columns: list[np.ndarray | None] | None = None
        self.index = np.empty(k, dtype=np.int64)  # each kept row's position among the rows read
        self.weight = math.exp(math.log(1.0 - self.rng.random()) / k)
        self.last = k - 1  # the position of the last row chosen so far (the k-th, once full)
        self.ahead = np.empty(0, dtype=np.int64)  # positions of rows to keep, drawn ahead, increasing

    def _draw_ahead(self) -> None:
        """The next AHEAD positions: each gap is 1 + floor(log U / log(1 - weight)), and after each
        replacement the weight shrinks by a factor U'^(1/k)."""
        u, v = 1.0 - self.rng.random((2, self.AHEAD))  # in (0, 1]: logarithms are finite
        shrink = np.exp(np.cumsum(np.log(u)) / self.k)
        weights = self.weight * np.concatenate([[1.0], shrink[:-1]])  # the weight each gap is drawn with
        gaps = 1 + np.floor(np.minimum(np.log(v) / np.log1p(-weights), 2.0**50)).astype(np.int64)
        positions = self.last + np.cumsum(gaps)
        self.ahead = np.concatenate([self.ahead, positions])
        self.last, self.weight = int(positions[-1]), self.weight * float(shrink[-1])

    def add(self, *columns) -> None:
        """Rows read next: arrays of equal length (x, y, ...); None stands for a column not given."""
        start, n = self.seen, len(columns[0])
        self.seen += n
        if self.columns is None:
            self.columns = [None if c is None else np.empty((self.k, *c.shape[1:]), dtype=c.dtype) for c in columns]
        fill = min(max(self.k - start, 0), n)  # the first k rows fill it
        for kept, c in zip(self.columns, columns):
            if kept is not None:
                kept[start : start + fill] = c[:fill]
        self.index[start : start + fill] = np.arange(start, start + fill)
        if self.seen <= self.k:
            return
        while self.last < self.seen:
            self._draw_ahead()
        here = int(np.searchsorted(self.ahead, self.seen))
        chosen, self.ahead = self.ahead[:here], self.ahead[here:]
        slots = self.rng.integers(self.k, size=len(chosen))
        # replaced one after another, a slot chosen twice keeps the later row
        _, latest = np.unique(slots[::-1], return_index=True)
        latest = len(slots) - 1 - latest
        slots, chosen = slots[latest], chosen[latest]
        for kept, c in zip(self.columns, columns):
            if kept is not None:
                kept[slots] = c[chosen - start]
        self.index[slots] = chosen

    def arrays(self) -> list[np.ndarray | None]:
        """The kept rows, in the order they were read (all of them if there were at most k); [] if none came."""
        if self.columns is None:
            return []
        kept = min(self.seen, self.k)
        order = np.argsort(self.index[:kept], kind="stable")
        return [None if c is None else c[:kept][order] for c in self.columns]


def _floats(column, name: str, label: str, offset) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"Column {name!r} of {label} holds {column.type}, not numbers. Choose a numeric column.")
    if column.type != pa.float64():
        column = column.cast(pa.float64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


# --- stopping after the current batch on Ctrl-C ----------------------------------------------


class _Stop:
    requested = False


@contextmanager
def _ctrl_c_finishes_the_batch():
    """While streaming, a Ctrl-C asks to stop after the current batch (a second one stops at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield _Stop()
        return
    flag = _Stop()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Interrupt(Exception):
    """Raised inside a solver's pass when Ctrl-C asked to stop; turned into Interrupted with the history."""


@contextmanager
def _one_torch_thread():
    """torch on one thread for a while (restored after).

    A pass multiplies blocks of 65,536 rows by tiny matrices while pyarrow decodes with
    its own threads: measured on 2 cores, one torch thread folds 1.5x faster than two.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tensors(*arrays):
    """numpy arrays (or None) as tensors sharing their memory."""
    with warnings.catch_warnings():  # arrow's buffers are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        return tuple(None if a is None else torch.from_numpy(a) for a in arrays)


# --- the problem, over batches ------------------------------------------------------------------


class StreamProblem:
    """The Problem of every solver, for data read in batches: each evaluation is one pass.

    Per batch it builds an in-memory ``Problem`` of those rows (so residuals and
    Jacobians are computed exactly as for data in memory) and adds up: the sum of
    squares, the gradient, and R, Qᵀr of the Jacobian by a tall-skinny QR.
    """

    streamed = True

    def __init__(
        self,
        model: Model,
        source: Source,
        batch_rows: int,
        *,
        on_batch: Callable[[int], None] | None = None,
        stop: _Stop | None = None,
        sample_rows: int = SAMPLE_ROWS,
        seed: int = 0,
        robust: tuple[str, float] | None = None,
    ):
        self.source, self.batch_rows = source, batch_rows
        # a robust loss (loss, f_scale): each batch's rows linearized as Problem linearizes them (reweighted), the
        # robust cost summed beside the fold (whose own sum is of the reweighted residuals)
        self.robust, self._robust_cost = robust, 0.0
        self.on_batch, self.stop = on_batch, stop or _Stop()
        self.use_model(model)
        # a first pass: the rows kept, the moments of y (the standardized loss's unit, R²), and a random
        # sample of the rows for the figures
        sample = Reservoir(sample_rows, seed) if sample_rows else None
        n, total, total_sq, wtotal, wtotal_sq = 0, 0.0, 0.0, 0.0, 0.0
        for x, y, sigma in self._batches():
            if sample is not None:
                sample.add(x, y, sigma)
            w = y if sigma is None else y / sigma
            n += len(y)
            total, total_sq = total + float(y.sum()), total_sq + float(y @ y)
            wtotal, wtotal_sq = wtotal + float(w.sum()), wtotal_sq + float(w @ w)
        self.n_points = n
        source.known_clean = n == source.n_rows
        self.ss_tot = max(total_sq - total * total / n, 0.0) if n else 0.0
        self._y_var = max(wtotal_sq / n - (wtotal / n) ** 2, 0.0) * n / (n - 1) if n > 1 else 0.0
        self.weights = None if source.sigma is None else True  # weighted or not, as a Problem says
        self.kept = (sample.arrays() if sample is not None else []) or [None, None, None]  # x, y, sigma: the sample

    def use_model(self, model: Model) -> None:
        """Fit ``model`` to these data (the same model seen through bounds or fixed values, say)."""
        self.model = model
        self.user_names = getattr(model, "user_names", model.param_names)
        self._to_user = getattr(model, "to_user", None)
        self._cache = None  # (params, cost, R, Qᵀr) of the last pass
        self._precond, self._exact, self._powers = None, False, None  # see _pass

    def describe(self, params: torch.Tensor) -> tuple[float, ...]:
        with torch.no_grad():
            values = params if self._to_user is None else self._to_user(params)
        return tuple(values.tolist())

    def y_std(self) -> float:
        return math.sqrt(self._y_var)

    @property
    def n_dropped(self) -> int:
        return self.source.n_rows - self.n_points

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y of the first rows (up to 100,000): what the model's guess of p0 sees."""
        x, y, _ = next(iter(self.source.batches(min(self.batch_rows, 100_000))))
        return torch.tensor(x), torch.tensor(y)  # copies: arrow's buffers are read-only

    def raw_ss(self, params: torch.Tensor) -> float:
        """The unweighted sum of squared residuals (for the RMSE and R²), one pass when sigma weights."""
        if self.source.sigma is None and self.robust is None:
            return self._pass(params)[0]
        total = 0.0
        with torch.no_grad():
            for x, y, _sigma in self._batches():
                r = self._part(x, y, None).residuals(params)
                total += float(r @ r)
        return total

    def _batches(self, shuffle=None):
        for x, y, sigma in self.source.batches(self.batch_rows, shuffle):
            yield x, y, sigma
            if self.on_batch is not None:
                self.on_batch(len(y))
            if self.stop.requested:
                raise _Interrupt

    def _part(self, x, y, sigma) -> Problem:
        return Problem(self.model, *_tensors(x, y, sigma), *(self.robust or ()))

    def _pass(self, params: torch.Tensor):
        """cost, R and Qᵀr at ``params``: one pass, the rows folded block by block (see solvers.fold).

        The fast fold sums the Gram matrix of J preconditioned by the R of the last pass (or of a
        sample); when that is too far from orthonormal to trust, the pass is redone with a better
        R (Cholesky QR's second round), and at worst by Householder QR, which is exact for any J.
        """
        if self._cache is not None and (self._cache[0] is params or torch.equal(self._cache[0], params)):
            return self._cache[1:]
        fold = self._new_fold(params)
        for attempt in range(3):
            self._fold_rows(fold, params)
            out = fold.result()
            if out is not None:
                break
            better = fold.refined()
            fold = (
                GramFold(better)
                if better is not None and attempt == 0 and usable(better)
                else HouseholderFold(len(params))
            )
        cost, r_factor, z = out
        if self.robust is not None and math.isfinite(cost):
            cost = self._robust_cost  # (the fold's sum is of the reweighted residuals)
        if math.isfinite(cost):  # this pass's R preconditions the next one, where J will be much the same
            if usable(r_factor):
                self._precond = r_factor
            elif isinstance(fold, HouseholderFold):
                self._exact = True  # J is (nearly) rank-deficient: only Householder folds it exactly
        self._cache = (params, cost, r_factor, z)
        return cost, r_factor, z

    def _new_fold(self, params: torch.Tensor):
        if self._exact:
            return HouseholderFold(len(params))
        if self._precond is None:  # the first pass: R of a sample of the rows, scaled to all of them
            x, y, sigma = next(iter(self.source.batches(min(self.batch_rows, BLOCK_ROWS))))
            sample = HouseholderFold(len(params))
            self._fold_block(sample, *_tensors(x, y, sigma), params)
            r_factor = sample.result()[1] * math.sqrt(self.n_points / len(y))
            if not (torch.isfinite(r_factor).all() and usable(r_factor)):
                return HouseholderFold(len(params))
            self._precond = r_factor
        return GramFold(self._precond)

    def _fold_rows(self, fold, params: torch.Tensor) -> None:
        self._robust_cost = 0.0
        with _one_torch_thread():
            for batch in self._batches():
                x, y, sigma = _tensors(*batch)
                for a in range(0, len(y), BLOCK_ROWS):
                    rows = slice(a, a + BLOCK_ROWS)
                    self._fold_block(fold, x[rows], y[rows], None if sigma is None else sigma[rows], params)
                if not math.isfinite(fold.cost_so_far()):  # the model overflowed: this point is rejected anyway
                    break

    def _fold_block(self, fold, x, y, sigma, params) -> None:
        if self.robust is not None:
            part = Problem(self.model, x, y, sigma, *self.robust)
            if self._curvature:  # for the covariance: the rows as least_squares rescales them (Triggs)
                with torch.no_grad():
                    r = part.residuals(params)
                fold.add(part.scaled_jacobian(params), r)
                self._robust_cost += part.spread(params)
                return
            self._robust_cost += part.cost(params)
            jac, r = part.linearize(params)
            fold.add(jac, r)
            return
        if self.model.is_linear:
            fold.add_linear(self._design(x, y), params, None if sigma is None else 1 / sigma)
            return
        part = Problem(self.model, x, y, sigma)
        with torch.no_grad():
            r = part.residuals(params)
        fold.add(part.jacobian(params), r)

    _curvature = False  # set while robust_summary folds the rows for the covariance

    def robust_summary(self, params: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """With a robust loss: the plain (weighted) χ², the robust cost and R of the Jacobian rescaled as
        least_squares rescales it (Triggs' term), whose RᵀR is the Gauss–Newton Hessian that curve_fit takes
        the covariance from; one pass (Householder: exact for any J)."""
        fold = HouseholderFold(len(params))
        self._curvature = True
        try:
            self._fold_rows(fold, params)
        finally:
            self._curvature = False
        chi2, r_factor, _ = fold.result()
        return chi2, self._robust_cost, r_factor

    def _design(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[A | y], a linear model's design matrix beside y; a polynomial's made in a reused array."""
        if not isinstance(self.model, Polynomial):
            return torch.cat([self.model.design_matrix(x), y[:, None]], 1)
        d, n = self.model.degree, len(x)
        if self._powers is None or self._powers.shape[1] < n:
            self._powers = torch.ones((d + 2, max(n, BLOCK_ROWS)), dtype=torch.float64)
        rows = self._powers[:, :n]  # row i holds x**(d - i) (row d stays 1), the last row y
        if d >= 1:
            rows[d - 1].copy_(x)
        for i in range(d - 2, -1, -1):
            torch.mul(rows[i + 1], x, out=rows[i])
        rows[d + 1].copy_(y)
        return rows.T

    def cost(self, params: torch.Tensor) -> float:
        return self._pass(params)[0]

    def linearize(self, params: torch.Tensor):
        _, r_factor, z = self._pass(params)
        return r_factor, z

    def loss(self, params: torch.Tensor) -> torch.Tensor:
        total = 0.0
        with torch.no_grad():
            for x, y, sigma in self._batches():
                total += float(self._part(x, y, sigma).loss(params)) * len(y)
        return torch.tensor(total / self.n_points, dtype=torch.float64)

    def loss_and_grad(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The mean squared (weighted) residual and its gradient, summed batch by batch."""
        p = params.detach().clone().requires_grad_()
        total, grad = 0.0, torch.zeros_like(p)
        for x, y, sigma in self._batches():
            with torch.enable_grad():
                s = self._part(x, y, sigma).loss(p) * len(y)  # (the batch's sum of squares, or robust cost)
                (g,) = torch.autograd.grad(s, p)
            total += float(s)
            grad += g
        return total / self.n_points, grad / self.n_points


# --- mini-batch methods -------------------------------------------------------------------------


def minibatch_steps(
    problem: StreamProblem, p0: torch.Tensor, *, method: str, learning_rate: float, epochs: int, seed: int, scale: bool
):
    """One step per batch, ``epochs`` times over the data in a shuffled order: a generator like the solvers'.

    The records' ``loss`` is the batch's; ``epoch`` says which pass over the data it belongs to.
    """
    update = MINIBATCH[method]
    frame = Frame.standardized(problem, p0) if scale else Frame.identity(problem, p0)
    q = frame.start().requires_grad_()
    optimizer = torch.optim.SGD([q], lr=learning_rate) if update == "gd" else torch_optimizer(update)(q, learning_rate)
    history = History(problem.user_names, problem.describe(p0))
    shuffle = np.random.default_rng(seed)
    step = 0
    for epoch in range(1, epochs + 1):
        for x, y, sigma in problem._batches(shuffle):
            part = problem._part(x, y, sigma)
            optimizer.zero_grad()
            r = part.residuals(frame.params(q))
            loss = (r * r).mean() / frame.loss_unit
            loss.backward()
            grad_norm = q.grad.norm().item()
            optimizer.step()
            step += 1
            value = loss.item() * frame.loss_unit
            record = StepRecord(
                step,
                value,
                math.sqrt(value),
                grad_norm,
                learning_rate,
                problem.describe(frame.params(q.detach())),
                epoch=epoch,
            )
            if not (math.isfinite(value) and all(map(math.isfinite, record.params))):
                from .errors import FitError

                raise FitError(
                    f"The loss became {value} at step {step} (epoch {epoch}, learning_rate="
                    f"{learning_rate:g}): the descent diverged. Try a smaller learning rate, e.g. "
                    f"{learning_rate / 10:g}.",
                    history=history,
                )
            history.append(record)
            yield record
    return Outcome(
        frame.params(q.detach()),
        history,
        False,
        f"ran the {epochs} epoch{'s' if epochs > 1 else ''} asked for ({step} mini-batch steps; "
        "mini-batch methods stop by epochs, not by a tolerance)",
        learning_rate,
    )


# --- fitting a file too large for memory ------------------------------------------------------


def fit_source(
    model: Model,
    data: "Source",
    how: Plan,
    *,
    p0,
    method: str,
    learning_rate,
    max_steps,
    tol,
    absolute_sigma: bool,
    scale: bool,
    batch_size,
    epochs,
    seed: int,
    sample_rows: int,
    callback,
    on_batch,
    fit_options: dict,
):
    """The streamed fit of ``data`` as ``how`` plans it (gradfit.engine.fit_file decides to stream): Ctrl-C
    finishes the current batch and stops with the history so far."""
    robust = check_loss(fit_options.get("loss", "linear"), fit_options.get("f_scale", 1.0))
    robust = None if robust[0] == "linear" else robust
    if robust and batch_size is not None:
        raise OptionError("Mini-batches do not take a robust loss yet; use a full-batch method (lm, auto, gd).")
    if fit_options.get("starts") is not None:
        raise OptionError("`starts` needs the data in memory: a streamed fit does not take it yet.")
    unknown = sorted(set(fit_options) - {"bounds", "fixed", "variables", "dtype", "device", "tie", "loss", "f_scale"})
    if unknown:  # (a streamed fit runs in float64 on the CPU, in the model's own variables)
        raise OptionError(f"Unknown option {unknown[0]!r}.")
    bounds = check_bounds(fit_options.get("bounds"), model.param_names)
    fixed = check_fixed(fit_options.get("fixed"), model.param_names, bounds)
    ties = check_ties(fit_options.get("tie"), model.param_names, bounds, fixed)
    if (bounds or fixed or ties) and batch_size is not None:
        raise OptionError(
            "Mini-batches do not take bounds, fixed or tied parameters yet; use a full-batch method (lm, auto, gd)."
        )
    with _ctrl_c_finishes_the_batch() as stop:
        problem = None
        try:
            problem = StreamProblem(
                model,
                data,
                how.batch_rows,
                on_batch=on_batch,
                stop=stop,
                sample_rows=sample_rows,
                seed=seed,
                robust=robust,
            )
            return fit_streamed(
                model,
                problem,
                p0=p0,
                method=method,
                learning_rate=learning_rate,
                max_steps=max_steps,
                tol=tol,
                absolute_sigma=absolute_sigma,
                scale=scale,
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                callback=callback,
                how=how,
                bounds=bounds,
                fixed=fixed,
                ties=ties,
            )
        except _Interrupt:
            history = getattr(problem, "history", None)
            raise Interrupted("Interrupted (Ctrl-C): stopped after the current batch.", history=history) from None


def read_long(path, group: str, *, x=None, y=None, sigma=None):
    """A long-format file's groups (a pyarrow array) and its x, y (and sigma) columns (``io.long_columns``): a CSV
    or Parquet file, or a folder or glob of Parquet files."""
    from .io import long_columns, read_table

    if is_parquet_data(path) and not Path(path).is_file():  # a folder or a glob of Parquet files
        table, first_row = open_dataset(path).to_table(), 0
    else:
        table, first_row = read_table(path)
    return long_columns(table, first_row, path, group, x=x, y=y, sigma=sigma)


def is_parquet_data(path) -> bool:
    """A Parquet file (by its magic bytes), a folder, or a glob: data that ``fit_file`` may stream."""
    from .io import PARQUET_MAGIC

    text = os.fspath(path)
    if any(c in text for c in "*?[") or os.path.isdir(text):
        return True
    if not os.path.isfile(text):  # (opening a FIFO would wait for a writer: the reader refuses it)
        return False
    try:
        with open(text, "rb") as f:
            return f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
    except OSError:
        return False  # the reader says what is wrong with it


def fit_streamed(
    model,
    problem: StreamProblem,
    *,
    p0,
    method,
    learning_rate,
    max_steps,
    tol,
    absolute_sigma,
    scale,
    batch_size,
    epochs,
    seed,
    callback,
    how,
    bounds=None,
    fixed=None,
    ties=None,
):
    if batch_size is not None:
        if method not in MINIBATCH:
            raise OptionError(
                f"Method {method!r} takes no mini-batches. With batch_size choose one of: {', '.join(MINIBATCH)}."
            )
        epochs = 1 if epochs is None else positive_int(epochs, "epochs")
        rate = MINIBATCH_RATES[MINIBATCH[method]] if learning_rate is None else learning_rate
        rate = options.learning_rate(rate, get_method(MINIBATCH[method]), True, asked=method)
        if rate == "auto":
            raise OptionError("Mini-batch methods take a number as learning_rate, not 'auto'.")
    chosen = get_method("gd" if method == "sgd" else method)
    # streamed, a linear model's one exact solve becomes lm, whose Gauss–Newton steps land on it in a few passes
    run_method = "lm" if chosen.name in ("auto", "linear") else chosen.name
    bounds, fixed, ties = bounds or {}, fixed or {}, ties or {}
    if (bounds or fixed or ties) and method == "linear":
        raise OptionError("Method 'linear' cannot honour bounds, fixed or tied parameters; use method='lm' or 'auto'.")
    xs, ys = problem.sample()  # the start: p0, or the model's guess from the first rows
    start = start_values(model, p0, xs, ys, torch.float64, "cpu", bounds, fixed, tuple(ties))
    if bounds or fixed or ties:  # the solver walks free, unbounded parameters (gradfit.params), as in memory
        constrained = Constrained(model, bounds, fixed, ties)
        problem.use_model(constrained)
        start = constrained.to_free(start)
        if learning_rate is None and run_method == "gd":
            learning_rate = "auto"  # a bound bends the landscape: Armijo's backtracking, as gradfit.fit does
    tolerances = get_method(run_method).tolerances.replace(options.tolerances(tol))
    max_steps = chosen.max_steps if max_steps is None else positive_int(max_steps, "max_steps")

    if batch_size is not None:
        steps = minibatch_steps(
            problem, start, method=method, learning_rate=rate, epochs=epochs, seed=seed, scale=scale
        )
        ran, rate_used = f"{method} (mini-batches of {batch_size:,})", rate
    elif run_method == "lm":  # lm on the streamed R and Qᵀr
        steps = lm_steps(problem, start, max_steps=max_steps, tolerances=tolerances)
        ran, rate_used = "lm", None
    else:
        rate_used = options.learning_rate(learning_rate, get_method(run_method), scale, asked=chosen.name)
        frame = Frame.standardized(problem, start) if scale else Frame.identity(problem, start)
        guard = rate_guard(run_method, rate_used, default_rate=learning_rate is None)  # as gradfit.fit
        steps = descent_steps(frame, problem, start, run_method, rate_used, max_steps, tolerances, [], guard)
        ran = run_method
    problem.history = History(problem.user_names, problem.describe(start))  # what Ctrl-C leaves

    def record(step):
        problem.history.append(step)
        if callback is not None:
            callback(step)

    outcome = run_steps(steps, record)
    return _result(model, problem, outcome, method, ran, absolute_sigma, rate_used, how.reason, bounds, fixed, ties)


def _result(
    model,
    problem: StreamProblem,
    outcome: Outcome,
    asked: str,
    ran: str,
    absolute_sigma: bool,
    learning_rate,
    how: str,
    bounds=None,
    fixed=None,
    ties=None,
):
    """A FitResult from sums over one last pass: chi², RMSE, R², and the covariance from R of J = QR.

    With bounds or fixed parameters the solver's parameters are free, unbounded ones: the
    uncertainties are those of the user's free parameters, from one more pass with the Jacobian
    taken in the user's terms (as gradfit.fit computes them in memory).
    """
    from .result import FitResult

    bounds, fixed, ties = bounds or {}, fixed or {}, ties or {}
    p = outcome.params.detach()
    chi2, r_factor, _ = problem._pass(p)
    raw_ss = problem.raw_ss(p)
    n, k = problem.n_points, len(p)  # k: the parameters actually fitted
    names = model.param_names
    free = [i for i, name in enumerate(names) if name not in fixed and name not in ties]  # (the others: none own)
    user = p
    view = Constrained(model, {}, fixed, ties) if fixed or ties else model
    if bounds or fixed or ties:
        with torch.no_grad():
            user = problem.model.to_user(p)
        problem.use_model(view)
        _, r_factor, _ = problem._pass(user[free])
    spread = chi2
    if problem.robust is not None:  # the plain χ², and curve_fit's covariance with a robust loss (as in memory)
        chi2, spread, r_factor = problem.robust_summary(user[free])
    dof = n - k
    factor = 1.0 if absolute_sigma else spread / dof if dof > 0 else np.inf
    cov_free, rank, free_undetermined = covariance_of(r_factor.numpy(), (n, k), factor)
    covariance, undetermined = every_covariance(view, user, free, cov_free, free_undetermined)
    undetermined = tuple(name for name, u in zip(names, undetermined) if u)
    values, flipped = widths_positive(model, user.double().numpy()[None, :], bounds, fixed, ties)
    params = dict(zip(names, values[0].tolist()))
    sign = np.where(flipped[0], -1.0, 1.0)
    covariance = covariance * np.outer(sign, sign)
    stderr = dict(zip(names, np.sqrt(np.diag(covariance)).tolist()))
    on_bound = at_bounds(params, bounds)
    notes = [f"{n:,} rows {how}", *outcome.notes]
    if asked == "auto":
        notes.insert(0, f"method auto chose {ran} on the streamed sums")
    for name, expression in ties.items():
        notes.append(f"{name} tied: {name} = {expression.text}")
    if problem.robust is not None:
        notes.append("robust loss {} (f_scale={:g}): standard errors as curve_fit's with it".format(*problem.robust))
    for name, side in on_bound.items():
        notes.append(f"{name} is at its {side} bound {bounds[name][0 if side == 'lower' else 1]:g}")
    if undetermined:
        notes.append(undetermined_note(undetermined, rank, k))
    state = (
        "Ended where the data do not determine every parameter"
        if undetermined
        else "Converged"
        if outcome.converged
        else "Did not converge"
    )
    message = f"{state} after {len(outcome.history)} steps: {outcome.reason}. ({'; '.join(notes)})"
    result = FitResult(
        model=model,
        method=ran,
        params=params,
        stderr=stderr,
        covariance=covariance,
        rmse=math.sqrt(raw_ss / n),
        r2=1 - raw_ss / problem.ss_tot if problem.ss_tot > 0 else math.nan,
        chi2=chi2,
        reduced_chi2=chi2 / dof if dof > 0 else math.inf,
        aic=n * math.log(chi2 / n) + 2 * k if chi2 > 0 else -math.inf,
        bic=n * math.log(chi2 / n) + math.log(n) * k if chi2 > 0 else -math.inf,
        n_points=n,
        n_steps=len(outcome.history),
        converged=outcome.converged and not undetermined,
        undetermined=undetermined,
        message=message,
        history=outcome.history,
        n_dropped=problem.n_dropped,
        gap_to_optimum=None,
        optimum_rmse=None,
        learning_rate=None if learning_rate is None else float(learning_rate),
        dtype=p.dtype,
        device="cpu",
        notes=notes,
        rank=rank,
        bounds=bounds,
        fixed=fixed,
        tied={name: expression.text for name, expression in ties.items()},
        loss=(problem.robust or ("linear",))[0],
        f_scale=(problem.robust or (None, 1.0))[1],
        at_bound=on_bound,
    )
    x, y, sigma = problem.kept  # the figures' data: a random sample of the rows (all of them if few)
    if y is not None:
        result.x, result.y, result.sigma = x, y, sigma
        result.sample_of = n if len(y) < n else None
    if undetermined:
        warnings.warn(undetermined_warning(undetermined, rank, k), ConvergenceWarning, stacklevel=3)
    elif not outcome.converged:
        warnings.warn(
            f"The streamed fit did not converge with method '{ran}' (RMSE {result.rmse:.6g}): {outcome.reason}.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result


__all__ = [
    "DEFAULT_BUDGET",
    "Plan",
    "Reservoir",
    "SAMPLE_ROWS",
    "Source",
    "StreamProblem",
    "fit_source",
    "is_parquet_data",
    "is_source",
    "open_dataset",
    "plan",
]

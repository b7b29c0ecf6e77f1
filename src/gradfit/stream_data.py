"""Data that may not fit in memory: Parquet files, folders, globs and pyarrow Datasets opened as record
batches of checked float64 columns, and a uniform sample of their rows kept for figures."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DataError


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
            role: float_column(table.column(name), name, self.label, 0)
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
            role: float_column(batch.column(name), name, self.label, offset)
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


def float_column(column, name: str, label: str, offset) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"Column {name!r} of {label} holds {column.type}, not numbers. Choose a numeric column.")
    if column.type != pa.float64():
        column = column.cast(pa.float64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


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

"""Reading CSV and Parquet files with pyarrow (imported only when a file is read)."""

from __future__ import annotations

import csv
import errno
from pathlib import Path

import numpy as np

from .errors import DataError

_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t| "
PARQUET_MAGIC = b"PAR1"


def read_table(path):
    """The whole file as a pyarrow Table, and the file line (CSV) or row (Parquet) of its first value."""
    path = Path(path)
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"Data file '{path}' is a loop of symbolic links. Check the path.") from None
    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist. Check the path.")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder, not a data file. Give a CSV or Parquet file.")
    if not path.is_file():  # a FIFO would block the read for ever, a device never end
        raise DataError(
            f"'{path}' is not a regular file (a pipe or a device). Save the data to a CSV or Parquet file first."
        )
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
            blank_lines = 0
            while head and not head.strip():  # blank lines past the sample: find the text after them
                blank_lines += head.count(b"\n")
                head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise DataError(f"Cannot read '{path}': {e.strerror}.") from None
    if head.startswith(PARQUET_MAGIC):
        return _unique_columns(_read_parquet(path), path), 0
    table, first_line = _read_csv(path, head, path)
    first_line += blank_lines
    return _unique_columns(table, path), first_line


def read_csv_bytes(data: bytes, label: str):
    """CSV text held in memory (an upload), read as ``read_table`` reads a file; ``label`` names it in errors."""
    import pyarrow as pa

    table, first_line = _read_csv(pa.BufferReader(data), data[:_SNIFF_BYTES], label)
    return _unique_columns(table, label), first_line


def _unique_columns(table, path):
    """A table whose columns can be named: two columns of one name are refused (which would be meant?)."""
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(
            f"'{path}' has {names.count(twice[0])} columns named {twice[0]!r}. Give every column a name of its own."
        )
    return table


def load_columns(path, *, x=None, y=None, sigma=None) -> dict:
    table, first_row = read_table(path)
    return select_columns(table, first_row, Path(path), x=x, y=y, sigma=sigma)


def select_columns(table, first_row: int, path: Path, *, x=None, y=None, sigma=None) -> dict:
    """x, y (and sigma) of a table as float64 arrays, chosen by name or index (default: the first two)."""
    names = table.column_names
    wanted = {"x": 0 if x is None else x, "y": 1 if y is None else y}
    if sigma is not None:
        wanted["sigma"] = sigma
    out, chosen = {}, {}
    for role, column in wanted.items():
        if role == "x" and isinstance(column, (list, tuple)):  # several variables: one column each
            columns = [column_name(c, names, role, path) for c in column]
            out[role] = np.stack([_numeric(table.column(c), c, path, first_row) for c in columns], axis=1)
            chosen[role] = columns
            continue
        name = column_name(column, names, role, path)
        out[role] = _numeric(table.column(name), name, path, first_row)
        chosen[role] = name
    out["first_row"] = first_row
    out["names"] = chosen  # role -> the column's name (a list for several x): results and figures use them
    return out


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"'{path}' is not a readable Parquet file ({_first_line(e)}).") from None


def _read_csv(source, head: bytes, path):
    """``source``: a path or a pyarrow buffer; ``path`` names it in messages."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if b"\0" in head:
        raise DataError(f"'{path}' is a binary file, not CSV text. Give a CSV or Parquet file.")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise DataError(f"'{path}' is not UTF-8 text, so not a CSV file gradfit can read.") from None
        text = head[: e.start].decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"'{path}' is empty. It needs a column of x and a column of y.")
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","  # one column, or nothing to tell from: the standard
    first = next(csv.reader([lines[0]], delimiter=delimiter))
    has_header = not all(_is_number(cell) for cell in first)
    leading_blank = len(text) - len(text.lstrip("\r\n"))  # pyarrow skips blank lines too
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(autogenerate_column_names=not has_header),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as e:
        raise DataError(f"'{path}' is not a well-formed CSV file: {_first_line(e)}.") from None
    if table.num_rows == 0:
        raise DataError(f"'{path}' has a header but no rows of data.")
    first_line = 1 + text[:leading_blank].count("\n") + (1 if has_header else 0)
    return table, first_line


def column_name(column, names: list[str], role: str, path: Path) -> str:
    if isinstance(column, str) and column in names:
        return column
    index = column if isinstance(column, int) else int(column) if str(column).isdigit() else None
    if index is not None and 0 <= index < len(names):
        return names[index]
    if index is not None and role in ("x", "y") and len(names) < 2:
        raise DataError(f"'{path}' has only {len(names)} column; it needs one for x and one for y.")
    shown = ", ".join(repr(n) for n in names[:20])
    raise DataError(
        f"Unknown {role} column {column!r} in '{path}'. Columns are: {shown} (or 0-based indexes 0-{len(names) - 1})."
    )


def _numeric(column, name: str, path: Path, first_row: int) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return _float64(column)
    # a column pyarrow could not read as numbers: find the first cell that is not one
    values = column.cast(pa.string()).to_pylist() if not pa.types.is_string(column.type) else column.to_pylist()
    for i, cell in enumerate(values):
        if cell is not None and not _is_number(cell):
            where = f"line {first_row + i}" if first_row else f"row {i}"
            raise DataError(
                f"Column {name!r} of '{path}' has a value that is not a number at {where}: "
                f"{cell!r}. Fix or remove that row."
            )
    return np.array([np.nan if c is None else float(c) for c in values])  # pragma: no cover (defensive)


def _float64(column) -> np.ndarray:
    """A numeric pyarrow column as float64 with NaN for nulls, read from its buffers.

    pyarrow's own cast and to_numpy import pyarrow.compute and pandas (half a second): too long
    for a small fit's whole run (see bench/bench_startup.py).
    """
    parts = []
    for chunk in column.chunks:
        validity, data = chunk.buffers()[:2]
        dtype = np.dtype(chunk.type.to_pandas_dtype())
        values = np.frombuffer(data, dtype=dtype, count=len(chunk) + chunk.offset)[chunk.offset :].astype(np.float64)
        if chunk.null_count:
            valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
            values[valid[chunk.offset : chunk.offset + len(chunk)] == 0] = np.nan
        parts.append(values)
    return np.concatenate(parts) if parts else np.empty(0)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_matrix(path, what: str) -> np.ndarray:
    """A matrix of numbers from a .npy file (no pickles) or a text file of rows (comma, semicolon, tab or space
    separated, no header); ``what`` names it in errors ("--covariance")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist or is not a file. Check the path.")
    try:
        with open(path, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        if npy:
            matrix = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            delimiter = next((d for d in ",;\t" if d in text), None)
            matrix = np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{what} file '{path}' is not a matrix of numbers ({str(e).splitlines()[0]}).") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.issubdtype(matrix.dtype, np.number):
        raise DataError(f"{what} must be a square matrix of numbers, and '{path}' holds shape {matrix.shape}.")
    return matrix.astype(np.float64)


def long_columns(table, first_row: int, label, group: str, *, x=None, y=None, sigma=None):
    """group, x, y (and sigma) of a long-format table (one row per point, ``group`` naming each point's curve);
    x and y default to the first two columns other than the group's. The groups stay the user's own values
    (numbers stay numbers), categories as their values."""
    import pyarrow as pa

    if group not in table.column_names:
        shown = ", ".join(repr(n) for n in table.column_names[:20])
        raise DataError(f"Unknown group column {group!r} in '{label}'. Columns are: {shown}.")
    others = [n for n in table.column_names if n != group]
    x = x if x is not None else (others[0] if others else None)
    y = y if y is not None else (others[1] if len(others) > 1 else None)
    columns = select_columns(table, first_row, Path(str(label)), x=x, y=y, sigma=sigma)
    groups = table.column(group)
    if groups.null_count:
        raise DataError(f"Group column {group!r} has {groups.null_count} empty cells; every row needs a curve.")
    if pa.types.is_dictionary(groups.type):
        groups = groups.cast(groups.type.value_type)
    return groups, columns

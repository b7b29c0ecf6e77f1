"""What ``gradfit fit`` and ``gradfit fit-many`` share: the model from the flags, Parquet or not, bounds and
fixed parameters, a column's name in the report."""

from __future__ import annotations

from ..errors import GradfitError


def model_from_args(args, **options):
    """The --model, in the variables named by --x; an expression in none of them that names one of the data's
    columns is refused with the option that fixes it."""
    from ..errors import ModelError
    from ..library import get_model

    try:
        return get_model(args.model, variables=_variable_names(args.x), **options)
    except ModelError as e:
        found = getattr(e, "found", ())
        try:
            from ..io import read_table

            columns = read_table(args.data)[0].column_names if found and args.x is None else []
        except GradfitError:
            columns = []
        hits = [name for name in found if name in columns and name != getattr(args, "group", None)]
        if hits:
            raise ModelError(f"{e} The data have a column {hits[0]!r}: give --x {hits[0]}.") from None
        raise


def _variable_names(x) -> tuple[str, ...]:
    """An expression's variables are named after the --x columns (x, or x1, x2, ... for indexes)."""
    columns = [x] if x is None or isinstance(x, str) else list(x)
    if len(columns) == 1:
        return (columns[0],) if columns[0] and columns[0].isidentifier() else ("x",)
    if all(c.isidentifier() for c in columns):
        return tuple(columns)
    return tuple(f"x{i + 1}" for i in range(len(columns)))


def parquet_data(path: str) -> bool:
    from ..stream_data import is_parquet_data

    return is_parquet_data(path)


def bounds_and_fixed(args) -> tuple[dict, dict]:
    """--bound and --fix as fit's bounds and fixed: b>0 and b<10 given apart make one bound."""
    bounds: dict = {}
    for name, lower, upper in args.bound:
        old = bounds.get(name, (None, None))
        bounds[name] = (lower if lower is not None else old[0], upper if upper is not None else old[1])
    return bounds, {k: v for item in args.fix for k, v in item.items()}


def column_text(name, given, default: str) -> str:
    """A column as the report names it: its name in the data, else as given (an index), else which one it was."""
    if name is not None:
        return ", ".join(name) if isinstance(name, (list, tuple)) else str(name)
    if given is not None:
        return ", ".join(given) if isinstance(given, (list, tuple)) else str(given)
    return f"{default} (no name)"

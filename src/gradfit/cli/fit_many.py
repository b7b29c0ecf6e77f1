"""``gradfit fit-many``: many curves at once, global fits, and fits on a Dask cluster."""

from __future__ import annotations

import sys

from ..errors import DataError, ExitStatus, OptionError
from .common import bounds_and_fixed, model_from_args, parquet_data


def run_fit_many(args) -> int:
    from .._files import check_out_file, save_atomic
    from ..batch import fit_long

    out = check_out_file(args.out, "--out")
    model = model_from_args(args)
    if args.workers or args.scheduler:
        return _fit_many_on_dask(args, model, out)
    if args.share:
        if args.workers or args.scheduler:
            raise OptionError("--share fits in one process; leave out --workers/--scheduler.")
        return _fit_global(args, model, out)
    groups, x, y, sigma = _long_table(args)
    bounds, fixed = bounds_and_fixed(args)
    names, result = fit_long(
        model,
        groups.to_numpy(),
        x,
        y,
        sigma,
        p0=args.p0,
        method=args.method,
        max_steps=args.max_steps,
        backend=args.backend,
        progress=not args.quiet and sys.stderr.isatty(),
        bounds=bounds,
        fixed=fixed,
        tie=dict(args.tie) or None,
        loss=args.loss,
        f_scale=args.f_scale,
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = result.to_arrow()
    table = table.add_column(0, args.group, pa.array(names.tolist(), type=groups.type))
    save_atomic(out, lambda tmp: pq.write_table(table, tmp))
    if not args.quiet:
        counts_text = ", ".join(f"{v} {k}" for k, v in result.counts().items())
        print(f"Fitted {len(names)} curves of {model.name} by {result.method}: {counts_text}. Wrote {out}.")
    return ExitStatus.OK if result.converged.all() else ExitStatus.NOT_CONVERGED


def _fit_global(args, model, out) -> int:
    """fit-many --share: one global fit (gradfit.fit_global) of the long table, one row per curve written (its
    parameters, the shared ones repeated, and their errors), the shared parameters reported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .._files import save_atomic
    from ..errors import OptionError
    from ..global_fit import fit_global

    other = [
        flag for flag, given in (("--method", args.method != "auto"), ("--backend", args.backend != "auto")) if given
    ]
    if other:
        raise OptionError(f"--share runs one global Levenberg-Marquardt fit; it does not take {other[0]} yet.")
    unknown = [name for name in args.share if name not in model.param_names]
    if unknown:
        raise OptionError(
            f"--share names unknown parameter {unknown[0]!r}. The parameters are: {', '.join(model.param_names)}."
        )
    p0 = args.p0
    if p0 is not None and not isinstance(p0, dict):
        p0 = dict(zip(model.param_names, p0))
    bounds, fixed = bounds_and_fixed(args)
    result = fit_global(
        model,
        args.data,
        group=args.group,
        x=args.x,
        y=args.y,
        sigma=args.sigma,
        shared=args.share,
        p0=p0,
        bounds=bounds or None,
        fixed=fixed or None,
        tie=dict(args.tie) or None,
        loss=args.loss,
        f_scale=args.f_scale,
        **({"max_steps": args.max_steps} if args.max_steps else {}),
    )
    table = result.to_arrow().drop(["set"])
    table = table.add_column(0, args.group, pa.array(result.keys.tolist()))
    save_atomic(out, lambda tmp: pq.write_table(table, tmp))
    if not args.quiet:
        print(result.report())
        print(f"Wrote one row per curve ({len(result)}) to {out}.")
    return ExitStatus.OK if result.converged else ExitStatus.NOT_CONVERGED


def _fit_many_on_dask(args, model, out) -> int:
    """fit-many on a Dask cluster: the table read lazily, each partition's curves fitted by a worker."""
    from ..errors import OptionError

    try:
        import dask.dataframe as dd
        import distributed  # noqa: F401
    except ImportError:
        raise OptionError("--workers and --scheduler need Dask: pip install 'gradfit[dask]'.") from None

    from .._files import save_atomic
    from ..dask import cluster, fit_many

    if args.workers and args.scheduler:
        raise OptionError("Give --workers N or --scheduler ADDRESS, not both.")
    if not parquet_data(args.data):
        raise DataError(
            f"'{args.data}' is not Parquet data. A cluster reads Parquet files (a file, a folder or a "
            "glob); convert it, or leave out --workers."
        )
    frame = dd.read_parquet(args.data)
    others = [c for c in frame.columns if c != args.group]
    if args.group not in frame.columns:
        shown = ", ".join(repr(n) for n in list(frame.columns)[:20])
        raise DataError(f"Unknown group column {args.group!r} in '{args.data}'. Columns are: {shown}.")
    x = args.x if args.x is not None else (others[0] if others else None)
    y = args.y if args.y is not None else (others[1] if len(others) > 1 else None)
    bounds, fixed = bounds_and_fixed(args)
    with cluster(args.workers, args.scheduler, dashboard=args.dashboard):
        table = fit_many(
            frame,
            model,
            group=args.group,
            x=x,
            y=y,
            sigma=args.sigma,
            p0=args.p0,
            method=args.method,
            max_steps=args.max_steps,
            backend=args.backend,
            bounds=bounds,
            fixed=fixed,
            tie=dict(args.tie) or None,
            loss=args.loss,
            f_scale=args.f_scale,
        ).compute()
    table = table.sort_values(args.group, kind="stable").reset_index(drop=True)
    save_atomic(out, lambda tmp: table.to_parquet(tmp, index=False))
    if not args.quiet:
        counts = table["status"].value_counts()
        where = f"{args.workers} local workers" if args.workers else args.scheduler
        print(
            f"Fitted {len(table)} curves of {model.name} on {where}: "
            f"{', '.join(f'{v} {k}' for k, v in counts.items())}. Wrote {out}."
        )
    return ExitStatus.OK if table["converged"].all() else ExitStatus.NOT_CONVERGED


def _long_table(args):
    """group, x, y (and sigma) columns of a long-format file; x and y default to the first two others."""
    from ..stream_data import read_long

    groups, columns = read_long(args.data, args.group, x=args.x, y=args.y, sigma=args.sigma)
    # the user's own keys, of their own type (numbers stay numbers, sorted as numbers): as on a Dask cluster
    return groups, columns["x"], columns["y"], columns.get("sigma")

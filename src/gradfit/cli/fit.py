"""``gradfit fit``: one fit of a file's columns (in memory, streamed, or on a Dask cluster), with its report,
outputs and figures."""

from __future__ import annotations

import sys

from ..errors import DataError, ExitStatus, OptionError
from .common import bounds_and_fixed, column_text, model_from_args, parquet_data
from .demo import explain_fit, save_animation


def run_fit(args) -> int:
    import warnings

    from .._files import check_animation, check_out_dir, check_out_file, staged, write_atomic
    from ..errors import ConvergenceWarning, Interrupted
    from ..solvers.methods import get_method

    # options first, with nothing heavy imported: a refusal comes at once
    if args.method == "sgd":  # gd on mini-batches: a method of streamed fits only
        if not args.batch_size:
            raise OptionError("Method 'sgd' is gradient descent on mini-batches: give --batch-size (Parquet data).")
    else:
        get_method(args.method)  # an unknown method is refused before the data are read
    outputs = [
        check_out_file(path, flag)
        for path, flag in ((args.json, "--json"), (args.history, "--history"), (args.save, "--save"))
    ]
    if (args.format or args.dpi) and not args.plot:
        raise OptionError(
            f"{'--format' if args.format else '--dpi'} is for the figures of --plot DIR; give --plot too."
        )
    plot_dir = check_out_dir(args.plot, "--plot") if args.plot else None
    animation = check_animation(args.animate, "--animate")
    report_out = check_out_file(args.report, "--report")

    from ..data import load, prepare
    from ..engine import fit
    from ..engine import fit_file

    model = model_from_args(args, params=args.params)
    parquet = parquet_data(args.data)
    if not parquet and (args.batch_size or args.epochs):
        raise OptionError("--batch-size and --epochs stream Parquet data; convert the CSV file to Parquet first.")
    if args.covariance and (args.sigma or parquet or args.workers or args.scheduler):
        raise OptionError(
            "--covariance is the errors' whole covariance: leave out --sigma, and give the data as a CSV file in "
            "one process (not Parquet, --workers or --scheduler)."
        )
    if not parquet:
        columns = load(args.data, x=args.x, y=args.y, sigma=args.sigma)
        if args.covariance:
            from ..io import load_matrix

            columns["sigma"] = load_matrix(args.covariance, "--covariance")
            if len(columns["sigma"]) != len(columns["y"]):
                raise DataError(
                    f"--covariance is {len(columns['sigma'])} x {len(columns['sigma'])}, but the data have "
                    f"{len(columns['y'])} rows: give one row and column per data row."
                )
        first = columns["first_row"]
        data = prepare(
            columns["x"],
            columns["y"],
            columns.get("sigma"),
            nan_policy=args.nan_policy,
            first_row=first,
            row_label="line" if first else "row",
        )
    bounds, fixed = bounds_and_fixed(args)
    progress = None if args.quiet else _progress_bar(args)
    batches = None if args.quiet or not parquet else _progress_bar(args, unit="batch")
    options = dict(
        p0=args.p0,
        method=args.method,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        tol=args.tol,
        absolute_sigma=args.absolute_sigma,
        scale=args.scale,
        bounds=bounds or None,
        fixed=fixed or None,
        callback=None if progress is None else lambda record: progress.update(1),
    )
    if args.tie:
        options["tie"] = dict(args.tie)
    if args.starts is not None:
        if args.workers or args.scheduler:
            raise OptionError("--starts needs the data in one process; leave out --workers/--scheduler.")
        options["starts"] = args.starts
    if args.loss != "linear" or args.f_scale != 1.0:
        options.update(loss=args.loss, f_scale=args.f_scale)
    if args.explain and (args.method != "gd" or args.scale or args.sigma or args.covariance or args.loss != "linear"):
        raise OptionError(
            "--explain shows plain gradient descent's steps on the raw parameters of a least-squares fit: use it "
            "with --method gd --no-scale (and no --sigma or --loss)."
        )
    if args.conf_interval is not None and (args.workers or args.scheduler):
        raise OptionError("--conf-interval needs the data in one process; leave out --workers/--scheduler.")
    json_out, history_out, save_out = outputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            if args.workers or args.scheduler:
                result = _fit_on_dask(args, model, options)
            elif parquet:
                result = fit_file(
                    model,
                    args.data,
                    x=args.x,
                    y=args.y,
                    sigma=args.sigma,
                    nan_policy=args.nan_policy,
                    memory_budget=args.memory_budget,
                    batch_size=args.batch_size,
                    epochs=args.epochs,
                    seed=args.seed,
                    on_batch=None if batches is None else lambda rows: batches.update(1),
                    **options,
                )
            else:
                result = fit(model, data.x, data.y, sigma=data.sigma, **options)
                result.n_dropped = data.n_dropped
                result.columns = columns["names"]
        except Interrupted as stopped:
            return _interrupted(stopped, history_out)
        finally:
            for bar in (progress, batches):
                if bar is not None:
                    bar.close()
    if args.conf_interval is not None:  # (before anything is written: a refusal leaves nothing half done)
        if result.sample_of is not None:
            raise OptionError(
                f"--conf-interval re-fits the data, and {result.sample_of:,} rows were streamed, not held: fit a "
                "file that fits in memory (--memory-budget), or leave out --conf-interval."
            )
        result.conf_interval(args.conf_interval)
    notes = []  # (a streamed fit's figures draw the random sample of rows its result keeps)
    with staged(plot_dir) as scratch:  # figures first: if drawing fails, nothing is written
        if scratch is not None:
            from ..plots import write_plots

            _, skipped = write_plots(result, scratch, args.format or ("png",), args.dpi)
            notes += [f"--plot: skipped {s}" for s in skipped]
        report_text = None
        if report_out is not None:
            from ..report import report_html

            report_text = report_html(result, _report_settings(args, result.columns))
        if animation is not None:
            save_animation(result, animation)
        if json_out is not None:
            import json

            write_atomic(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        if history_out is not None:
            write_atomic(history_out, result.history.to_csv())
        if save_out is not None:
            result.save(save_out)
        if report_text is not None:
            write_atomic(report_out, report_text)
    if args.explain:
        explain_fit(result)
    if not args.quiet:
        print(result.report())
    for note in notes:
        print(f"gradfit fit: note: {note}", file=sys.stderr)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"gradfit fit: warning: {w.message}", file=sys.stderr)
    return ExitStatus.OK if result.converged else ExitStatus.NOT_CONVERGED


def _fit_on_dask(args, model, options):
    """One fit of all the rows of Parquet data on a Dask cluster (gradfit.dask.fit): the columns stay on the workers."""

    if args.workers and args.scheduler:
        raise OptionError("Give --workers N or --scheduler ADDRESS, not both.")
    if args.batch_size or args.epochs:
        raise OptionError("--batch-size and --epochs stream one file in this process; leave out --workers/--scheduler.")
    if not parquet_data(args.data):
        raise DataError(
            f"'{args.data}' is not Parquet data. A cluster reads Parquet files (a file, a folder or a "
            "glob); convert it, or leave out --workers."
        )
    try:
        import dask.dataframe as dd
        import distributed  # noqa: F401
    except ImportError:
        raise OptionError("--workers and --scheduler need Dask: pip install 'gradfit[dask]'.") from None
    from pathlib import Path

    from ..dask import cluster, fit
    from ..io import column_name

    frame = dd.read_parquet(args.data)
    names = list(frame.columns)
    columns = {
        role: column_name(default if given is None else given, names, role, Path(args.data))
        for role, given, default in (("x", args.x, 0), ("y", args.y, 1), ("sigma", args.sigma, None))
        if given is not None or default is not None
    }
    with cluster(args.workers, args.scheduler, dashboard=args.dashboard):
        return fit(
            frame,
            model,
            x=columns["x"],
            y=columns["y"],
            sigma=columns.get("sigma"),
            nan_policy=args.nan_policy,
            **options,
        )


def _interrupted(stopped, history_out) -> int:
    """Ctrl-C during a streamed fit: keep the steps so far where --history asked, and say so."""
    from .._files import write_atomic

    history = stopped.history
    steps = 0 if history is None else len(history)
    if history_out is not None and history is not None:
        write_atomic(history_out, history.to_csv())
        where = f"the history so far is in {history_out}"
    else:
        where = "give --history OUT.csv to keep the steps of an interrupted fit"
    print(f"gradfit fit: interrupted after {steps} steps (stopped after the current batch); {where}.", file=sys.stderr)
    return ExitStatus.INTERRUPTED


def _report_settings(args, columns: dict | None = None) -> dict:
    """The settings the report lists; ``columns``: the data's own names for the columns fitted (a result's
    ``columns``), where the data had names."""
    columns = columns or {}
    settings = {
        "data": args.data,
        "x column": column_text(columns.get("x"), args.x, "the first"),
        "y column": column_text(columns.get("y"), args.y, "the second"),
        "model (as given)": args.model,
    }
    if args.sigma:
        settings["sigma column"] = args.sigma
    if getattr(args, "covariance", None):
        settings["errors' covariance"] = args.covariance
    for name, value in (("max steps", args.max_steps), ("tolerance", args.tol), ("p0", args.p0)):
        if value is not None:
            settings[name] = value
    if args.bound:
        settings["bounds"] = ", ".join(
            f"{n}: {lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}" for n, lo, hi in args.bound
        )
    if args.fix:
        settings["fixed"] = ", ".join(f"{k}={v:g}" for item in args.fix for k, v in item.items())
    if getattr(args, "tie", None):
        settings["tied"] = ", ".join(f"{k} = {v}" for k, v in args.tie)
    return settings


def _progress_bar(args, unit: str = "step"):
    """A tqdm bar on stderr for runs long enough to need one, only at a terminal (steps, or batches read)."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    from ..solvers import METHODS

    if unit == "batch":
        return tqdm(desc="reading", unit="batch", delay=PROGRESS_DELAY, leave=False, file=sys.stderr, position=1)
    total = args.max_steps or (METHODS[args.method].max_steps if args.method in METHODS else None)
    return tqdm(total=total, desc="fitting", unit="step", delay=PROGRESS_DELAY, leave=False, file=sys.stderr)


PROGRESS_DELAY = 0.5  # seconds a fit runs before its progress bar appears: short fits show none

"""Many curves on a Dask cluster: every partition fitted by gradfit's batched solver.

``fit_many(frame, model, group=..., x=..., y=...)`` takes a Dask DataFrame in long
format (one row per point, a column naming the curve) and returns a lazy Dask
DataFrame with one row per curve. The rows are first shuffled on the group column,
so that a curve is never split across partitions; each partition is then one call of
``gradfit.batch.fit_long`` on a worker. Dask reruns the tasks of a worker that dies,
and a partition's fit depends only on its rows, so the result is complete and the same.

``cluster(workers=N)`` / ``cluster(scheduler=ADDRESS)``: a Dask client on a local
cluster of N worker processes on 127.0.0.1, or on an existing scheduler.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import numpy as np

from .batch import fit_long
from .errors import DataError, OptionError
from .library import get_model
from .losses import check_loss
from .params import check_bounds, check_fixed, check_ties
from .dask_problem import ClusterProblem


CONNECT_TIMEOUT = "10s"


def fit_many(
    frame,
    model,
    *,
    group: str | None = None,
    x=None,
    y: str | None = None,
    sigma: str | None = None,
    p0=None,
    method: str = "auto",
    max_steps: int | None = None,
    dim: str | None = None,
    backend: str = "auto",
    bounds=None,
    fixed=None,
    tie=None,
    loss: str = "linear",
    f_scale: float = 1.0,
):
    """Fit ``model`` to every curve of a Dask DataFrame, a Dask array or an xarray DataArray; lazy.

    A DataFrame is long format: ``group``, ``x``, ``y`` (and ``sigma``) name its columns. A 2-D array holds one curve
    per row, measured at the shared ``x`` (a 1-D array of the row length); its rows are fitted a chunk of rows at a
    time, and the result's ``curve`` column is the row index. The result has the group (or curve) column, then each
    parameter, its ``_stderr``, ``rmse``, ``chi2``, ``n_points``, ``n_steps``, ``converged`` and ``status`` (as
    ``BatchResult.to_pandas``). A curve with fewer points than parameters is marked ``too_few_points``; the rest are
    fitted. An xarray DataArray (Dask- or numpy-backed) holds one curve along ``dim`` for every index of the others;
    the result is an xarray Dataset over the other dimensions, lazy when the data are Dask arrays.

    Args:
        frame: a Dask DataFrame (long format), a 2-D Dask array, or an xarray DataArray.
        model: as in ``gradfit.fit``.
        group: a DataFrame's column naming each point's curve.
        x: a DataFrame's x column; for an array, the shared x (1-D, the row length); for a DataArray, x instead of
            the ``dim`` coordinate.
        y: a DataFrame's y column.
        sigma: a DataFrame's column of the errors of y.
        p0: starting values for every curve, a dict by name or a sequence (default: each curve's guess).
        method: as in ``gradfit.fit_many``.
        max_steps: as in ``gradfit.fit_many``.
        dim: a DataArray's dimension along which each curve runs (default: its last).
        backend: ``gradfit.fit_many``'s, used on every block ("auto" picks by the size of each block).
        bounds: as in ``gradfit.fit``, checked here before any block is fitted.
        fixed: as in ``gradfit.fit``.
        tie: as in ``gradfit.fit`` (sent to the workers as text).
        loss: a robust loss, as in ``gradfit.fit``.
        f_scale: the robust loss's scale.

    Returns:
        A Dask DataFrame (or an xarray Dataset) of results, one row per curve; call ``.compute()``.
    """
    import pandas as pd

    model = get_model(model)
    bounds = check_bounds(bounds, model.param_names)
    fixed = check_fixed(fixed, model.param_names, bounds)
    check_ties(tie, model.param_names, bounds, fixed)
    loss, f_scale = check_loss(loss, f_scale)
    options = dict(p0=p0, method=method, max_steps=max_steps, backend=backend, bounds=bounds, fixed=fixed, tie=tie)
    options.update(loss=loss, f_scale=f_scale)
    if _is_xarray(frame):
        return _fit_xarray(frame, model, x, dim, options)
    if dim is not None:
        raise OptionError("dim= names the dimension of an xarray DataArray along which each curve runs.")
    if hasattr(frame, "chunks") and hasattr(frame, "to_delayed"):  # a Dask array: one curve per row
        return _fit_array(frame, model, x, options)
    if group is None or x is None or y is None:
        raise OptionError("A Dask DataFrame needs group=, x= and y= column names.")
    wanted = [c for c in (group, x, y, sigma) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:20])
        raise DataError(f"Unknown column {missing[0]!r}. Columns are: {shown}.")
    names = list(model.param_names)
    meta = pd.DataFrame(
        {
            group: pd.Series([], dtype=frame[group].dtype),
            **{n: pd.Series([], dtype="float64") for n in names},
            **{f"{n}_stderr": pd.Series([], dtype="float64") for n in names},
            "rmse": pd.Series([], dtype="float64"),
            "chi2": pd.Series([], dtype="float64"),
            "n_points": pd.Series([], dtype="int64"),
            "n_steps": pd.Series([], dtype="int64"),
            "converged": pd.Series([], dtype="bool"),
            "status": pd.Series([], dtype="object"),
        }
    )
    # every row of a curve in one partition; a task-based shuffle, which Dask reruns when a worker dies
    whole_curves = frame[wanted].shuffle(on=group, shuffle_method="tasks")
    return whole_curves.map_partitions(
        _fit_partition,
        model=model,
        group=group,
        x=x,
        y=y,
        sigma=sigma,
        options=options,
        meta=meta,
    )


def _fit_array(array, model, x, options: dict):
    """Rows of a 2-D Dask array, one curve each at the shared x: one batched fit per chunk of rows."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    if array.ndim != 2:
        raise DataError(f"A Dask array of curves must be 2-D (curves, points), got {array.ndim} dimensions.")
    x = np.asarray(x, dtype=np.float64) if x is not None else None
    if x is None or x.shape != (array.shape[1],):
        raise DataError(f"x must be one value per point: a 1-D array of length {array.shape[1]}.")
    rows = array.rechunk({1: -1})  # whole curves in every block
    starts = np.concatenate([[0], np.cumsum(rows.chunks[0])[:-1]])
    blocks = rows.to_delayed()[:, 0]
    parts = [dask.delayed(_fit_block)(block, int(start), model, x, options) for block, start in zip(blocks, starts)]
    meta = _fit_block(np.full((1, array.shape[1]), np.nan), 0, model, x, options).iloc[:0]
    meta = meta.astype({"curve": "int64"})
    return dd.from_delayed(parts, meta=pd.DataFrame(meta), verify_meta=False)


def _fit_block(block, start, model, x, options: dict):
    from .batch import fit_many as fit_rows

    out = fit_rows(model, x, np.asarray(block, dtype=np.float64), **options).to_pandas()
    out.insert(0, "curve", np.arange(start, start + len(out), dtype=np.int64))
    return out


def _is_xarray(value) -> bool:
    module = type(value).__module__ or ""
    return module.split(".")[0] == "xarray"


def _fit_xarray(data, model, x, dim, options: dict):
    """Every curve of a DataArray along ``dim``: a Dataset of results over its other dimensions."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        names = ", ".join(repr(str(v)) for v in list(data.data_vars)[:10])
        raise DataError(f"Give one variable of the Dataset (one of {names}), e.g. ds['intensity'], not the Dataset.")
    if not isinstance(data, xr.DataArray):
        raise DataError(f"Expected an xarray DataArray, got {type(data).__name__}.")
    dim = data.dims[-1] if dim is None else dim
    if dim not in data.dims:
        raise DataError(
            f"Unknown dimension {dim!r}. The array's dimensions are: {', '.join(repr(str(d)) for d in data.dims)}."
        )
    n_points = data.sizes[dim]
    inputs = [data]
    if isinstance(x, xr.DataArray):  # each curve at its own x: x over `dim` and some of the other dimensions
        extra = [d for d in x.dims if d not in data.dims]
        if dim not in x.dims or extra:
            raise DataError(
                f"An x DataArray must run along {dim!r} and use only the data's dimensions "
                f"({', '.join(repr(str(d)) for d in data.dims)}); it has {tuple(map(str, x.dims))}."
            )
        if x.sizes[dim] != n_points:
            raise DataError(f"x has {x.sizes[dim]} points along {dim!r}, the data {n_points}.")
        inputs.append(x.astype(np.float64).broadcast_like(data).transpose(*data.dims))
        x = None
    else:
        if x is None:
            if dim not in data.coords:
                raise DataError(
                    f"Dimension {dim!r} has no coordinate to give each point's x: give x= (one value "
                    f"per point, {n_points} of them, or a DataArray of each curve's x) or assign the "
                    "coordinate."
                )
            x = data[dim].values
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (n_points,):
            raise DataError(
                f"x must be one value per point along {dim!r}: a 1-D array of length {n_points} (or a "
                f"DataArray of each curve's x), got shape {x.shape}."
            )
    if data.chunks is not None:  # whole curves in every block
        inputs = [a.chunk({d: (-1 if d == dim else data.chunksizes[d]) for d in data.dims}) for a in inputs]
    names = list(model.param_names)
    outputs = xr.apply_ufunc(
        _fit_curves,
        *inputs,
        input_core_dims=[[dim]] * len(inputs),
        output_core_dims=[["parameter"], ["parameter"], [], [], [], [], []],
        kwargs=dict(model=model, x=x, options=options),
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.float64, np.float64, np.int64, np.int64, STATUS_DTYPE],
        dask_gufunc_kwargs={"output_sizes": {"parameter": len(names)}},
    )
    params, stderr, rmse, chi2, n_points_used, n_steps, status = outputs
    out = xr.Dataset()
    for i, name in enumerate(names):
        out[name] = params.isel(parameter=i, drop=True)
    for i, name in enumerate(names):
        out[f"{name}_stderr"] = stderr.isel(parameter=i, drop=True)
    out["rmse"], out["chi2"], out["n_points"], out["n_steps"] = rmse, chi2, n_points_used, n_steps
    out["converged"], out["status"] = status == "converged", status
    out.attrs.update(model=model.name, formula=model.formula, method=options["method"], dim=str(dim))
    return out


STATUS_DTYPE = "<U16"  # the longest status, too_few_points, has 14 characters


def _fit_curves(values, each_x=None, *, model, x, options: dict):
    """A block of curves (..., points) in one batched fit (at the shared ``x``, or at ``each_x``, shaped like the
    block): arrays shaped like the block's leading dimensions."""
    from .batch import fit_many as fit_rows

    lead, k = values.shape[:-1], model.n_params
    rows = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    if each_x is not None:
        x = np.asarray(each_x, dtype=np.float64).reshape(rows.shape)
    if rows.shape[0] == 0:
        empty = np.zeros(lead)
        return (
            np.zeros((*lead, k)),
            np.zeros((*lead, k)),
            empty,
            empty,
            empty.astype(np.int64),
            empty.astype(np.int64),
            empty.astype(STATUS_DTYPE),
        )
    r = fit_rows(model, x, rows, **options)
    return (
        r.params.reshape(*lead, k),
        r.stderr.reshape(*lead, k),
        r.rmse.reshape(lead),
        r.chi2.reshape(lead),
        r.n_points.astype(np.int64).reshape(lead),
        r.n_steps.astype(np.int64).reshape(lead),
        r.status.astype(STATUS_DTYPE).reshape(lead),
    )


def _fit_partition(part, *, model, group, x, y, sigma, options: dict):
    """One partition's curves, fitted in one batched call: one row per curve."""
    import pandas as pd

    if len(part) == 0:
        return pd.DataFrame({group: part[group].iloc[:0]})
    names, result = fit_long(
        model,
        part[group].to_numpy(),
        part[x].to_numpy(np.float64),
        part[y].to_numpy(np.float64),
        None if sigma is None else part[sigma].to_numpy(np.float64),
        **options,
    )
    out = result.to_pandas()
    out.insert(0, group, pd.Series(names, dtype=part[group].dtype))
    return out


def fit(
    frame,
    model,
    *,
    x: str,
    y: str,
    sigma: str | None = None,
    p0=None,
    method: str = "auto",
    learning_rate=None,
    max_steps: int | None = None,
    tol=None,
    absolute_sigma: bool = False,
    scale: bool = True,
    nan_policy: str = "raise",
    bounds: dict | None = None,
    fixed: dict | None = None,
    tie: dict | None = None,
    loss: str = "linear",
    f_scale: float = 1.0,
    callback=None,
):
    """One fit of all the rows of a Dask DataFrame, as ``gradfit.fit_file`` streams a file, on the cluster.

    The columns are persisted in the workers' memory; every iteration each worker computes its partitions' sums (the
    loss and its gradient, or R and Qᵀr of the Jacobian), and the client folds them: the answer is the one-process
    fit's. Methods: auto, lm, linear, or a gradient method.

    Args:
        frame: a Dask DataFrame.
        model: as in ``gradfit.fit``.
        x: the x column's name.
        y: the y column's name.
        sigma: the name of a column of the errors of y.
        p0: as in ``gradfit.fit``.
        method: "auto", "lm", "linear" or a gradient method.
        learning_rate: as in ``gradfit.fit``.
        max_steps: as in ``gradfit.fit``.
        tol: as in ``gradfit.fit``.
        absolute_sigma: as in ``gradfit.fit``.
        scale: as in ``gradfit.fit``.
        nan_policy: "raise", or "omit" to leave out rows with NaN, inf or a sigma <= 0.
        bounds: as in ``gradfit.fit``.
        fixed: as in ``gradfit.fit``.
        tie: as in ``gradfit.fit``.
        loss: as in ``gradfit.fit``.
        f_scale: as in ``gradfit.fit``.
        callback: called with each step's ``StepRecord``.

    Returns:
        FitResult: as ``gradfit.fit``'s.
    """
    from .stream import fit_streamed, Plan

    model = get_model(model)
    if nan_policy not in ("raise", "omit"):
        raise OptionError(f"`nan_policy` must be 'raise' or 'omit', got {nan_policy!r}.")
    bounds = check_bounds(bounds, model.param_names)
    fixed = check_fixed(fixed, model.param_names, bounds)
    ties = check_ties(tie, model.param_names, bounds, fixed)
    robust = check_loss(loss, f_scale)
    robust = None if robust[0] == "linear" else robust
    wanted = [c for c in (x, y, sigma) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"Unknown column {missing[0]!r}. Columns are: {', '.join(map(repr, frame.columns))}.")
    problem = ClusterProblem(model, frame[wanted].persist(), x, y, sigma, nan_policy, robust)
    where = Plan(True, 0, f"in {problem.n_partitions} partitions, summed by the cluster's workers")
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
        batch_size=None,
        epochs=None,
        seed=0,
        callback=callback,
        how=where,
        bounds=bounds,
        fixed=fixed,
        ties=ties,
    )


@contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None, dashboard: bool = False):
    """A Dask client: on a LocalCluster of ``workers`` processes on 127.0.0.1, or on ``scheduler``.

    Args:
        workers: processes of a local cluster on this machine (default: Dask's choice).
        scheduler: the address of a running scheduler to connect to instead.
        dashboard: serve Dask's dashboard (on 127.0.0.1:8787, or the next free port); otherwise the scheduler's
            small HTTP server takes any free port, so that a port already in use is no one's concern.

    Returns:
        distributed.Client: the client; close it (or use it in a ``with`` block) when done.
    """
    from distributed import Client, LocalCluster

    if dashboard:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            raise OptionError("--dashboard needs bokeh, which draws Dask's dashboard: pip install bokeh.") from None

    if (workers is None) == (scheduler is None):
        raise OptionError("Give either --workers N or --scheduler ADDRESS.")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise OptionError(
                f"Cannot reach the Dask scheduler at {scheduler!r} ({type(e).__name__}). Check the "
                "address (tcp://host:port) and that the scheduler is running."
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    where = (
        {"dashboard_address": "127.0.0.1:8787"}
        if dashboard
        else {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
    )
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", **where) as local,
        Client(local) as client,
    ):
        if dashboard:
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        yield client


__all__ = ["cluster", "fit", "fit_many"]

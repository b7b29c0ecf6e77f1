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

from contextlib import contextmanager

import numpy as np

from .batch import fit_long
from .errors import DataError, OptionError
from .library import get_model

CONNECT_TIMEOUT = "10s"


def fit_many(frame, model, *, group: str, x: str, y: str, sigma: str | None = None, p0=None, method: str = "auto",
             max_steps: int | None = None):
    """Fit ``model`` to every curve of a Dask DataFrame; lazy: call ``.compute()`` on the result.

    The result has the group column, then each parameter, its ``_stderr``, ``rmse``, ``chi2``,
    ``n_points``, ``n_steps``, ``converged`` and ``status`` (as ``BatchResult.to_pandas``).
    A curve with fewer points than parameters is marked ``too_few_points``; the rest are fitted.
    """
    import pandas as pd

    model = get_model(model)
    wanted = [c for c in (group, x, y, sigma) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:20])
        raise DataError(f"Unknown column {missing[0]!r}. Columns are: {shown}.")
    names = list(model.param_names)
    meta = pd.DataFrame({
        group: pd.Series([], dtype=frame[group].dtype),
        **{n: pd.Series([], dtype="float64") for n in names},
        **{f"{n}_stderr": pd.Series([], dtype="float64") for n in names},
        "rmse": pd.Series([], dtype="float64"), "chi2": pd.Series([], dtype="float64"),
        "n_points": pd.Series([], dtype="int64"), "n_steps": pd.Series([], dtype="int64"),
        "converged": pd.Series([], dtype="bool"), "status": pd.Series([], dtype="object"),
    })
    # every row of a curve in one partition; a task-based shuffle, which Dask reruns when a worker dies
    whole_curves = frame[wanted].shuffle(on=group, shuffle_method="tasks")
    return whole_curves.map_partitions(_fit_partition, model=model, group=group, x=x, y=y, sigma=sigma, p0=p0,
                                       method=method, max_steps=max_steps, meta=meta)


def _fit_partition(part, *, model, group, x, y, sigma, p0, method, max_steps):
    """One partition's curves, fitted in one batched call: one row per curve."""
    import pandas as pd

    if len(part) == 0:
        return pd.DataFrame({group: part[group].iloc[:0]})
    names, result = fit_long(model, part[group].to_numpy(), part[x].to_numpy(np.float64),
                             part[y].to_numpy(np.float64), None if sigma is None else part[sigma].to_numpy(np.float64),
                             p0=p0, method=method, max_steps=max_steps)
    out = result.to_pandas()
    out.insert(0, group, pd.Series(names, dtype=part[group].dtype))
    return out


@contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: on a LocalCluster of ``workers`` processes on 127.0.0.1, or on ``scheduler``."""
    from distributed import Client, LocalCluster

    if (workers is None) == (scheduler is None):
        raise OptionError("Give either --workers N or --scheduler ADDRESS.")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise OptionError(f"Cannot reach the Dask scheduler at {scheduler!r} ({type(e).__name__}). Check the "
                              "address (tcp://host:port) and that the scheduler is running.") from None
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield client


__all__ = ["cluster", "fit_many"]

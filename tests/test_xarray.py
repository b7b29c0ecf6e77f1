"""Curves in an xarray DataArray (one per index of the leading dimensions), fitted by gradfit.dask.fit_many.

Oracle: gradfit.fit_many of the same curves as a (curves, points) numpy array (itself checked curve by curve
against gradfit.fit and numpy in test_batch.py); the true parameters the data were made from.
"""

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import gradfit
import gradfit.dask
from gradfit.errors import DataError, OptionError

WAVELENGTH = np.linspace(-1, 1, 25)


def cube(rows=6, cols=7, seed=0) -> xr.DataArray:
    """A small 'hyperspectral' cube: a Gaussian peak in every pixel, along the wavelength."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(1, 3, (rows, cols, 1))
    center = rng.uniform(-0.3, 0.3, (rows, cols, 1))
    values = amplitude * np.exp(-((WAVELENGTH - center) ** 2) / 0.2) + rng.normal(0, 0.02, (rows, cols, 25))
    return (
        xr.DataArray(
            values,
            dims=("row", "col", "wavelength"),
            coords={"row": np.arange(rows) * 10, "col": [f"c{i}" for i in range(cols)], "wavelength": WAVELENGTH},
            name="intensity",
        ),
        amplitude[..., 0],
        center[..., 0],
    )


MODEL = "amplitude*exp(-(x - center)**2 / 0.2)"


def test_a_numpy_backed_array_gives_a_dataset_equal_to_fit_many():
    data, amplitude, center = cube()
    out = gradfit.dask.fit_many(data, MODEL, p0={"amplitude": 1.0, "center": 0.0})
    assert isinstance(out, xr.Dataset)
    assert dict(out.sizes) == {"row": 6, "col": 7}
    assert list(out.coords["col"].values) == [f"c{i}" for i in range(7)]  # the pixels keep their labels
    flat = gradfit.fit_many(MODEL, WAVELENGTH, data.values.reshape(-1, 25), p0={"amplitude": 1.0, "center": 0.0})
    np.testing.assert_allclose(out["amplitude"].values.ravel(), flat.params[:, 0], rtol=1e-12)
    np.testing.assert_allclose(out["center_stderr"].values.ravel(), flat.stderr[:, 1], rtol=1e-12)
    np.testing.assert_allclose(out["rmse"].values.ravel(), flat.rmse, rtol=1e-12)
    assert out["converged"].values.all() and set(out["status"].values.ravel()) == {"converged"}
    # and the truth, within a few standard errors
    assert (np.abs(out["amplitude"].values - amplitude) < 5 * out["amplitude_stderr"].values).mean() > 0.95
    assert out.attrs["dim"] == "wavelength" and out.attrs["model"]


def test_a_dask_backed_array_is_lazy_and_equal():
    data, _, _ = cube(rows=10, cols=9, seed=1)
    lazy = data.chunk({"row": 3, "col": 4, "wavelength": 10})  # the points split too: fit_many joins them
    with dask.config.set(scheduler="threads"):
        out = gradfit.dask.fit_many(lazy, MODEL, p0={"amplitude": 1.0, "center": 0.0})
        assert isinstance(out["amplitude"].data, da.Array)  # nothing fitted yet
        assert out["amplitude"].chunks == ((3, 3, 3, 1), (4, 4, 1))
        computed = out.compute()
    flat = gradfit.fit_many(MODEL, WAVELENGTH, data.values.reshape(-1, 25), p0={"amplitude": 1.0, "center": 0.0})
    np.testing.assert_allclose(computed["amplitude"].values.ravel(), flat.params[:, 0], rtol=1e-12)
    np.testing.assert_allclose(computed["center"].values.ravel(), flat.params[:, 1], rtol=1e-12)
    assert (computed["n_steps"].values.ravel() == flat.n_steps).all()


def test_another_dimension_and_x_and_ragged_curves():
    data, _, _ = cube(rows=3, cols=4, seed=2)
    turned = data.transpose("wavelength", "row", "col").drop_vars("wavelength")  # points first, no coordinate
    values = turned.values.copy()
    values[3:, 1, 2] = np.nan  # a ragged curve: this pixel keeps 3 points (NaN pads the rest)
    values[1:, 0, 0] = np.nan  # this one keeps a single point: too few for 2 parameters
    turned = turned.copy(data=values)
    out = gradfit.dask.fit_many(turned, MODEL, dim="wavelength", x=WAVELENGTH, p0={"amplitude": 1.0, "center": 0.0})
    assert dict(out.sizes) == {"row": 3, "col": 4}
    assert out["status"].values[0, 0] == "too_few_points" and not out["converged"].values[0, 0]
    assert out["n_points"].values[1, 2] == 3
    assert out["converged"].values.sum() >= 10


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda d: gradfit.dask.fit_many(d, MODEL, dim="time"), DataError, "Unknown dimension 'time'"),
        (lambda d: gradfit.dask.fit_many(d.drop_vars("wavelength"), MODEL), DataError, "has no coordinate"),
        (lambda d: gradfit.dask.fit_many(d, MODEL, x=np.arange(3.0)), DataError, "length 25"),
        (lambda d: gradfit.dask.fit_many(d.to_dataset(), MODEL), DataError, "Give one variable of the Dataset"),
        (lambda d: gradfit.dask.fit_many(d.to_dataframe().reset_index(), MODEL, dim="x"), OptionError, "dim="),
    ],
)
def test_bad_input_is_one_clear_error(call, error, match):
    data, _, _ = cube(rows=2, cols=2)
    with pytest.raises(error, match=match):
        call(data)


@pytest.mark.parametrize("lazy", [False, True])
def test_curves_at_their_own_x(lazy):
    """Each row of pixels has its own wavelength calibration: x is a DataArray over (row, wavelength)."""
    rng = np.random.default_rng(9)
    rows, cols = 5, 6
    shift = rng.uniform(-0.2, 0.2, rows)
    x = xr.DataArray(WAVELENGTH[None, :] + shift[:, None], dims=("row", "wavelength"))
    center = rng.uniform(-0.3, 0.3, (rows, cols))
    values = 2.0 * np.exp(-((x.values[:, None, :] - center[..., None]) ** 2) / 0.2)
    values = values + rng.normal(0, 0.01, values.shape)
    data = xr.DataArray(values, dims=("row", "col", "wavelength"))
    if lazy:
        data = data.chunk({"row": 2, "col": 4})
    with dask.config.set(scheduler="threads"):
        out = gradfit.dask.fit_many(data, MODEL, x=x, p0={"amplitude": 1.0, "center": 0.0}).compute()
    each_x = np.broadcast_to(x.values[:, None, :], values.shape).reshape(-1, 25)
    flat = gradfit.fit_many(MODEL, each_x, values.reshape(-1, 25), p0={"amplitude": 1.0, "center": 0.0})
    np.testing.assert_allclose(out["center"].values.ravel(), flat.params[:, 1], rtol=1e-12)
    np.testing.assert_allclose(out["center"].values, center, atol=0.01)  # the truth, at each curve's own x
    with pytest.raises(DataError, match="must run along 'wavelength'"):
        gradfit.dask.fit_many(data, MODEL, x=xr.DataArray(np.zeros((rows, 25)), dims=("row", "time")))
    with pytest.raises(DataError, match="has 3 points along 'wavelength'"):
        gradfit.dask.fit_many(data, MODEL, x=xr.DataArray(np.zeros((rows, 3)), dims=("row", "wavelength")))

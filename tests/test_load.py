"""gradfit.load and the data checks: CSV and Parquet in, one clear error for each kind of bad input."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gradfit
from gradfit.data import prepare
from gradfit.errors import DataError
from conftest import make_file


def test_csv_with_header_defaults_to_the_first_two_columns(tmp_path):
    path = make_file(tmp_path, "d.csv", "t,signal,err\n0,1.5,0.1\n1,2.5,0.1\n2,4.5,0.2\n")
    cols = gradfit.load(path)
    assert cols["x"].tolist() == [0, 1, 2] and cols["y"].tolist() == [1.5, 2.5, 4.5]
    assert cols["x"].dtype == np.float64 and cols["first_row"] == 2


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed_and_a_headerless_file_is_read(tmp_path, delimiter):
    rows = "\n".join(delimiter.join(str(v) for v in (i, i * i, 0.5)) for i in range(5))
    cols = gradfit.load(make_file(tmp_path, "d.txt", rows + "\n"), sigma=2)
    assert cols["y"].tolist() == [0, 1, 4, 9, 16] and cols["sigma"].tolist() == [0.5] * 5
    assert cols["first_row"] == 1


def test_columns_by_name_or_index(tmp_path):
    path = make_file(tmp_path, "d.csv", "a,b,c\n1,2,3\n4,5,6\n")
    assert gradfit.load(path, x="c", y=0)["x"].tolist() == [3, 6]
    assert gradfit.load(path, x="2", y="b")["y"].tolist() == [2, 5]


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": [2, 4, 6], "s": [0.1, 0.1, 0.1]}), path)
    cols = gradfit.load(path, sigma="s")
    assert cols["y"].tolist() == [2, 4, 6] and cols["sigma"].tolist() == [0.1] * 3


def test_missing_cells_and_nan_become_nan(tmp_path):
    cols = gradfit.load(make_file(tmp_path, "d.csv", "x,y\n1,2\n2,\n3,nan\n4,inf\n"))
    assert np.isnan(cols["y"][1]) and np.isnan(cols["y"][2]) and np.isinf(cols["y"][3])


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda p: p / "nope.csv", "does not exist"),
        (lambda p: p, "is a folder, not a data file"),
        (lambda p: make_file(p, "bin.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00binary"), "is a binary file"),
        (lambda p: make_file(p, "latin.csv", "x,y\n1,caf\xe9\n".encode("latin-1") + b"2,3\n" * 10), "not UTF-8"),
        (lambda p: make_file(p, "empty.csv", b""), "is empty"),
        (lambda p: make_file(p, "blank.csv", b"\n\n  \n"), "is empty"),
        (lambda p: make_file(p, "header.csv", b"x,y\n"), "has a header but no rows"),
        (lambda p: make_file(p, "one.csv", b"1\n2\n3\n"), "has only 1 column"),
        (lambda p: make_file(p, "bad.parquet", b"PAR1 this is not really parquet"), "not a readable Parquet file"),
        (lambda p: make_file(p, "ragged.csv", b"x,y\n1,2\n3,4,5\n"), "not a well-formed CSV file"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, setup, match):
    with pytest.raises(DataError, match=match) as info:
        gradfit.load(setup(tmp_path))
    assert "\n" not in str(info.value)


def test_non_numeric_cell_names_the_line_and_column(tmp_path):
    path = make_file(tmp_path, "d.csv", "x,y\n1,2\n2,3\n3,oops\n4,5\n")
    with pytest.raises(DataError, match=r"Column 'y' of .* not a number at line 4: 'oops'"):
        gradfit.load(path)


def test_unknown_column_lists_the_columns(tmp_path):
    path = make_file(tmp_path, "d.csv", "t,v\n1,2\n")
    with pytest.raises(DataError, match=r"Unknown y column 'volts'.*Columns are: 't', 'v'"):
        gradfit.load(path, y="volts")
    with pytest.raises(DataError, match="Unknown x column 7"):
        gradfit.load(path, x=7)


# --- prepare(): the checks every fit runs on its data ---------------------------------------------


def test_nan_rows_are_listed():
    y = np.arange(20.0)
    y[[2, 5, 6, 7, 8, 9, 11]] = np.nan
    with pytest.raises(
        DataError,
        match=r"`y` has NaN or inf at rows 2, 5, 6, 7, 8 \(first 5 of 7\)\. "
        r"Remove those rows or use nan_policy='omit'",
    ):
        prepare(np.arange(20.0), y)


def test_nan_rows_in_files_are_given_as_line_numbers(tmp_path):
    cols = gradfit.load(make_file(tmp_path, "d.csv", "x,y\n1,2\n2,nan\n"))
    with pytest.raises(DataError, match="at line 3"):
        prepare(cols["x"], cols["y"], first_row=cols["first_row"], row_label="line")


def test_lengths_must_match():
    with pytest.raises(DataError, match="`x` and `y` must have the same length, got 50 and 49"):
        gradfit.fit("linear", np.arange(50.0), np.arange(49.0))


def test_fewer_points_than_parameters():
    with pytest.raises(DataError, match="2 points are too few to fit 3 parameters"):
        gradfit.fit("quadratic", [1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize("sigma,match", [([1.0, 0.0, 1.0], "`sigma` must be > 0"), ([1.0, 1.0], "one value per point")])
def test_bad_sigma(sigma, match):
    with pytest.raises(DataError, match=match):
        prepare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], sigma)


@pytest.mark.parametrize("values", ["abc", None, ["1", "x"]])
def test_non_numbers_are_refused(values):
    with pytest.raises(DataError, match="`x` must be"):
        prepare(values, [1.0, 2.0])


def test_unknown_nan_policy():
    with pytest.raises(DataError, match="Unknown nan_policy 'drop'. Choose one of: raise, omit"):
        prepare([1.0], [1.0], nan_policy="drop")


def test_numeric_columns_read_from_their_buffers_equal_pyarrows_cast():
    """io._float64 reads numbers without pyarrow.compute or pandas (start-up): the same values as pyarrow's cast,
    nulls as NaN, for chunks that start at an offset and types of every width."""
    import pyarrow as pa

    from gradfit.io import _float64

    columns = [
        pa.chunked_array([[1, 2, None], [4, None, 6]]),
        pa.chunked_array([pa.array([1.5, None, 3, 4, 5, 6, 7, 8, 9, 10], type=pa.float32()).slice(1, 7)]),
        pa.chunked_array([pa.array(list(range(20)) + [None]).slice(15)]),
        pa.chunked_array([pa.array([1, 255], pa.uint8()), pa.array([7], pa.uint8())]),
        pa.chunked_array([pa.array([1.0, 2.0, None] * 5).slice(9)]),
        pa.chunked_array([pa.array([-(2**62), 2**62], pa.int64())]),
        pa.chunked_array([], type=pa.float64()),
    ]
    for column in columns:
        expected = column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(_float64(column), expected)

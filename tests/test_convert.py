"""`mpinn data convert` on CSV files as pandas writes them: missing values (`--na`), the index
column, `--delimiter`, `--features` / `--drop`, and row numbers that are file lines in every
message.

The CSV texts below are the exact output of pandas 3.1.1's DataFrame.to_csv for the frames in
PANDAS_FRAMES (pandas is not a dependency of mpinn); test_fixtures_are_what_pandas_writes
regenerates them when pandas is importable.
"""

import json
import re

import h5py
import numpy as np
import pytest

from launch import run
from mpinn.data.convert import convert
from mpinn.errors import InputError

# The frames and the to_csv calls that produced the texts below.
PANDAS_FRAMES = {
    "iris": ("pd.DataFrame({'sepal_length': [5.1, 4.9, 4.7, 7.0, 6.4, 6.3], "
             "'sepal_width': [3.5, 3.0, np.nan, 3.2, 3.2, 3.3], 'species': ['setosa', 'setosa', 'setosa', "
             "'versicolor', 'versicolor', 'virginica']})"),
    "codes": "pd.DataFrame({'x1': [0.5, 1.5, 2.5, 3.5], 'x2': [10.0, 20.0, 30.0, 40.0], 'label': [0, 1, np.nan, 2]})",
}
PANDAS_CSV = {
    ("iris", "to_csv()"): (",sepal_length,sepal_width,species\n0,5.1,3.5,setosa\n1,4.9,3.0,setosa\n"
                           "2,4.7,,setosa\n3,7.0,3.2,versicolor\n4,6.4,3.2,versicolor\n5,6.3,3.3,virginica\n"),
    ("iris", "to_csv(na_rep='nan')"): (",sepal_length,sepal_width,species\n0,5.1,3.5,setosa\n1,4.9,3.0,setosa\n"
                                       "2,4.7,nan,setosa\n3,7.0,3.2,versicolor\n4,6.4,3.2,versicolor\n"
                                       "5,6.3,3.3,virginica\n"),
    ("iris", "to_csv(sep=';', index=False)"): ("sepal_length;sepal_width;species\n5.1;3.5;setosa\n4.9;3.0;setosa\n"
                                               "4.7;;setosa\n7.0;3.2;versicolor\n6.4;3.2;versicolor\n"
                                               "6.3;3.3;virginica\n"),
    ("codes", "to_csv()"): ",x1,x2,label\n0,0.5,10.0,0.0\n1,1.5,20.0,1.0\n2,2.5,30.0,\n3,3.5,40.0,2.0\n",
}
IRIS_X = [[5.1, 3.5], [4.9, 3.0], [4.7, np.nan], [7.0, 3.2], [6.4, 3.2], [6.3, 3.3]]
IRIS_Y = [0, 0, 0, 1, 1, 2]


def write(tmp_path, frame, call, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(PANDAS_CSV[frame, call].encode())
    return path


def read(path):
    with h5py.File(path, "r") as f:
        return f["X"][()], f["y"][()], {k: json.loads(f.attrs[k]) for k in ("feature_names", "class_names")
                                        if k in f.attrs}


def test_fixtures_are_what_pandas_writes():
    pd = pytest.importorskip("pandas")
    for (frame, call), text in PANDAS_CSV.items():
        df = eval(PANDAS_FRAMES[frame], {"pd": pd, "np": np})
        assert eval(f"df.{call}", {"df": df}) == text, (frame, call)


def test_empty_cell_fails_naming_the_file_line(tmp_path):
    src = write(tmp_path, "iris", "to_csv()")
    with pytest.raises(InputError) as info:
        convert(src, tmp_path / "o.h5")
    assert str(info.value) == ("data convert: data.csv line 4: empty cell in column 'sepal_width' "
                               "(--na drop leaves out rows with missing values)")
    assert not (tmp_path / "o.h5").exists()


def test_nan_written_out_names_the_same_line(tmp_path):
    src = write(tmp_path, "iris", "to_csv(na_rep='nan')")
    with pytest.raises(InputError, match=r"^data convert: data.csv line 4: missing value 'nan' in column 'sepal_wid"):
        convert(src, tmp_path / "o.h5")


@pytest.mark.parametrize("call", ["to_csv()", "to_csv(na_rep='nan')"])
def test_na_drop_and_the_pandas_index(tmp_path, call):
    src = write(tmp_path, "iris", call)
    summary = convert(src, tmp_path / "o.h5", na="drop")
    assert summary["notes"] == [
        "data.csv: the first column has no name and holds 0..5: read as the index pandas writes, and dropped",
        "data.csv: dropped 1 row(s) with missing values (line 4)"]
    assert {k: summary[k] for k in ("rows", "features", "classes")} == {
        "rows": 5, "features": 2, "classes": ["setosa", "versicolor", "virginica"]}
    X, y, attrs = read(tmp_path / "o.h5")
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(X, np.array(IRIS_X)[keep])
    np.testing.assert_array_equal(y, np.array(IRIS_Y)[keep])
    assert attrs["feature_names"] == ["sepal_length", "sepal_width"]


def test_unnamed_index_column_is_not_a_feature(tmp_path):
    src = write(tmp_path, "iris", "to_csv()")
    summary = convert(src, tmp_path / "o.h5", drop="sepal_width")  # the column with the empty cell
    assert summary["features"] == 1 and "index pandas writes" in summary["notes"][0]
    X, _, attrs = read(tmp_path / "o.h5")
    np.testing.assert_array_equal(X[:, 0], np.array(IRIS_X)[:, 0])
    assert attrs["feature_names"] == ["sepal_length"]
    # An unnamed first column of other values is the index of a row subset: dropped too, and
    # the note shows its first values; --features keeps it.
    (tmp_path / "shuffled.csv").write_text(",a,label\n3,0.5,0\n1,1.5,1\n2,2.5,0\n")
    summary = convert(tmp_path / "shuffled.csv", tmp_path / "s.h5")
    assert summary["features"] == 1 and summary["notes"] == [
        "shuffled.csv: the first column has no name (3, 1, 2): read as the index pandas writes, and dropped "
        "(--features 0,... keeps it)"]
    assert convert(tmp_path / "shuffled.csv", tmp_path / "s.h5", features="0,a")["features"] == 2


def test_semicolon_delimiter(tmp_path):
    src = write(tmp_path, "iris", "to_csv(sep=';', index=False)")
    with pytest.raises(InputError, match=r"found 1 \(is it ';'-separated\? pass --delimiter ';'\)"):
        convert(src, tmp_path / "o.h5")
    summary = convert(src, tmp_path / "o.h5", delimiter=";", na="drop")
    assert summary["rows"] == 5 and summary["features"] == 2
    assert summary["notes"] == ["data.csv: dropped 1 row(s) with missing values (line 4)"]
    X, _, _ = read(tmp_path / "o.h5")
    np.testing.assert_array_equal(X, np.array(IRIS_X)[[0, 1, 3, 4, 5]])


def test_float_label_codes_become_classes(tmp_path):
    """pandas writes an integer label column holding a NaN as 0.0, 1.0, 2.0."""
    src = write(tmp_path, "codes", "to_csv()")
    with pytest.raises(InputError, match="line 4: empty cell in column 'label'"):
        convert(src, tmp_path / "o.h5")
    summary = convert(src, tmp_path / "o.h5", na="drop")
    assert summary["classes"] == [0, 1, 2]
    X, y, _ = read(tmp_path / "o.h5")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(X, [[0.5, 10.0], [1.5, 20.0], [3.5, 40.0]])


def test_feature_selection(tmp_path):
    src = write(tmp_path, "codes", "to_csv()")
    convert(src, tmp_path / "o.h5", features="x2,x1", na="drop")  # in the order given
    X, _, attrs = read(tmp_path / "o.h5")
    assert attrs["feature_names"] == ["x2", "x1"] and X[:, 0].tolist() == [10.0, 20.0, 40.0]
    convert(src, tmp_path / "p.h5", features=[2], na="drop")  # by 0-based position in the file
    assert read(tmp_path / "p.h5")[2]["feature_names"] == ["x2"]
    for kwargs, message in [
            ({"features": "x1", "drop": "x2"}, "give --features or --drop, not both"),
            ({"features": "x1,label"}, "column 'label' is the label; it cannot also be a feature"),
            ({"drop": "label"}, "--drop names the label column 'label'"),
            ({"features": "x3"}, r"column 'x3' not found in data.csv \(columns: , x1, x2, label\)"),
            ({"features": "x1,x1"}, "names a column twice"),
            ({"drop": "x1,x2"}, "no feature columns left"),
            ({"delimiter": ";;"}, "--delimiter must be one character"),
            ({"na": "fill"}, "--na must be one of fail, drop")]:
        with pytest.raises(InputError, match=message):
            convert(src, tmp_path / "bad.h5", **kwargs)
    np.save(tmp_path / "a.npy", np.ones((3, 3)))
    with pytest.raises(InputError, match="apply to CSV and Parquet input only"):
        convert(tmp_path / "a.npy", tmp_path / "bad.h5", features="0")
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize("cell,message", [
    ("", "line 4: empty cell in column 'b'"),
    ("NA", "line 4: missing value 'NA' in column 'b'"),
    ("x", "feature column 'b' in t.csv is not numeric: line 4 has 'x'"),
    ("inf", "t.csv line 4: column 'b' holds inf (features must be finite)"),
    ("1,2", "t.csv line 4 has 4 columns, expected 3"),
])
def test_every_message_numbers_rows_by_file_line(tmp_path, cell, message):
    # Line 4 of the file is data row 2 (0-based), after a header and a blank line.
    (tmp_path / "t.csv").write_text(f"a,b,label\n\n1,2,0\n3,{cell},1\n5,6,0\n")
    with pytest.raises(InputError, match=re.escape(message)):
        convert(tmp_path / "t.csv", tmp_path / "o.h5")


def test_arrays_name_their_rows_by_index(tmp_path):
    a = np.column_stack([np.arange(5.0), [0, 1, 0, 1, 0]])
    a[3, 0] = np.nan
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(InputError, match=r"a.npy array row 3 \(0-based\) has a missing value"):
        convert(tmp_path / "a.npy", tmp_path / "o.h5")
    summary = convert(tmp_path / "a.npy", tmp_path / "o.h5", na="drop")
    assert summary["rows"] == 4 and "array row 3, 0-based" in summary["notes"][0]


def test_cli(tmp_path):
    src = write(tmp_path, "iris", "to_csv(sep=';', index=False)")
    proc = run(["data", "convert", src, tmp_path / "o.h5", "--delimiter", ";"], check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("mpinn: error: data convert: data.csv line 4: empty cell in column 'sepal_width' "
                           "(--na drop leaves out rows with missing values)\n")
    proc = run(["data", "convert", src, tmp_path / "o.h5", "--delimiter", ";", "--na", "drop",
                "--features", "sepal_width"])
    assert proc.stdout.splitlines() == [
        "note: data.csv: dropped 1 row(s) with missing values (line 4)",
        f'wrote {tmp_path / "o.h5"}: {{"rows": 5, "features": 1, "classes": ["setosa", "versicolor", "virginica"]}}']

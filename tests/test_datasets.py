"""Serial tests of mpinn.data.builtin and mpinn.data.convert: bundled iris, HDF5 writing, synthetic data, conversion."""

import json
import os

import h5py
import numpy as np
import pytest

from mpinn.data.convert import convert
from mpinn.data.builtin import IRIS_CLASSES, load_iris, make_synthetic, write_hdf5
from mpinn.errors import InputError


def test_iris_equals_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y, feature_names, class_names = load_iris()
    ref = datasets.load_iris()
    assert X.dtype == np.float64 and X.shape == (150, 4)
    assert y.dtype == np.int64 and y.shape == (150,)
    np.testing.assert_array_equal(X, ref.data)
    np.testing.assert_array_equal(y, ref.target)
    assert class_names == list(IRIS_CLASSES) == list(ref.target_names)
    assert feature_names == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


def test_write_hdf5_round_trip_contiguous(tmp_path):
    X = np.arange(20, dtype=np.float32).reshape(5, 4)
    y = np.array([0, 1, 2, 1, 0])
    path = tmp_path / "d.h5"
    write_hdf5(path, X, y, class_names=["a", "b", "c"], feature_names=list("pqrs"),
               attrs={"source": "test"})
    with h5py.File(path, "r") as f:
        assert f["X"].dtype == np.float32 and f["y"].dtype == np.int64
        np.testing.assert_array_equal(f["X"][...], X)
        np.testing.assert_array_equal(f["y"][...], y)
        assert f["X"].chunks is None and f["y"].chunks is None
        assert f.attrs["mpinn_format"] == "mpinn-data"
        assert f.attrs["mpinn_format_version"] == 1
        assert f.attrs["x_name"] == "X" and f.attrs["y_name"] == "y"
        assert json.loads(f.attrs["class_names"]) == ["a", "b", "c"]
        assert json.loads(f.attrs["feature_names"]) == ["p", "q", "r", "s"]
        assert f.attrs["source"] == "test"


def test_write_hdf5_chunked_and_names(tmp_path):
    X = np.arange(30).reshape(10, 3)  # ints are stored as float64
    y = np.random.default_rng(0).standard_normal((10, 2))
    path = tmp_path / "c.h5"
    write_hdf5(path, X, y, x_name="features", y_name="targets", chunk_rows=4)
    with h5py.File(path, "r") as f:
        assert f["features"].dtype == np.float64 and f["features"].chunks == (4, 3)
        assert f["targets"].shape == (10, 2) and f["targets"].chunks == (4, 2)
        assert f.attrs["x_name"] == "features" and f.attrs["y_name"] == "targets"
        assert "class_names" not in f.attrs


def test_write_hdf5_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.h5"
    path.write_bytes(b"old contents")
    with pytest.raises(InputError, match="y has 3 rows but X has 4"):
        write_hdf5(path, np.zeros((4, 2)), np.zeros(3))
    # A failure inside h5py (a value that cannot be stored as an attribute) after the
    # temporary file was created must also leave the old file and no temporary behind.
    with pytest.raises(TypeError):
        write_hdf5(path, np.zeros((4, 2)), np.zeros(4), attrs={"bad": object()})
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["keep.h5"]


@pytest.mark.parametrize("X, y, message", [
    (np.zeros(4), np.zeros(4), "X must be 2-D"),
    (np.zeros((0, 3)), np.zeros(0), "X is empty"),
    (np.zeros((4, 2)), np.zeros(5), "y has 5 rows but X has 4"),
])
def test_write_hdf5_refuses_bad_arrays(tmp_path, X, y, message):
    with pytest.raises(InputError, match=message):
        write_hdf5(tmp_path / "x.h5", X, y)
    assert os.listdir(tmp_path) == []


def test_make_synthetic_classify_deterministic():
    X1, y1 = make_synthetic(300, 5, 3, seed=7)
    X2, y2 = make_synthetic(300, 5, 3, seed=7)
    X3, _ = make_synthetic(300, 5, 3, seed=8)
    assert X1.dtype == np.float64 and X1.shape == (300, 5)
    assert y1.dtype == np.int64 and y1.shape == (300,)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    for k in (2, 3, 5, 10):
        for seed in range(5):
            _, y = make_synthetic(10 * k, 4, k, seed=seed)
            assert set(np.unique(y)) == set(range(k))


def test_make_synthetic_regress_shapes():
    X, y = make_synthetic(50, 3, task="regress", seed=1)
    assert X.shape == (50, 3) and y.shape == (50,) and y.dtype == np.float64
    X, y = make_synthetic(50, 3, task="regress", n_outputs=2, noise=0.0, seed=1)
    assert y.shape == (50, 2)
    np.testing.assert_array_equal(y, make_synthetic(50, 3, task="regress", n_outputs=2,
                                                    noise=0.0, seed=1)[1])


@pytest.mark.parametrize("args, kwargs, message", [
    ((0, 3), {}, "n_samples"),
    ((10, 0), {}, "n_features"),
    ((10, 3, 1), {}, "n_classes"),
    ((10, 3), {"task": "cluster"}, "task"),
])
def test_make_synthetic_validates(args, kwargs, message):
    with pytest.raises(InputError, match=message):
        make_synthetic(*args, **kwargs)


def _read(path):
    with h5py.File(path, "r") as f:
        return f["X"][...], f["y"][...], dict(f.attrs)


def test_convert_csv_header_string_labels(tmp_path):
    src = tmp_path / "flowers.csv"
    src.write_text("width,kind,height\n1.5,tulip,2\n2.5,rose,3\n\n3.0,daisy,4\n0.5,rose,1e1\n")
    out = tmp_path / "out.h5"
    summary = convert(src, out, label_column="kind")
    assert summary == {"rows": 4, "features": 2, "classes": ["daisy", "rose", "tulip"]}
    X, y, attrs = _read(out)
    np.testing.assert_array_equal(X, [[1.5, 2], [2.5, 3], [3.0, 4], [0.5, 10]])
    np.testing.assert_array_equal(y, [2, 1, 0, 1])
    assert y.dtype == np.int64
    assert json.loads(attrs["class_names"]) == ["daisy", "rose", "tulip"]
    assert json.loads(attrs["feature_names"]) == ["width", "height"]


def test_convert_csv_label_index_and_regress(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("t,a,b\n0.5,1,2\n1.5,3,4\n2.25,5,6\n")
    summary = convert(src, tmp_path / "r.h5", label_column=0, task="regress", chunk_rows=2)
    assert summary == {"rows": 3, "features": 2, "classes": None}
    X, y, _ = _read(tmp_path / "r.h5")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])
    assert y.dtype == np.float64 and list(y) == [0.5, 1.5, 2.25]
    # Real-valued labels without a task are refused rather than guessed.
    with pytest.raises(InputError, match="not integers.*task='regress'"):
        convert(src, tmp_path / "r2.h5", label_column="t")


def test_convert_csv_without_header_default_last(tmp_path):
    src = tmp_path / "plain.csv"
    src.write_text("1,2,0\n3,4,1\n5,6,1\n")
    summary = convert(src, tmp_path / "p.h5", chunk_rows=2)
    assert summary == {"rows": 3, "features": 2, "classes": [0, 1]}
    X, y, attrs = _read(tmp_path / "p.h5")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 1])
    assert "feature_names" not in attrs and "class_names" not in attrs
    convert(src, tmp_path / "q.h5", label_column=-3)
    X, y, _ = _read(tmp_path / "q.h5")
    np.testing.assert_array_equal(X, [[2, 0], [4, 1], [6, 1]])
    np.testing.assert_array_equal(y, [1, 3, 5])


def test_convert_npy(tmp_path):
    a = np.column_stack([np.arange(6.0), np.arange(6.0) * 2, [0, 1, 2, 0, 1, 2]])
    np.save(tmp_path / "a.npy", a)
    summary = convert(tmp_path / "a.npy", tmp_path / "a.h5")
    assert summary == {"rows": 6, "features": 2, "classes": [0, 1, 2]}
    X, y, _ = _read(tmp_path / "a.h5")
    np.testing.assert_array_equal(X, a[:, :2])
    np.testing.assert_array_equal(y, [0, 1, 2, 0, 1, 2])
    assert y.dtype == np.int64
    convert(tmp_path / "a.npy", tmp_path / "b.h5", label_column=0, task="regress")
    X, y, _ = _read(tmp_path / "b.h5")
    np.testing.assert_array_equal(X, a[:, 1:])
    assert y.dtype == np.float64 and list(y) == list(range(6))


def test_convert_npz(tmp_path):
    X0 = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.savez(tmp_path / "named.npz", y=np.array([1, 0, 1, 1, 0]), X=X0, extra=np.zeros(2))
    assert convert(tmp_path / "named.npz", tmp_path / "n.h5")["classes"] == [0, 1]
    X, y, _ = _read(tmp_path / "n.h5")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, [1, 0, 1, 1, 0])
    # Any two arrays: the 2-D one holds the features, string labels become class names.
    np.savez(tmp_path / "two.npz", labels=np.array(["b", "a", "b", "c", "a"]), data=X0)
    summary = convert(tmp_path / "two.npz", tmp_path / "t.h5")
    assert summary == {"rows": 5, "features": 3, "classes": ["a", "b", "c"]}
    X, y, attrs = _read(tmp_path / "t.h5")
    np.testing.assert_array_equal(y, [1, 0, 1, 2, 0])
    assert json.loads(attrs["class_names"]) == ["a", "b", "c"]
    np.savez(tmp_path / "three.npz", a=X0, b=np.zeros(5), c=np.zeros(5))
    with pytest.raises(InputError, match="three.npz must hold arrays 'X' and 'y'"):
        convert(tmp_path / "three.npz", tmp_path / "x.h5")


def test_convert_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="input file not found: .*nothere.csv"):
        convert(tmp_path / "nothere.csv", tmp_path / "o.h5")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(InputError, match="unknown input format for .*data.txt"):
        convert(tmp_path / "data.txt", tmp_path / "o.h5")
    src = tmp_path / "data.csv"
    src.write_text("a,b,c\n1,2,0\n3,x,1\n")
    with pytest.raises(InputError, match="feature column 'b' in data.csv is not numeric: line 3 has 'x'"):
        convert(src, tmp_path / "o.h5")
    src.write_text("a,b,c\n1,2,0\n3,4,1\n")
    with pytest.raises(InputError) as info:
        convert(src, tmp_path / "o.h5", label_column="foo")
    assert str(info.value) == "data convert: column 'foo' not found in data.csv (columns: a, b, c)"
    with pytest.raises(InputError, match="out of range"):
        convert(src, tmp_path / "o.h5", label_column=3)
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="no data rows"):
        convert(tmp_path / "empty.csv", tmp_path / "o.h5")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(InputError, match="line 2 has 2 columns, expected 3"):
        convert(tmp_path / "ragged.csv", tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()
    assert "\n" not in str(info.value)

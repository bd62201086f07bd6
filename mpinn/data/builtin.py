"""Datasets: the bundled iris data, scikit-learn's digits, synthetic data, and writing data and
prediction files. Converting, inspecting and splitting existing files is convert.py.

Everything here is serial (no mpi4py): files are prepared once, before a parallel run in which
every rank reads its own row range of X and y from the HDF5 file written by write_hdf5().
"""

import csv
import importlib.resources
import json
import math
import os

import numpy as np

from mpinn.atomic import write_h5_atomic
from mpinn.errors import InputError

IRIS_CLASSES = ("setosa", "versicolor", "virginica")
FORMAT_NAME = "mpinn-data"
FORMAT_VERSION = 1
_RESERVED_ATTRS = ("mpinn_format", "mpinn_format_version", "x_name", "y_name",
                   "class_names", "feature_names")


def load_iris():
    """Fisher's iris data: (X float64 (150, 4), y int64 (150,), feature_names, class_names)."""
    text = importlib.resources.files("mpinn").joinpath("_data/iris.csv").read_text("ascii")
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], [r for r in rows[1:] if r]
    X = np.array([[float(v) for v in r[:4]] for r in body], dtype=np.float64)
    y = np.array([int(r[4]) for r in body], dtype=np.int64)
    return X, y, header[:4], list(IRIS_CLASSES)


def load_digits():
    """scikit-learn's 8x8 digits (1797 x 64, 10 classes); needs scikit-learn installed."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise InputError("data digits: needs scikit-learn: pip install 'mpinn[sklearn]'") from None
    bunch = sk_load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64), [str(i) for i in range(10)]


def load_diabetes():
    """scikit-learn's diabetes data (442 x 10; the target is a disease progression score, an
    integer from 25 to 346: a regression target that looks like class labels); needs scikit-learn."""
    try:
        from sklearn.datasets import load_diabetes as sk_load_diabetes
    except ImportError:
        raise InputError("data diabetes: needs scikit-learn: pip install 'mpinn[sklearn]'") from None
    bunch = sk_load_diabetes()
    return bunch.data.astype(np.float64), bunch.target.astype(np.float64), list(bunch.feature_names)

# ---------------------------------------------------------------- writing

def _int_at_least(value, name, minimum=1, where="make_synthetic"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_array(a, name, kinds, n_rows=None):
    """X or y as stored: float32/float64 kept, integers -> float64 for X, int64 for y."""
    a = np.asarray(a)
    if a.ndim not in kinds:
        raise InputError(f"write_hdf5: {name} must be {' or '.join(f'{k}-D' for k in kinds)}, "
                         f"got shape {a.shape}")
    if n_rows is None and 0 in a.shape:
        raise InputError(f"write_hdf5: {name} is empty (shape {a.shape})")
    if n_rows is not None and a.shape[0] != n_rows:
        raise InputError(f"write_hdf5: {name} has {a.shape[0]} rows but X has {n_rows}")
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype.kind in "biu":
        return a.astype(np.float64 if name == "X" else np.int64)
    raise InputError(f"write_hdf5: {name} must be numeric, got dtype {a.dtype}")


def write_hdf5(path, X, y, *, x_name="X", y_name="y", class_names=None, feature_names=None,
               chunk_rows=None, attrs=None):
    """Write X and y to an mpinn HDF5 data file, atomically.

    The file is built under a temporary name in the target directory and renamed over `path`
    only when complete, so a crash or a bad input never leaves a half-written or clobbered file.
    Datasets are contiguous by default, so that a rank's row range is a single hyperslab read.
    ``y`` None writes features only (rows to predict on).
    """
    X = _as_array(X, "X", (2,))
    y = None if y is None else _as_array(y, "y", (1, 2), X.shape[0])
    if x_name == y_name:
        raise InputError(f"write_hdf5: x_name and y_name are both '{x_name}'")
    for names in (feature_names, class_names):
        if names is not None and not all(isinstance(n, str) for n in names):
            raise InputError(f"write_hdf5: names must be strings, got {list(names)!r}")
    if feature_names is not None and len(feature_names) != X.shape[1]:
        raise InputError(f"write_hdf5: {len(feature_names)} feature names for {X.shape[1]} columns")
    if class_names is not None:
        if y is None or y.dtype.kind != "i" or y.ndim != 1:
            raise InputError("write_hdf5: class_names given but y is not 1-D integer labels")
        if y.min() < 0 or y.max() >= len(class_names):
            raise InputError(f"write_hdf5: labels span {y.min()}..{y.max()} but there are "
                             f"{len(class_names)} class names")
    if chunk_rows is not None:
        chunk_rows = _int_at_least(chunk_rows, "chunk_rows", 1, "write_hdf5")
    attrs = dict(attrs or {})
    reserved = sorted(set(attrs) & set(_RESERVED_ATTRS))
    if reserved:
        raise InputError(f"write_hdf5: attrs may not set reserved attributes {reserved}")

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"write_hdf5: output directory does not exist: {directory}")
    def fill(f):
        for name, data in ((x_name, X), (y_name, y)) if y is not None else ((x_name, X),):
            rows = None if chunk_rows is None else min(chunk_rows, len(data))
            chunks = None if rows is None else (rows, *data.shape[1:])
            f.create_dataset(name, data=data, chunks=chunks)
        f.attrs["mpinn_format"] = FORMAT_NAME
        f.attrs["mpinn_format_version"] = FORMAT_VERSION
        f.attrs["x_name"] = x_name
        f.attrs["y_name"] = y_name
        if class_names is not None:
            f.attrs["class_names"] = json.dumps(list(class_names))
        if feature_names is not None:
            f.attrs["feature_names"] = json.dumps(list(feature_names))
        for key, value in attrs.items():
            f.attrs[key] = value

    write_h5_atomic(path, fill)


# ---------------------------------------------------------------- synthetic data

def make_synthetic(n_samples, n_features, n_classes=2, *, task="classify", n_outputs=1,
                   noise=0.1, seed=0):
    """Deterministic synthetic data labelled by a fixed random tanh network (the "teacher").

    classify: y = argmax of the teacher's outputs, with class biases tuned so the classes are
    roughly balanced, then a fraction `noise` of labels replaced by random classes (so the task
    is learnable well above chance but not perfectly). regress: the teacher's outputs plus
    gaussian noise of standard deviation `noise`.
    """
    n = _int_at_least(n_samples, "n_samples")
    d = _int_at_least(n_features, "n_features")
    if task not in ("classify", "regress"):
        raise InputError(f"make_synthetic: task must be 'classify' or 'regress', got {task!r}")
    if task == "classify":
        k = _int_at_least(n_classes, "n_classes", 2)
        if not 0 <= noise <= 1:
            raise InputError(f"make_synthetic: noise (label-flip fraction) must be in [0, 1], "
                             f"got {noise!r}")
    else:
        k = _int_at_least(n_outputs, "n_outputs")
        if not noise >= 0:
            raise InputError(f"make_synthetic: noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    hidden = max(16, 4 * k)
    # Pre-activations of about unit scale, so tanh is genuinely nonlinear but not saturated.
    w1 = rng.standard_normal((d, hidden)) * (1.5 / math.sqrt(d))
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, k)) / math.sqrt(hidden)

    def teacher(Z):
        return np.tanh(Z @ w1 + b1) @ w2

    # A fixed calibration sample sets the output scale (regress) or the class biases (classify),
    # so the teacher depends on the seed alone, not on n_samples.
    calib = teacher(rng.standard_normal((2048, d)))
    X = rng.standard_normal((n, d))
    if task == "regress":
        out = (teacher(X) - calib.mean(axis=0)) / calib.std(axis=0).clip(min=1e-12)
        out += noise * rng.standard_normal(out.shape)
        return X, (out[:, 0] if k == 1 else out)
    bias = -calib.mean(axis=0)
    for _ in range(100):  # nudge each class's bias until argmax gives roughly equal classes
        frac = (np.bincount(np.argmax(calib + bias, axis=1), minlength=k) + 1) / (len(calib) + k)
        bias += 0.5 * (math.log(1.0 / k) - np.log(frac)) * calib.std()
    scores = teacher(X) + bias
    y = np.argmax(scores, axis=1).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, k, size=int(flip.sum()))
    # Guarantee every class appears when there is room: give a missing class the rows that score
    # closest to it, taken from classes that keep at least 3 rows (affects only unlucky draws).
    for c in (np.flatnonzero(np.bincount(y, minlength=k) == 0) if n >= 10 * k else []):
        moved = 0
        for i in np.argsort(scores.max(axis=1) - scores[:, c], kind="stable"):
            if moved == max(1, n // (10 * k)):
                break
            if np.count_nonzero(y == y[i]) > 2:
                y[i], moved = c, moved + 1
    return X, y

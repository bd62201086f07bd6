"""Existing data files: conversion of CSV/Parquet/NPY/NPZ to mpinn's HDF5 layout, inspection (info) and
a train/test split. Serial (no mpi4py), like builtin.py, whose write_hdf5 writes the results.
"""

import csv
import json
import os

import h5py
import numpy as np

from mpinn.data.csvfile import NA_CHOICES, column_index, read_csv
from mpinn.data.builtin import write_hdf5
from mpinn.data.columns import check_unknown, make_encoding
from mpinn.errors import InputError


# ---------------------------------------------------------------- conversion

def _fail(msg):
    raise InputError(f"data convert: {msg}")


def _labels(values, task, what):
    """Labels -> (y, classes summary, class_names or None).

    Integral values are class indices (int64); real values are regression targets (float64,
    also used for any numbers when task is 'regress'); text is class names, mapped in sorted
    order to 0..K-1. Real values without a task are refused rather than guessed.
    """
    if values.dtype.kind not in "biufUS":
        _fail(f"labels in {what} must be numbers or strings, got dtype {values.dtype}")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2:  # several targets per row: only regression makes sense
        if task == "classify" or values.dtype.kind in "US":
            _fail(f"labels in {what} have {values.shape[1]} columns; classes need one")
        return values.astype(np.float64), None, None
    try:
        num = values.astype(np.float64)
    except ValueError:  # text that is not all numbers: class names
        num = None
        if task == "regress":
            _fail(f"task is 'regress' but labels in {what} are not numeric")
    if num is not None:
        if task == "regress":
            return num, None, None
        if np.isfinite(num).all() and (num == np.round(num)).all():
            y = num.astype(np.int64)
            return y, np.unique(y).tolist(), None
        if task is None:
            _fail(f"labels in {what} are not integers: pass task='regress' for real-valued "
                  "targets or task='classify' to treat them as class names")
    names, y = np.unique(values.astype(str), return_inverse=True)
    return y.astype(np.int64).ravel(), names.tolist(), names.tolist()


def _read_csv(path, src, label_column, opts):
    X, labels, feature_names, label_name, notes, categories, inputs = read_csv(path, src, label_column, **opts)
    return X, labels, feature_names, f"column '{label_name}' of {src}", notes, categories, inputs


def _read_parquet(path, src, label_column, opts):
    from mpinn.data.parquetfile import read_parquet

    X, labels, feature_names, label_name, notes, categories, inputs = read_parquet(path, src, label_column, **opts)
    return X, labels, feature_names, f"column '{label_name}' of {src}", notes, categories, inputs


def _numeric_array(a, what, src):
    if a.dtype.kind not in "biuf":
        _fail(f"{what} in {src} must be numeric, got dtype {a.dtype}")
    return a


def _read_npy(path, src, label_column, opts):
    a = _numeric_array(np.load(path, allow_pickle=False), "the array", src)
    if opts["no_label"]:
        if a.ndim != 2:
            _fail(f"{src} must hold a 2-D array, got shape {a.shape}")
        return _drop_missing(a, None, src, opts["na"])
    if a.ndim != 2 or a.shape[1] < 2:
        _fail(f"{src} must hold a 2-D array with at least two columns, got shape {a.shape}")
    lab = column_index(-1 if label_column is None else label_column, a.shape[1], None, src)
    X = np.delete(a, lab, axis=1)
    return _drop_missing(X, a[:, lab], src, opts["na"])


def _read_npz(path, src, label_column, opts):
    if label_column is not None:
        _fail(f"label_column does not apply to .npz input ({src} holds separate X and y arrays)")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if opts["no_label"]:
        if "X" not in arrays and len(arrays) != 1:
            _fail(f"{src} must hold an array 'X', or exactly one array, for --no-label (found: {', '.join(arrays)})")
        X = _numeric_array(arrays.get("X", next(iter(arrays.values()))), "features", src)
        if X.ndim != 2:
            _fail(f"features in {src} must be 2-D, got shape {X.shape}")
        return _drop_missing(X, None, src, opts["na"])
    if "X" in arrays and "y" in arrays:
        X, y = arrays["X"], arrays["y"]
    elif len(arrays) == 2:
        keys = list(arrays)
        two_d = [k for k in keys if arrays[k].ndim == 2]
        if not two_d:
            _fail(f"{src} has no 2-D array to use as features (arrays: {', '.join(keys)})")
        X = arrays[two_d[0]]
        y = arrays[keys[1] if two_d[0] == keys[0] else keys[0]]
    else:
        _fail(f"{src} must hold arrays 'X' and 'y', or exactly two arrays "
              f"(found: {', '.join(arrays) or 'none'})")
    X = _numeric_array(X, "features", src)
    if X.ndim != 2:
        _fail(f"features in {src} must be 2-D, got shape {X.shape}")
    if len(y) != X.shape[0]:
        _fail(f"{src} has {X.shape[0]} feature rows but {len(y)} labels")
    return _drop_missing(X, y, src, opts["na"])


def _drop_missing(X, y, src, na):
    """Array input: rows with NaN (features or float labels) fail or are dropped, as for CSV;
    rows are named by their 0-based index in the array."""
    missing = np.isnan(X).any(axis=1) if X.dtype.kind == "f" else np.zeros(len(X), dtype=bool)
    if y is not None and y.dtype.kind == "f":
        missing |= np.isnan(y).reshape(len(y), -1).any(axis=1)
    notes = []
    if missing.any():
        rows = np.flatnonzero(missing)
        if na == "fail":
            _fail(f"{src} array row {rows[0]} (0-based) has a missing value (NaN) "
                  "(--na drop leaves out rows with missing values)")
        if len(rows) == len(X):
            _fail(f"{src}: every row has a missing value; nothing left after --na drop")
        notes.append(f"{src}: dropped {len(rows)} row(s) with missing values (array row "
                     f"{', '.join(map(str, rows[:5].tolist()))}{', ...' if len(rows) > 5 else ''}, 0-based)")
        X, y = X[~missing], (None if y is None else y[~missing])
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        _fail(f"{src} array row {int(np.argmax(~np.isfinite(X).all(axis=1)))} (0-based) has an infinite feature")
    return X, y, None, src, notes, {}, None


_READERS = {".csv": _read_csv, ".parquet": _read_parquet, ".pq": _read_parquet, ".npy": _read_npy,
            ".npz": _read_npz}
_TABLES = (".csv", ".parquet", ".pq")


def convert(in_path, out_path, *, label_column=None, x_name="X", y_name="y", chunk_rows=None,
            task=None, na="fail", features=None, drop=None, delimiter=",", categorical=None,
            no_label=False, unknown_category="error"):
    """Convert a .csv, .parquet, .npy or .npz file to an mpinn HDF5 data file; returns a short
    summary (rows, features, classes, and ``notes`` when rows or an index column were left out,
    or a column was one-hot encoded).

    ``na``: 'fail' (default) stops at a missing value naming its row, 'drop' leaves such rows
    out. ``features`` / ``drop`` (names or 0-based positions, a list or comma-separated) and
    ``categorical`` ('auto': text columns; 'none'; or names/positions) apply to CSV and Parquet
    input, ``delimiter`` to CSV; see csvfile.encode_cells. ``no_label``: every column is a
    feature and the file has no ``y`` (for predict). ``task`` is stored in the file, so that
    `mpinn train --task auto` follows it; ``unknown_category`` ('error' or 'zeros') is what a
    model trained on this file does with a category it never saw.
    """
    in_path = os.fspath(in_path)
    src = os.path.basename(in_path)
    if task not in (None, "classify", "regress"):
        _fail(f"task must be 'classify', 'regress' or None, got {task!r}")
    if na not in NA_CHOICES:
        _fail(f"--na must be one of {', '.join(NA_CHOICES)}, got {na!r}")
    check_unknown(unknown_category)
    ext = os.path.splitext(in_path)[1].lower()
    if ext not in _READERS:
        _fail(f"unknown input format for {in_path} (expected .csv, .parquet, .npy or .npz)")
    if ext not in _TABLES and (features or drop or categorical not in (None, "auto", "none")):
        _fail("--features, --drop and --categorical apply to CSV and Parquet input only")
    if ext != ".csv" and delimiter != ",":
        _fail("--delimiter applies to CSV input only")
    if no_label and (label_column is not None or task is not None):
        _fail("--no-label: the file has no labels, so --label-column and --task do not apply")
    if not os.path.isfile(in_path):
        _fail(f"input file not found: {in_path}")
    opts = {"na": na, "no_label": no_label}
    if ext in _TABLES:
        opts.update(features=features, drop=drop, categorical=categorical)
    if ext == ".csv":
        opts["delimiter"] = delimiter
    try:
        X, y_raw, feature_names, what, notes, categories, inputs = _READERS[ext](in_path, src, label_column, opts)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        if isinstance(exc, InputError):
            raise
        _fail(f"cannot read {in_path}: {exc}")
    if X.shape[0] == 0:
        _fail(f"{src} holds no data rows")
    y, classes, class_names = (None, None, None) if no_label else _labels(y_raw, task, what)
    attrs = {}
    if task is not None:
        attrs["task"] = task
    if categories:
        attrs["encoding"] = json.dumps(make_encoding(inputs, categories, unknown_category))
    write_hdf5(out_path, X, y, x_name=x_name, y_name=y_name, class_names=class_names,
               feature_names=feature_names, chunk_rows=chunk_rows, attrs=attrs)
    summary = {"rows": int(X.shape[0]), "features": int(X.shape[1])}
    summary.update({"labels": "none"} if no_label else {"classes": classes})
    if notes:
        summary["notes"] = notes
    return summary


# ---------------------------------------------------------------- inspection and splitting


def _open_data(path, x_name, y_name, require_y=True):
    from mpinn.data.hdf5 import inspect

    info = inspect(path, x_name, y_name, require_y=require_y)
    return info, h5py.File(path, "r")


def _has_labels(path, y_name):
    """False for a file without ``y_name`` (`convert --no-label`); True where inspect should judge."""
    if not (os.path.exists(path) and h5py.is_hdf5(path)):
        return True
    with h5py.File(path, "r") as f:
        return y_name in f


def info(path, *, x_name="X", y_name="y", block_rows=65536):
    """Shapes, dtypes, chunking, class balance and NaN count; reads the file in row blocks."""
    labelled = _has_labels(path, y_name)
    meta, f = _open_data(path, x_name, y_name, require_y=labelled)
    with f:
        X = f[x_name]
        nan_rows = nan_values = 0
        for start in range(0, meta.n_rows, block_rows):
            bad = ~np.isfinite(X[start:start + block_rows])
            nan_values += int(bad.sum())
            nan_rows += int(bad.any(axis=1).sum())
        out = {"file": str(path), "rows": meta.n_rows, "features": meta.n_features,
               "x": {"name": x_name, "dtype": str(X.dtype), "chunks": X.chunks}}
        if labelled:
            Y = f[y_name]
            out["y"] = {"name": y_name, "dtype": "string" if meta.y_kind == "str" else str(Y.dtype),
                        "shape": list(Y.shape), "chunks": Y.chunks}
        else:
            out["labels"] = "none"  # features only (`convert --no-label`), as convert reports it
        out.update(non_finite_feature_values=nan_values, rows_with_non_finite_features=nan_rows)
        if meta.task:
            out["task"] = meta.task
        if meta.encoding:
            out["categorical"] = {c: len(v) for c, v in meta.encoding["categories"].items()}
        if not labelled:
            return out
        if meta.y_kind in ("int", "str") and Y.ndim == 1:
            y = Y.asstr()[()] if meta.y_kind == "str" else Y[()]
            labels, counts = np.unique(y, return_counts=True)
            names = meta.class_names
            out["classes"] = {
                (names[int(l)] if names and meta.y_kind == "int" and 0 <= int(l) < len(names) else str(l)): int(c)
                for l, c in zip(labels, counts)}
        else:
            y = Y[()].astype(np.float64)
            out["targets"] = {"mean": float(np.nanmean(y)), "std": float(np.nanstd(y)),
                              "non_finite": int((~np.isfinite(y)).sum())}
        return out


def split(path, train_out, test_out, *, test_fraction=0.2, seed=0, stratify=True, x_name="X", y_name="y"):
    """Write train and test files; stratified by class for classification labels, seeded.

    Each class contributes round(fraction * its count) test rows (at least one when it has two
    or more), drawn with np.random.default_rng(seed); rows keep their file order.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"data split: --test-fraction must be in (0, 1), got {test_fraction}")
    meta, f = _open_data(path, x_name, y_name)
    with f:
        X = f[x_name][()]
        y = f[y_name].asstr()[()] if meta.y_kind == "str" else f[y_name][()]
        attrs = {k: f.attrs[k] for k in ("class_names", "feature_names") if k in f.attrs}
        kept = {k: f.attrs[k] for k in ("task", "encoding") if k in f.attrs}  # the same model input
    rng = np.random.default_rng(seed)
    test = np.zeros(meta.n_rows, dtype=bool)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify and y.ndim == 1 \
        and meta.y_kind in ("int", "str") else [np.arange(meta.n_rows)]
    for rows in groups:
        n_test = int(round(test_fraction * len(rows)))
        if len(rows) >= 2:
            n_test = min(max(n_test, 1), len(rows) - 1)
        test[rng.permutation(rows)[:n_test]] = True
    if test.all() or not test.any():
        raise InputError(f"data split: {meta.n_rows} rows leave no train or no test rows at fraction {test_fraction}")
    names = {k: json.loads(v) for k, v in attrs.items()}
    for out, mask in ((train_out, ~test), (test_out, test)):
        yy = y[mask]
        if meta.y_kind == "str":  # store string labels as codes with their names, as convert does
            classes = sorted(set(y.tolist()))
            yy = np.searchsorted(classes, yy)
            names["class_names"] = classes
        write_hdf5(out, X[mask], yy, x_name=x_name, y_name=y_name, class_names=names.get("class_names"),
                   feature_names=names.get("feature_names"), attrs=kept)
    return {"train_rows": int((~test).sum()), "test_rows": int(test.sum())}

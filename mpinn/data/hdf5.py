"""HDF5 data: layout checks, reading one rank's rows, the global batch size.

No MPI here. Each rank opens the file read-only and reads its shard as hyperslabs (one, or
one per run of a random shard). The train/test split and the global batch schedule live in
schedule.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from mpinn.errors import InputError


@dataclass
class DataInfo:
    """What rank 0 learned about a data file; broadcast as JSON so ranks agree."""

    path: str
    x_name: str
    y_name: str
    n_rows: int
    n_features: int
    y_shape: list
    y_kind: str  # "int", "float" or "str"
    class_names: list | None = None
    feature_names: list | None = None   # `data convert`'s column names (after one-hot encoding)
    encoding: dict | None = None        # categorical columns: columns.make_encoding
    task: str | None = None             # `data convert --task`, which --task auto follows

    def to_json(self):
        return dict(self.__dict__)


def inspect(path, x_name="X", y_name="y", *, require_y=True) -> DataInfo:
    """Check the file's layout from metadata only; raise InputError naming the problem."""
    import h5py

    if not os.path.exists(path):
        raise InputError(f"data file not found: {path}")
    if not h5py.is_hdf5(path):
        raise InputError(f"not an HDF5 file: {path}")
    with h5py.File(path, "r") as f:
        names = sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset))
        for name in (x_name, y_name) if require_y else (x_name,):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise InputError(
                    f"{path}: no dataset {name!r} (datasets in file: {', '.join(names) or 'none'})")
        X = f[x_name]
        if X.ndim != 2:
            raise InputError(f"{path}: dataset {x_name!r} must be 2-D (rows x features), has shape {X.shape}")
        if X.dtype.kind not in "fiub":
            raise InputError(f"{path}: dataset {x_name!r} has non-numeric dtype {X.dtype}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise InputError(f"{path}: dataset {x_name!r} is empty (shape {X.shape})")
        y_shape, y_kind = [], "float"
        if require_y:
            Y = f[y_name]
            if Y.ndim not in (1, 2):
                raise InputError(f"{path}: dataset {y_name!r} must be 1-D or 2-D, has shape {Y.shape}")
            if Y.shape[0] != X.shape[0]:
                raise InputError(f"{path}: {y_name!r} has {Y.shape[0]} rows but {x_name!r} has {X.shape[0]}")
            is_text = h5py.check_string_dtype(Y.dtype) is not None
            if Y.dtype.kind not in "fiub" and not is_text:
                raise InputError(f"{path}: dataset {y_name!r} has dtype {Y.dtype}; targets must be numbers"
                                 " or (class labels) strings")
            if is_text and Y.ndim != 1:
                raise InputError(f"{path}: string labels {y_name!r} must be 1-D, has shape {Y.shape}")
            y_shape = list(Y.shape)
            y_kind = "str" if is_text else "int" if Y.dtype.kind in "iub" else "float"
        meta = {k: json.loads(f.attrs[k]) for k in ("class_names", "feature_names", "encoding") if k in f.attrs}
        task = f.attrs.get("task")
        if task is not None and task not in ("classify", "regress"):
            raise InputError(f"{path}: attribute 'task' is {task!r}; expected 'classify' or 'regress'")
        if meta.get("feature_names") is not None and len(meta["feature_names"]) != X.shape[1]:
            meta.pop("feature_names")  # written by another tool for another layout: not used
        return DataInfo(str(path), x_name, y_name, int(X.shape[0]), int(X.shape[1]),
                        y_shape, y_kind, meta.get("class_names"), meta.get("feature_names"),
                        meta.get("encoding"), None if task is None else str(task))


def read_shard(h5file, info: DataInfo, shard, dtype, *, with_y=True, with_x=True):
    """This rank's rows of X (as ``dtype``) and y, read as hyperslabs: one per dataset for a
    block or strided shard, one per run of chunks for a random one (``shard.pieces()``).

    ``h5file`` is an open h5py.File (tests pass one over an instrumented file object to check
    that no byte outside the shard is read). ``with_x=False`` (streaming) returns X as None.
    """
    X = None
    if with_x:
        X = read_rows(h5file[info.x_name], shard, dtype).reshape(shard.count, info.n_features)
    y = None
    if with_y:
        ds = h5file[info.y_name]
        if info.y_kind == "str":
            y = read_rows(ds.asstr(), shard, object).astype(str).reshape(shard.count)
        else:
            y = read_rows(ds, shard, None).reshape((shard.count,) + tuple(info.y_shape[1:]))
    return X, y


def read_rows(ds, shard, dtype=None):
    """The shard's rows of one dataset, in local order, hyperslab by hyperslab; a single
    hyperslab is read straight into the result (no copy when ``dtype`` is the stored one)."""
    pieces, count = shard.pieces(), shard.count
    if len(pieces) == 1:
        return np.asarray(ds[pieces[0][0]], dtype=dtype)
    shape = (count,) + tuple(ds.shape[1:]) if hasattr(ds, "shape") else (count,)
    out = np.empty(shape, dtype=dtype if dtype is not None else ds.dtype)
    for src, dst in pieces:
        out[dst] = ds[src]
    return out


def global_batch(cfg, ranks):
    """The global batch of a config: --batch-per-rank B times the ranks, else --batch-size."""
    return cfg.batch_per_rank * ranks if cfg.batch_per_rank else cfg.batch_size


def resolve_batch_size(batch_size, n_train):
    """'auto' -> min(200, n) as sklearn; 'full' -> n (batch gradient descent); ints clipped to n."""
    if batch_size == "auto":
        return min(200, n_train)
    if batch_size == "full":
        return n_train
    return max(1, min(int(batch_size), n_train))

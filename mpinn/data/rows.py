"""Rows of an HDF5 dataset read only when they are needed: what `mpinn search` passes for X, so
that no rank holds all of it.

A ``RowView`` stands for some rows (in some order) of one 2-D dataset, after some row-wise
transforms (a fitted scaler's). Taking rows of it (``view[idx]``, scikit-learn's
``_safe_indexing`` of a fold) gives another view and reads nothing; ``read(positions)`` reads
those rows and applies the transforms. So a fold's fit reads only the rank's shard of the
fold's train rows (estimators/reading.py), a scaler only its block (preprocessing/scalers.py), and
scoring only the rank's block of the test rows (estimators/base.py). Anything else that asks
for an array (``np.asarray(view)``) gets all of the view's rows, read then.

Row-wise transforms commute with taking rows, so the values read equal those of the
materialised array taken the same way, bit for bit. No MPI here.
"""

from __future__ import annotations

import os

import numpy as np

WINDOW_BYTES = 1 << 24  # scattered rows are read as spans of at most 16 MiB, the wanted rows kept


class RowView:
    """Rows ``rows`` (global row numbers, None: all in order) of dataset ``name`` of the HDF5
    file ``path``, as ``dtype``, each read block passed through ``transforms`` in order.
    ``shape``: the dataset's (rows, features) when known (a 1-D dataset as one column); by
    default read from the file, which must then hold a 2-D dataset."""

    lazy_rows = True  # how other modules recognise a view without importing this one

    def __init__(self, path, name="X", *, rows=None, transforms=(), dtype=np.float64, shape=None):
        self.path, self.name, self.dtype = os.fspath(path), name, np.dtype(dtype)
        if shape is None:
            import h5py

            with h5py.File(self.path, "r") as f:
                shape = f[name].shape
            if len(shape) != 2:
                raise ValueError(f"{self.path}: dataset {name} has shape {shape}; a RowView needs 2-D rows "
                                 "(or shape=(rows, 1) for a 1-D dataset)")
        self._file_shape = tuple(shape)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.transforms = tuple(transforms)
        self.rows_read = 0  # rows this view and the views taken from it read so far (tests, benchmarks)
        self._counter = self

    @property
    def shape(self):
        n = self._file_shape[0] if self.rows is None else len(self.rows)
        return (n, self._file_shape[1])

    ndim = 2

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"RowView({self.path!r}, {self.name!r}, shape={self.shape})"

    def _derived(self, rows=None, transforms=None):
        view = RowView(self.path, self.name, rows=self.rows if rows is None else rows,
                       transforms=self.transforms if transforms is None else transforms, dtype=self.dtype,
                       shape=self._file_shape)
        view._counter = self._counter
        return view

    def global_rows(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]

    def __getitem__(self, key):
        """Rows of the view as a view (an int array, a boolean mask, a slice, ``(key, ...)``);
        one row (an int) as an array."""
        if isinstance(key, tuple):
            if len(key) == 2 and (key[1] is Ellipsis or key[1] == slice(None)):
                key = key[0]
            else:
                raise TypeError("a RowView is indexed by rows only (view[rows] or view[rows, ...])")
        if isinstance(key, (int, np.integer)):
            return self.read([int(key) % len(self)])[0]
        if isinstance(key, slice):
            positions = np.arange(len(self), dtype=np.int64)[key]
        else:
            positions = np.asarray(key)
            if positions.dtype == bool:
                if positions.shape != (len(self),):
                    raise IndexError(f"boolean index of shape {positions.shape} for {len(self)} rows")
                positions = np.flatnonzero(positions)
            elif not np.issubdtype(positions.dtype, np.integer) and positions.size:
                raise IndexError(f"rows must be integers or a boolean mask, got dtype {positions.dtype}")
            positions = positions.astype(np.int64).ravel()
            if positions.size and (positions.max() >= len(self) or positions.min() < -len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
            positions = positions % max(1, len(self))
        return self._derived(rows=self.global_rows(positions))

    def with_transform(self, fn):
        """The same rows passed through ``fn`` (row-wise: an (m, d) array to an (m, d') array) too."""
        return self._derived(transforms=self.transforms + (fn,))

    def read(self, positions=None) -> np.ndarray:
        """The rows at ``positions`` of the view (all: None), read and transformed: (m, d')."""
        g = self.global_rows(np.arange(len(self)) if positions is None else positions)
        out = _read_rows(self.path, self.name, g, self._file_shape[1], self.dtype)
        self._counter.rows_read += len(g)
        for fn in self.transforms:
            out = fn(out)
        return out

    def __array__(self, dtype=None, copy=None):
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)


def is_row_view(X) -> bool:
    return getattr(X, "lazy_rows", False) is True


def _read_rows(path, name, rows, n_features, dtype):
    """Global ``rows`` (any order, repeats allowed) of the dataset, in spans of at most
    WINDOW_BYTES: a run of consecutive rows is read straight into place (HDF5 converts the
    dtype), any other span with one hyperslab whose wanted rows are kept. Rows in increasing
    order (a shard of a fold) are placed without a sort."""
    import h5py

    out = np.empty((len(rows), n_features), dtype=dtype)
    if not len(rows):
        return out
    ascending = bool(np.all(rows[1:] > rows[:-1]))
    order = None if ascending else np.argsort(rows, kind="stable")
    wanted = rows if ascending else rows[order]
    window = max(1, WINDOW_BYTES // max(1, n_features * dtype.itemsize))
    with h5py.File(path, "r") as f:
        ds = f[name]
        i = 0
        while i < len(wanted):
            lo = int(wanted[i])
            j = int(np.searchsorted(wanted, lo + window, side="left"))
            hi = int(wanted[j - 1]) + 1
            if ascending and hi - lo == j - i and ds.ndim == 2:
                ds.read_direct(out, np.s_[lo:hi], np.s_[i:j])
            else:
                span = np.asarray(ds[lo:hi], dtype=dtype).reshape(hi - lo, n_features)
                if ascending:
                    np.take(span, wanted[i:j] - lo, axis=0, out=out[i:j])
                else:
                    out[order[i:j]] = span[wanted[i:j] - lo]
            i = j
    return out

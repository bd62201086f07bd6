"""How an estimator's fit gets this rank's rows: from global arrays (every rank passes the same
ones and keeps its shard), an HDF5 path (each rank reads only its rows) or a RowView of a
search's fold (data/rows.py: each rank reads only its shard of the fold). MPI only through
parallel/comm.py, imported when fit runs.
"""

from __future__ import annotations

import os

import numpy as np

from mpinn.data import inputs
from mpinn.data.rows import is_row_view


class _ReadsRows:
    """_get_comm and _read of _FitMLP (fit.py); uses the estimator's solver, shard and dtype."""

    def _get_comm(self):
        from mpinn.parallel.comm import as_comm

        return as_comm(self.comm)

    def _read(self, X, y, sample_weight, comm):
        """This rank's rows: (X, y, weights, shard, n_rows, y_all or None).

        Arrays: every rank passes the same global arrays, checks them and keeps its shard; a
        RowView the same, reading only its shard.
        An HDF5 path (or open h5py.File): each rank reads only its rows (y names the target dataset, default
        "y"; sample_weight may name a weight dataset in the file).
        """
        from mpinn.data.partition import make_shard
        from mpinn.options import ShardSpec
        from mpinn.parallel.agree import collective_check
        from mpinn.train.problem import load_shard

        # L-BFGS sums its gradient over fixed chunks of rows along one tree, the same bits on any
        # number of ranks (train/lbfgs.py): its rows are placed in whole chunks, whatever `shard` says.
        spec = ShardSpec("chunks") if self.solver == "lbfgs" else self.shard

        if hasattr(X, "filename") and hasattr(X, "keys"):  # an open h5py.File: read by name
            X = X.filename
        if isinstance(X, (str, os.PathLike)):
            if y is not None and not isinstance(y, str):
                raise ValueError("with an HDF5 path as X, y must be None or the name of the target dataset")
            if sample_weight is not None and not isinstance(sample_weight, str):
                raise ValueError("with an HDF5 path as X, sample_weight must be None or a dataset name")
            Xl, yl, wl, shard = load_shard(os.fspath(X), comm, y_name=y or "y", w_name=sample_weight,
                                           shard=spec, dtype=self.dtype,
                                           task="classify" if self._classifier else "regress")
            if yl.ndim == 2 and yl.shape[1] == 1:
                yl = yl.ravel()
            if wl is not None:
                collective_check(comm, inputs.finite_problem(wl, "sample_weight"))
            return Xl, yl, wl, shard, shard.n_rows, None
        # Arrays are checked whole; a RowView (a search's fold, data/rows.py) is read here, this
        # rank's shard of it only, with the same values the array it stands for would give.
        view = is_row_view(X)
        Xa = X if view else inputs.check_X(X)
        ya = inputs.check_y(y, len(Xa), classifier=self._classifier)
        dtype = inputs.train_dtype(Xa, self.dtype)
        sw = inputs.check_sample_weight(sample_weight, len(Xa), dtype)
        if comm.size > 1:  # SPMD: every rank must pass the same global arrays
            root = comm.bcast_json([len(Xa), Xa.shape[1]])
            collective_check(comm, None if root == [len(Xa), Xa.shape[1]] else
                             f"rank {comm.rank} passed X of shape {Xa.shape}, rank 0 {tuple(root)}: every rank "
                             "must pass the same global arrays (or an HDF5 path)")
        shard = make_shard(len(Xa), comm.rank, comm.size, spec)
        try:
            Xl = np.ascontiguousarray(Xa.read(shard.rows) if view else shard.take(Xa), dtype=dtype)
            problem = inputs.finite_problem(Xl, "X")
        except OSError as exc:  # a file one rank cannot read fails every rank, none left waiting
            Xl, problem = None, f"{X.path}: {exc}"
        collective_check(comm, problem)
        wl = None if sw is None else shard.take(sw)
        return Xl, shard.take(ya), wl, shard, len(Xa), ya

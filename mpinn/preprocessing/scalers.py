"""Feature scaling with statistics reduced across ranks: StandardScaler, MinMaxScaler. No MPI here.

The two transformers follow scikit-learn's StandardScaler and MinMaxScaler (parameters,
fitted attributes, transform arithmetic) and work inside sklearn.pipeline.Pipeline under
mpiexec. Each rank summarises its own rows and the summaries are reduced through a
``comm.Comm`` (the statistics: stats.py), so no rank ever holds all the rows.
`mpinn train --scale` and checkpoints use the same classes (training.py).
"""

from __future__ import annotations

import inspect
import os

import numpy as np

from mpinn.data.rows import is_row_view
from mpinn.parallel.comm import as_comm
from mpinn.preprocessing.stats import (blocks_moments, closing_blocks, combine_moments, is_constant, nonzero_scale,
                                       reduce_moments, reduce_range, row_blocks)

ROWS = ("global", "local")
# ---- the transformers -------------------------------------------------------------------------


class _Scaler:
    """Parameters, input checks and the distributed fit shared by the two scalers."""

    def __init__(self, *, copy=True, rows="global", shard="block", comm=None):
        self.copy, self.rows, self.shard, self.comm = copy, rows, shard, comm

    # -- scikit-learn plumbing (no sklearn needed) --

    @classmethod
    def _get_param_names(cls):
        return sorted(p.name for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self")

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self._get_param_names():
                raise ValueError(f"Invalid parameter {name!r} for estimator {self}. "
                                 f"Valid parameters are: {self._get_param_names()!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        sig = inspect.signature(type(self).__init__).parameters
        changed = [f"{n}={getattr(self, n)!r}" for n, p in sig.items()
                   if n != "self" and not _equal(getattr(self, n), p.default)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_samples_seen_")

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
                    input_tags=InputTags(allow_nan=True))

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            from mpinn.data.inputs import sklearn_or_own

            raise sklearn_or_own("NotFittedError")(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator.")

    def get_feature_names_out(self, input_features=None):
        self._check_fitted()
        if input_features is None:
            names = getattr(self, "feature_names_in_", None)
            return np.asarray(names if names is not None else [f"x{i}" for i in range(self.n_features_in_)],
                              dtype=object)
        if len(input_features) != self.n_features_in_:
            raise ValueError(f"input_features should have length equal to number of features "
                             f"({self.n_features_in_}), got {len(input_features)}")
        return np.asarray(input_features, dtype=object)

    # -- input --

    def _array(self, X, *, reset, copy):
        """X as a 2-D float array (float32 kept, anything else float64), checked against the fit."""
        from mpinn.data.inputs import check_X

        columns = getattr(X, "columns", None)
        if isinstance(X, (str, os.PathLike)):
            raise ValueError(f"{type(self).__name__}.transform needs an array; an HDF5 path can only be fitted "
                             "(or scale the data in training: mpinn train --scale)")
        if hasattr(X, "toarray"):
            raise TypeError("A sparse matrix was passed, but dense data is required. Use '.toarray()' to "
                            "convert to a dense numpy array.")
        if self.rows == "local" and np.ndim(X) == 2 and np.shape(X)[0] == 0:
            X = np.asarray(X, dtype=np.float64)  # a rank may own no rows
        else:
            X = check_X(X, allow_nan=True)
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        X = np.array(X, dtype=dtype, copy=True) if copy else np.asarray(X, dtype=dtype)
        if np.isinf(X).any():
            raise ValueError(f"Input X contains infinity or a value too large for dtype({X.dtype.name!r}).")
        if reset:
            self.n_features_in_ = X.shape[1]
            if columns is not None and all(isinstance(c, str) for c in columns):
                self.feature_names_in_ = np.asarray(list(columns), dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    def _local_blocks(self, X, sample_weight, comm, x_name):
        """(this rank's blocks of rows, their weights or None, n_features): from an HDF5 path (this
        rank's rows, read in chunks), or from arrays (rows='global': every rank passes the same
        arrays and takes its shard; rows='local': every rank passes its own rows)."""
        from mpinn.data.partition import make_shard
        from mpinn.parallel.agree import collective_check

        if self.rows not in ROWS:
            raise ValueError(f"The 'rows' parameter of {type(self).__name__} must be one of {ROWS}. "
                             f"Got {self.rows!r} instead.")
        first = not self.__sklearn_is_fitted__()
        if hasattr(X, "filename") and hasattr(X, "keys"):  # an open h5py.File
            X = X.filename
        if isinstance(X, (str, os.PathLike)):
            if sample_weight is not None:
                raise ValueError("sample_weight is not supported with an HDF5 path")
            from mpinn.data import hdf5 as datamod
            from mpinn.parallel.agree import on_root
            from mpinn.data.stream import StreamingRows

            path = os.fspath(X)
            info = datamod.DataInfo(**on_root(comm, lambda: datamod.inspect(path, x_name, require_y=False)
                                                     .to_json()))
            if not first and info.n_features != self.n_features_in_:
                raise ValueError(f"X has {info.n_features} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            self.n_features_in_ = info.n_features
            shard = make_shard(info.n_rows, comm.rank, comm.size, self.shard)
            stream = StreamingRows(path, x_name, shard, info.n_features, np.float64, read_ahead=0)
            return closing_blocks(stream), None, info.n_features, np.dtype(np.float64)
        if is_row_view(X):
            return self._view_blocks(X, sample_weight, comm, first)
        X = self._array(X, reset=first, copy=False)
        w = self._weights(sample_weight, len(X))
        if self.rows == "global":
            if comm.size > 1:
                root = comm.bcast_json(list(X.shape))
                collective_check(comm, None if root == list(X.shape) else
                                 f"rank {comm.rank} passed X of shape {X.shape}, rank 0 {tuple(root)}: with "
                                 "rows='global' every rank passes the same arrays (rows='local': its own rows)")
            part = make_shard(len(X), comm.rank, comm.size, self.shard)
            X, w = part.take(X), None if w is None else part.take(w)
        return row_blocks(X), w, X.shape[1], X.dtype

    def _view_blocks(self, X, sample_weight, comm, first):
        """A RowView of the global rows (a search's fold, data/rows.py): this rank reads only its
        shard of it; the checks _array makes, agreed by all ranks."""
        from mpinn.data.partition import make_shard
        from mpinn.parallel.agree import collective_check

        if self.rows != "global":
            raise ValueError(f"{type(self).__name__}: a RowView holds the global rows; rows='local' takes arrays")
        n_features = X.shape[1]
        if first:
            self.n_features_in_ = n_features
            self.__dict__.pop("feature_names_in_", None)
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        part = make_shard(len(X), comm.rank, comm.size, self.shard)
        try:
            block = X.read(part.rows)
            problem = f"Input X contains infinity or a value too large for dtype({block.dtype.name!r})." \
                if np.isinf(block).any() else None
        except OSError as exc:  # a file one rank cannot read fails every rank, none left waiting
            block, problem = None, f"{X.path}: {exc}"
        collective_check(comm, problem)
        w = self._weights(sample_weight, len(X))
        return row_blocks(block), None if w is None else part.take(w), n_features, block.dtype

    def _weights(self, sample_weight, n_rows):
        """sample_weight as float64, one per row of X (with rows='global', not all zero)."""
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64).ravel()
        if len(w) != n_rows:
            raise ValueError(f"sample_weight.shape == {np.shape(sample_weight)}, expected ({n_rows},)!")
        if self.rows == "global" and not w.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return w

    def _transform_read(self, X):
        """transform of a block a RowView has just read (data/rows.py): in place, as no one else
        holds it."""
        return self.transform_inplace(self._array(X, reset=False, copy=False))

    # -- fit --

    def fit(self, X, y=None, sample_weight=None, *, x_name="X"):
        """Statistics of the rows of all ranks (see ``rows``); X may be an HDF5 path (dataset
        ``x_name``), each rank then reads only its rows, in chunks. Collective."""
        self._reset()
        return self.partial_fit(X, y, sample_weight, x_name=x_name)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y, **fit_params).transform(X)

    def _reset(self):
        for name in ("n_samples_seen_", "n_features_in_", "feature_names_in_", *self._fitted):
            self.__dict__.pop(name, None)

    def to_sklearn(self):
        """scikit-learn's own scaler carrying these statistics (needs scikit-learn)."""
        from sklearn import preprocessing

        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k in preprocessing.__dict__[type(self).__name__]().get_params()}
        sk = getattr(preprocessing, type(self).__name__)(**params)
        for name in ("n_features_in_", "n_samples_seen_", "feature_names_in_", *self._fitted):
            if hasattr(self, name):
                value = getattr(self, name)
                setattr(sk, name, value.copy() if isinstance(value, np.ndarray) else value)
        return sk


class StandardScaler(_Scaler):
    """scikit-learn's StandardScaler, its statistics reduced across ranks.

    ``rows='global'`` (default): every rank passes the same arrays (as mpinn's estimators expect)
    and summarises its shard of them (``shard``); ``rows='local'``: every rank passes only its own
    rows. ``fit`` also takes an HDF5 path. Fitted attributes as scikit-learn's: mean_, var_,
    scale_, n_samples_seen_, n_features_in_ (feature_names_in_ for a DataFrame).
    """

    _fitted = ("mean_", "var_", "scale_")

    def __init__(self, *, copy=True, with_mean=True, with_std=True, rows="global", shard="block", comm=None):
        super().__init__(copy=copy, rows=rows, shard=shard, comm=comm)
        self.with_mean, self.with_std = with_mean, with_std

    def partial_fit(self, X, y=None, sample_weight=None, *, x_name="X"):
        comm = as_comm(self.comm)
        blocks, w, n_features, _ = self._local_blocks(X, sample_weight, comm, x_name)
        batch = reduce_moments(blocks_moments(blocks, n_features, w), comm)
        if hasattr(self, "n_samples_seen_"):  # sklearn's partial_fit: add to the statistics so far
            seen = np.broadcast_to(np.asarray(self.n_samples_seen_, dtype=np.float64), (n_features,))
            mean = np.zeros(n_features) if self.mean_ is None else self.mean_
            var = np.zeros(n_features) if self.var_ is None else self.var_
            batch = combine_moments(np.stack([seen, mean, var * seen]), batch)
        self._set_moments(batch)
        return self

    def _set_moments(self, moments):
        n, mean, m2 = moments
        # As scikit-learn 1.9: float counts, one number when no feature has missing values.
        self.n_samples_seen_ = n[0] if n.max() == n.min() else n
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, mean, np.nan)
            var = m2 / n
        if not self.with_mean and not self.with_std:
            self.mean_ = self.var_ = self.scale_ = None
            return
        self.mean_ = mean
        self.var_ = var if self.with_std else None
        self.scale_ = None
        if self.with_std:
            scale = np.sqrt(var)
            scale[is_constant(var, mean, n)] = 1.0
            self.scale_ = scale

    def transform(self, X, copy=None):
        self._check_fitted()
        if is_row_view(X):  # applied as its rows are read
            return X.with_transform(self._transform_read)
        X = self._array(X, reset=False, copy=self.copy if copy is None else copy)
        return self.transform_inplace(X)

    def transform_inplace(self, X):
        """scikit-learn's arithmetic (X -= mean_; X /= scale_), in place on a float array."""
        if self.with_mean and self.mean_ is not None:
            X -= self.mean_
        if self.with_std and self.scale_ is not None:
            X /= self.scale_
        return X

    def inverse_transform(self, X, copy=None):
        self._check_fitted()
        X = self._array(X, reset=False, copy=self.copy if copy is None else copy)
        if self.with_std and self.scale_ is not None:
            X *= self.scale_
        if self.with_mean and self.mean_ is not None:
            X += self.mean_
        return X


class MinMaxScaler(_Scaler):
    """scikit-learn's MinMaxScaler, its minimum and maximum reduced across ranks (exact on any
    rank count). ``rows``, ``shard``, ``comm`` and HDF5 paths as StandardScaler. Fitted
    attributes: data_min_, data_max_, data_range_, scale_, min_, n_samples_seen_, n_features_in_.
    """

    _fitted = ("min_", "scale_", "data_min_", "data_max_", "data_range_")

    def __init__(self, feature_range=(0, 1), *, copy=True, clip=False, rows="global", shard="block", comm=None):
        super().__init__(copy=copy, rows=rows, shard=shard, comm=comm)
        self.feature_range, self.clip = feature_range, clip

    def fit(self, X, y=None, *, x_name="X"):
        """Minimum and maximum over the rows of all ranks (see StandardScaler.fit). Collective."""
        self._reset()
        return self.partial_fit(X, y, x_name=x_name)

    def partial_fit(self, X, y=None, *, x_name="X"):
        low, high = self.feature_range
        if low >= high:
            raise ValueError(f"Minimum of desired feature range must be smaller than maximum. Got {self.feature_range!r}.")
        comm = as_comm(self.comm)
        blocks, _, n_features, dtype = self._local_blocks(X, None, comm, x_name)
        data_min, data_max, n = reduce_range(blocks, n_features, comm)
        # As sklearn: the statistics in the data's float type; a feature with no value is NaN.
        data_min = np.where(np.isinf(data_min), np.nan, data_min)
        data_max = np.where(np.isinf(data_max), np.nan, data_max)
        if hasattr(self, "n_samples_seen_"):
            data_min, data_max = np.fmin(self.data_min_, data_min), np.fmax(self.data_max_, data_max)
            n += self.n_samples_seen_
        self._set_range(data_min.astype(dtype), data_max.astype(dtype), n)
        return self

    def _set_range(self, data_min, data_max, n):
        low, high = self.feature_range
        self.n_samples_seen_ = n
        self.data_min_, self.data_max_ = data_min, data_max
        self.data_range_ = data_max - data_min
        self.scale_ = (data_max.dtype.type(high) - data_max.dtype.type(low)) / nonzero_scale(self.data_range_)
        self.min_ = data_max.dtype.type(low) - data_min * self.scale_

    def transform(self, X):
        self._check_fitted()
        if is_row_view(X):  # applied as its rows are read
            return X.with_transform(self._transform_read)
        return self.transform_inplace(self._array(X, reset=False, copy=self.copy))

    def transform_inplace(self, X):
        """scikit-learn's arithmetic (X *= scale_; X += min_; clip), in place on a float array."""
        X *= self.scale_
        X += self.min_
        if self.clip:
            np.clip(X, self.feature_range[0], self.feature_range[1], out=X)
        return X

    def inverse_transform(self, X):
        self._check_fitted()
        X = self._array(X, reset=False, copy=self.copy)
        X -= self.min_
        X /= self.scale_
        return X


def _equal(a, b):
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (TypeError, ValueError):
        return False

"""Feature scaling with statistics reduced across ranks: StandardScaler, MinMaxScaler. No MPI here.

Each rank summarises its own rows; the summaries are combined with reductions through a
``comm.Comm``, so no rank ever holds all the rows. Standardisation uses per-feature moments
(count, mean, sum of squared deviations M2): within a block of rows two passes (mean first),
blocks and ranks combined with the pooled formula of Chan, Golub & LeVeque,
M2 = sum_r M2_r + sum_r n_r (mean_r - mean)^2, which never subtracts two large sums. The
result differs between rank counts only by rounding (about 1e-16 relative).

The two transformers follow scikit-learn's StandardScaler and MinMaxScaler (parameters,
fitted attributes, transform arithmetic) and work inside sklearn.pipeline.Pipeline under
mpiexec. `mpinn train --scale` uses the same classes (``fit_scaler``, ``scale_problem``), and
checkpoints store their fitted attributes (``scaler_arrays``, ``scaler_from_arrays``).
"""

from __future__ import annotations

import inspect
import os

import numpy as np

from .stream import DEFAULT_CHUNK_BYTES

SCALES = ("standard", "minmax", "none")
ROWS = ("global", "local")


# ---- statistics: pure functions of arrays --------------------------------------------------


def block_moments(X, weights=None):
    """(3, n_features) float64: per feature the count (or weight) of non-NaN values, their mean
    and the sum of (weighted) squared deviations from that mean, in two passes over ``X``."""
    X = np.asarray(X)
    out = np.zeros((3, X.shape[1]))
    if len(X) == 0:
        return out
    X = X.astype(np.float64, copy=False)
    valid = ~np.isnan(X)
    # The corrected two-pass algorithm (Chan, Golub & LeVeque, eq. 1.7, as scikit-learn's):
    # the sum of deviations from the first mean corrects both the mean and M2.
    if weights is None and valid.all():  # the training data's case: no masks, no weights
        n = out[0] = len(X)
        d = X - X.sum(axis=0) / n
        correction = d.sum(axis=0)
        out[1] = X.sum(axis=0) / n + correction / n
        out[2] = np.einsum("ij,ij->j", d, d) - correction * correction / n
        return out
    W = valid * (1.0 if weights is None else np.asarray(weights, dtype=np.float64)[:, None])
    X0 = np.where(valid, X, 0.0)
    n = out[0] = W.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, (W * X0).sum(axis=0) / n, 0.0)
        d = np.where(valid, X0 - mean, 0.0)
        correction = (W * d).sum(axis=0)
        out[1] = np.where(n > 0, mean + correction / n, 0.0)
        out[2] = np.where(n > 0, (W * d * d).sum(axis=0) - correction * correction / n, 0.0)
    return out


def combine_moments(a, b):
    """Moments of the union of two disjoint sets of rows (Chan et al.'s pairwise update)."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(n > 0, nb / n, 0.0)
    delta = mb - ma
    return np.stack([n, np.where(nb > 0, ma + delta * f, ma), sa + sb + delta * delta * na * f])


def reduce_moments(local, comm):
    """Moments over every rank's rows from each rank's own (two small Allreduces, O(features))."""
    n, mean, m2 = local
    first = comm.allreduce(np.concatenate([n, n * mean]), "sum")
    total = first[: len(n)]
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(total > 0, first[len(n):] / total, 0.0)
    spread = comm.allreduce(m2 + n * (mean - pooled) ** 2, "sum")
    return np.stack([total, pooled, spread])


def local_minmax(blocks, n_features):
    """(2, n_features): NaN-ignoring minimum and maximum over blocks of rows (+inf/-inf if none)."""
    low, high = np.full(n_features, np.inf), np.full(n_features, -np.inf)
    for rows in blocks:
        if len(rows):
            with np.errstate(invalid="ignore"):
                np.fmin(low, np.nanmin(np.where(np.isnan(rows), np.inf, rows), axis=0), out=low)
                np.fmax(high, np.nanmax(np.where(np.isnan(rows), -np.inf, rows), axis=0), out=high)
    return np.stack([low, high])


def row_blocks(X, rows=None):
    """This rank's rows in blocks: the chunks a StreamingRows reads (one streamed pass), or
    blocks of an array of the same size, so streamed and in-memory statistics agree bitwise.
    ``rows``: local positions to use (sorted here), or None for all rows."""
    if hasattr(X, "iter_chunks") and rows is None:
        yield from (chunk for _, chunk in X.iter_chunks())
        return
    n_features = X.shape[1]
    step = max(1, DEFAULT_CHUNK_BYTES // max(1, n_features * np.dtype(X.dtype).itemsize))
    if rows is None:
        for lo in range(0, len(X), step):
            yield X[lo:lo + step]
        return
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    for lo in range(0, len(rows), step):
        yield X[rows[lo:lo + step]]


def _is_constant(var, mean, n):
    """scikit-learn's test for a feature indistinguishable from a constant (its scale becomes 1)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


def _nonzero(scale):
    scale = np.array(scale, copy=True)
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    return scale


def _serial_or_world(comm):
    from .comm import Comm, world

    if comm is None:
        try:
            return world()
        except ImportError:  # no mpi4py: one process
            from .estimator_fit import _SerialComm

            return Comm(_SerialComm())
    return comm if isinstance(comm, Comm) else Comm(comm)


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
            from .inputs import sklearn_or_own

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
        from .inputs import check_X

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
        from .partition import make_shard
        from .problem import collective_check

        if self.rows not in ROWS:
            raise ValueError(f"The 'rows' parameter of {type(self).__name__} must be one of {ROWS}. "
                             f"Got {self.rows!r} instead.")
        first = not self.__sklearn_is_fitted__()
        if hasattr(X, "filename") and hasattr(X, "keys"):  # an open h5py.File
            X = X.filename
        if isinstance(X, (str, os.PathLike)):
            if sample_weight is not None:
                raise ValueError("sample_weight is not supported with an HDF5 path")
            from . import data as datamod
            from .problem import decide_on_root
            from .stream import StreamingRows

            path = os.fspath(X)
            info = datamod.DataInfo(**decide_on_root(comm, lambda: datamod.inspect(path, x_name, require_y=False)
                                                     .to_json()))
            if not first and info.n_features != self.n_features_in_:
                raise ValueError(f"X has {info.n_features} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            self.n_features_in_ = info.n_features
            shard = make_shard(info.n_rows, comm.rank, comm.size, self.shard)
            stream = StreamingRows(path, x_name, shard, info.n_features, np.float64, read_ahead=0)
            return _closing(stream), None, info.n_features, np.dtype(np.float64)
        X = self._array(X, reset=first, copy=False)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
        if w is not None and len(w) != len(X):
            raise ValueError(f"sample_weight.shape == {np.shape(sample_weight)}, expected ({len(X)},)!")
        if w is not None and self.rows == "global" and not w.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        if self.rows == "global":
            if comm.size > 1:
                root = comm.bcast_json(list(X.shape))
                collective_check(comm, None if root == list(X.shape) else
                                 f"rank {comm.rank} passed X of shape {X.shape}, rank 0 {tuple(root)}: with "
                                 "rows='global' every rank passes the same arrays (rows='local': its own rows)")
            part = make_shard(len(X), comm.rank, comm.size, self.shard)
            X, w = part.take(X), None if w is None else part.take(w)
        return row_blocks(X), w, X.shape[1], X.dtype

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
        comm = _serial_or_world(self.comm)
        blocks, w, n_features, _ = self._local_blocks(X, sample_weight, comm, x_name)
        local = np.zeros((3, n_features))
        pos = 0
        for rows in blocks:
            part = None if w is None else w[pos:pos + len(rows)]
            local = combine_moments(local, block_moments(rows, part))
            pos += len(rows)
        batch = reduce_moments(local, comm)
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
            scale[_is_constant(var, mean, n)] = 1.0
            self.scale_ = scale

    def transform(self, X, copy=None):
        self._check_fitted()
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
        comm = _serial_or_world(self.comm)
        blocks, _, n_features, dtype = self._local_blocks(X, None, comm, x_name)
        data_min, data_max, n = _reduce_range(blocks, n_features, comm)
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
        self.scale_ = (data_max.dtype.type(high) - data_max.dtype.type(low)) / _nonzero(self.data_range_)
        self.min_ = data_max.dtype.type(low) - data_min * self.scale_

    def transform(self, X):
        self._check_fitted()
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


def _reduce_range(blocks, n_features, comm):
    """Collective: (minimum, maximum, rows) over every rank's blocks of rows."""
    count = [0]

    def counted():
        for rows in blocks:
            count[0] += len(rows)
            yield rows

    low, high = local_minmax(counted(), n_features)
    buf = comm.allreduce(np.concatenate([low, -high]), "min")
    n = int(comm.allreduce(np.array([count[0]], dtype=np.int64), "sum")[0])
    return buf[:n_features], -buf[n_features:], n


def _equal(a, b):
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (TypeError, ValueError):
        return False


def _closing(stream):
    try:
        yield from row_blocks(stream)
    finally:
        stream.close()


# ---- `mpinn train --scale`, the checkpoint, the search ------------------------------------------

_KINDS = {"standard": StandardScaler, "minmax": MinMaxScaler}
# What a checkpoint stores of each kind (under state/scaler/<kind>/), everything predict needs.
_STORED = {"standard": ("mean_", "var_", "scale_", "n_samples_seen_"),
           "minmax": ("data_min_", "data_max_", "data_range_", "scale_", "min_", "n_samples_seen_")}


def fit_scaler(kind, X, comm, rows=None):
    """A fitted scaler of ``kind`` ('standard' or 'minmax'; None for 'none') from this rank's rows
    ``X`` (an array or a StreamingRows, read in one streamed pass) at local positions ``rows``
    (None: all). Collective: every rank gets the same statistics of all ranks' rows."""
    if kind == "none":
        return None
    scaler = _KINDS[kind](rows="local", comm=comm)
    scaler.n_features_in_ = X.shape[1]
    blocks = row_blocks(X, rows)
    if kind == "standard":
        local = np.zeros((3, X.shape[1]))
        for part in blocks:
            local = combine_moments(local, block_moments(part))
        scaler._set_moments(reduce_moments(local, comm))
    else:
        scaler._set_range(*_reduce_range(blocks, X.shape[1], comm))
    scaler.comm = None
    return scaler


def scale_problem(problem, kind, comm, fitted=None):
    """Scale a Problem's features in place with ``fitted``, or with a scaler of ``kind`` fitted on
    its training rows (collective); the test and validation rows use the same statistics. A
    streamed X is scaled chunk by chunk as it is read. Returns the scaler (None for 'none')."""
    if fitted is None:
        rows = None
        if len(problem.train_rows) != problem.shard.n_rows:  # held-out rows do not count
            rows = problem.train_rows.local
        fitted = fit_scaler(kind, problem.X, comm, rows)
    if fitted is None:
        return None
    for name in ("X", "test_X", "val_X"):
        apply_scaler(fitted, getattr(problem, name, None))
    problem.scaler = fitted
    return fitted


def apply_scaler(scaler, X):
    """Scale a rank's rows in place: an array now, a StreamingRows as its chunks are read."""
    if scaler is None or X is None:
        return X
    if hasattr(X, "set_transform"):
        X.set_transform(scaler.transform_inplace)
    elif len(X):
        scaler.transform_inplace(X)
    return X


def scaler_kind(scaler):
    return None if scaler is None else next(k for k, cls in _KINDS.items() if isinstance(scaler, cls))


def scaler_arrays(scaler):
    """{name: array} of a fitted scaler, for a checkpoint (names 'scaler/<kind>/<attribute>')."""
    if scaler is None:
        return {}
    kind = scaler_kind(scaler)
    return {f"scaler/{kind}/{name}": np.asarray(getattr(scaler, name)) for name in _STORED[kind]}


def scaler_from_arrays(arrays):
    """The fitted scaler stored by ``scaler_arrays`` (keys relative to /state), or None."""
    for kind, cls in _KINDS.items():
        prefix = f"scaler/{kind}/"
        if any(k.startswith(prefix) for k in arrays):
            scaler = cls()
            for name in _STORED[kind]:
                value = np.asarray(arrays[prefix + name])
                setattr(scaler, name, value[()] if value.ndim == 0 else value)
            scaler.n_features_in_ = len(scaler.scale_)
            return scaler
    return None

"""HDF5 data: layout checks, reading one rank's rows, the train/test split, the batch schedule.

No MPI here. Each rank opens the file read-only and reads its shard as one hyperslab. The
global batch schedule is a function of the seed and the data only, so every rank computes the
same sequence of global batches and takes from each the rows it owns.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import InputError


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
        class_names = f.attrs.get("class_names")
        if class_names is not None:
            class_names = json.loads(class_names)
        return DataInfo(str(path), x_name, y_name, int(X.shape[0]), int(X.shape[1]),
                        y_shape, y_kind, class_names)


def read_shard(h5file, info: DataInfo, shard, dtype, *, with_y=True, with_x=True):
    """This rank's rows of X (as ``dtype``) and y, read as one hyperslab each.

    ``h5file`` is an open h5py.File (tests pass one over an instrumented file object to check
    that no byte outside the shard is read). ``with_x=False`` (streaming) returns X as None.
    """
    sel = shard.as_slice()
    X = None
    if with_x:
        X = np.asarray(h5file[info.x_name][sel], dtype=dtype)
        X = X.reshape(shard.count, info.n_features)
    y = None
    if with_y:
        ds = h5file[info.y_name]
        if info.y_kind == "str":
            y = np.array(ds.asstr()[sel], dtype=str).reshape(shard.count)
        else:
            y = ds[sel].reshape((shard.count,) + tuple(info.y_shape[1:]))
    return X, y


def index_dtype(n):
    """int32 when indices 0..n-1 fit in it, else int64: row-index arrays over the global rows
    (train rows, the epoch's order) in half the memory, holding the same values."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


def train_test_split_indices(n_rows, test_fraction, seed):
    """(train, test) global row indices, as sklearn's train_test_split(random_state=seed).

    test count = ceil(fraction * n); order is the permutation's, so the same seed gives the
    same split as sklearn, whatever the number of ranks.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n_rows)
    if n_test < 1 or n_test >= n_rows:
        raise InputError(f"--test-fraction {test_fraction} leaves no train or no test rows of {n_rows}")
    perm = np.random.RandomState(seed).permutation(n_rows)
    itype = index_dtype(n_rows)
    return perm[n_test:].astype(itype), perm[:n_test].astype(itype)


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


class BatchSchedule:
    """The sequence of minibatches, as local row positions for this rank.

    shuffle='global': each epoch permutes the training order with the model's RandomState
    exactly as sklearn's ``shuffle(sample_idx, random_state)`` does, then cuts consecutive
    global batches; this rank keeps the rows it owns. The sequence does not depend on N.
    shuffle='none': the same, unpermuted. shuffle='local': each rank permutes its own rows and
    cuts them into as many pieces as there are global batches (faster, depends on N).
    """

    def __init__(self, train_rows, batch_size, shuffle, random_state, shard, local_seed=0, stream=None):
        # Kept in the integer type given (int32 from load_problem when the rows fit), not
        # copied to int64: 4 bytes per global row less on every rank.
        self.train_rows = np.asarray(train_rows)
        if self.train_rows.dtype.kind not in "iu":
            self.train_rows = self.train_rows.astype(np.int64)
        self.n_train = len(self.train_rows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.random_state = random_state
        self.shard = shard
        # Positions into train_rows, in the smallest type that holds them (index_dtype).
        self.order = np.arange(self.n_train, dtype=index_dtype(self.n_train))
        self.n_steps = math.ceil(self.n_train / batch_size)
        self.local_seed = local_seed
        # A StreamingRows X (mpinn.stream): batches must visit its chunks in order, so
        # 'local' shuffles the chunk order and the rows within each chunk instead.
        self.stream = stream
        if shuffle == "local" and stream is not None:
            self.local_rows = None  # streaming trains on the whole shard (no --test-fraction)
        elif shuffle == "local":
            self.local_rows = shard.local_positions(self.train_rows)[1]

    def epoch(self, epoch_index=0, start_step=0):
        """Yield this rank's local row positions for each step of an epoch (maybe empty).

        ``start_step`` > 0 resumes an epoch part-way: the order is the one already drawn for
        it (restored from a checkpoint), so nothing is drawn again.
        """
        if self.shuffle == "local":
            # Drawn from (seed, epoch, rank, size) alone, so a resumed epoch redraws the same.
            rng = np.random.RandomState([self.local_seed, epoch_index, self.shard.rank, self.shard.size])
            if self.stream is not None:
                from .stream import chunk_order_rows

                rows, order = chunk_order_rows(self.shard.count, self.stream.chunk_rows, rng)
                self.stream.set_order(order)
            else:
                rows = self.local_rows.copy()
                rng.shuffle(rows)
            yield from np.array_split(rows, self.n_steps)[start_step:]
            return
        if self.stream is not None:
            self.stream.set_order(np.arange(self.stream.n_chunks))
        if self.shuffle == "global" and start_step == 0:
            # The draw is sklearn's: shuffle an int64 arange (the permutation does not depend
            # on the stored type; only the composed order is kept, in order's smaller type).
            perm = np.arange(self.n_train, dtype=np.int64)
            self.random_state.shuffle(perm)
            order = self.order[perm]
            del perm
            self.order = order
        for start in range(start_step * self.batch_size, self.n_train, self.batch_size):
            batch = self.train_rows[self.order[start : start + self.batch_size]]
            yield self.shard.local_positions(batch)[1]

    def state(self):
        """The epoch's order as checkpoints store it (int64, whatever is kept in memory)."""
        return {"order": self.order.astype(np.int64)}

    def load_state(self, arrays):
        self.order = np.asarray(arrays["order"]).astype(index_dtype(self.n_train))

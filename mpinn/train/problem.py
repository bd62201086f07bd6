"""Turn a config into what one rank trains on: its shard, the split, the classes.

Rank 0 checks the files' layout and broadcasts what it found; each rank then reads only its
own rows and checks them, and any rank's complaint becomes every rank's InputError (one
message, before training starts). Data can also come from in-memory arrays (the estimators),
in which case each rank keeps only its shard's rows of the arrays it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mpinn.data import hdf5 as datamod
from mpinn.data.columns import plan_columns
from mpinn.errors import InputError
from mpinn.data.partition import Shard, make_shard
from mpinn.data.schedule import TrainRows, index_dtype, resolve_permutation, split_rows
from mpinn.data.stream import EncodedRows
from mpinn.nn.model import encode_targets
from mpinn.parallel.agree import collective_check, on_root

# Class labels are integers; the set present is found by a MAX-reduction of a presence
# vector over [min, max], which stays small for any sane label coding.
MAX_LABEL_SPAN = 1_000_000


@dataclass(frozen=True)
class Problem:
    """What one rank trains on. Immutable: a change (reshard, scaling, the validation hold-out)
    is a new Problem (dataclasses.replace), so whoever holds one sees it unchanged."""

    task: str                   # "classify" or "regress"
    X: np.ndarray               # this rank's rows (n_local, n_features), training dtype
    y: np.ndarray               # this rank's raw labels / targets
    shard: Shard
    train_rows: TrainRows       # the training rows (a global array of row ids is converted)
    n_features: int
    classes: np.ndarray | None = None
    class_names: list | None = None
    n_outputs: int = 1
    task_reason: str | None = None    # why --task auto chose ``task`` (the start line says it)
    task_warning: str | None = None   # --task auto chose classification with suspiciously many classes
    feature_names: list | None = None  # the data file's feature names, kept by the model
    encoding: dict | None = None       # the data file's categorical encoding (data/columns.py)
    test_X: np.ndarray | None = None   # this rank's test rows
    test_y: np.ndarray | None = None
    # Set by the estimators (estimators/fit.py); the CLI leaves them None.
    Y: np.ndarray | None = None              # this rank's targets already in output space
    sample_weight: np.ndarray | None = None  # this rank's per-row weights
    val_X: np.ndarray | None = None          # this rank's validation rows (early stopping)
    val_Y: np.ndarray | None = None          # ... their targets in output space
    val_weight: np.ndarray | None = None     # ... their weights
    stream: object | None = None             # X as mpinn.stream.StreamingRows (load_problem(stream=True))
    scaler: object | None = None             # the feature scaling applied to X (preprocessing.training.scale_problem)

    def __post_init__(self):
        if not isinstance(self.train_rows, TrainRows):  # global row ids, the same on every rank
            # The one conversion, while the instance is being made (hence past frozen).
            object.__setattr__(self, "train_rows", TrainRows.from_array(self.train_rows, self.shard))

    def close(self):
        """Release a streamed X (its open file and read-ahead thread); in-memory data needs nothing."""
        if self.stream is not None:
            self.stream.close()


def first_non_finite_row(X, block=None):
    """Index of the first row holding NaN or Inf, or None; checked a block of rows at a time
    so the check never allocates a mask the size of the shard (peak memory = shard + a little).

    The default block makes a mask of at most 64 KiB: a mask of megabytes, freed, would
    raise glibc's mmap threshold and stay resident in the heap for the rest of the run."""
    if block is None:
        block = max(1, (64 << 10) // max(1, X.shape[1] if X.ndim > 1 else 1))
    for start in range(0, len(X), block):
        part = X[start:start + block]
        if not np.isfinite(part).all():
            return start + int(np.argwhere(~np.isfinite(part))[0][0])
    return None


def check_values(comm, X, y, path, task, shard=None):
    """Each rank checks its own rows; the verdict is agreed by all (see collective_check)."""
    problem = None
    bad = X.first_non_finite_row() if hasattr(X, "first_non_finite_row") else first_non_finite_row(X)
    if bad is not None:
        where = f"row {int(shard.rows[bad])}" if shard is not None else f"row {bad} of rank {comm.rank}'s part"
        problem = f"{path}: features contain NaN or Inf ({where})"
    elif y is not None and task == "regress" and not np.isfinite(y).all():
        problem = f"{path}: regression targets contain NaN or Inf"
    elif y is not None and task == "classify" and y.dtype.kind == "f" and not (
            np.isfinite(y).all() and (y == np.round(y)).all()):
        problem = f"{path}: classification labels must be integers (found non-integer values); use --task regress for real targets"
    collective_check(comm, problem)


def find_classes(comm, y_parts):
    """Sorted set of labels present on any rank.

    Integer labels: a MAX-reduction of presence flags over [min, max]. String labels: each rank's
    distinct labels gathered to rank 0, whose sorted union is broadcast.
    """
    if any(p is not None and np.asarray(p).dtype.kind == "U" for p in y_parts):
        local = sorted(set().union(*(np.unique(p).tolist() for p in y_parts if p is not None)))
        union = comm.gather_json(local)
        classes = comm.bcast_json(sorted(set().union(*union)) if comm.rank == 0 else None)
        if len(classes) < 2:
            raise InputError(f"classification needs at least 2 classes, found {len(classes)}: {classes}")
        return np.array(classes, dtype=str)
    y_all = [np.asarray(p).astype(np.int64, copy=False).ravel() for p in y_parts if p is not None and len(p)]
    bounds = np.array([min((p.min() for p in y_all), default=np.iinfo(np.int64).max),
                       -max((p.max() for p in y_all), default=np.iinfo(np.int64).min + 1)], dtype=np.int64)
    comm.allreduce(bounds, "min")
    low, high = int(bounds[0]), int(-bounds[1])
    if high - low + 1 > MAX_LABEL_SPAN:
        raise InputError(f"class labels span {low}..{high}; recode them to 0..K-1 (e.g. with `mpinn data convert`)")
    present = np.zeros(high - low + 1, dtype=np.int8)
    for p in y_all:
        present[p - low] = 1
    comm.allreduce(present, "max")
    classes = np.flatnonzero(present) + low
    if len(classes) < 2:
        raise InputError(f"classification needs at least 2 classes, found {len(classes)}: {classes.tolist()}")
    return classes


def auto_task(comm, info, y, shard):
    """(task, reason) for --task auto, by scikit-learn's type_of_target: integer, string and
    integral-valued float labels classify, real values (or several target columns) regress.

    Float labels are judged on every rank's own rows; the lowest global row holding a value
    that is not an integer is agreed by an Allreduce(MIN), so all ranks decide the same."""
    if len(info.y_shape) != 1:
        return "regress", f"auto: {info.y_shape[1]} target columns"
    if info.y_kind != "float":
        return "classify", f"auto: {'string' if info.y_kind == 'str' else 'integer'} labels"
    y = np.asarray(y, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    mine = int(shard.rows[bad[0]]) if len(bad) else info.n_rows
    first = np.array([mine], dtype=np.int64)
    comm.allreduce(first, "min")
    row = int(first[0])
    if row == info.n_rows:
        return "classify", "auto: float labels, all integral-valued"
    value = np.array([y[bad[0]] if mine == row else 0.0])
    comm.allreduce(value, "sum")  # only the owner of that row contributes
    return "regress", f"auto: float targets, row {row} holds {value[0]:g} (not an integer)"


def labels_as_classes(y, classes):
    """Labels in the classes' own type (integral floats become ints; strings stay strings)."""
    y = np.asarray(y)
    return y if classes.dtype.kind == "U" else y.astype(np.int64, copy=False)


def output_targets(problem, model):
    """Targets of this rank's rows in ``model``'s output space, so a step only gathers rows.
    Class targets are kept as small integer codes and one-hot / 0-1 encoded per batch (EncodedRows)."""
    p = problem
    if p.Y is not None:
        return p.Y
    if model.output in ("softmax", "logistic"):
        return EncodedRows(labels_as_classes(p.y, p.classes), p.classes, model.output, model.dtype)
    return encode_targets(p.y, p.classes, model.output, model.dtype)


def load_problem(cfg, comm, *, stream=False, chunk_rows=None) -> Problem:
    """Read and check this rank's part of the training (and test) data named in ``cfg``.

    ``stream=True`` (or ``cfg.stream``) keeps X in the file: problem.X is a StreamingRows that training reads in
    chunks of ``chunk_rows`` rows (default: about 8 MB) with read-ahead (bounded memory); y and
    the test data are read as usual.
    """
    import h5py

    if not cfg.data:
        raise InputError("--data FILE.h5 is required")
    info = datamod.DataInfo(**on_root(comm, lambda: datamod.inspect(cfg.data, cfg.x_name, cfg.y_name).to_json()))
    if info.n_rows < comm.size:
        raise InputError(f"{cfg.data}: {info.n_rows} rows is fewer than the {comm.size} ranks")
    task = cfg.task
    if task == "regress" and info.y_kind == "str":
        raise InputError(f"{cfg.data}: regression needs numeric targets, {info.y_name!r} holds strings")
    if task == "classify" and len(info.y_shape) != 1:
        raise InputError(f"{cfg.data}: classification needs 1-D labels, {info.y_name!r} has shape {info.y_shape}")
    test_info = test_plan = None
    if cfg.test_data:
        test_info = datamod.DataInfo(**on_root(
            comm, lambda: datamod.inspect(cfg.test_data, cfg.x_name, cfg.y_name).to_json()))
        # Columns by name when both files name them, as eval and predict take them.
        test_plan = plan_columns(info.feature_names, info.encoding, test_info.feature_names, test_info.encoding,
                                 cfg.test_data)
        if test_plan is None and test_info.n_features != info.n_features:
            raise InputError(f"{cfg.test_data}: {test_info.n_features} features but training data "
                             f"{cfg.data} has {info.n_features}")
        if (test_info.y_kind == "str") != (info.y_kind == "str"):
            raise InputError(f"{cfg.test_data}: labels are {test_info.y_kind}, training labels are {info.y_kind}")
        if test_info.y_shape[1:] != info.y_shape[1:]:
            raise InputError(f"{cfg.test_data}: targets have shape {test_info.y_shape}, training data {info.y_shape}")

    stream = stream or cfg.stream
    if stream:
        cfg.check_streaming()
    shard = make_shard(info.n_rows, comm.rank, comm.size, cfg.shard, seed=cfg.seed)
    with h5py.File(cfg.data, "r") as f:
        X, y = datamod.read_shard(f, info, shard, cfg.dtype, with_x=not stream)
    if stream:
        from mpinn.data.stream import StreamingRows

        X = StreamingRows(cfg.data, info.x_name, shard, info.n_features, cfg.dtype, chunk_rows=chunk_rows)
    reason = None
    if task == "auto" and info.task:
        task, reason = info.task, f"auto: the data file says {info.task} (data convert --task)"
    elif task == "auto":
        task, reason = auto_task(comm, info, y, shard)
    check_values(comm, X, y, cfg.data, task, shard)

    test_X = test_y = None
    # Each rank finds its own training and test rows (O(n/N) with the keyed permutation).
    train_rows, local = split_rows(info.n_rows, cfg.test_fraction, cfg.seed, shard,
                                   resolve_permutation(cfg.permutation, info.n_rows))
    if local is not None:
        test_X, test_y = X[local], y[local]
    if test_info is not None:
        test_shard = make_shard(test_info.n_rows, comm.rank, comm.size, "block")
        with h5py.File(cfg.test_data, "r") as f:
            test_X, test_y = datamod.read_shard(f, test_info, test_shard, cfg.dtype)
        if test_plan is not None:
            test_X = take_columns(comm, test_plan, test_X, test_info.feature_names, cfg.test_data, test_shard)
        check_values(comm, test_X, test_y, cfg.test_data, task, test_shard)

    classes, n_outputs, warning = None, 1, None
    if task == "classify":
        train_local = y[train_rows.local] if cfg.test_fraction else y
        classes = find_classes(comm, [train_local])
        if reason and not info.task and len(classes) > info.n_rows / 10:
            warning = many_classes_warning(cfg.data, len(classes), info.n_rows)
        if test_y is not None:
            unseen = np.setdiff1d(labels_as_classes(test_y, classes), classes)
            collective_check(comm, f"test labels {unseen[:5].tolist()} do not occur in the training data"
                             if len(unseen) else None)
    else:
        n_outputs = 1 if len(info.y_shape) == 1 else info.y_shape[1]
    return Problem(task=task, X=X, y=y, shard=shard, train_rows=train_rows,
                   n_features=info.n_features, classes=classes, class_names=info.class_names, n_outputs=n_outputs,
                   test_X=test_X, test_y=test_y, stream=X if stream else None, task_reason=reason,
                   task_warning=warning, feature_names=info.feature_names, encoding=info.encoding)


def take_columns(comm, plan, X, names, path, shard):
    """A shard's rows in the model's columns (data/columns.py's plan); an unseen category on any
    rank is every rank's error."""
    collective_check(comm, plan.unseen_problem(X, names, path, int(shard.rows[0]) if shard.count else 0))
    return plan.apply(X)


def many_classes_warning(path, n_classes, n_rows):
    """--task auto chose classification, but the labels look like a numeric target."""
    return (f"{path}: --task auto chose classification with {n_classes} classes for {n_rows} rows "
            "(more than one class per 10 rows): if the labels are a numeric target, pass --task regress "
            "(or convert with --task regress)")


def reshard(problem, cfg, comm, shares):
    """Give this rank the rows of its shard under ``shares`` (dynamic load balancing): rows it
    already holds are kept (copied), only the rows it gains are read from the file, X and y,
    each run of them as hyperslabs (a streamed X becomes a new StreamingRows, y is re-read).
    Test rows stay where load_problem put them (they are summed, not owned). Returns the new
    Problem; the old one's stream is closed. The old rows stay in memory while the new ones are
    gathered if the caller still holds the old Problem."""
    import h5py

    old = problem.shard
    shard = make_shard(old.n_rows, comm.rank, comm.size, cfg.shard, seed=cfg.seed, shares=shares)
    info = datamod.DataInfo(cfg.data, cfg.x_name, cfg.y_name, old.n_rows, problem.n_features,
                            [old.n_rows, *np.shape(problem.y)[1:]], "str" if problem.y.dtype.kind == "U" else "num")
    stream = problem.stream
    if stream is None and info.y_kind != "str":  # (strings: a gained label may be longer than any held)
        with h5py.File(cfg.data, "r") as f:
            X, y = keep_and_read(problem, f, info, shard, cfg.dtype)
        return replace(problem, X=X, y=y, shard=shard)
    with h5py.File(cfg.data, "r") as f:
        X, y = datamod.read_shard(f, info, shard, cfg.dtype, with_x=stream is None)
    if stream is not None:
        from mpinn.data.stream import StreamingRows

        stream.close()
        X = stream = StreamingRows(cfg.data, cfg.x_name, shard, problem.n_features, cfg.dtype,
                                   chunk_rows=stream.chunk_rows, read_ahead=stream.read_ahead)
    if problem.scaler is not None:  # the rows were re-read raw: scale them as the others
        from mpinn.preprocessing.training import apply_scaler

        apply_scaler(problem.scaler, X)
    return replace(problem, X=X, y=y, shard=shard, stream=stream)


def keep_and_read(problem, h5file, info, shard, dtype):
    """(X, y) of ``shard``: the rows ``problem`` holds copied (already scaled), the others read
    from ``h5file`` run by run (shard.pieces) and scaled as the problem's rows were."""
    held, old_local = problem.shard.local_positions(shard.rows)
    X = np.empty((shard.count, info.n_features), dtype=problem.X.dtype)
    y = np.empty((shard.count, *problem.y.shape[1:]), dtype=problem.y.dtype)
    X[held], y[held] = problem.X[old_local], problem.y[old_local]
    del old_local
    gained = np.flatnonzero(~held)
    breaks = np.flatnonzero(np.diff(gained) != 1) + 1
    for run in np.split(gained, breaks) if len(gained) else []:
        lo, hi = int(run[0]), int(run[-1]) + 1
        for src, dst in shard.pieces(lo, hi):
            X[lo:hi][dst] = h5file[info.x_name][src]
            y[lo:hi][dst] = h5file[info.y_name][src]
        if problem.scaler is not None:  # read raw: scaled as the others were
            problem.scaler.transform_inplace(X[lo:hi])
    return X, y


def problem_from_arrays(X, y, cfg, comm, *, task="classify") -> Problem:
    """Every rank passes the same global arrays; each keeps only its shard's rows of them."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or len(y) != len(X):
        raise InputError(f"X must be 2-D with one row per target, got X {X.shape} and y {y.shape}")
    if len(X) < comm.size:
        raise InputError(f"{len(X)} rows is fewer than the {comm.size} ranks")
    shard = make_shard(len(X), comm.rank, comm.size, cfg.shard, seed=cfg.seed)
    Xl = np.ascontiguousarray(shard.take(X), dtype=cfg.dtype)
    yl = shard.take(y)
    check_values(comm, Xl, yl, "X", task, shard)
    classes, n_outputs = None, 1
    if task == "classify":
        classes = find_classes(comm, [yl])
    elif y.ndim > 1:
        n_outputs = y.shape[1]
    return Problem(task=task, X=Xl, y=yl, shard=shard, train_rows=np.arange(len(X), dtype=index_dtype(len(X))),
                   n_features=X.shape[1], classes=classes, n_outputs=n_outputs)


def load_shard(path, comm, *, x_name="X", y_name="y", w_name=None, shard="block", dtype=None, task="classify"):
    """This rank's rows of an HDF5 file, for the estimators' fit(path): (X, y, weights, shard).

    As load_problem: rank 0 checks the layout, each rank reads only its rows and checks them.
    ``dtype`` None keeps float32 features in float32 and reads anything else as float64.
    """
    import h5py

    info = datamod.DataInfo(**on_root(comm, lambda: datamod.inspect(path, x_name, y_name).to_json()))

    def check_weights():
        with h5py.File(path, "r") as f:
            if w_name not in f or f[w_name].shape != (info.n_rows,):
                raise InputError(f"{path}: no 1-D dataset {w_name!r} with one weight per row")
            return str(f[x_name].dtype)

    def x_dtype():
        with h5py.File(path, "r") as f:
            return str(f[x_name].dtype)

    stored = on_root(comm, check_weights if w_name else x_dtype)
    if dtype is None:
        dtype = np.float32 if stored == "float32" else np.float64
    shard = make_shard(info.n_rows, comm.rank, comm.size, shard)
    with h5py.File(path, "r") as f:
        X, y = datamod.read_shard(f, info, shard, dtype)
        w = datamod.read_rows(f[w_name], shard, dtype) if w_name else None
    check_values(comm, X, y, path, task, shard)
    return X, y, w, shard

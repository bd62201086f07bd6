"""Parameter and input checks, label encoding and the early-stopping split for the estimators.

No MPI, no sklearn.

scikit-learn's semantics rewritten in numpy so that training never needs scikit-learn: the
checks raise ValueError with sklearn's wording where its test suite looks for it, the label
encoding is LabelBinarizer's, and the validation split draws from the model's RandomState
exactly as ``train_test_split(..., random_state=rs, stratify=...)`` does (ShuffleSplit, or
StratifiedShuffleSplit with ``_approximate_mode``), so the same seed picks the same rows.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """Raised by predict & co. before fit (sklearn's NotFittedError has the same bases)."""


class ConvergenceWarning(UserWarning):
    """Training stopped at max_iter before converging (sklearn's is used when it is loaded)."""


class DataConversionWarning(UserWarning):
    """A column vector y was passed where a 1-D array was expected."""


def sklearn_or_own(name):
    """sklearn.exceptions' class if scikit-learn is already imported (so filters and ``except``
    clauses written for sklearn work), else mpinn's own; never imports scikit-learn."""
    import sys

    ours = {"ConvergenceWarning": ConvergenceWarning, "DataConversionWarning": DataConversionWarning,
            "NotFittedError": NotFittedError}[name]
    if "sklearn.exceptions" in sys.modules:
        return getattr(sys.modules["sklearn.exceptions"], name, ours)
    return ours


def check_random_state(seed):
    """None -> numpy's global RandomState, int -> a new RandomState(seed), instance -> itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def _densify(a):
    if hasattr(a, "toarray") and hasattr(a, "format"):  # scipy.sparse: densified (see docs/api.md)
        return a.toarray()
    return a


def _is_pandas(a):
    return hasattr(a, "iloc") and hasattr(a, "dtypes")


def check_X(X, *, name="X", allow_nan=False):
    """X as a 2-D numeric array (not yet converted to the training dtype)."""
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D array of shape (n_samples, n_features)")
    X = _densify(X)
    if _is_pandas(X):
        X = X.to_numpy()
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported\n{}\n".format(X))
    if X.dtype.kind in "OUSV":
        if X.dtype.kind == "O":
            X = X.astype(np.float64)  # TypeError "argument must be a string or a real number"
        else:
            raise ValueError(f"{name} has dtype {X.dtype}; the features must be numeric")
    if X.ndim == 0:
        raise ValueError(f"Expected 2D array, got scalar array instead:\narray={X}.")
    if X.ndim == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array instead:\narray={X}.\nReshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) if it "
            "contains a single sample.")
    if X.ndim > 2:
        raise ValueError(f"Found array with dim {X.ndim}, while dim <= 2 is required.")
    if X.shape[0] < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.dtype.kind == "b":
        X = X.astype(np.float64)
    return X


def finite_problem(a, name):
    """sklearn's message for NaN or infinity in ``a``, or None."""
    if a.dtype.kind not in "fc" or np.isfinite(a).all():
        return None
    if np.isnan(a).any():
        return f"Input {name} contains NaN."
    return f"Input {name} contains infinity or a value too large for dtype({a.dtype.name!r})."


def train_dtype(X, dtype):
    """The training dtype: ``dtype`` if given, else float32 for float32 X, else float64 (as sklearn)."""
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32', 'float64' or None, got {dtype!r}")
        return dt
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


def check_sample_weight(sample_weight, n_samples, dtype):
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n_samples, sample_weight, dtype=dtype)
    else:
        if _is_pandas(sample_weight):
            sample_weight = sample_weight.to_numpy()
        sw = np.asarray(sample_weight, dtype=dtype)
        if sw.ndim != 1:
            raise ValueError(f"Sample weights must be 1D array or scalar, got {sw.ndim}D array. Expected "
                             f"either a scalar value or a 1D array of length {n_samples}.")
        if sw.shape != (n_samples,):
            raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(n_samples,)}!")
    problem = finite_problem(sw, "sample_weight")
    if problem:
        raise ValueError(problem)
    if not np.any(sw != 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    if np.any(sw < 0):
        raise ValueError("Negative values in data passed to `sample_weight`")
    return sw


def column_or_1d(y):
    """A (n, 1) y becomes 1-D with sklearn's DataConversionWarning."""
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape "
                      "of y to (n_samples, ), for example using ravel().", sklearn_or_own("DataConversionWarning"),
                      stacklevel=6)
        return y.ravel()
    return y


def check_y(y, n_samples, *, classifier):
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if _is_pandas(y):
        y = y.to_numpy()
    y = _densify(y)
    y = np.asarray(y)
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported\n{}\n".format(y))
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if len(y) != n_samples:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n_samples}, {len(y)}]")
    y = column_or_1d(y)
    if not classifier:
        if y.dtype.kind not in "fiub":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"y must be numeric for a regressor, got dtype {y.dtype}") from None
        problem = finite_problem(y.astype(np.float64, copy=False), "y")
        if problem:
            raise ValueError(problem)
    elif y.dtype.kind in "fc":
        problem = finite_problem(y, "y")
        if problem:
            raise ValueError(problem)
    return y


def type_of_target(y):
    """'binary', 'multiclass', 'multilabel-indicator', or an unsupported kind (as sklearn names them)."""
    if y.dtype.kind == "O" and y.size and not all(isinstance(v, str) for v in y.ravel()):
        kinds = {type(v) for v in y.ravel()}
        if not kinds <= {int, float, bool, np.int64, np.float64}:
            return "unknown"
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all():
            return "multilabel-indicator"
        return "multiclass-multioutput" if y.dtype.kind != "f" or (y == np.round(y)).all() else "continuous-multioutput"
    if y.dtype.kind == "f" and not (y == np.round(y)).all():
        return "continuous"
    if y.dtype.kind == "O" and y.size and all(isinstance(v, float) for v in y.ravel()) \
            and not all(float(v).is_integer() for v in y.ravel()):
        return "continuous"
    return "binary" if len(np.unique(y)) <= 2 else "multiclass"


def unique_labels(y):
    try:
        return np.unique(y)
    except TypeError:
        raise ValueError("Unknown label type: mix of label input types (string and number)") from None


class LabelCoding:
    """LabelBinarizer's mapping between labels and the network's output space.

    binary: one 0/1 column (logistic); multiclass: one-hot (softmax); multilabel-indicator: the
    0/1 matrix itself (logistic per column). With a single class, the column is all 0 and that
    class is always predicted.
    """

    def __init__(self, classes, y_type):
        self.classes = np.asarray(classes)
        self.y_type = y_type

    @classmethod
    def fit(cls, y):
        y_type = type_of_target(y)
        if y_type not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {y_type}. Maybe you are trying to fit a classifier, which "
                             "expects discrete classes on a regression target with continuous values.")
        if y_type == "multilabel-indicator":
            return cls(np.arange(y.shape[1]), y_type)
        classes = unique_labels(y)
        return cls(classes, "multiclass" if len(classes) > 2 else "binary")

    @property
    def output(self):
        return "softmax" if self.y_type == "multiclass" else "logistic"

    @property
    def n_outputs(self):
        return len(self.classes) if self.y_type != "binary" else 1

    def transform(self, y, dtype):
        if self.y_type == "multilabel-indicator":
            return np.asarray(y, dtype=dtype)
        idx = np.searchsorted(self.classes, y)
        idx = np.clip(idx, 0, len(self.classes) - 1)
        if len(y) and not np.all(self.classes[idx] == y):
            unseen = np.setdiff1d(unique_labels(y), self.classes)
            raise ValueError(f"y contains previously unseen labels: {unseen.tolist()}")
        if self.y_type == "binary":
            return (idx == 1).astype(dtype).reshape(-1, 1)
        onehot = np.zeros((len(y), len(self.classes)), dtype=dtype)
        onehot[np.arange(len(y)), idx] = 1
        return onehot

    def inverse(self, out):
        if self.y_type == "multilabel-indicator":
            return (out > 0.5).astype(int)
        if self.y_type == "multiclass":
            return self.classes.take(np.argmax(out, axis=1))
        if len(self.classes) == 1:
            return np.repeat(self.classes[0], len(out))
        return self.classes[(out[:, 0] > 0.5).astype(int)]

    def to_json(self):
        return {"classes": self.classes.tolist(), "y_type": self.y_type}


def split_sizes(n_samples, test_size):
    """(n_train, n_test) as sklearn's _validate_shuffle_split for a float test_size."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} should be either positive and smaller than the number of "
                         f"samples {n_samples} or a float in the (0, 1) range")
    n_test = math.ceil(test_size * n_samples)
    n_train = n_samples - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n_samples}, test_size={test_size} and train_size=None, the resulting "
                         "train set will be empty. Adjust any of the aforementioned parameters.")
    return n_train, n_test


def approximate_mode(class_counts, n_draws, rng):
    """sklearn.utils.extmath._approximate_mode, draw for draw."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def train_validation_split(n_samples, validation_fraction, rng, stratify=None):
    """(train, validation) row indices drawn from ``rng`` exactly as sklearn's
    ``train_test_split(range(n), test_size=validation_fraction, random_state=rng, stratify=...)``.

    ``stratify``: per-row class keys in the ORDER sklearn sorts them (early stopping passes the
    binarized target as bools, as sklearn's keys "False" < "True").
    """
    n_train, n_test = split_sizes(n_samples, validation_fraction)
    if stratify is None:
        permutation = rng.permutation(n_samples)
        return permutation[n_test : n_test + n_train], permutation[:n_test]
    classes, y_indices, class_counts = np.unique(stratify, return_inverse=True, return_counts=True)
    n_classes = len(classes)
    if np.min(class_counts) < 2:
        raise ValueError("The least populated classes in y have only 1 member, which is too few. The minimum "
                         "number of groups for any class cannot be less than 2. Classes with too few members "
                         f"are: {_keys(classes[class_counts < 2])}")
    if n_train < n_classes:
        raise ValueError(f"The train_size = {n_train} should be greater or equal to the number of classes = {n_classes}")
    if n_test < n_classes:
        raise ValueError(f"The test_size = {n_test} should be greater or equal to the number of classes = {n_classes}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = approximate_mode(class_counts, n_train, rng)
    t_i = approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(n_classes):
        permutation = rng.permutation(class_counts[i])
        perm_indices_class_i = class_indices[i].take(permutation, mode="clip")
        train.extend(perm_indices_class_i[: n_i[i]])
        test.extend(perm_indices_class_i[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _keys(classes):
    """Class keys as scikit-learn's message lists them: a binarized (bool) y as strings."""
    return [str(c) for c in classes] if classes.dtype == bool else classes.tolist()


def balanced_class_weight(counts):
    """n_samples / (n_classes * count) per class, as sklearn's compute_class_weight('balanced')."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts.sum() / (len(counts) * counts)

"""scikit-learn-compatible MLPClassifier and MLPRegressor that train data-parallel under mpiexec.

Change one import and launch with ``mpiexec -n N python script.py``: every rank passes the same
arrays (or an HDF5 path, so each rank reads only its rows), keeps only its shard, and all ranks
train in lockstep through the same Trainer as the CLI (train/loop.py). The numerics are sklearn's
formula for formula, so the same random_state gives the same model as
sklearn.neural_network at any rank count (to rounding). scikit-learn itself is optional: it is
used only by to_sklearn() and, when loaded, for the tags check_estimator reads.

Parameters, attributes and the differences from scikit-learn: docs/api.md. This module holds
the two public classes (targets, class_weight, partial_fit, predict, score); the shared sklearn
plumbing is base.py and fitting is fit.py.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from mpinn.data import inputs
from mpinn.errors import InputError
from mpinn.estimators.base import stochastic_only
from mpinn.estimators.fit import _FitMLP


class MLPClassifier(_FitMLP):
    """Multi-layer perceptron classifier; sklearn's MLPClassifier, data-parallel under mpiexec.

    Parameters as sklearn 1.9's MLPClassifier plus solver='gd', batch_size='full',
    class_weight, dtype, shard, sync, comm, checkpoint, checkpoint_every, keep_checkpoints, mlflow.
    See docs/api.md.
    """

    _classifier = True
    _estimator_type = "classifier"  # what scikit-learn < 1.6 reads instead of the tags

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, dtype=None, shard="block", sync="auto", comm=None, checkpoint=None,
                 checkpoint_every=0, keep_checkpoints=3, mlflow=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.dtype = dtype
        self.shard = shard
        self.sync = sync
        self.comm = comm
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.mlflow = mlflow

    def _output(self):
        return self._coding.output

    def _targets(self, yl, y_all, wl, comm, incremental, dtype):
        """Labels -> output space (LabelBinarizer's), class_weight folded into the weights."""
        if y_all is None:  # HDF5: the classes from every rank's rows
            if yl.ndim == 2:
                from mpinn.parallel.agree import collective_check

                collective_check(comm, None if np.isin(yl, (0, 1)).all() else
                                 "Unknown label type: multiclass-multioutput (2-D labels must be 0/1 indicators)")
                coding = inputs.LabelCoding(np.arange(yl.shape[1]), "multilabel-indicator")
            else:
                from mpinn.train.problem import find_classes

                try:
                    classes = find_classes(comm, [yl])
                except InputError as exc:
                    raise ValueError(str(exc)) from None
                coding = inputs.LabelCoding(classes, "multiclass" if len(classes) > 2 else "binary")
            labels = coding.classes
        else:
            coding = inputs.LabelCoding.fit(y_all)
            labels = coding.classes
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._coding = coding
            self.classes_ = coding.classes
        elif self.warm_start:
            if set(labels.tolist()) != set(self.classes_.tolist()):
                raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                 f"call to fit. Previously got {self.classes_}, `y` has {labels}")
        elif len(np.setdiff1d(labels, self.classes_)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                             f"'y' has {labels}.")
        Yl = self._coding.transform(yl, dtype)
        if self.class_weight is not None:
            wl = self._apply_class_weight(yl, Yl, wl, comm, dtype)
        return Yl, wl

    def _apply_class_weight(self, yl, Yl, wl, comm, dtype):
        if self._coding.y_type == "multilabel-indicator":
            raise ValueError("class_weight is not supported for multilabel targets")
        classes = self.classes_
        idx = np.searchsorted(classes, yl)
        if isinstance(self.class_weight, str):
            if self.class_weight != "balanced":
                raise ValueError(f"class_weight must be 'balanced', a dict or None, got {self.class_weight!r}")
            counts = comm.allreduce(np.bincount(idx, minlength=len(classes)).astype(np.float64), "sum")
            per_class = np.zeros(len(classes))
            present = counts > 0
            per_class[present] = inputs.balanced_class_weight(counts[present])
        elif isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(classes.tolist())
            if unknown:
                raise ValueError(f"class_weight has labels {sorted(unknown, key=str)} that are not in classes_ "
                                 f"{classes.tolist()}")
            per_class = np.array([float(self.class_weight.get(c, 1.0)) for c in classes.tolist()])
        else:
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {self.class_weight!r}")
        w = per_class[idx].astype(dtype)
        return w if wl is None else w * wl

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y, keeping the optimizer state; ``classes`` on the first call."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            y_arr = np.asarray(y) if not isinstance(X, (str, os.PathLike)) else None
            if y_arr is not None and inputs.type_of_target(y_arr) == "multilabel-indicator":
                self._coding = inputs.LabelCoding.fit(y_arr)
            else:
                cls = inputs.unique_labels(np.asarray(classes))
                self._coding = inputs.LabelCoding(cls, "multiclass" if len(cls) > 2 else "binary")
            self.classes_ = self._coding.classes
        elif classes is not None and not np.array_equal(self.classes_, inputs.unique_labels(np.asarray(classes))):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    partial_fit = stochastic_only(partial_fit)

    def predict(self, X):
        """Class labels (this rank, X as given; no communication)."""
        out = self._forward(X)
        return self._coding.inverse(out)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of classes_."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X):
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (subset accuracy for multilabel targets)."""
        pred = self.predict(X)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1 and pred.ndim == 1:
            y = y.ravel()
        ok = np.all(pred == y, axis=1) if pred.ndim == 2 else pred == y
        return float(np.average(ok, weights=sample_weight))


class MLPRegressor(_FitMLP):
    """Multi-layer perceptron regressor; sklearn's MLPRegressor, data-parallel under mpiexec.

    loss 'squared_error' or 'poisson' (exp output). Multi-output squared error: the gradient is
    the true gradient of the loss (averaged over outputs); sklearn's is n_outputs times larger
    (scikit-learn issue #8349). See docs/api.md.
    """

    _estimator_type = "regressor"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, dtype=None, shard="block", sync="auto", comm=None, checkpoint=None,
                 checkpoint_every=0, keep_checkpoints=3, mlflow=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.shard = shard
        self.sync = sync
        self.comm = comm
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.mlflow = mlflow

    def _validate_params(self):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"The 'loss' parameter of MLPRegressor must be a str among "
                             f"{{'squared_error', 'poisson'}}. Got {self.loss!r} instead.")
        return super()._validate_params()

    def _output(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _targets(self, yl, y_all, wl, comm, incremental, dtype):
        Y = np.asarray(yl, dtype=dtype)
        return Y.reshape(len(Y), 1 if Y.ndim == 1 else Y.shape[1]), wl  # a rank may hold no rows

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y, keeping the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    partial_fit = stochastic_only(partial_fit)

    def predict(self, X):
        """Predicted values (this rank, X as given; no communication)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def score(self, X, y, sample_weight=None):
        """R2 (uniform average over outputs), as sklearn's r2_score."""
        from mpinn.nn import metrics

        pred = self.predict(X)
        Y = np.asarray(y, dtype=np.float64).reshape(len(pred), -1)
        P = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
        if len(Y) < 2:
            warnings.warn("R^2 score is not well-defined with less than two samples.", stacklevel=2)
            return float("nan")
        first = metrics.regression_first_pass(Y, sample_weight)
        partial = metrics.r2_partial(Y, P, first[1:] / first[0], sample_weight)
        partial[-1] = 0  # as RegressorMixin.score: no NaN short-cut
        return metrics.r2(partial)

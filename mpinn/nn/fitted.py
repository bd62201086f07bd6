"""A trained network loaded from a checkpoint: sklearn-layout weights and predict. No MPI."""

from __future__ import annotations

import numpy as np

from mpinn.nn.model import MLP


def class_index(scores):
    """Predicted class index from output activations (one logistic column or softmax)."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0.5).astype(np.int64)
    return np.argmax(scores, axis=1)


def class_labels(classes, class_names):
    """The original labels of ``classes``: the data file's class names when the classes are their
    codes (string labels converted by `mpinn data convert`, `mpinn data iris`), else the classes."""
    classes = np.asarray(classes)
    if class_names and classes.dtype.kind in "iu" and len(classes) and 0 <= classes.min() \
            and classes.max() < len(class_names):
        return np.asarray(class_names)[classes]
    return classes


def class_proba(scores):
    """Per-class probabilities; a single logistic column p becomes [1-p, p]."""
    return np.hstack([1 - scores, scores]) if scores.shape[1] == 1 else scores


class FittedMLP:
    """``coefs_[i]`` is (fan_in, fan_out) and ``intercepts_[i]`` is (fan_out,), as sklearn's.

    ``classes_`` are the labels as the data file stores them (codes when it has class names),
    ``labels_`` the original labels predict returns; ``scaler`` (preprocessing/scalers.py) scales the
    features the way training did, before the first layer. ``feature_names`` and ``encoding``
    (the data file's, data/columns.py) let callers match a file's columns by name; None for
    models trained on unnamed columns."""

    def __init__(self, coefs, intercepts, *, activation, output, task, classes=None,
                 class_names=None, config=None, history=None, loss_curve=None, scaler=None,
                 feature_names=None, encoding=None):
        self.coefs_ = [np.asarray(c) for c in coefs]
        self.intercepts_ = [np.asarray(b) for b in intercepts]
        self.activation = activation
        self.out_activation_ = output
        self.task = task
        self.classes_ = None if classes is None else np.asarray(classes)
        self.class_names = class_names
        self.labels_ = None if classes is None else class_labels(classes, class_names)
        self.scaler = scaler
        self.feature_names = feature_names
        self.encoding = encoding
        self.config = config or {}
        self.history = history or []
        self.loss_curve_ = loss_curve or []
        self.n_layers_ = len(self.coefs_) + 1
        self.n_features_in_ = self.coefs_[0].shape[0]
        self.n_outputs_ = self.coefs_[-1].shape[1]
        sizes = [self.n_features_in_] + [c.shape[1] for c in self.coefs_]
        self._model = MLP(sizes, activation, output, dtype=self.coefs_[0].dtype)
        self._params = self._model.new_buffer()
        for (W, b), c, i in zip(self._model.views(self._params), self.coefs_, self.intercepts_):
            W[...] = c
            b[...] = i

    def _check(self, X):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this model expects (n, {self.n_features_in_})")
        return X

    def scale_features(self, X):
        """X in the model's dtype, scaled as in training (in place when X already has that dtype
        and is writeable: pass a copy to keep yours)."""
        X = np.asarray(self._check(X), dtype=self._model.dtype)
        if self.scaler is not None:
            if not X.flags.writeable:
                X = X.copy()
            self.scaler.transform_inplace(X)
        return X

    def forward(self, X, scaled=False):
        """Output-layer activations (probabilities for classifiers, values for regressors) of raw
        features X (``scaled=True``: X already went through scale_features)."""
        X = self._check(X) if scaled else self.scale_features(np.array(X, dtype=self._model.dtype))
        return self._model.forward(self._params, X)

    def predict_proba(self, X):
        if self.task != "classify":
            raise AttributeError("predict_proba is only defined for classifiers")
        return class_proba(self.forward(X))

    def predict(self, X):
        out = self.forward(X)
        if self.task != "classify":
            return out[:, 0] if out.shape[1] == 1 else out
        return self.labels_[class_index(out)]

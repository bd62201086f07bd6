"""A trained network loaded from a checkpoint: sklearn-layout weights and predict. No MPI."""

from __future__ import annotations

import numpy as np

from .model import MLP


def class_index(scores):
    """Predicted class index from output activations (one logistic column or softmax)."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0.5).astype(np.int64)
    return np.argmax(scores, axis=1)


def class_proba(scores):
    """Per-class probabilities; a single logistic column p becomes [1-p, p]."""
    return np.hstack([1 - scores, scores]) if scores.shape[1] == 1 else scores


class FittedMLP:
    """``coefs_[i]`` is (fan_in, fan_out) and ``intercepts_[i]`` is (fan_out,), as sklearn's."""

    def __init__(self, coefs, intercepts, *, activation, output, task, classes=None,
                 class_names=None, config=None, history=None, loss_curve=None):
        self.coefs_ = [np.asarray(c) for c in coefs]
        self.intercepts_ = [np.asarray(b) for b in intercepts]
        self.activation = activation
        self.out_activation_ = output
        self.task = task
        self.classes_ = None if classes is None else np.asarray(classes)
        self.class_names = class_names
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

    def forward(self, X):
        """Output-layer activations (probabilities for classifiers, values for regressors)."""
        return self._model.forward(self._params, self._check(X))

    def predict_proba(self, X):
        if self.task != "classify":
            raise AttributeError("predict_proba is only defined for classifiers")
        return class_proba(self.forward(X))

    def predict(self, X):
        out = self.forward(X)
        if self.task != "classify":
            return out[:, 0] if out.shape[1] == 1 else out
        return self.classes_[class_index(out)]

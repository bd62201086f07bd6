"""Estimator scores (accuracy, R2) from partial sums that add up across ranks. No MPI here.

The formulas are scikit-learn's ``accuracy_score`` and ``r2_score`` (uniform average over
outputs, ``force_finite=True``) with optional sample weights. Each *_partial function returns
a float64 array whose elementwise SUM over disjoint row chunks is the value for all rows, so
the caller needs only an Allreduce(SUM); R2 takes two passes (the weighted mean first).
"""

from __future__ import annotations

import numpy as np


def correct_rows(out, Y, output, n_classes):
    """Per row: is the predicted label the true one? ``out`` are output activations, ``Y`` the
    targets in output space (one-hot, a 0/1 column, or a multilabel indicator matrix)."""
    if output == "softmax":
        return np.argmax(out, axis=1) == np.argmax(Y, axis=1)
    if n_classes == 1:  # one class seen: sklearn always predicts it
        return np.ones(len(out), dtype=bool)
    # Binary and multilabel: threshold 0.5, as sklearn's LabelBinarizer.inverse_transform;
    # a multilabel row counts only when every label is right (subset accuracy).
    return np.all((out > 0.5) == (Y > 0.5), axis=1)


def accuracy_partial(out, Y, output, n_classes, weight=None):
    """[sum of weights of correct rows, sum of weights]."""
    ok = correct_rows(out, Y, output, n_classes)
    if weight is None:
        return np.array([float(np.count_nonzero(ok)), float(len(ok))])
    w = np.asarray(weight, dtype=np.float64)
    return np.array([float(w[ok].sum()), float(w.sum())])


def accuracy(partial):
    return float(partial[0] / partial[1]) if partial[1] else float("nan")


def r2_first_partial(Y, weight=None):
    """[sum w, sum w*y per output...]."""
    Y = np.asarray(Y, dtype=np.float64)
    if weight is None:
        return np.concatenate(([float(len(Y))], Y.sum(axis=0)))
    w = np.asarray(weight, dtype=np.float64)
    return np.concatenate(([w.sum()], (w[:, None] * Y).sum(axis=0)))


def r2_second_partial(Y, P, mean, weight=None):
    """[sum w*(y-p)^2 per output..., sum w*(y-mean)^2 per output..., count of non-finite p]."""
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)[:, None]
    num = (w * (Y - P) ** 2).sum(axis=0)
    den = (w * (Y - mean) ** 2).sum(axis=0)
    return np.concatenate((num, den, [float(np.count_nonzero(~np.isfinite(P)))]))


def r2(second):
    """R2 averaged over outputs from the reduced second pass; NaN if any prediction was not
    finite (as sklearn's MLP scores). 1.0 for a perfect fit, 0.0 for a constant target."""
    k = (len(second) - 1) // 2
    num, den = second[:k], second[k : 2 * k]
    if second[-1]:
        return float("nan")
    scores = np.ones(k)
    valid = (num != 0) & (den != 0)
    scores[valid] = 1 - num[valid] / den[valid]
    scores[(num != 0) & (den == 0)] = 0.0
    return float(np.average(scores))

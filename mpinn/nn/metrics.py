"""Evaluation metrics and estimator scores built from partial sums that are safe to reduce
across MPI ranks.

Every function that produces a partial returns a float64 (or int64) array whose elementwise SUM
over disjoint row-chunks equals the value for the whole data, so the caller needs only a plain
Allreduce(SUM). The *_report functions turn the reduced arrays into plain-Python dicts; accuracy
and r2 are scikit-learn's ``accuracy_score`` and ``r2_score`` (uniform average over outputs,
``force_finite=True``) as the estimators' ``score`` and early stopping compute them, with
optional sample weights. Regression takes two passes because R^2 needs the (weighted) global
mean before the residual sums. Pure numpy on purpose: no mpi4py here, so it is testable serially.
"""

import numpy as np

from mpinn.errors import InputError


def _class_indices(y, name, n_classes):
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-D class indices, got shape {y.shape}")
    if y.size == 0:
        return y.astype(np.int64)  # an empty chunk may arrive as float64 from np.asarray([])
    if y.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError(f"{name} has class indices outside 0..{n_classes - 1}")
    return y.astype(np.int64)


def confusion_counts(y_true, y_pred, n_classes):
    """int64 (K, K) counts: row = true class index, column = predicted class index."""
    k = int(n_classes)
    if k < 1:
        raise InputError(f"n_classes must be >= 1, got {n_classes}")
    t = _class_indices(y_true, "y_true", k)
    p = _class_indices(y_pred, "y_pred", k)
    if t.shape != p.shape:
        raise InputError(f"y_true and y_pred lengths differ: {t.size} vs {p.size}")
    # One bincount over a flattened (true, pred) index; minlength keeps shape fixed
    # on every rank, which the elementwise reduction requires.
    return np.bincount(k * t + p, minlength=k * k).astype(np.int64).reshape(k, k)


def _safe_div(num, den):
    """num / den elementwise, 0.0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _py(v):
    """numpy scalar -> plain Python value, so reports are JSON-serialisable."""
    return v.item() if isinstance(v, np.generic) else v


def classification_report(confusion, class_labels=None):
    """Accuracy and per-class / macro precision, recall, F1 from a (reduced) confusion matrix."""
    c = np.asarray(confusion)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise InputError(f"confusion must be a square (K, K) matrix, got shape {c.shape}")
    c = c.astype(np.int64)
    k = c.shape[0]
    if class_labels is None:
        classes = list(range(k))
    else:
        classes = [_py(v) for v in class_labels]
        if len(classes) != k:
            raise InputError(f"{len(classes)} class labels for a {k}-class confusion matrix")

    tp = np.diag(c).astype(np.float64)
    predicted = c.sum(axis=0)  # column sums: how often each class was predicted
    support = c.sum(axis=1)  # row sums: how often each class is the truth
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    # 2tp / (2tp + fp + fn), as sklearn computes it; same value as 2PR/(P+R) when defined.
    f1 = _safe_div(2.0 * tp, predicted + support)

    return {
        "accuracy": float(_safe_div(tp.sum(), c.sum())),
        # Macro over all K classes, absent or never-predicted ones count as 0.
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        "support": [int(v) for v in support],
        "confusion": [[int(v) for v in row] for row in c],
        "classes": classes,
    }


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
    """float64 [sum of weights of correct rows, sum of weights] (weight None: row counts)."""
    ok = correct_rows(out, Y, output, n_classes)
    if weight is None:
        return np.array([float(np.count_nonzero(ok)), float(len(ok))])
    w = np.asarray(weight, dtype=np.float64)
    return np.array([float(w[ok].sum()), float(w.sum())])


def accuracy(partial):
    """Accuracy from a reduced accuracy_partial; NaN when there are no rows."""
    return float(partial[0] / partial[1]) if partial[1] else float("nan")


def _as_2d(y, name):
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return y[:, None]  # 1-D target is a single output
    if y.ndim != 2:
        raise InputError(f"{name} must be 1-D or 2-D, got shape {y.shape}")
    return y


def _column_sums(v, w):
    """Column sums of the 2-D ``v``, row i weighted by w[i] (w None: unweighted)."""
    return v.sum(axis=0) if w is None else (w[:, None] * v).sum(axis=0)


def regression_first_pass(y_true, weight=None):
    """float64 [sum of weights, sum of w*y per output...] (weight None: [n, sums]);
    reduce, then mean = sums / total."""
    y = _as_2d(y_true, "y_true")
    if weight is None:
        return np.concatenate(([float(y.shape[0])], _column_sums(y, None)))
    w = np.asarray(weight, dtype=np.float64)
    return np.concatenate(([w.sum()], _column_sums(y, w)))


def regression_second_pass(y_true, y_pred, mean, weight=None):
    """float64 [SSE per output..., SAE per output..., SST per output...] around the global
    mean, each row weighted by ``weight`` when given."""
    y = _as_2d(y_true, "y_true")
    p = _as_2d(y_pred, "y_pred")
    if p.shape != y.shape:
        raise InputError(f"y_true and y_pred shapes differ: {y.shape} vs {p.shape}")
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    if m.size != y.shape[1]:
        raise InputError(f"mean has {m.size} values for {y.shape[1]} outputs")
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    r = y - p
    return np.concatenate((_column_sums(r * r, w), _column_sums(np.abs(r), w), _column_sums((y - m) ** 2, w)))


def _r2(sse, sst):
    """R^2 averaged over outputs; sklearn's force_finite=True: a perfect fit is 1.0, a
    constant target fit imperfectly 0.0."""
    return float(np.where(sse == 0, 1.0, np.where(sst == 0, 0.0, 1.0 - _safe_div(sse, sst))).mean())


def r2_partial(y_true, y_pred, mean, weight=None):
    """float64 [SSE per output..., SST per output..., count of non-finite predictions]: the
    sums of regression_second_pass that R^2 needs, and what sklearn's MLP checks first."""
    second = regression_second_pass(y_true, y_pred, mean, weight)
    k = len(second) // 3
    nonfinite = np.count_nonzero(~np.isfinite(np.asarray(y_pred, dtype=np.float64)))
    return np.concatenate((second[:k], second[2 * k:], [float(nonfinite)]))


def r2(partial):
    """R^2 from a reduced r2_partial; NaN if any prediction was not finite (as sklearn's MLP
    scores during early stopping)."""
    k = (len(partial) - 1) // 2
    if partial[-1]:
        return float("nan")
    return _r2(partial[:k], partial[k:2 * k])


def regression_report(first, second):
    """MSE, MAE, R^2 (uniform average over outputs, as sklearn's defaults) and n."""
    first = np.asarray(first, dtype=np.float64).reshape(-1)
    second = np.asarray(second, dtype=np.float64).reshape(-1)
    n_out = first.size - 1
    if n_out < 1 or second.size != 3 * n_out:
        raise InputError(f"partials of lengths {first.size} and {second.size} do not match")
    n = int(round(first[0]))
    if n < 1:
        raise InputError("no rows to evaluate")
    sse, sae, sst = second[:n_out], second[n_out:2 * n_out], second[2 * n_out:]
    return {
        "mse": float((sse / n).mean()),
        "mae": float((sae / n).mean()),
        "r2": _r2(sse, sst),
        "n": n,
    }

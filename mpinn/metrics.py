"""Evaluation metrics built from partial sums that are safe to reduce across MPI ranks.

Every function that produces a partial returns a numpy array whose elementwise SUM over
disjoint row-chunks equals the value for the whole data, so the caller needs only a plain
Allreduce(SUM). The *_report functions turn the reduced arrays into plain-Python dicts.
Regression takes two passes because R^2 needs the global mean before the residual sums.
Pure numpy on purpose: no mpi4py here, so it is testable serially.
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


def _as_2d(y, name):
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return y[:, None]  # 1-D target is a single output
    if y.ndim != 2:
        raise InputError(f"{name} must be 1-D or 2-D, got shape {y.shape}")
    return y


def regression_first_pass(y_true):
    """float64 [n, sum of y per output...]: reduce, then mean = sums / n."""
    y = _as_2d(y_true, "y_true")
    return np.concatenate(([float(y.shape[0])], y.sum(axis=0)))


def regression_second_pass(y_true, y_pred, mean):
    """float64 [SSE per output..., SAE per output..., SST per output...] around the global mean."""
    y = _as_2d(y_true, "y_true")
    p = _as_2d(y_pred, "y_pred")
    if p.shape != y.shape:
        raise InputError(f"y_true and y_pred shapes differ: {y.shape} vs {p.shape}")
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    if m.size != y.shape[1]:
        raise InputError(f"mean has {m.size} values for {y.shape[1]} outputs")
    r = y - p
    return np.concatenate(((r * r).sum(axis=0), np.abs(r).sum(axis=0), ((y - m) ** 2).sum(axis=0)))


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
    # sklearn force_finite=True: a perfect fit is 1.0; a constant target fit imperfectly is 0.0.
    r2 = np.where(sse == 0, 1.0, np.where(sst == 0, 0.0, 1.0 - _safe_div(sse, sst)))
    return {
        "mse": float((sse / n).mean()),
        "mae": float((sae / n).mean()),
        "r2": float(r2.mean()),
        "n": n,
    }

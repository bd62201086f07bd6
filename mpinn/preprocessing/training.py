"""`mpinn train --scale`: a scaler fitted on a problem's training rows, applied to its features,
stored in and restored from checkpoints. No MPI here.

The scalers are scalers.py's StandardScaler and MinMaxScaler with the same statistics
(stats.py), so a trained model's scaler exports as scikit-learn's. Fitting here skips
the transformers' input checks: the rows are a Problem's, already checked, possibly streamed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mpinn.preprocessing.scalers import MinMaxScaler, StandardScaler
from mpinn.preprocessing.stats import blocks_moments, reduce_moments, reduce_range, row_blocks


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
    scaler = _KINDS[kind](rows="local")  # fitted on each rank's own rows
    scaler.n_features_in_ = X.shape[1]
    blocks = row_blocks(X, rows)
    if kind == "standard":
        scaler._set_moments(reduce_moments(blocks_moments(blocks, X.shape[1]), comm))
    else:
        scaler._set_range(*reduce_range(blocks, X.shape[1], comm))
    return scaler


def scale_problem(problem, kind, comm, fitted=None):
    """Scale a Problem's features with ``fitted``, or with a scaler of ``kind`` fitted on its
    training rows (collective); the test and validation rows use the same statistics. The
    arrays are scaled in place; a streamed X chunk by chunk as it is read. Returns the Problem
    with its ``scaler`` set (a new one, dataclasses.replace), or ``problem`` for 'none'."""
    if fitted is None:
        rows = None
        if len(problem.train_rows) != problem.shard.n_rows:  # held-out rows do not count
            rows = problem.train_rows.local
        fitted = fit_scaler(kind, problem.X, comm, rows)
    if fitted is None:
        return problem
    for name in ("X", "test_X", "val_X"):
        apply_scaler(fitted, getattr(problem, name, None))
    return replace(problem, scaler=fitted)


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

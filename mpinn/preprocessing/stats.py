"""The statistics a feature scaler fits, from blocks of rows, reduced across ranks. No MPI here.

Each rank summarises its own rows; the summaries are combined with reductions through a
``comm.Comm``, so no rank ever holds all the rows. Standardisation uses per-feature moments
(count, mean, sum of squared deviations M2): within a block of rows two passes (mean first),
blocks and ranks combined with the pooled formula of Chan, Golub & LeVeque,
M2 = sum_r M2_r + sum_r n_r (mean_r - mean)^2, which never subtracts two large sums. The
result differs between rank counts only by rounding (about 1e-16 relative). Minimum and
maximum are exact on any rank count.

The transformers (scalers.py) and ``mpinn train --scale`` (training.py) both fit
through these functions.
"""

from __future__ import annotations

import numpy as np

from mpinn.data.stream import DEFAULT_CHUNK_BYTES

# ---- blocks of rows ------------------------------------------------------------------------------


def row_blocks(X, rows=None):
    """This rank's rows in blocks: the chunks a StreamingRows reads (one streamed pass), or
    blocks of an array of the same size, so streamed and in-memory statistics agree bitwise.
    ``rows``: local positions to use (sorted here), or None for all rows."""
    if hasattr(X, "iter_chunks") and rows is None:
        yield from (chunk for _, chunk in X.iter_chunks())
        return
    n_features = X.shape[1]
    step = max(1, DEFAULT_CHUNK_BYTES // max(1, n_features * np.dtype(X.dtype).itemsize))
    if rows is None:
        for lo in range(0, len(X), step):
            yield X[lo:lo + step]
        return
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    for lo in range(0, len(rows), step):
        yield X[rows[lo:lo + step]]


def closing_blocks(stream):
    """``row_blocks`` of a StreamingRows that closes it once read (or abandoned)."""
    try:
        yield from row_blocks(stream)
    finally:
        stream.close()


# ---- moments (StandardScaler) --------------------------------------------------------------------


def block_moments(X, weights=None):
    """(3, n_features) float64: per feature the count (or weight) of non-NaN values, their mean
    and the sum of (weighted) squared deviations from that mean, in two passes over ``X``."""
    X = np.asarray(X)
    out = np.zeros((3, X.shape[1]))
    if len(X) == 0:
        return out
    X = X.astype(np.float64, copy=False)
    valid = ~np.isnan(X)
    # The corrected two-pass algorithm (Chan, Golub & LeVeque, eq. 1.7, as scikit-learn's):
    # the sum of deviations from the first mean corrects both the mean and M2.
    if weights is None and valid.all():  # the training data's case: no masks, no weights
        n = out[0] = len(X)
        d = X - X.sum(axis=0) / n
        correction = d.sum(axis=0)
        out[1] = X.sum(axis=0) / n + correction / n
        out[2] = np.einsum("ij,ij->j", d, d) - correction * correction / n
        return out
    W = valid * (1.0 if weights is None else np.asarray(weights, dtype=np.float64)[:, None])
    X0 = np.where(valid, X, 0.0)
    n = out[0] = W.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, (W * X0).sum(axis=0) / n, 0.0)
        d = np.where(valid, X0 - mean, 0.0)
        correction = (W * d).sum(axis=0)
        out[1] = np.where(n > 0, mean + correction / n, 0.0)
        out[2] = np.where(n > 0, (W * d * d).sum(axis=0) - correction * correction / n, 0.0)
    return out


def combine_moments(a, b):
    """Moments of the union of two disjoint sets of rows (Chan et al.'s pairwise update)."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(n > 0, nb / n, 0.0)
    delta = mb - ma
    return np.stack([n, np.where(nb > 0, ma + delta * f, ma), sa + sb + delta * delta * na * f])


def blocks_moments(blocks, n_features, weights=None):
    """Moments of this rank's blocks of rows; ``weights``: one per row of all the blocks, or None."""
    local = np.zeros((3, n_features))
    pos = 0
    for rows in blocks:
        part = None if weights is None else weights[pos:pos + len(rows)]
        local = combine_moments(local, block_moments(rows, part))
        pos += len(rows)
    return local


def reduce_moments(local, comm):
    """Moments over every rank's rows from each rank's own (two small Allreduces, O(features))."""
    n, mean, m2 = local
    first = comm.allreduce(np.concatenate([n, n * mean]), "sum")
    total = first[: len(n)]
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(total > 0, first[len(n):] / total, 0.0)
    spread = comm.allreduce(m2 + n * (mean - pooled) ** 2, "sum")
    return np.stack([total, pooled, spread])


def is_constant(var, mean, n):
    """scikit-learn's test for a feature indistinguishable from a constant (its scale becomes 1)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


# ---- ranges (MinMaxScaler) -----------------------------------------------------------------------


def local_minmax(blocks, n_features):
    """(2, n_features): NaN-ignoring minimum and maximum over blocks of rows (+inf/-inf if none)."""
    low, high = np.full(n_features, np.inf), np.full(n_features, -np.inf)
    for rows in blocks:
        if len(rows):
            with np.errstate(invalid="ignore"):
                np.fmin(low, np.nanmin(np.where(np.isnan(rows), np.inf, rows), axis=0), out=low)
                np.fmax(high, np.nanmax(np.where(np.isnan(rows), -np.inf, rows), axis=0), out=high)
    return np.stack([low, high])


def reduce_range(blocks, n_features, comm):
    """Collective: (minimum, maximum, rows) over every rank's blocks of rows."""
    count = [0]

    def counted():
        for rows in blocks:
            count[0] += len(rows)
            yield rows

    low, high = local_minmax(counted(), n_features)
    buf = comm.allreduce(np.concatenate([low, -high]), "min")
    n = int(comm.allreduce(np.array([count[0]], dtype=np.int64), "sum")[0])
    return buf[:n_features], -buf[n_features:], n


def nonzero_scale(scale):
    """``scale`` with values too small to divide by (a constant feature's range) set to 1, as sklearn."""
    scale = np.array(scale, copy=True)
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    return scale

"""Streaming a rank's shard of X from HDF5 in chunks, for data larger than memory. No MPI here.

``StreamingRows`` stands where the in-memory shard array would (``problem.X``): it has the
shard's shape and dtype, and ``np.take(X, local_rows, axis=0, out=buf)`` — what the training
step does — copies the rows from a small window of chunks read from the file. While a step
computes, a background thread reads the next chunks in the epoch's chunk order (read-ahead),
so memory stays at (read_ahead + 2) chunks whatever the file size.

Access must follow the chunk order: with shuffle 'none' the batches walk the shard front to
back (the same batches, hence the same model, as in memory); with shuffle 'local' the schedule
shuffles the order of the chunks and the rows inside each chunk (``chunk_order_rows``).
A chunk is a range of local rows; for a random shard it may span several runs of the file,
each read as its own hyperslab (``Shard.pieces``). Dynamic load balancing replaces the
StreamingRows of a rank whose shard changed (problem.reshard).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_CHUNK_BYTES = 8 << 20


def chunk_order_rows(n_local, chunk_rows, rng):
    """Local row positions of one epoch: chunks in a random order, rows shuffled within each."""
    n_chunks = -(-n_local // chunk_rows)
    order = rng.permutation(n_chunks)
    rows = np.empty(n_local, dtype=np.int64)
    pos = 0
    for c in order:
        lo, hi = c * chunk_rows, min((c + 1) * chunk_rows, n_local)
        part = rows[pos:pos + hi - lo]
        part[:] = np.arange(lo, hi)
        rng.shuffle(part)
        pos += hi - lo
    return rows, order


class StreamingRows:
    """The rows ``shard`` of dataset ``x_name`` in ``path``, read on demand in chunks."""

    def __init__(self, path, x_name, shard, n_features, dtype, *, chunk_rows=None, read_ahead=2):
        import h5py

        self.dtype = np.dtype(dtype)
        self.n_features = int(n_features)
        self.shape = (shard.count, self.n_features)
        self.ndim = 2
        self.shard = shard
        row_bytes = self.n_features * self.dtype.itemsize
        self.chunk_rows = int(chunk_rows or max(1, DEFAULT_CHUNK_BYTES // row_bytes))
        self.n_chunks = -(-shard.count // self.chunk_rows) if shard.count else 0
        self.read_ahead = int(read_ahead)
        self._file = h5py.File(path, "r")
        self._ds = self._file[x_name]
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1) if self.read_ahead else None
        self._loaded = {}   # chunk -> array or Future of one
        self._free = []     # chunk buffers to reuse
        self.chunks_read = 0
        self.transform = None  # in-place function applied to each chunk read (feature scaling)
        self.set_order(np.arange(self.n_chunks))

    def __len__(self):
        return self.shape[0]

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self):
        """Bytes held now (the window of chunks), not the shard's size."""
        return sum(self.chunk_rows * self.n_features * self.dtype.itemsize for _ in self._loaded)

    def set_order(self, order):
        """The order in which this epoch visits the chunks (read-ahead follows it)."""
        self.order = np.asarray(order, dtype=np.int64)
        self.position = np.empty(max(self.n_chunks, 1), dtype=np.int64)
        self.position[self.order] = np.arange(len(self.order))
        if self._pool is not None and len(self.order):
            for c in self.order[: self.read_ahead + 1].tolist():
                if c not in self._loaded:
                    self._loaded[c] = self._pool.submit(self._read, c)

    # ---- reading ------------------------------------------------------------------------

    def _read(self, c):
        lo = c * self.chunk_rows
        hi = min(lo + self.chunk_rows, self.shape[0])
        with self._lock:
            buf = self._free.pop() if self._free else np.empty((self.chunk_rows, self.n_features), self.dtype)
        # One hyperslab for a block or strided shard; a random shard's chunk may span runs.
        for src, dst in self.shard.pieces(lo, hi):
            if self._ds.dtype == self.dtype:
                self._ds.read_direct(buf, source_sel=src, dest_sel=dst)
            else:
                buf[dst] = self._ds[src]
        self.chunks_read += 1
        if self.transform is not None:
            self.transform(buf[: hi - lo])
        return buf

    def _chunk(self, c):
        got = self._loaded.get(c)
        if got is None:
            got = self._loaded[c] = self._read(c)
        elif not isinstance(got, np.ndarray):
            got = self._loaded[c] = got.result()
        return got

    def _advance(self, c):
        """After serving chunk c: drop chunks before it in the order, start reading the next."""
        p = int(self.position[c])
        for k in [k for k in self._loaded if self.position[k] < p]:
            buf = self._loaded.pop(k)
            if not isinstance(buf, np.ndarray):
                buf = buf.result()
            with self._lock:
                self._free.append(buf)
        for q in range(p + 1, min(p + 1 + self.read_ahead, len(self.order))):
            nxt = int(self.order[q])
            if nxt not in self._loaded:
                self._loaded[nxt] = self._pool.submit(self._read, nxt)

    def take(self, indices, axis=0, out=None, mode="raise"):
        """Rows ``indices`` (local positions, grouped by chunk in the epoch's order) into ``out``."""
        if axis != 0:
            raise ValueError("StreamingRows.take: only axis=0")
        idx = np.asarray(indices, dtype=np.int64)
        if out is None:
            out = np.empty((len(idx), self.n_features), self.dtype)
        if len(idx) == 0:
            return out
        chunks = idx // self.chunk_rows
        cuts = np.flatnonzero(chunks[1:] != chunks[:-1]) + 1
        starts = [0, *cuts.tolist()]
        stops = [*cuts.tolist(), len(idx)]
        last = None
        for a, b in zip(starts, stops):
            c = int(chunks[a])
            buf = self._chunk(c)
            np.take(buf, idx[a:b] - c * self.chunk_rows, axis=0, out=out[a:b])
            last = c
        self._advance(last)
        return out

    def __getitem__(self, key):
        """Plain row access (slices, index arrays): read directly, for checks and evaluation."""
        if isinstance(key, slice):
            key = np.arange(*key.indices(self.shape[0]))
        idx = np.atleast_1d(np.asarray(key, dtype=np.int64))
        out = np.empty((len(idx), self.n_features), self.dtype)
        for i, r in enumerate(self.shard.global_rows(idx).tolist()):
            out[i] = self._ds[r]
        return out if self.transform is None else self.transform(out)

    def set_transform(self, fn):
        """Apply ``fn`` in place to every row read from now on; chunks already read ahead are
        dropped and read again (preprocessing.training.scale_problem)."""
        for c in list(self._loaded):
            buf = self._loaded.pop(c)
            self._free.append(buf if isinstance(buf, np.ndarray) else buf.result())
        self.transform = fn
        self.set_order(self.order)

    def iter_chunks(self):
        """(first local row, rows) for every chunk in file order, read one at a time."""
        for c in range(self.n_chunks):
            buf = self._read(c)
            lo = c * self.chunk_rows
            yield lo, buf[: min(self.chunk_rows, self.shape[0] - lo)]
            with self._lock:
                self._free.append(buf)

    def first_non_finite_row(self):
        """Local index of the first row with NaN or Inf, or None (one pass, chunk by chunk)."""
        for lo, rows in self.iter_chunks():
            finite = np.isfinite(rows).all(axis=1)
            if not finite.all():
                return lo + int(np.argmin(finite))
        return None

    def close(self):
        """Stop the read-ahead thread and close the file (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._loaded.clear()
        self._free.clear()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EncodedRows:
    """Class targets kept as small integer codes and one-hot (softmax) or 0/1 (logistic) encoded
    per batch by ``np.take(Y, rows, axis=0, out=buf)``: the same values as
    ``model.encode_targets``, without k floats per row in memory (streaming mode)."""

    def __init__(self, y, classes, output, dtype):
        k = len(classes)
        code_type = np.int16 if k < 2**15 else np.int32
        self.codes = np.searchsorted(classes, y).astype(code_type)
        self.output = output
        self.dtype = np.dtype(dtype)
        self.shape = (len(self.codes), k if output == "softmax" else 1)
        self.ndim = 2
        self._codes_buf = np.empty(0, self.codes.dtype)
        self._flat = self._row_starts = np.empty(0, np.intp)

    def __len__(self):
        return self.shape[0]

    @property
    def nbytes(self):
        return self.codes.nbytes

    def take(self, indices, axis=0, out=None, mode="raise"):
        idx = np.asarray(indices)
        m = len(idx)
        if out is None:
            out = np.empty((m, self.shape[1]), self.dtype)
        if self._codes_buf.shape[0] < m:  # reused: a training step allocates nothing here
            self._codes_buf = np.empty(m, self.codes.dtype)
            self._flat = np.empty(m, np.intp)
            self._row_starts = np.arange(m) * self.shape[1]  # of each row in out, flattened
        codes = self._codes_buf[:m]
        np.take(self.codes, idx, out=codes, mode=mode)
        if self.output == "softmax":
            out[...] = 0
            # out.flat[row start + code] = 1 through np.put: fancy indexing by (rows, codes)
            # would convert the int16 codes to a new intp array.
            flat = self._flat[:m]
            np.copyto(flat, codes)
            flat += self._row_starts[:m]
            np.put(out, flat, 1, mode="wrap")
        else:
            out[:, 0] = codes
        return out

    def __getitem__(self, key):
        return self.take(np.arange(self.shape[0])[key])

    def __array__(self, dtype=None, copy=None):
        """All rows encoded (what encode_targets returns), for code that wants the array."""
        out = self.take(np.arange(self.shape[0]))
        return out if dtype is None else out.astype(dtype, copy=False)
